"""``mode=streaming``: a process per call like fork mode, stdout sent as it comes (chunked) with
back-pressure, so the first bytes reach the client before the process ends and memory stays flat
whatever the size (docs/watchdog.md "Modes")."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.helpers import (
    BodyTruncated,
    RawConnection,
    RssSampler,
    assert_duration_header,
    http_request,
    iter_body,
    process_alive,
    read_head,
    read_pid_file,
    rss_bytes,
    scaled,
    wait_for,
)

BIG_OUTPUT_BYTES = 200 * 1024 * 1024
RSS_BOUND_BYTES = 60 * 1024 * 1024
"""The watchdog's resident size must stay under this while it streams 200 MB (it idles near 22 MB)."""
RSS_GROWTH_BOUND_BYTES = 24 * 1024 * 1024
"""...and grow by less than this over its size before the transfer."""


def sh(script: str) -> str:
    return "sh -c " + shlex.quote(script)


def streaming(start_watchdog, fprocess: str, **env: str | None):
    return start_watchdog(fprocess, mode="streaming", **env)


def test_first_output_arrives_before_the_process_ends(start_watchdog):
    watchdog = streaming(start_watchdog, sh("echo first; sleep 1; echo second"))
    with RawConnection(watchdog.port) as conn:
        t0 = time.monotonic()
        conn.send(http_request("GET", "/"))
        head = read_head(conn)
        assert head.status == 200
        assert (head.header("Transfer-Encoding") or "").lower() == "chunked"
        assert head.header("Content-Length") is None
        assert head.header("Content-Type") == "text/plain; charset=utf-8"
        # X-Duration-Seconds is the time until the answer started, not the call's whole duration.
        assert assert_duration_header(head.header("X-Duration-Seconds")) < 0.5
        pieces: list[tuple[float, bytes]] = []
        for piece in iter_body(conn, head):
            pieces.append((time.monotonic() - t0, piece))
        body = b"".join(piece for _, piece in pieces)
    assert body == b"first\nsecond\n"
    first_at = pieces[0][0]
    assert pieces[0][1].startswith(b"first\n")
    assert first_at < 0.5, f"the first output was readable only after {first_at:.2f}s (the process sleeps 1 s)"
    second_at = next(at for at, piece in pieces if b"second" in piece)
    assert second_at >= 0.9, f"'second' arrived after {second_at:.2f}s, before the process could write it"


def test_streamed_body_is_exact_and_chunked_and_the_connection_is_reused(start_watchdog):
    watchdog = streaming(start_watchdog, "cat")
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with RawConnection(watchdog.port, timeout=10) as conn:
        for n in range(2):
            conn.send(http_request("POST", f"/call{n}", payload, {"Content-Type": "application/x-thing"}))
            response = conn.read_response()
            assert response.status == 200
            assert (response.header("Transfer-Encoding") or "").lower() == "chunked"
            assert response.header("Content-Type") == "application/x-thing"
            assert response.header("Connection") is None
            assert len(response.body) == len(payload)
            assert response.body == payload
        assert not conn.at_eof(0.2), "keep-alive connection closed after a complete streamed answer"


def test_a_200_mb_output_streams_to_a_slow_client_with_flat_memory(start_watchdog):
    watchdog = streaming(start_watchdog, f"head -c {BIG_OUTPUT_BYTES} /dev/zero")
    baseline = rss_bytes(watchdog.pid)
    received = 0
    with RawConnection(watchdog.port, timeout=10) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        with RssSampler(watchdog.pid) as rss:
            conn.send(http_request("GET", "/"))
            head = read_head(conn)
            assert head.status == 200
            assert (head.header("Transfer-Encoding") or "").lower() == "chunked"
            for piece in iter_body(conn, head, recv_bytes=64 * 1024):
                if piece.strip(b"\0"):
                    raise AssertionError(f"non-zero byte in the output near offset {received}")
                received += len(piece)
                time.sleep(0.0002)  # A slow-ish client: the function is much faster than this.
        after = rss_bytes(watchdog.pid)
    assert received == BIG_OUTPUT_BYTES
    mb = 1024 * 1024
    print(
        f"watchdog RSS: before {baseline / mb:.1f} MB, peak {rss.peak / mb:.1f} MB, after {after / mb:.1f} MB "
        f"({len(rss.samples)} samples)"
    )
    assert len(rss.samples) > 20, "too few memory samples to say anything"
    assert rss.peak < RSS_BOUND_BYTES, f"watchdog RSS peaked at {rss.peak / mb:.1f} MB streaming 200 MB"
    assert rss.peak - baseline < RSS_GROWTH_BOUND_BYTES, (
        f"watchdog RSS grew by {(rss.peak - baseline) / mb:.1f} MB streaming 200 MB: output is being buffered"
    )


def test_nonzero_exit_before_any_output_is_500_with_stderr(start_watchdog):
    watchdog = streaming(start_watchdog, sh("echo oops on stderr >&2; exit 4"), combine_output="false")
    response = watchdog.request("POST", "/", content=b"in")
    assert response.status_code == 500
    assert response.headers.get("Transfer-Encoding") is None
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "exit status 4\noops on stderr\n"
    assert_duration_header(response.headers.get("X-Duration-Seconds"))


def test_nonzero_exit_without_output_is_500(start_watchdog):
    watchdog = streaming(start_watchdog, sh("exit 3"))
    response = watchdog.request("GET", "/")
    assert response.status_code == 500
    assert response.text.startswith("exit status 3")


def test_nonzero_exit_after_output_ends_the_body_normally_and_is_logged(start_watchdog):
    watchdog = streaming(start_watchdog, sh("echo partial; sleep 0.2; exit 4"))
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/"))
        response = conn.read_response()  # Fails if the final chunk is missing.
        assert response.status == 200
        assert response.body == b"partial\n"
        # The answer ended normally, so the connection is still good for another call.
        conn.send(http_request("GET", "/again"))
        assert conn.read_response().body == b"partial\n"
    wait_for(
        lambda: "function failed after its answer started" in watchdog.logs() and "exit=4" in watchdog.logs(),
        3.0,
        lambda: f"the failure after the answer started was not logged:\n{watchdog.logs()}",
    )


def test_stderr_goes_to_the_log_when_the_stream_has_started(start_watchdog):
    """combine_output=false: stderr is captured apart and written to the watchdog's log -- also when
    the answer is streamed (only the 500 body is out of the question once it started)."""
    watchdog = streaming(start_watchdog, sh("echo out; echo err-marker-42 >&2"), combine_output="false")
    response = watchdog.request("GET", "/")
    assert response.status_code == 200
    assert response.text == "out\n"
    wait_for(
        lambda: "err-marker-42" in watchdog.logs(),
        3.0,
        lambda: f"stderr of a streamed call never reached the watchdog's log:\n{watchdog.logs()}",
    )


def test_exec_timeout_mid_stream_cuts_the_body_and_kills_the_process(start_watchdog, tmp_path: Path):
    pidfile = tmp_path / "pid"
    watchdog = streaming(start_watchdog, sh(f"echo $$ > {pidfile}; echo start; exec sleep 30"), exec_timeout="1s")
    with RawConnection(watchdog.port) as conn:
        t0 = time.monotonic()
        conn.send(http_request("GET", "/"))
        head = read_head(conn)
        assert head.status == 200
        received = b""
        with pytest.raises(BodyTruncated):
            for piece in iter_body(conn, head):
                received += piece
        elapsed = time.monotonic() - t0
    assert received == b"start\n"
    assert 0.9 <= elapsed < scaled(3.0), f"the stream was cut after {elapsed:.2f}s for exec_timeout=1s"
    pid = read_pid_file(pidfile)
    wait_for(lambda: not process_alive(pid), 2.0, f"function process {pid} survived its exec_timeout")
    # The watchdog goes on serving.
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/"))
        assert read_head(conn).status == 200


def test_client_gone_mid_stream_kills_the_process(start_watchdog, tmp_path: Path):
    pidfile = tmp_path / "pid"
    watchdog = streaming(start_watchdog, sh(f"echo $$ > {pidfile}; echo start; exec sleep 30"))
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/"))
        head = read_head(conn)
        assert next(iter_body(conn, head)) == b"start\n"
        # Abort the connection (RST): the client is unambiguously gone (a FIN alone is a legal half-close).
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pid = read_pid_file(pidfile)
    wait_for(lambda: not process_alive(pid), 3.0, f"function process {pid} kept running after its client left")


def test_http_env_reaches_the_process(start_watchdog):
    watchdog = streaming(start_watchdog, "env")
    response = watchdog.request(
        "POST",
        "/some/path?q=1&r=two",
        content=b"12345",
        headers={"X-Request-Id": "req-77", "Content-Type": "text/x-in"},
    )
    assert response.status_code == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    lines = set(response.text.splitlines())
    for expected in (
        "Http_Method=POST",
        "Http_Path=/some/path",
        "Http_Query=q=1&r=two",
        "Http_X_Request_Id=req-77",
        "Http_ContentType=text/x-in",
        "Http_Content_Length=5",
        f"Http_Host=127.0.0.1:{watchdog.port}",
        "mode=streaming",
    ):
        assert expected in lines, f"{expected!r} missing from the function's environment:\n{response.text}"


def test_sigterm_lets_a_stream_in_flight_finish(start_watchdog):
    watchdog = streaming(start_watchdog, sh("echo first; sleep 1; echo second"))
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/"))
        head = read_head(conn)
        body_pieces = iter_body(conn, head)
        first = next(body_pieces)
        assert first == b"first\n"
        watchdog.send_signal(signal.SIGTERM)
        wait_for(lambda: not watchdog.lock_path.exists(), 3.0, "the lock file was not removed on SIGTERM")
        rest = b"".join(body_pieces)  # BodyTruncated here means the drain cut the stream.
    assert first + rest == b"first\nsecond\n"
    assert watchdog.wait_exit(5.0) == 0
