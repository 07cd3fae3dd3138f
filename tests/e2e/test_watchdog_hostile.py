"""Hostile requests straight to a replica: a clear 4xx, never a traceback, a crash or a leaked fd.

Issue 11 found ``GET /%00`` made fork mode decode the NUL into ``Http_Path``, ``posix_spawn`` raise
``ValueError`` and the call's pipes stay open: 500 per call and 1,051 open fds after 521 calls. These
tests send each kind of bad request (NUL in the path, query and headers; CR/LF; over-long values;
bodies cut short; clients that disconnect mid-call) thousands of times to a watchdog in every mode and
check that every answer is a one-line reason and that its open fds (``/proc/<pid>/fd``) stay flat.
"""

from __future__ import annotations

import os
import shlex
import socket
import struct
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import RawConnection, free_port, http_request, scaled, wait_for

UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream.py"
UPSTREAM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable

ROUNDS = 100
"""Rounds of the battery per mode: each round sends every bad request once (~20 calls)."""
BATTERY_BUDGET_S = 90.0
"""Upper bound on one mode's battery (times FAASD_TEST_TIME_FACTOR); a few seconds on an idle machine."""
FD_SLACK = 2
"""Open fds allowed above the count before the battery: a pooled upstream connection in http mode."""

SLOW_FORK = "sh -c " + shlex.quote('case "$Http_Path" in /slow) exec sleep 5;; esac; exec cat')
PYTHON_HANDLER = """\
import time


def handle(event, context):
    if event.path == "/slow":
        time.sleep(0.05)
    return {"statusCode": 200, "body": "ok"}
"""


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_mode(start_watchdog, mode: str, tmp_path: Path, **env: str):
    """A watchdog in ``mode`` whose function is slow on ``/slow`` and quick on anything else."""
    if mode in ("fork", "streaming"):
        return start_watchdog(SLOW_FORK, mode=mode, **env)
    if mode == "http":
        port = free_port()
        command = f"{shlex.quote(UPSTREAM_PYTHON)} {shlex.quote(str(UPSTREAM))} {port}"
        return start_watchdog(command, mode="http", upstream_url=f"http://127.0.0.1:{port}", **env)
    handler = tmp_path / "handler.py"
    handler.write_text(PYTHON_HANDLER)
    return start_watchdog(None, mode="python", handler=str(handler), workers="2", **env)


# -- the battery ----------------------------------------------------------------------------------


def _exchange(port: int, data: bytes, *, half_close: bool = False) -> tuple[int, bytes] | None:
    """Send ``data`` on a fresh connection; (status, body) of the answer, or None if it closed first."""
    with RawConnection(port, timeout=10.0) as conn:
        conn.send(data)
        if half_close:
            conn.sock.shutdown(socket.SHUT_WR)
        try:
            response = conn.read_response()
        except AssertionError as exc:
            if "connection closed" in str(exc):
                return None
            raise
        return response.status, response.body


def _disconnect_mid_call(port: int) -> None:
    """Start a slow call and go away (a reset, as a killed client) before it answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(http_request("GET", "/slow?s=0.2"))
        time.sleep(0.005)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


BAD_REQUESTS: list[tuple[str, bytes]] = [
    ("nul-path", http_request("GET", "/%00")),
    ("nul-path-middle", http_request("GET", "/a%00b/c")),
    ("nul-query-encoded", http_request("GET", "/?q=%00")),
    ("nul-raw-path", b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("nul-raw-query", b"GET /?a=\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("nul-header", b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n"),
    ("nul-host", b"GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n"),
    ("crlf-path-encoded", http_request("GET", "/a%0d%0aSet-Cookie:%20x=1")),
    ("crlf-query-encoded", http_request("GET", "/?a=%0d%0ab")),
    ("bare-cr-header", b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n"),
    ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: x\nX-Bad: ab\r\n\r\n"),
    ("ctl-raw-path", b"GET /a\x01\x1b[2J HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("invalid-utf8-path", http_request("GET", "/%ff%fe%c3")),
    ("latin1-header", b"GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n"),
    ("long-path", http_request("GET", "/" + "p" * 10_000)),
    ("long-header", http_request("GET", "/", headers={"X-Long": "v" * 40_000})),
    ("huge-header", http_request("GET", "/", headers={"X-Huge": "v" * 200_000})),
    ("many-headers", http_request("GET", "/", headers={f"X-H{i}": "v" for i in range(500)})),
    ("bad-chunk", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
]
"""(name, bytes) of each request that must be answered (4xx, or 2xx where it is harmless)."""

CUT_SHORT: list[tuple[str, bytes]] = [
    ("body-cut-short", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b"),
    ("chunked-cut-short", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc"),
    ("head-cut-short", b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: "),
    ("expect-then-gone", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"),
]
"""Requests whose client stops sending (and half-closes): answered 400/100 or closed, never a call."""


def run_battery(
    port: int, rounds: int, budget_s: float, function_refuses: frozenset[str] = frozenset()
) -> tuple[Counter[str], list[str]]:
    """Send every bad request ``rounds`` times; (status counts, problems found).

    ``function_refuses``: requests the function itself answers with a 4xx of its own making (the
    http-mode upstream's limits), whose body is not the watchdog's to word.
    """
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    deadline = time.monotonic() + scaled(budget_s)
    for _ in range(rounds):
        for name, data in BAD_REQUESTS:
            answer = _exchange(port, data)
            if answer is None:
                problems.append(f"{name}: closed without an answer")
                continue
            status, body = answer
            statuses[f"{name} {status}"] += 1
            if status >= 500 or b"Traceback" in body:
                problems.append(f"{name}: {status} {body[:200]!r}")
            elif status >= 400 and name not in function_refuses and not _one_line(body):
                problems.append(f"{name}: {status} without a one-line reason: {body[:200]!r}")
        for name, data in CUT_SHORT:
            answer = _exchange(port, data, half_close=True)
            statuses[f"{name} {answer[0] if answer else 'closed'}"] += 1
            if answer is not None and (answer[0] >= 500 or b"Traceback" in answer[1]):
                problems.append(f"{name}: {answer[0]} {answer[1][:200]!r}")
        _disconnect_mid_call(port)
        statuses["disconnect-mid-call"] += 1
        if time.monotonic() > deadline:
            problems.append(f"the battery took longer than {budget_s:g}s")
            break
    return statuses, problems


def _one_line(body: bytes) -> bool:
    return bool(body.strip()) and b"\n" not in body.rstrip(b"\n")


UPSTREAM_LIMITS = frozenset({"huge-header", "many-headers"})
"""What the http-mode upstream (Python's http.server) refuses itself: 431 with an HTML page."""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fork", "streaming", "http", "python"])
def test_fd_count_stays_flat_over_thousands_of_bad_calls(start_watchdog, tmp_path: Path, mode: str):
    # max_header_bytes above the kernel's 128 KiB limit on one environment string: a 200 KB header
    # must be refused with a reason, not fail the spawn with E2BIG and a 500.
    watchdog = start_mode(start_watchdog, mode, tmp_path, max_header_bytes="1m", read_timeout="2s")
    for _ in range(3):  # Warm: pooled upstream connections, lazily imported modules, workers started.
        assert watchdog.request("POST", "/", content=b"warm").status_code == 200
    before = fd_count(watchdog.pid)
    started = time.monotonic()
    refused_upstream = UPSTREAM_LIMITS if mode == "http" else frozenset()
    statuses, problems = run_battery(watchdog.port, ROUNDS, BATTERY_BUDGET_S, refused_upstream)
    elapsed = time.monotonic() - started
    calls = sum(statuses.values())
    print(f"{mode}: {calls} bad calls in {elapsed:.1f}s; fds before {before}, right after {fd_count(watchdog.pid)}")
    print("  " + ", ".join(f"{key}: {count}" for key, count in sorted(statuses.items())))
    assert not problems, f"{len(problems)} bad answers, first: {problems[:5]}"
    assert calls >= 2000

    def settled() -> bool:
        return fd_count(watchdog.pid) <= before + FD_SLACK

    wait_for(settled, 15.0, lambda: f"{mode}: open fds {fd_count(watchdog.pid)}, {before} before the battery")
    assert "Traceback" not in watchdog.logs(), watchdog.logs()[-3000:]
    response = watchdog.request("POST", "/", content=b"still serving")
    assert response.status_code == 200, response.text


# -- NUL and other values an environment variable cannot carry ------------------------------------


@pytest.mark.parametrize("mode", ["fork", "streaming"])
@pytest.mark.parametrize(
    ("target", "reason_has"),
    [
        pytest.param("/%00", "NUL", id="nul-only"),
        pytest.param("/function/part%00rest?x=1", "NUL", id="nul-in-the-middle"),
    ],
)
def test_nul_in_the_path_is_400_with_a_one_line_reason(
    start_watchdog, tmp_path: Path, mode: str, target: str, reason_has: str
):
    marker = tmp_path / "ran"
    watchdog = start_watchdog(f"sh -c 'echo ran >> {marker}; cat'", mode=mode)
    before = fd_count(watchdog.pid)
    for _ in range(50):
        with RawConnection(watchdog.port) as conn:
            conn.send(http_request("GET", target))
            response = conn.read_response()
        assert response.status == 400, (response.status, response.text)
        reason = response.text.strip()
        assert reason_has in reason and "Http_Path" in reason, reason
        assert "\n" not in reason and "Traceback" not in reason, reason
    # A connection's socket is closed a moment after its answer: allow that moment, not more.
    wait_for(lambda: fd_count(watchdog.pid) <= before, 2.0, "pipes of refused calls were left open")
    assert not marker.exists(), "the function ran for a request it cannot be given"
    assert "Traceback" not in watchdog.logs()
    assert watchdog.request("GET", "/fine").status_code == 200


@pytest.mark.parametrize("mode", ["fork", "streaming", "http", "python"])
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", id="nul-in-path"),
        pytest.param(b"GET /?q=\x00 HTTP/1.1\r\nHost: x\r\n\r\n", id="nul-in-query"),
        pytest.param(b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", id="del-in-path"),
        pytest.param(b"GET /\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n", id="escape-in-path"),
    ],
)
def test_control_bytes_in_the_request_target_are_400(start_watchdog, tmp_path: Path, mode: str, raw: bytes):
    watchdog = start_mode(start_watchdog, mode, tmp_path)
    with RawConnection(watchdog.port) as conn:
        conn.send(raw)
        response = conn.read_response()
        assert response.status == 400, (response.status, response.text)
        assert response.text.strip() == "Control character in request target"
        assert conn.at_eof(timeout=2.0)


def test_env_too_large_for_the_kernel_is_431_not_500(start_watchdog):
    # One environment string may not pass 128 KiB (MAX_ARG_STRLEN): posix_spawn fails with E2BIG.
    watchdog = start_watchdog("cat", max_header_bytes="1m")
    before = fd_count(watchdog.pid)
    for _ in range(20):
        response = watchdog.request("GET", "/", headers={"X-Huge": "v" * 200_000})
        assert response.status_code == 431, response.text
        assert "environment" in response.text and "\n" not in response.text.strip()
    wait_for(lambda: fd_count(watchdog.pid) <= before, 2.0, "fds of refused calls were left open")
    fine = watchdog.request("GET", "/", headers={"X-Big": "v" * 100_000})
    assert fine.status_code == 200, fine.text


@pytest.mark.parametrize("cgi_headers", ["true", "false"])
def test_values_an_env_var_can_carry_reach_the_function(start_watchdog, cgi_headers: str):
    """CR/LF, invalid UTF-8 and Latin-1 are fine in an environment string: passed on, not refused."""
    watchdog = start_watchdog(
        "sh -c 'printf %s \"$Http_Path|$Http_Query|$Http_X_Name\"'", mode="fork", cgi_headers=cgi_headers
    )
    with RawConnection(watchdog.port) as conn:
        conn.send(b"GET /a%0d%0ab%ff?q=%00 HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200, response.text
    if cgi_headers == "true":
        assert response.body == b"/a\r\nb\xff|q=%00|caf\xc3\xa9"
    else:
        assert response.body == b"||"


def test_nul_in_the_path_is_fine_without_cgi_headers(start_watchdog):
    watchdog = start_watchdog("cat", cgi_headers="false")
    response = watchdog.request("POST", "/%00", content=b"body")
    assert (response.status_code, response.content) == (200, b"body")
