"""exec_timeout: a function past it has its whole process group SIGKILLed and the caller gets 408;
``exec_timeout=0`` is bounded by ``write_timeout``; a call whose client is gone is killed too
(docs/watchdog.md "Configuration", "Responses")."""

from __future__ import annotations

import shlex
import socket
import struct
import time
from pathlib import Path

from tests.helpers import (
    RawConnection,
    assert_duration_header,
    http_request,
    process_alive,
    read_pid_file,
    scaled,
    wait_for,
)


def sh(script: str) -> str:
    return "sh -c " + shlex.quote(script)


def test_exec_timeout_gives_408_and_kills_the_process(start_watchdog, tmp_path: Path):
    pidfile = tmp_path / "pid"
    watchdog = start_watchdog(sh(f"echo $$ > {pidfile}; exec sleep 30"), exec_timeout="1s")
    t0 = time.monotonic()
    response = watchdog.request("POST", "/", content=b"x")
    elapsed = time.monotonic() - t0
    assert response.status_code == 408
    assert response.text.strip() == "Killed process: exceeded exec_timeout of 1s"
    assert response.headers["Content-Type"].startswith("text/plain")
    duration = assert_duration_header(response.headers.get("X-Duration-Seconds"))
    assert 0.9 <= elapsed < scaled(3.0), f"answered after {elapsed:.2f}s for exec_timeout=1s"
    assert 0.9 <= duration < scaled(3.0)
    pid = read_pid_file(pidfile)
    wait_for(lambda: not process_alive(pid), 2.0, f"function process {pid} survived its exec_timeout")


def test_exec_timeout_kills_grandchildren_in_the_process_group(start_watchdog, tmp_path: Path):
    pidfile = tmp_path / "grandchild.pid"
    # sh without job control keeps its background job in its own process group.
    watchdog = start_watchdog(sh(f"sleep 30 & echo $! > {pidfile}; wait"), exec_timeout="1s")
    response = watchdog.request("GET", "/")
    assert response.status_code == 408
    grandchild = read_pid_file(pidfile)
    wait_for(lambda: not process_alive(grandchild), 2.0, f"grandchild {grandchild} survived the kill")


def test_exec_timeout_accepts_go_durations(start_watchdog):
    watchdog = start_watchdog("sleep 30", exec_timeout="300ms")
    t0 = time.monotonic()
    response = watchdog.request("GET", "/")
    elapsed = time.monotonic() - t0
    assert response.status_code == 408
    assert response.text.strip() == "Killed process: exceeded exec_timeout of 0.3s"
    assert 0.25 <= elapsed < scaled(2.0), elapsed


def test_call_within_exec_timeout_succeeds(start_watchdog):
    watchdog = start_watchdog(sh("sleep 0.2; cat"), exec_timeout="2s")
    response = watchdog.request("POST", "/", content=b"in time")
    assert (response.status_code, response.text) == (200, "in time")


def test_exec_timeout_zero_is_bounded_by_write_timeout(start_watchdog, tmp_path: Path):
    pidfile = tmp_path / "pid"
    watchdog = start_watchdog(sh(f"echo $$ > {pidfile}; exec sleep 30"), exec_timeout="0", write_timeout="1s")
    t0 = time.monotonic()
    response = watchdog.request("GET", "/")
    elapsed = time.monotonic() - t0
    assert response.status_code == 408, response.text
    assert 0.9 <= elapsed < scaled(3.0), elapsed
    pid = read_pid_file(pidfile)
    wait_for(lambda: not process_alive(pid), 2.0, f"function process {pid} outlived write_timeout")


def test_watchdog_serves_other_calls_while_one_hangs(start_watchdog, tmp_path: Path):
    script = 'case "$Http_Path" in /hang) exec sleep 30;; *) echo quick;; esac'
    watchdog = start_watchdog(sh(script), exec_timeout="1s")
    with RawConnection(watchdog.port) as hanging:
        hanging.send(http_request("GET", "/hang"))
        for _ in range(5):
            t0 = time.monotonic()
            response = watchdog.request("GET", "/")
            assert (response.status_code, response.text) == (200, "quick\n")
            assert time.monotonic() - t0 < 0.9
        assert hanging.read_response().status == 408


def test_client_gone_kills_the_call(start_watchdog, tmp_path: Path):
    pidfile = tmp_path / "pid"
    watchdog = start_watchdog(sh(f"echo $$ > {pidfile}; exec sleep 30"), exec_timeout="20s")
    conn = RawConnection(watchdog.port)
    conn.send(http_request("GET", "/"))
    pid = read_pid_file(pidfile)
    assert process_alive(pid)
    # Abort the connection (RST): the client is unambiguously gone, the call can never be answered.
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    wait_for(lambda: not process_alive(pid), 3.0, f"function process {pid} outlived its client")
    assert watchdog.request("GET", "/_/health").status_code == 200
