"""``mode=http``: the watchdog starts the function's own HTTP server once (``fprocess``) and proxies
every call to ``upstream_url`` (docs/watchdog.md "Modes"). The upstream is the stdlib server in
``fixtures/upstream.py``: it echoes what it received, counts its connections, and has paths to be
slow, crash, answer big, answer chunked, or answer a given status.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    RawConnection,
    RssSampler,
    assert_duration_header,
    free_port,
    http_request,
    iter_body,
    port_refuses,
    process_alive,
    read_head,
    rss_bytes,
    scaled,
    session_members,
    wait_for,
)

UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream.py"
UPSTREAM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable
PATTERN = b"0123456789abcdef"
BIG_ANSWER_BYTES = 50 * 1024 * 1024
RSS_BOUND_BYTES = 60 * 1024 * 1024
RSS_GROWTH_BOUND_BYTES = 24 * 1024 * 1024


def start_http(start_watchdog, *, delay: float = 0.0, **env: str | None):
    """A watchdog in http mode in front of fixtures/upstream.py on a free port."""
    upstream_port = free_port()
    command = f"{shlex.quote(UPSTREAM_PYTHON)} {shlex.quote(str(UPSTREAM))} {upstream_port}"
    if delay:
        command += f" {delay}"
    env.setdefault("upstream_url", f"http://127.0.0.1:{upstream_port}")
    watchdog = start_watchdog(command, mode="http", **env)
    watchdog.upstream_port = upstream_port  # type: ignore[attr-defined]
    return watchdog


def echoed(response: httpx.Response | object) -> dict:
    if isinstance(response, httpx.Response):
        assert response.status_code == 200, response.text
        return json.loads(response.content)
    return json.loads(response.body)  # type: ignore[attr-defined]


def header_map(document: dict) -> dict[str, str]:
    return {name.lower(): value for name, value in document["headers"]}


def upstream_info(watchdog) -> dict:
    response = watchdog.request("GET", "/connections")
    assert response.status_code == 200, response.text
    return response.json()


# -- correctness -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_method_path_query_headers_and_body_are_forwarded(start_watchdog, method: str):
    watchdog = start_http(start_watchdog)
    body = b"" if method == "GET" else b"payload \x00\xff for " + method.encode()
    response = watchdog.request(
        method,
        "/some/path%20x?q=1&r=two&q=3",
        content=body,
        headers={"X-Request-Id": "req-1", "X-Custom": "Value With Spaces", "Content-Type": "text/x-in"},
    )
    document = echoed(response)
    assert document["method"] == method
    assert document["target"] == "/some/path%20x?q=1&r=two&q=3"
    assert document["version"] == "HTTP/1.1"
    headers = header_map(document)
    assert headers["x-request-id"] == "req-1"
    assert headers["x-custom"] == "Value With Spaces"
    assert headers["content-type"] == "text/x-in"
    assert headers["host"] == f"127.0.0.1:{watchdog.port}"
    assert document["body"].encode("latin-1") == body
    if body:
        assert document["framing"] == "length"
        assert headers["content-length"] == str(len(body))
    assert_duration_header(response.headers.get("X-Duration-Seconds"))


def test_a_chunked_request_goes_up_with_content_length(start_watchdog):
    watchdog = start_http(start_watchdog)
    pieces = [b"hello ", b"chunked ", b"world" * 1000]
    with RawConnection(watchdog.port) as conn:
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        head = (
            b"POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"X-Keep: kept\r\nConnection: keep-alive\r\n\r\n"
        )
        conn.send(head + chunked)
        response = conn.read_response()
    assert response.status == 200, response.text
    document = echoed(response)
    headers = header_map(document)
    assert document["framing"] == "length", "the watchdog sent a chunked body to the upstream"
    assert "transfer-encoding" not in headers
    assert headers["content-length"] == str(sum(map(len, pieces)))
    assert document["body"].encode() == b"".join(pieces)
    assert headers["x-keep"] == "kept"
    assert "connection" not in headers, "a connection-specific header went to the upstream"


@pytest.mark.parametrize("status", [201, 404, 418, 503])
def test_upstream_status_and_headers_are_relayed(start_watchdog, status: int):
    watchdog = start_http(start_watchdog)
    response = watchdog.request("GET", f"/status/{status}")
    assert response.status_code == status
    assert response.text == f"status {status}\n"
    assert response.headers["Content-Type"] == "text/x-status"
    assert response.headers["X-Upstream-Status"] == str(status)
    assert response.headers["Set-Cookie"] == "a=1"
    assert_duration_header(response.headers.get("X-Duration-Seconds"))
    assert "X-OpenFaaS-Internal" not in response.headers, "an upstream answer was marked as the watchdog's own"


def test_echo_answer_headers_and_duration(start_watchdog):
    watchdog = start_http(start_watchdog)
    response = watchdog.request("GET", "/hello")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Upstream"] == "echo"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert_duration_header(response.headers.get("X-Duration-Seconds"))
    assert len(response.headers.get_list("Content-Length")) == 1


def test_a_chunked_upstream_answer_is_relayed_whole(start_watchdog):
    watchdog = start_http(start_watchdog)
    with RawConnection(watchdog.port) as conn:
        for _ in range(2):  # The upstream connection is reusable after a chunked answer too.
            conn.send(http_request("GET", "/chunked"))
            response = conn.read_response()
            assert response.status == 200
            assert response.body == b"first,second,third"
            assert response.header("X-Chunked") == "yes"
            assert response.header("Content-Type") == "text/x-chunks"


def test_keep_alive_connections_to_the_upstream_are_reused(start_watchdog):
    watchdog = start_http(start_watchdog)
    before = upstream_info(watchdog)["connections"]
    with watchdog.client() as client:
        for n in range(30):
            assert client.post(f"/n{n}", content=b"x" * n).status_code == 200
    # Fresh client connections, too: the upstream side is pooled independently of the client side.
    for _ in range(5):
        assert watchdog.request("GET", "/again").status_code == 200
    after = upstream_info(watchdog)["connections"]
    assert after == before, f"{after - before} new upstream connections for 35 sequential calls; want them reused"


def test_the_function_servers_output_goes_to_the_log(start_watchdog):
    watchdog = start_http(start_watchdog)
    wait_for(
        lambda: f"upstream listening on {watchdog.upstream_port}" in watchdog.logs(),
        3.0,
        lambda: f"the upstream's stdout is not in the watchdog's log:\n{watchdog.logs()}",
    )


def test_not_ready_until_the_upstream_listens(start_watchdog):
    watchdog = start_http(start_watchdog, delay=0.6)
    assert watchdog.startup_s >= 0.6, f"healthy after {watchdog.startup_s:.2f}s, before the upstream listened"
    assert watchdog.request("GET", "/x").status_code == 200


def test_a_call_sent_while_the_upstream_starts_is_answered_once_it_listens(start_watchdog):
    """The watchdog listens before its function server does; a call arriving in between waits, then is served."""
    watchdog = start_http(start_watchdog, delay=0.6, wait_ready=False)
    wait_for(lambda: not port_refuses(watchdog.port), 10.0, "the watchdog to listen")
    t0 = time.monotonic()
    response = watchdog.request("POST", "/early", content=b"early", timeout=10.0)
    elapsed = time.monotonic() - t0
    assert response.status_code == 200, response.text
    assert echoed(response)["body"] == "early"
    assert elapsed < scaled(3.0), f"a call held during start-up took {elapsed:.2f}s (upstream listens after 0.6s)"


# -- timeouts ------------------------------------------------------------------------------------


def test_exec_timeout_gives_504_and_the_next_call_works(start_watchdog):
    watchdog = start_http(start_watchdog, exec_timeout="1s")
    t0 = time.monotonic()
    response = watchdog.request("GET", "/slow?s=5")
    elapsed = time.monotonic() - t0
    assert response.status_code == 504
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "1s" in response.text
    assert 0.9 <= elapsed < scaled(2.5), f"504 after {elapsed:.2f}s for exec_timeout=1s"
    assert 0.9 <= assert_duration_header(response.headers.get("X-Duration-Seconds")) < scaled(2.5)
    assert watchdog.request("GET", "/slow?s=0.1").status_code == 200


def test_x_timeout_below_exec_timeout_gives_504_sooner(start_watchdog):
    watchdog = start_http(start_watchdog, exec_timeout="5s")
    t0 = time.monotonic()
    response = watchdog.request("GET", "/slow?s=5", headers={"X-Timeout": "300ms"})
    elapsed = time.monotonic() - t0
    assert response.status_code == 504
    assert 0.25 <= elapsed < scaled(1.5), f"504 after {elapsed:.2f}s for X-Timeout: 300ms"
    # A larger X-Timeout cannot extend exec_timeout; a short call under it is fine.
    response = watchdog.request("GET", "/slow?s=0.1", headers={"X-Timeout": "60s"})
    assert response.status_code == 200
    assert "x-timeout" not in header_map(echoed(response))


def test_x_timeout_cannot_extend_exec_timeout(start_watchdog):
    watchdog = start_http(start_watchdog, exec_timeout="500ms")
    t0 = time.monotonic()
    response = watchdog.request("GET", "/slow?s=3", headers={"X-Timeout": "10s"})
    assert response.status_code == 504
    assert time.monotonic() - t0 < 1.5


# -- the upstream process crashing ------------------------------------------------------------------


def test_upstream_crash_gives_502_then_it_is_restarted(start_watchdog):
    watchdog = start_http(start_watchdog)
    first_pid = upstream_info(watchdog)["pid"]
    response = watchdog.request("GET", "/crash?s=0.2")
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/plain")
    wait_for(lambda: not process_alive(first_pid), 2.0, f"crashed upstream {first_pid} still alive")

    def works() -> dict | None:
        try:
            response = watchdog.request("GET", "/after", timeout=3.0)
        except httpx.TransportError:
            return None
        return echoed(response) if response.status_code == 200 else None

    document = wait_for(works, 10.0, lambda: f"calls never worked again after the crash:\n{watchdog.logs()}")
    assert document["pid"] != first_pid
    assert process_alive(document["pid"])
    assert watchdog.request("GET", "/_/health").status_code == 200
    assert "exit=7" in watchdog.logs()


def test_a_restart_while_a_process_of_the_old_server_holds_its_log_keeps_serving(start_watchdog, tmp_path):
    """A process the crashed server started still holds the old log pipe (its stdout) and writes to it after
    the restart: the watchdog read the *new* server's pipe when the old one became readable -- a blocking
    read of a silent pipe, which hung the whole watchdog (found when a fork bomb's server was restarted)."""
    upstream_port = free_port()
    server = f"{shlex.quote(UPSTREAM_PYTHON)} {shlex.quote(str(UPSTREAM))} {upstream_port}"
    started, wrote = tmp_path / "writer-started", tmp_path / "writer-wrote"
    writer = f"(sleep 2; echo late from the old server; touch {wrote}) &"  # Only the first server's.
    watchdog = start_watchdog(
        f"sh -c '[ -e {started} ] || {{ touch {started}; {writer} }}; exec {server}'",
        mode="http",
        upstream_url=f"http://127.0.0.1:{upstream_port}",
    )
    assert watchdog.request("GET", "/crash?s=0").status_code == 502
    wait_for(lambda: "upstream ready again" in watchdog.logs(), 5.0, "the server's restart")
    wait_for(wrote.exists, 5.0, "the old server's writer to write")
    response = watchdog.request("GET", "/after", timeout=scaled(5.0))
    assert response.status_code == 200 and echoed(response)["path"] == "/after", response.text
    wait_for(lambda: "late from the old server" in watchdog.logs(), 5.0, lambda: watchdog.logs())


def test_calls_during_a_restart_wait_for_the_new_server(start_watchdog):
    watchdog = start_http(start_watchdog)
    with ThreadPoolExecutor(2) as pool:
        crash = pool.submit(watchdog.request, "GET", "/crash?s=0.3")
        time.sleep(0.1)  # Scenario timing: the second call is sent while the server is still up.
        slow = pool.submit(watchdog.request, "GET", "/slow?s=0.6")
        assert crash.result().status_code == 502
        # /slow was in flight too when the server died: it gets 502 as well.
        assert slow.result().status_code == 502
    # Right after the crash, a new call waits for the restart instead of failing.
    t0 = time.monotonic()
    response = watchdog.request("GET", "/after-crash", timeout=5.0)
    assert response.status_code == 200, response.text
    assert time.monotonic() - t0 < scaled(3.0)


# -- start-up failures -------------------------------------------------------------------------


def _single_error_line(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("faasd watchdog:")]
    assert len(lines) == 1, f"want one 'faasd watchdog:' error line, got:\n{log}"
    return lines[0]


def test_start_fails_cleanly_when_the_upstream_never_listens(start_watchdog):
    upstream_port = free_port()
    watchdog = start_watchdog(
        "sleep 30",
        wait_ready=False,
        mode="http",
        upstream_url=f"http://127.0.0.1:{upstream_port}",
        start_timeout="500ms",
    )
    code = watchdog.wait_exit(5.0)
    assert code != 0
    line = _single_error_line(watchdog.logs())
    assert f"127.0.0.1:{upstream_port}" in line and "0.5s" in line, line
    leftovers = session_members(watchdog.pid)
    assert not leftovers, f"the watchdog exited but left its function server running: {leftovers}"


def test_sigterm_while_the_upstream_is_starting_stops_at_once(start_watchdog):
    """A stop signal while the watchdog still waits for its function's server to listen: it stops now,
    server and all, and exits 0. Before, the signal was noted but the wait went on to ``start_timeout``
    (30 s by default), so the local backend's stop grace ran out and the replica was killed."""
    watchdog = start_watchdog(
        "sleep 1000",
        wait_ready=False,
        mode="http",
        upstream_url=f"http://127.0.0.1:{free_port()}",
        start_timeout="60s",
    )
    wait_for(lambda: any("sleep" in command for _, command in session_members(watchdog.pid)), 10, "the server")
    t0 = time.monotonic()
    watchdog.send_signal(signal.SIGTERM)
    assert watchdog.wait_exit(scaled(10.0)) == 0, watchdog.logs()
    assert time.monotonic() - t0 < scaled(2.0), f"the stop waited for the server to listen:\n{watchdog.logs()}"
    assert not session_members(watchdog.pid), "the watchdog exited but left its function server running"
    assert "faasd watchdog:" not in watchdog.logs(), watchdog.logs()


def test_start_fails_cleanly_when_the_upstream_exits_at_once(start_watchdog):
    watchdog = start_watchdog(
        "sh -c 'echo cannot bind >&2; exit 3'",
        wait_ready=False,
        mode="http",
        upstream_url=f"http://127.0.0.1:{free_port()}",
        start_timeout="10s",
    )
    t0 = time.monotonic()
    code = watchdog.wait_exit(5.0)
    assert code != 0
    assert time.monotonic() - t0 < scaled(3.0), "the watchdog waited for start_timeout although the server had exited"
    line = _single_error_line(watchdog.logs())
    assert "exited" in line, line
    assert "cannot bind" in watchdog.logs(), "the server's stderr is not in the log"
    assert not session_members(watchdog.pid)


# -- large answers, concurrency, shutdown -------------------------------------------------------


def test_a_50_mb_answer_streams_with_flat_memory(start_watchdog):
    watchdog = start_http(start_watchdog)
    assert watchdog.request("GET", "/warm").status_code == 200
    baseline = rss_bytes(watchdog.pid)
    digest = hashlib.sha256()
    received = 0
    with RawConnection(watchdog.port, timeout=10) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        with RssSampler(watchdog.pid) as rss:
            conn.send(http_request("GET", f"/big?n={BIG_ANSWER_BYTES}"))
            head = read_head(conn)
            assert head.status == 200
            assert head.header("Content-Type") == "application/octet-stream"
            for piece in iter_body(conn, head, recv_bytes=64 * 1024):
                digest.update(piece)
                received += len(piece)
                time.sleep(0.0003)  # A slow-ish client.
    assert received == BIG_ANSWER_BYTES
    expected = hashlib.sha256(PATTERN * (BIG_ANSWER_BYTES // len(PATTERN))).hexdigest()
    assert digest.hexdigest() == expected, "the 50 MB answer arrived corrupted"
    mb = 1024 * 1024
    print(f"watchdog RSS: before {baseline / mb:.1f} MB, peak {rss.peak / mb:.1f} MB ({len(rss.samples)} samples)")
    assert len(rss.samples) > 20
    assert rss.peak < RSS_BOUND_BYTES, f"watchdog RSS peaked at {rss.peak / mb:.1f} MB relaying 50 MB"
    assert rss.peak - baseline < RSS_GROWTH_BOUND_BYTES, (
        f"watchdog RSS grew by {(rss.peak - baseline) / mb:.1f} MB relaying 50 MB: the answer is being buffered"
    )
    assert watchdog.request("GET", "/after-big").status_code == 200


def test_the_connection_that_streamed_a_big_answer_serves_the_next_call(start_watchdog):
    """A slow client makes the watchdog pause reading from the function's server (back-pressure); when
    the answer's last piece arrives while it is paused, the keep-alive connection goes back to the idle
    pool and must read again: the next call on it hung until its deadline before this was fixed (it
    was left paused). Several rounds, each ending with a small call on the same upstream connection."""
    watchdog = start_http(start_watchdog)
    assert watchdog.request("GET", "/warm").status_code == 200
    size = 4 * 1024 * 1024
    for round_ in range(4):
        with RawConnection(watchdog.port, timeout=10) as conn:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            conn.send(http_request("GET", f"/big?n={size}"))
            head = read_head(conn)
            assert head.status == 200
            received = 0
            for piece in iter_body(conn, head, recv_bytes=64 * 1024):
                received += len(piece)
                time.sleep(0.002)  # A slow client: the watchdog's write buffer stays full.
            assert received == size
        started = time.monotonic()
        response = watchdog.client().get("/after-big", timeout=scaled(10.0))
        assert response.status_code == 200, (round_, response.text)
        assert time.monotonic() - started < scaled(2.0), f"round {round_}: the next call took a long time"
    assert upstream_info(watchdog)["connections"] <= 2, "the upstream connection was not reused"


def test_parallel_calls_run_in_parallel(start_watchdog):
    watchdog = start_http(start_watchdog)
    calls = 16
    slow_s = 0.5

    clients = [watchdog.client() for _ in range(calls)]  # Made up front: not part of the timing.

    def one(n: int) -> tuple[int, float]:
        response = clients[n].get(f"/slow?s={slow_s}&n={n}")
        return response.status_code, echoed(response)["time"]

    with ThreadPoolExecutor(calls) as pool:
        t0 = time.monotonic()
        results = list(pool.map(one, range(calls)))
        elapsed = time.monotonic() - t0
    assert [status for status, _ in results] == [200] * calls
    assert elapsed < 3 * slow_s, f"{calls} parallel {slow_s}s calls took {elapsed:.2f}s: they were serialised"
    finish_times = sorted(at for _, at in results)
    assert finish_times[-1] - finish_times[0] < 2 * slow_s


def test_sigterm_drains_an_in_flight_call_and_stops_the_server(start_watchdog):
    watchdog = start_http(start_watchdog)
    upstream_pid = upstream_info(watchdog)["pid"]
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(watchdog.request, "GET", "/slow?s=1")
        wait_for(
            lambda: watchdog.metrics().get(("http_requests_in_flight", frozenset())) == 1,
            3.0,
            "the /slow call never went in flight",
        )
        watchdog.send_signal(signal.SIGTERM)
        wait_for(lambda: not watchdog.lock_path.exists(), 3.0, "the lock file was not removed on SIGTERM")
        response = future.result(timeout=10)
    assert response.status_code == 200, response.text
    assert echoed(response)["path"] == "/slow"
    assert watchdog.wait_exit(5.0) == 0
    assert not process_alive(upstream_pid), f"the function server {upstream_pid} outlived the watchdog"
    assert not session_members(watchdog.pid)
