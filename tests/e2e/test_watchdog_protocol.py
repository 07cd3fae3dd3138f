"""HTTP/1.1 on the wire: keep-alive, pipelining, chunked uploads, ``Expect: 100-continue``, HTTP/1.0,
malformed requests, and ``X-Duration-Seconds`` on every answer (docs/watchdog.md "Requests")."""

from __future__ import annotations

import shlex
import time

import pytest

from tests.helpers import RawConnection, assert_duration_header, http_request, scaled

# Echoes the body; sleeps first when the body is "slow" (to show answers keep the request order).
ORDERED_ECHO = "sh -c " + shlex.quote('x=$(cat); [ "$x" = slow ] && sleep 0.3; printf %s "$x"')


def test_keep_alive_many_requests_on_one_connection(start_watchdog):
    watchdog = start_watchdog("cat")
    with RawConnection(watchdog.port) as conn:
        for i in range(50):
            body = f"request number {i}".encode()
            conn.send(http_request("POST", f"/call/{i}", body))
            response = conn.read_response()
            assert response.status == 200, response.text
            assert response.body == body
            assert (response.header("Connection") or "").lower() != "close"
        assert not conn.at_eof(timeout=0.2), "the watchdog closed a keep-alive connection"


def test_pipelined_requests_in_one_send_are_answered_in_order(start_watchdog):
    watchdog = start_watchdog(ORDERED_ECHO)
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("POST", "/1", b"slow") + http_request("POST", "/2", b"fast"))
        first = conn.read_response()
        second = conn.read_response()
    assert (first.status, first.body) == (200, b"slow")
    assert (second.status, second.body) == (200, b"fast")


def test_pipelined_get_and_post(start_watchdog):
    watchdog = start_watchdog('sh -c \'printf "%s:" "$Http_Method"; cat\'')
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/a") + http_request("POST", "/b", b"body") + http_request("DELETE", "/c"))
        answers = [conn.read_response() for _ in range(3)]
    assert [(r.status, r.body) for r in answers] == [(200, b"GET:"), (200, b"POST:body"), (200, b"DELETE:")]


def test_chunked_request_body(start_watchdog):
    watchdog = start_watchdog("cat")
    with RawConnection(watchdog.port) as conn:
        conn.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
            b"5\r\nhello\r\n"
            b"1;ext=1\r\n,\r\n"
            b"a\r\n chunked!!\r\n"
            b"0\r\nX-Trailer: t\r\n\r\n"
        )
        response = conn.read_response()
    assert response.status == 200, response.text
    assert response.body == b"hello, chunked!!"


def test_chunked_body_sent_in_pieces(start_watchdog):
    watchdog = start_watchdog("cat")
    payload = bytes(range(256)) * 400  # 100 KiB, binary
    with RawConnection(watchdog.port) as conn:
        conn.send(b"PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(payload), 30_000):
            piece = payload[start : start + 30_000]
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200, response.text
    assert response.body == payload


def test_httpx_streamed_upload_is_chunked(start_watchdog):
    watchdog = start_watchdog("cat")

    def parts():
        yield b"part one, "
        yield b"part two"

    response = watchdog.request("POST", "/", content=parts())
    assert response.status_code == 200
    assert response.content == b"part one, part two"


def test_expect_100_continue(start_watchdog):
    watchdog = start_watchdog("cat")
    with RawConnection(watchdog.port, timeout=3.0) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        interim = conn.read_response()  # must come before we send the body
        assert interim.status == 100, (interim.status, interim.headers)
        conn.send(b"hello world")
        final = conn.read_response()
    assert final.status == 200, final.text
    assert final.body == b"hello world"


def test_expect_100_continue_over_the_body_limit_gets_413_not_100(start_watchdog):
    watchdog = start_watchdog("cat", max_body_bytes="1k")
    with RawConnection(watchdog.port, timeout=3.0) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        response = conn.read_response()
    assert response.status == 413


def test_http10_closes_after_the_response(start_watchdog):
    watchdog = start_watchdog("cat")
    with RawConnection(watchdog.port) as conn:
        conn.send(b"POST /old HTTP/1.0\r\nContent-Length: 4\r\n\r\nold!")
        response = conn.read_response()
        assert response.status == 200, response.text
        assert response.body == b"old!"
        assert conn.at_eof(timeout=2.0), "HTTP/1.0 without keep-alive must be closed after the response"


def test_http10_keep_alive_stays_open(start_watchdog):
    watchdog = start_watchdog("cat")
    with RawConnection(watchdog.port) as conn:
        for body in (b"one", b"two"):
            conn.send(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n" + body)
            response = conn.read_response()
            assert response.status == 200, response.text
            assert response.body == body


def test_connection_close_is_honoured(start_watchdog):
    watchdog = start_watchdog("cat")
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("POST", "/", b"bye", headers={"Connection": "close"}))
        response = conn.read_response()
        assert response.body == b"bye"
        assert conn.at_eof(timeout=2.0)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"THIS IS NOT HTTP AT ALL\r\n\r\n", id="garbage-line"),
        pytest.param(b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", id="four-words"),
        pytest.param(b"GET\r\nHost: x\r\n\r\n", id="method-only"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nNo colon in this header line\r\n\r\n", id="bad-header-line"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", id="bad-content-length"),
    ],
)
def test_malformed_request_gets_400(start_watchdog, tmp_path, raw):
    marker = tmp_path / "ran"
    watchdog = start_watchdog(f"sh -c 'echo ran >> {marker}'")
    with RawConnection(watchdog.port) as conn:
        conn.send(raw)
        response = conn.read_response()
        assert response.status == 400, (response.status, response.text)
        reason = response.text.strip()
        assert reason, "the 400 body should give a reason"
        assert "\n" not in reason, f"the 400 body should be one line: {reason!r}"
        assert (response.header("Content-Type") or "").startswith("text/plain")
        assert_duration_header(response.header("X-Duration-Seconds"))
        assert conn.at_eof(timeout=2.0), "the connection should be closed after a malformed request"
    assert not marker.exists()
    assert watchdog.request("GET", "/").status_code == 200, "the watchdog should keep serving"


def test_duration_header_on_every_kind_of_answer(start_watchdog):
    script = 'case "$Http_Path" in /fail) exit 3;; *) echo ok;; esac'
    watchdog = start_watchdog("sh -c " + shlex.quote(script), max_body_bytes="1k", max_header_bytes="2k")
    cases = [
        (http_request("GET", "/ok"), 200),
        (http_request("GET", "/fail"), 500),
        (http_request("TRACE", "/"), 405),
        (http_request("POST", "/", b"x" * 2000), 413),
        (http_request("GET", "/", headers={"X-Big": "y" * 4000}), 431),
        (b"NOT HTTP\r\n\r\n", 400),
        (http_request("GET", "/_/health"), 200),
    ]
    for raw, status in cases:
        with RawConnection(watchdog.port) as conn:
            conn.send(raw)
            response = conn.read_response()
        assert response.status == status, (raw[:40], response.status, response.text)
        seconds = assert_duration_header(response.header("X-Duration-Seconds"))
        assert 0 <= seconds < scaled(5)


# -- read_timeout and whole bodies ---------------------------------------------------------------


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow", id="partial-head"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf", id="partial-body"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n", id="partial-chunked"
        ),
    ],
)
def test_slow_client_is_cut_off_after_read_timeout(start_watchdog, tmp_path, partial):
    marker = tmp_path / "ran"
    watchdog = start_watchdog(f"sh -c 'echo ran > {marker}'", read_timeout="500ms")
    with RawConnection(watchdog.port, timeout=5.0) as conn:
        t0 = time.monotonic()
        conn.send(partial)
        leftover = conn.read_until_eof()  # the watchdog must end the connection by itself
        elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < scaled(3.0), f"connection ended {elapsed:.2f}s after a partial request (read_timeout=0.5s)"
    if leftover:
        status = int(leftover.split(b" ", 2)[1])
        assert 400 <= status < 500, leftover[:200]
    assert not marker.exists(), "the function ran for an incomplete request"
    assert watchdog.request("GET", "/_/health").status_code == 200


def test_body_is_read_in_full_before_the_process_starts(start_watchdog, tmp_path):
    marker = tmp_path / "started"
    watchdog = start_watchdog(f"sh -c 'touch {marker}; cat'")
    with RawConnection(watchdog.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst")
        time.sleep(0.3)  # not synchronisation: the time the watchdog gets to (wrongly) start the process
        assert not marker.exists(), "the process started before the body was complete"
        conn.send(b"-half")
        response = conn.read_response()
    assert (response.status, response.body) == (200, b"first-half")
