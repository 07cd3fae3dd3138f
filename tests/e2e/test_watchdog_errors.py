"""Failing functions and limits: non-zero exit (500), combine_output, a process that cannot start,
max_inflight (429), max_body_bytes (413), max_header_bytes (431), max_output_bytes (502)
(docs/watchdog.md "Responses")."""

from __future__ import annotations

import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers import (
    RawConnection,
    assert_duration_header,
    http_request,
    process_alive,
    read_pid_file,
    rss_bytes,
    wait_for,
)


def sh(script: str) -> str:
    return "sh -c " + shlex.quote(script)


def gate_script(directory: Path) -> str:
    """A function that records it started, then waits until the test creates ``release``."""
    return sh(f"touch {directory}/started.$$; while [ ! -e {directory}/release ]; do sleep 0.01; done; echo released")


# -- non-zero exit and stderr ---------------------------------------------------------------------


def test_non_zero_exit_gives_500_with_status_and_output(start_watchdog):
    watchdog = start_watchdog(sh("echo out-text; echo err-text >&2; exit 3"))
    response = watchdog.request("POST", "/", content=b"x")
    assert response.status_code == 500
    assert response.text.startswith("exit status 3\n"), response.text
    assert "out-text" in response.text
    assert "err-text" in response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    assert_duration_header(response.headers.get("X-Duration-Seconds"))


def test_non_zero_exit_with_combine_output_false_still_returns_stderr(start_watchdog):
    watchdog = start_watchdog(sh("echo out-text; echo err-text >&2; exit 1"), combine_output="false")
    response = watchdog.request("GET", "/")
    assert response.status_code == 500
    assert response.text.startswith("exit status 1\n"), response.text
    assert "out-text" in response.text
    assert "err-text" in response.text


def test_process_killed_by_a_signal_gives_500(start_watchdog):
    watchdog = start_watchdog(sh("echo before; kill -KILL $$"))
    response = watchdog.request("GET", "/")
    assert response.status_code == 500
    assert response.text.startswith("killed by signal SIGKILL\n"), response.text


def test_combine_output_true_merges_stderr_into_200_body(start_watchdog):
    watchdog = start_watchdog(sh("echo out-text; echo err-text >&2"))
    response = watchdog.request("GET", "/")
    assert response.status_code == 200
    assert "out-text" in response.text
    assert "err-text" in response.text


def test_combine_output_false_keeps_stderr_out_of_200_body_and_logs_it(start_watchdog):
    # The marker is computed by the process: the logged fprocess itself never contains it.
    watchdog = start_watchdog(sh("echo out-text; echo err-marker-$((4700 + 11)) >&2"), combine_output="false")
    response = watchdog.request("GET", "/")
    assert response.status_code == 200
    assert response.text == "out-text\n"
    wait_for(lambda: "err-marker-4711" in watchdog.logs(), 3.0, lambda: f"stderr not logged:\n{watchdog.logs()}")


def test_process_that_cannot_start_gives_500(start_watchdog, tmp_path: Path):
    program = tmp_path / "function.sh"
    program.write_text("#!/bin/sh\necho fine\n")
    program.chmod(0o755)
    watchdog = start_watchdog(str(program))
    assert watchdog.request("GET", "/").text == "fine\n"
    program.unlink()  # found on PATH at start-up, gone by the time of the call
    response = watchdog.request("GET", "/")
    assert response.status_code == 500
    assert response.text.startswith("Cannot start process: "), response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    assert watchdog.request("GET", "/_/health").status_code == 200


# -- max_inflight ---------------------------------------------------------------------------------


def test_max_inflight_rejects_with_429(start_watchdog, tmp_path: Path):
    watchdog = start_watchdog(gate_script(tmp_path), max_inflight="1")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(watchdog.request, "POST", "/slow", content=b"1")
        try:
            wait_for(lambda: list(tmp_path.glob("started.*")), 5.0, "the first call never started")
            second = watchdog.request("POST", "/second", content=b"2", timeout=5.0)
            assert second.status_code == 429
            assert second.text.strip() == "Concurrent request limit exceeded. Max concurrent requests: 1"
            assert second.headers["Content-Type"].startswith("text/plain")
            assert_duration_header(second.headers.get("X-Duration-Seconds"))
            assert len(list(tmp_path.glob("started.*"))) == 1, "the rejected call must not start a process"
        finally:
            (tmp_path / "release").touch()
        response = first.result(timeout=10)
    assert response.status_code == 200
    assert response.text == "released\n"
    assert watchdog.request("POST", "/third").status_code == 200, "the slot must be free again"


def test_max_inflight_allows_up_to_the_limit(start_watchdog, tmp_path: Path):
    watchdog = start_watchdog(gate_script(tmp_path), max_inflight="3")
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(watchdog.request, "POST", "/", content=b"x") for _ in range(3)]
        try:
            wait_for(lambda: len(list(tmp_path.glob("started.*"))) == 3, 5.0, "three calls should run at once")
            assert watchdog.request("POST", "/", timeout=5.0).status_code == 429
        finally:
            (tmp_path / "release").touch()
        assert [call.result(timeout=10).status_code for call in calls] == [200, 200, 200]


# -- max_body_bytes -------------------------------------------------------------------------------


def test_body_at_the_limit_is_accepted(start_watchdog):
    watchdog = start_watchdog("wc -c", max_body_bytes="1k")
    response = watchdog.request("POST", "/", content=b"a" * 1024)
    assert response.status_code == 200
    assert response.text.strip() == "1024"


def test_content_length_over_the_limit_gets_413_before_the_body_is_sent(start_watchdog, tmp_path: Path):
    marker = tmp_path / "ran"
    watchdog = start_watchdog(f"sh -c 'echo ran > {marker}'", max_body_bytes="1k")
    with RawConnection(watchdog.port, timeout=3.0) as conn:
        # 10 GiB announced, not one body byte sent: the answer must not wait for the body.
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n")
        response = conn.read_response()
    assert response.status == 413
    assert response.text.strip() == "Request body exceeds max_body_bytes (1024 bytes)"
    assert (response.header("Content-Type") or "").startswith("text/plain")
    assert_duration_header(response.header("X-Duration-Seconds"))
    assert not marker.exists()


def test_content_length_one_over_the_limit_gets_413(start_watchdog):
    watchdog = start_watchdog("cat", max_body_bytes="1k")
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("POST", "/", b"a" * 1025))
        response = conn.read_response()
    assert response.status == 413


def test_default_body_limit_is_64m(start_watchdog):
    watchdog = start_watchdog("cat")
    with RawConnection(watchdog.port, timeout=3.0) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (64 * 1024 * 1024 + 1))
        response = conn.read_response()
    assert response.status == 413
    assert str(64 * 1024 * 1024) in response.text


def test_chunked_body_over_the_limit_gets_413(start_watchdog, tmp_path: Path):
    marker = tmp_path / "ran"
    watchdog = start_watchdog(f"sh -c 'echo ran > {marker}'", max_body_bytes="1k")
    with RawConnection(watchdog.port, timeout=3.0) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.send(b"200\r\n" + b"a" * 512 + b"\r\n")
        conn.send(b"300\r\n" + b"b" * 768 + b"\r\n")  # 1280 bytes so far; no terminating chunk sent
        response = conn.read_response()
    assert response.status == 413
    assert "1024" in response.text
    assert not marker.exists()


def test_chunked_body_at_the_limit_is_accepted(start_watchdog):
    watchdog = start_watchdog("wc -c", max_body_bytes="1k")
    with RawConnection(watchdog.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.send(b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200, response.text
    assert response.text.strip() == "1024"


# -- max_header_bytes -----------------------------------------------------------------------------


def test_huge_header_gets_431(start_watchdog, tmp_path: Path):
    marker = tmp_path / "ran"
    watchdog = start_watchdog(f"sh -c 'echo ran > {marker}'", max_header_bytes="4k")
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/", headers={"X-Huge": "h" * 16_000}))
        response = conn.read_response()
    assert response.status == 431
    assert response.text.strip() and "\n" not in response.text.strip()
    assert_duration_header(response.header("X-Duration-Seconds"))
    assert not marker.exists()
    assert watchdog.request("GET", "/").status_code == 200


def test_many_headers_over_the_limit_get_431(start_watchdog):
    watchdog = start_watchdog("cat", max_header_bytes="4k")
    headers = {f"X-Header-{i}": "v" * 40 for i in range(200)}  # ~11 KB of headers
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/", headers=headers))
        response = conn.read_response()
    assert response.status == 431


def test_headers_under_the_limit_are_accepted(start_watchdog):
    watchdog = start_watchdog("cat", max_header_bytes="4k")
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request("GET", "/", headers={"X-Big": "h" * 3000}))
        response = conn.read_response()
    assert response.status == 200


def test_default_header_limit_accepts_32k_headers(start_watchdog):
    watchdog = start_watchdog("sh -c 'printf %s \"$Http_X_Big\" | wc -c'")
    response = watchdog.request("GET", "/", headers={"X-Big": "h" * 32_000})
    assert response.status_code == 200
    assert response.text.strip() == "32000"


# -- max_output_bytes -----------------------------------------------------------------------------

FLOOD_OR_OK = sh(
    'case "$Http_Path" in /flood) echo $$ > "$PIDFILE"; exec cat /dev/zero;; /yes) exec yes;; *) echo ok;; esac'
)


def test_stdout_flood_gives_502_and_memory_stays_bounded(start_watchdog, tmp_path: Path):
    pidfile = tmp_path / "flood.pid"
    watchdog = start_watchdog(FLOOD_OR_OK, max_output_bytes="1m", PIDFILE=str(pidfile))
    before = rss_bytes(watchdog.pid)
    response = watchdog.request("GET", "/flood")
    after = rss_bytes(watchdog.pid)
    print(f"watchdog VmRSS before flood {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
    assert response.status_code == 502
    assert response.text.strip() == "Function output exceeded max_output_bytes (1048576 bytes); process killed"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert_duration_header(response.headers.get("X-Duration-Seconds"))
    assert after < 100 * 2**20, f"watchdog RSS {after} bytes after a 1 MiB-limited flood"
    pid = read_pid_file(pidfile)
    wait_for(lambda: not process_alive(pid), 2.0, f"flooding process {pid} still alive")
    # Still serving.
    ok = watchdog.request("GET", "/")
    assert (ok.status_code, ok.text) == (200, "ok\n")
    assert watchdog.request("GET", "/yes").status_code == 502
    assert rss_bytes(watchdog.pid) < 100 * 2**20


def test_output_at_the_limit_is_returned(start_watchdog):
    watchdog = start_watchdog(sh('head -c "$Http_X_Size" /dev/zero'), max_output_bytes="1k")
    response = watchdog.request("GET", "/", headers={"X-Size": "1024"})
    assert response.status_code == 200
    assert response.content == b"\0" * 1024
    response = watchdog.request("GET", "/", headers={"X-Size": "1025"})
    assert response.status_code == 502


def test_concurrent_floods_do_not_grow_memory(start_watchdog, tmp_path: Path):
    clients = 4
    watchdog = start_watchdog(FLOOD_OR_OK, max_output_bytes="2m", PIDFILE=str(tmp_path / "pid"))
    barrier = threading.Barrier(clients)

    def call():
        barrier.wait(timeout=5)
        return watchdog.request("GET", "/yes").status_code

    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(lambda _: call(), range(clients)))
    assert codes == [502] * clients
    assert rss_bytes(watchdog.pid) < 100 * 2**20
