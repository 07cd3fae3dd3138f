"""Hostile clients against a real daemon (``faasd up`` from the zipapp, local backend, 127.0.0.1).

Each test is a reproduction from issue 11, section 3, run against the daemon's own HTTP server:
huge and deeply nested JSON, answers given before the request body came (keep-alive connections
that hung for good), slow clients (slow heads, slow bodies, idle keep-alives, too many connections),
a function flooding its log, and NUL/CRLF/over-long values in names, paths, queries and headers.
After each, the daemon must be healthy, its memory and file descriptors bounded, and other clients
served as fast as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import Daemon, MakeCli, StartDaemon, basic_auth
from tests.e2e.test_daemon_api import _archive, _running
from tests.helpers import RawConnection, free_port, http_request, rss_bytes, scaled, wait_for

MiB = 1024 * 1024
AUTH = {"Authorization": basic_auth()}
ALEXA = {
    "session": {"sessionId": "s-1", "application": {"applicationId": "app-1"}},
    "request": {"type": "IntentRequest", "intent": {"name": "echo"}},
}


def _port(daemon: Daemon) -> int:
    return int(daemon.url.rsplit(":", 1)[1])


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _server_sockets(port: int, state: str) -> int:
    """Sockets on 127.0.0.1:``port`` (the daemon's side) in TCP ``state`` (``/proc/net/tcp`` hex code)."""
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
                count += 1
    return count


CLOSE_WAIT = "08"


def _wait_fds(daemon: Daemon, before: int, slack: int = 4) -> None:
    """Wait until the daemon holds no more file descriptors than ``before`` (+ ``slack``: pool, probes)."""
    wait_for(lambda: _open_fds(daemon.pid) <= before + slack, 10, lambda: f"fds {before} -> {_open_fds(daemon.pid)}")


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# What a p99 may grow by whatever its size: a few scheduler time slices on a shared 2-core machine, where the
# slow clients' own process competes with the daemon for the cores. A /healthz p99 of 2.7 ms became 6.4 ms in one
# CI run while 300 slow connections were held; a bare 2x of a few milliseconds cannot tell that from a daemon
# that slows down, and 5 ms can (a daemon blocked by slow clients adds seconds: their timeouts).
P99_SLACK_SECONDS = 0.005


def _held(before: float, during: float) -> bool:
    """True when a p99 under attack stayed within 2x of the quiet one (or within one scheduler slice of it)."""
    return during <= max(2 * before, before + P99_SLACK_SECONDS)


def _timed(call: Callable[[], httpx.Response], count: int) -> list[float]:
    """``count`` calls in a row: their latencies (each must answer 200)."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = call()
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return latencies


# -- 1. JSON bodies: capped, bounded parse, 400 on too deep ------------------------------------------


def test_huge_and_deep_json_bodies_are_refused_and_the_daemon_stays_small_and_responsive(
    start_daemon: StartDaemon,
) -> None:
    """8 MiB Alexa bodies once took the daemon from 51 MB to 273 MB RSS and stalled /healthz; 100k nested
    arrays were a RecursionError (500 with a traceback), on POST / and on /system/functions alike."""
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    port = _port(daemon)
    huge = json.dumps({**ALEXA, "padding": "x" * (8 * MiB)}).encode()
    deep = b'{"sessionId": "s", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    deep_array = b"[" * 100_000 + b"]" * 100_000
    with daemon.client() as client:
        client.get("/healthz")
        baseline_rss = rss_bytes(daemon.pid)
        # A real Alexa request still routes.
        assert client.post("/", json=ALEXA).status_code == 200
    stop = threading.Event()
    statuses: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def hammer(body: bytes, what: str) -> None:
        try:
            while not stop.is_set():
                with RawConnection(port, timeout=30) as connection:
                    connection.send(http_request("POST", "/", body, {"Content-Type": "application/json"}))
                    statuses.append((what, connection.read_response().status))
        except BaseException as exc:  # recorded: a reset or a hang is a failure of the test
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(huge, "huge")) for _ in range(4)]
    threads.append(threading.Thread(target=hammer, args=(deep, "deep")))
    for thread in threads:
        thread.start()
    try:
        health = []
        peak_rss = baseline_rss
        with daemon.client(auth=False) as client:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                health.append(time.perf_counter() - started)
                peak_rss = max(peak_rss, rss_bytes(daemon.pid))
                time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert {status for what, status in statuses if what == "huge"} == {413}, statuses[:20]
    assert {status for what, status in statuses if what == "deep"} == {400}, statuses[:20]
    assert len(statuses) >= 10, statuses
    growth = peak_rss - baseline_rss
    assert growth < 48 * MiB, f"RSS grew by {growth / MiB:.0f} MiB while huge bodies arrived"
    assert max(health) < scaled(0.5), f"/healthz took up to {max(health) * 1000:.0f} ms while huge bodies arrived"
    # Every JSON route of the management API: too deep is a 400 naming the problem, never a 500.
    with daemon.client() as client:
        for method, path in [
            ("POST", "/system/functions"),
            ("PUT", "/system/functions"),
            ("DELETE", "/system/functions"),
            ("POST", "/system/secrets"),
            ("PUT", "/system/secrets"),
            ("DELETE", "/system/secrets"),
            ("POST", "/system/scale-function/echo"),
        ]:
            for body in (deep, deep_array):
                answer = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
                assert answer.status_code == 400, (method, path, answer.status_code, answer.text[:300])
                assert "nested" in answer.text and answer.text.count("\n") == 1, answer.text[:300]
        # Non-deploy JSON bodies are capped at max_json_size (1 MiB by default) ...
        big_secret = {"name": "big", "value": "x" * (2 * MiB)}
        answer = client.post("/system/secrets", json=big_secret)
        assert answer.status_code == 413 and "1048576" in answer.text, answer.text
        answer = client.post(
            "/system/scale-function/echo",
            content=b" " * (2 * MiB) + b'{"replicas": 1}',
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 413, answer.text
        # ... a deploy may carry its code (handlerArchive) up to max_body_size.
        padded = {"service": "padded", "envProcess": "cat", "annotations": {"pad": "x" * (2 * MiB)}}
        assert client.post("/system/functions", json=padded).status_code == 202
        assert client.get("/healthz").status_code == 200
        assert client.post("/function/echo", content=b"still here").text == "still here"
    assert "Traceback" not in daemon.logs()


# -- 2. answered before the body came: no hang, no leaked socket -------------------------------------


def test_keep_alive_connections_answered_before_their_body_never_hang_or_leak(start_daemon: StartDaemon) -> None:
    """401/404/405 before the request body arrived, then the body and another request on the same
    connection: that request hung for good and the socket stayed in CLOSE-WAIT until the daemon exited."""
    daemon = start_daemon(FAASD_KEEP_ALIVE_TIMEOUT="2s")
    port = _port(daemon)
    with daemon.client() as client:
        client.get("/healthz")
    daemon.wait_started()
    fds_before = _open_fds(daemon.pid)
    body = b'{"service": "x", "envProcess": "cat"}'
    heads = {
        401: http_request("POST", "/system/functions", headers={"Content-Length": str(len(body))}),
        404: http_request("POST", "/system/nothing", headers={**AUTH, "Content-Length": str(len(body))}),
        405: http_request("PATCH", "/system/functions", headers={**AUTH, "Content-Length": str(len(body))}),
    }
    connections: list[tuple[int, socket.socket]] = []
    for index in range(300):
        status = (401, 404, 405)[index % 3]
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(heads[status])  # The head only: the body comes later.
        connections.append((status, sock))
    for status, sock in connections:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, f"closed before answering {status}"
            head += chunk
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head[:200]
    time.sleep(0.2)  # The body comes after the answer.
    for _, sock in connections:
        sock.sendall(body)
    time.sleep(0.2)
    for _, sock in connections:
        with contextlib.suppress(OSError):  # Closed by the daemon already: as good as an answer.
            sock.sendall(http_request("GET", "/healthz"))
    # The next request on each connection is answered, or the connection is closed: none hangs.
    pending = {sock.fileno(): sock for _, sock in connections}
    received = {fileno: b"" for fileno in pending}
    deadline = time.monotonic() + scaled(5)
    hung = set(pending)
    while hung and time.monotonic() < deadline:
        readable, _, _ = select.select([pending[fileno] for fileno in hung], [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            received[sock.fileno()] += data
            if not data or b"HTTP/1.1 200" in received[sock.fileno()]:
                hung.discard(sock.fileno())
    assert not hung, f"{len(hung)} of 300 connections neither answered nor closed: {list(received.values())[:3]}"
    for _, sock in connections:
        sock.close()
    # No socket of the daemon is left in CLOSE-WAIT past the keep-alive timeout, no fd leaked.
    wait_for(
        lambda: _server_sockets(port, CLOSE_WAIT) == 0, 5, lambda: f"{_server_sockets(port, CLOSE_WAIT)} in CLOSE-WAIT"
    )
    _wait_fds(daemon, fds_before)
    with daemon.client() as client:
        assert client.get("/system/functions").status_code == 200
    assert "connection failed" not in daemon.logs()


def test_a_call_refused_before_its_large_body_was_read_ends_and_its_connection_closes(
    start_daemon: StartDaemon,
) -> None:
    """A call held for a function that never becomes ready, with a body larger than the gateway's receive
    queue: the 503 came, but the call's task then hung for good in its last send() (hypercorn put the
    disconnect into the queue it had filled), so the connection never closed and SIGTERM waited for it."""
    daemon = start_daemon(FAASD_READY_TIMEOUT="1s")
    nothing_there = free_port()
    daemon.deploy(
        "neverready",
        "sleep 1000",
        envVars={"mode": "http", "upstream_url": f"http://127.0.0.1:{nothing_there}"},
        wait=False,
    )
    body = b"x" * (3 * MiB)
    with RawConnection(_port(daemon), timeout=10) as connection:
        connection.send(http_request("POST", "/function/neverready", headers={"Content-Length": str(len(body))}))

        def send_body() -> None:
            with contextlib.suppress(OSError):  # The daemon may close once its lingering ends.
                connection.sock.sendall(body)

        sender = threading.Thread(target=send_body)
        sender.start()
        answer = connection.read_response()
        assert answer.status == 503 and answer.header("Connection") == "close", answer
        started = time.monotonic()
        assert connection.at_eof(timeout=scaled(10)), "the connection stayed open after the answer"
        assert time.monotonic() - started < scaled(5)
        sender.join(10)
    stopping = time.monotonic()
    assert daemon.stop() == 0
    took = time.monotonic() - stopping
    assert took < scaled(5), f"shutdown waited for a call that had ended:\n{daemon.logs()[-4000:]}"
    assert "connection failed" not in daemon.logs()


# -- 3. slow clients: header/read/keep-alive timeouts, a connection limit ---------------------------


SLOW_CLIENTS = Path(__file__).parent / "fixtures" / "slow_clients.py"


@pytest.mark.slow
def test_slowloris_leaves_other_clients_fast_and_slow_connections_are_closed(
    start_daemon: StartDaemon, pyz_python: str
) -> None:
    """Slow heads, slow bodies (one byte every 0.5 s), idle keep-alives and silent connections -- 300 at a
    time, each replaced when closed (``fixtures/slow_clients.py``, its own process): /healthz and invokes
    of other clients keep their p99 (within 2x of the quiet rounds, or 5 ms), and each slow connection is closed
    by its timeout (a slow body once stayed open for minutes)."""
    # The default header and read timeouts, and a keep-alive timeout as short: a measuring round fits
    # while the slow connections are held (shorter timeouts would measure the cost of reconnecting, a
    # connection flood, rather than the cost of slow clients).
    timeouts = {"head": 10.0, "body": 10.0, "idle": 10.0, "silent": 10.0}
    daemon = start_daemon(FAASD_KEEP_ALIVE_TIMEOUT="10s")
    daemon.deploy("echo", "cat")
    daemon.wait_started()
    port = _port(daemon)
    fds_before = _open_fds(daemon.pid)

    quiet: dict[str, list[float]] = {"healthz": [], "invoke": []}
    attacked: dict[str, list[float]] = {"healthz": [], "invoke": []}

    def measure(into: dict[str, list[float]]) -> None:
        with daemon.client(auth=False) as client:
            _timed(lambda: client.get("/healthz"), 5)  # a warm connection
            into["healthz"] += _timed(lambda: client.get("/healthz"), 75)
            into["invoke"] += _timed(lambda: client.post("/function/echo", content=b"x"), 75)

    slow = subprocess.Popen(
        [pyz_python, str(SLOW_CLIENTS), str(port), "75", "0.5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert slow.stdin is not None and slow.stdout is not None

    def command(line: str, answer: str) -> None:
        slow.stdin.write(line + "\n")
        slow.stdin.flush()
        assert slow.stdout.readline() == answer + "\n"

    try:
        # Quiet and attacked rounds interleaved, so both see the same machine (a shared VM drifts).
        for _ in range(6):
            measure(quiet)
            command("start", "ready")
            measure(attacked)
            command("pause", "paused")
        command("start", "ready")
        time.sleep(12)  # Each slow client is closed by its timeout (and replaced).
        report_line, _ = slow.communicate("", timeout=scaled(30))
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    assert slow.returncode == 0, report_line
    report = json.loads(report_line)
    health_before, health_during = _p99(quiet["healthz"]), _p99(attacked["healthz"])
    invoke_before, invoke_during = _p99(quiet["invoke"]), _p99(attacked["invoke"])
    print(
        f"p99 quiet/attacked: healthz {health_before * 1000:.1f}/{health_during * 1000:.1f} ms, "
        f"invoke {invoke_before * 1000:.1f}/{invoke_during * 1000:.1f} ms; "
        + ", ".join(
            f"{kind}: {len(r['closed'])} closed, longest {max(r['closed'] + r['open']):.1f}s"
            for kind, r in report.items()
        )
    )
    # Each kind was closed by its own timeout (plus scheduling slack), never held open.
    for kind, limit in timeouts.items():
        lifetimes = report[kind]["closed"] + report[kind]["open"]
        assert report[kind]["closed"] and max(lifetimes) < limit + scaled(1.5), (kind, sorted(lifetimes)[-5:])
    # A timed-out head is answered 408 (unless the client's next byte crossed our close: a reset).
    assert "HTTP/1.1 408" in report["head"]["replies"], report["head"]
    assert set(report["head"]["replies"]) <= {"HTTP/1.1 408", ""}, report["head"]
    assert report["silent"]["replies"] == [""], report["silent"]
    assert "connection failed" not in daemon.logs()
    assert _held(health_before, health_during), (health_before, health_during)
    assert _held(invoke_before, invoke_during), (invoke_before, invoke_during)
    _wait_fds(daemon, fds_before)


def test_a_client_that_never_reads_its_answer_is_cut_off_after_write_timeout(start_daemon: StartDaemon) -> None:
    """A client that asks for a large answer and never reads it held its connection (and the call, and the
    replica's process) for good: the daemon's writes waited with no deadline."""
    daemon = start_daemon(FAASD_WRITE_TIMEOUT="2s")
    daemon.deploy("big", "head -c 200000000 /dev/zero", envVars={"mode": "streaming", "exec_timeout": "120s"})
    [replica] = daemon.replicas()
    with daemon.client() as client:
        client.get("/healthz")
    daemon.wait_started()
    fds_before = _open_fds(daemon.pid)
    sock = socket.create_connection(("127.0.0.1", _port(daemon)), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        sock.sendall(http_request("GET", "/function/big"))
        # The call is in flight (its process runs: the daemon's count of fds says nothing here, as the
        # call may go out on a connection made ahead); its answer fills the socket buffers and the
        # daemon's writes stall.
        wait_for(lambda: _running(replica, "head -c"), scaled(10), "the call to reach the function")
        # Within write_timeout (plus slack) the daemon gives up on the client, the call and the replica's
        # connection: the function's process is stopped, and the file descriptors are back where they were.
        started = time.monotonic()
        wait_for(lambda: not _running(replica, "head -c"), scaled(10), "the call to be given up")
        _wait_fds(daemon, fds_before, slack=1)
        assert time.monotonic() - started < scaled(6)
    finally:
        sock.close()
    with daemon.client(auth=False) as client:
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
    # Counted as a client that went away (499), not as the function's 200 nor as a gateway failure.
    assert 'gateway_function_invocation_total{code="499",function_name="big"} 1.0' in metrics, metrics[-2000:]
    assert "connection failed" not in daemon.logs()


def test_connections_over_the_limit_get_503_and_the_fd_limit_is_raised(
    start_daemon: StartDaemon, tmp_path, pyz_python: str
) -> None:
    """max_connections bounds the open connections (more get a one-line 503 and are closed); the daemon
    raises its soft RLIMIT_NOFILE to the hard limit, and lowers max_connections to what its fds allow."""
    wrapper = tmp_path / "python-low-nofile"
    wrapper.write_text(f'#!/bin/sh\nulimit -Sn 256\nexec {pyz_python} "$@"\n')
    wrapper.chmod(0o755)
    daemon = start_daemon(python=str(wrapper), FAASD_MAX_CONNECTIONS="40")
    limits = Path(f"/proc/{daemon.pid}/limits").read_text()
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    soft, hard = line.split()[3:5]
    assert soft == hard, line
    port = _port(daemon)
    fds_before = _open_fds(daemon.pid)
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
    try:
        wait_for(lambda: _open_fds(daemon.pid) >= fds_before + 40, scaled(10), "the daemon to accept all 40")
        with RawConnection(port) as extra:
            answer = extra.read_response()
            assert answer.status == 503 and "connections" in answer.text, answer
            assert extra.at_eof()
        for sock in held[:10]:
            sock.close()
        wait_for(lambda: _server_sockets(port, "01") <= 30, 5, "the daemon to see 10 connections closed")
        with daemon.client(auth=False) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        for sock in held:
            sock.close()
    # A hard limit too low for max_connections: lowered, and the log says why.
    tight = tmp_path / "python-tight-nofile"
    tight.write_text(f'#!/bin/sh\nulimit -n 400\nexec {pyz_python} "$@"\n')
    tight.chmod(0o755)
    daemon = start_daemon(python=str(tight))
    assert "max_connections lowered" in daemon.logs(), daemon.logs()[-2000:]


# -- 4. a function flooding its log --------------------------------------------------------------------


@pytest.mark.slow
def test_a_function_flooding_its_log_keeps_the_daemon_small(start_daemon: StartDaemon, faasd_cli: MakeCli) -> None:
    """The log ring was bounded by lines (10,000 x up to 16 KiB = 160 MiB per function): a function
    writing ~100 MB of long lines (they reach the daemon through the watchdog's log) grew it by ~80 MiB;
    now it costs a few MiB, and ``faasd logs`` still works."""
    daemon = start_daemon()
    with daemon.client() as client:
        client.get("/healthz")
    baseline = rss_bytes(daemon.pid)
    upstream = free_port()
    flood = (
        "import sys, http.server\n"
        "line = 'x' * 16383 + '\\n'\n"
        "for n in range(6000):\n"
        "    (sys.stdout if n % 2 else sys.stderr).write(line)\n"
        "sys.stdout.write('flood done\\n'); sys.stdout.flush(); sys.stderr.flush()\n"
        f"http.server.HTTPServer(('127.0.0.1', {upstream}), http.server.BaseHTTPRequestHandler).serve_forever()\n"
    )
    daemon.deploy(
        "flood",
        "python3 -u flood.py",  # In the function's own directory: a sandboxed function sees nothing else.
        envVars={"mode": "http", "upstream_url": f"http://127.0.0.1:{upstream}"},
        handlerArchive=_archive({"flood.py": flood.encode()}),
        wait=False,
    )
    cli = faasd_cli(daemon)

    def flooded() -> bool:
        result = cli.run("logs", "flood", "--tail", "50")
        return result.code == 0 and "flood done" in result.out

    wait_for(flooded, 120, "the flood to reach the log", interval=0.5)
    growth = rss_bytes(daemon.pid) - baseline
    assert growth < 40 * MiB, f"the daemon grew by {growth / MiB:.0f} MiB holding one function's log"
    lines = cli.run("logs", "flood").ok().out.splitlines()
    kept = sum(len(line) for line in lines)
    assert 1 * MiB < kept < 8 * MiB, f"{kept} bytes of log kept"
    with daemon.client(auth=False) as client:
        assert client.get("/healthz").status_code == 200


# -- NUL, CRLF and over-long values -------------------------------------------------------------------


def test_nul_crlf_and_over_long_values_get_a_clear_4xx(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    port = _port(daemon)
    long = "a" * 10_000
    cases: list[tuple[bytes, set[int]]] = [
        # The function name.
        (http_request("GET", "/function/echo%00"), {400}),
        (http_request("GET", "/function/ec%0d%0aho"), {400}),
        (http_request("GET", f"/function/{long}"), {400}),
        (http_request("POST", "/", headers={"X-Function": "echo%00"}), {400}),
        (http_request("POST", "/", headers={"X-Function": long}), {400}),
        (b"POST / HTTP/1.1\r\nHost: x\r\nX-Function: ec\x00ho\r\nContent-Length: 0\r\n\r\n", {400}),
        (b"POST / HTTP/1.1\r\nHost: x\r\nX-Function: echo\rInjected: 1\r\nContent-Length: 0\r\n\r\n", {400}),
        # The path and the query, as the function would see them.
        (http_request("GET", "/function/echo/%00"), {400}),
        (http_request("GET", "/function/echo/a%00b?x=1"), {400}),
        (http_request("GET", "/function/echo?q=%00"), {400}),
        (http_request("GET", "/function/echo?q=a%00"), {400}),
        (b"GET /function/echo/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
        (b"GET /function/echo/a\rb HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
        (http_request("GET", "/function/echo/" + "p" * 100_000), {414, 431}),
        (http_request("GET", "/function/echo?" + "q" * 100_000), {414, 431}),
        # Headers.
        (b"GET /function/echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", {400}),
        (b"GET /function/echo HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", {400}),
        (b"GET /function/echo HTTP/1.1\r\nHost: x\r\nX-A\x00: b\r\n\r\n", {400}),
        (http_request("GET", "/function/echo", headers={"X-Big": "b" * 100_000}), {431}),
        (http_request("GET", "/function/echo", headers={f"X-H{i}": "v" * 100 for i in range(500)}), {431}),
    ]
    for request, expected in cases:
        with RawConnection(port) as connection:
            with contextlib.suppress(OSError):  # The daemon may answer and close before reading it all.
                connection.send(request)
            answer = connection.read_response()
            assert answer.status in expected, (request[:80], answer.status, answer.text[:200])
    with daemon.client() as client:
        assert client.get("/healthz").status_code == 200
        assert client.post("/function/echo", content=b"fine").text == "fine"
        # Encoded CR/LF in a sub-path is forwarded as it came (still encoded): not an injection.
        answer = client.get("/function/echo/a%0d%0aInjected:%201")
        assert answer.status_code == 200
    assert "Traceback" not in daemon.logs()
