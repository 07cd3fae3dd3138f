"""Fixtures that run a real daemon: ``python3 dist/faasd.pyz up`` on 127.0.0.1 with a fresh state dir.

``start_daemon(**env)`` starts one (port 0: the daemon picks a free port and logs it in its ``ready``
line), waits for that line and returns a :class:`Daemon`. Teardown sends SIGTERM, waits for a clean
exit (status 0), and fails the test if any process is left behind: every descendant of the daemon --
replicas in their own sessions, function processes in their own process groups, a function that
daemonized itself, the replicas of a daemon the test killed -- is found, because while the fixture is
active the test process is a child subreaper that inherits every orphan (see tests/process_tree.py).
Whatever is still alive a few seconds after the daemons stopped is listed, killed, and fails the test.

``faasd_cli(daemon, **env)`` gives a :class:`Cli` that runs ``python3 dist/faasd.pyz <command>`` as a
subprocess with ``FAASD_URL``/``FAASD_PASSWORD`` pointing at that daemon; each run returns a
:class:`CliResult` with assertions for the CLI's contract (exit 0, or one error line and no traceback).
Commands started in the background (``logs --follow``) are stopped at teardown.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faasd.sandbox import cgroups
from tests.helpers import free_port, scaled, wait_for
from tests.process_tree import Orphans, subreaper

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
LEFTOVER_TIMEOUT_S = 10.0
"""How long what a daemon started may take to exit after the daemon did (replicas watch their parent)."""
PASSWORD = "test-password-0123456789"
_READY = re.compile(r"event=ready .*url=(http://\S+)")


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (replica watchdogs of a daemon)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


@dataclass
class Daemon:
    """A running ``faasd up`` and how to talk to it."""

    proc: subprocess.Popen[bytes]
    url: str
    state_dir: Path
    log_path: Path
    env: dict[str, str]
    command: list[str]
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, *, auth: bool = True, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=("admin", PASSWORD) if auth else None, timeout=timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self) -> None:
        """Wait until the daemon's start is over: the parts started after its first answer are up -- the
        invoke edge accepts (faasd/gateway/edge.py: a thread, an epoll and a pipe of its own), the async queue
        is loaded (its database's files). Count what the daemon holds (files, threads) from then on."""
        lines = ("invoke edge accepting", "async queue loaded")
        wait_for(lambda: all(line in self.logs() for line in lines), 10, lambda: f"the log lines {lines}")

    def replicas(self) -> list[int]:
        """Pids of the daemon's replica watchdogs now: its direct children that run ``watchdog`` (not the
        snippet source checker, ``_checksource``, the daemon's other child)."""
        return [pid for pid in children(self.pid) if "watchdog" in _argv(pid)]

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of sample ``name`` with exactly ``labels`` on ``/metrics``, or None when absent."""
        with self.client(auth=False) as client:
            text = client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    def deploy(self, name: str, fprocess: str, *, wait: bool = True, **fields: Any) -> None:
        with self.client() as client:
            response = client.post("/system/functions", json={"service": name, "envProcess": fprocess, **fields})
            assert response.status_code == 202, response.text
        if wait:
            self.wait_available(name, 1, exact=False)

    def sandbox(self) -> dict[str, Any]:
        """``faasd.sandbox`` of ``/system/info`` once decided: the local backend starts after the ready
        line (faasd.providers.deferred), and says ``pending`` until then."""
        found: dict[str, Any] = {}

        password_file = self.state_dir / "password"  # A daemon started without FAASD_PASSWORD made one.
        password = password_file.read_text().strip() if password_file.exists() else self.env["FAASD_PASSWORD"]

        def decided() -> bool:
            with httpx.Client(base_url=self.url, auth=("admin", password), timeout=30.0) as client:
                found.update(client.get("/system/info").json()["faasd"]["sandbox"])
            return found.get("mode") != "pending"

        wait_for(decided, scaled(15.0), "the local backend's sandbox to be decided")
        return found

    def status(self, name: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/system/function/{name}")
            assert response.status_code == 200, response.text
            return response.json()

    def wait_available(self, name: str, count: int, timeout: float = 15.0, *, exact: bool = True) -> dict[str, Any]:
        """Wait until ``name`` has ``count`` ready replicas (at least ``count`` when not ``exact``)."""
        result: dict[str, Any] = {}

        def reached() -> bool:
            with self.client() as client:
                response = client.get(f"/system/function/{name}")
            if response.status_code == 404:  # Not deployed yet: `faasd up -f` deploys once it is ready.
                return False
            assert response.status_code == 200, response.text
            result.update(response.json())
            available = result.get("availableReplicas", 0)
            return available == count if exact else available >= count

        wait_for(reached, timeout, lambda: f"{name} to have {count} available replicas (last: {result})")
        return result

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        timeout = scaled(timeout)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"daemon did not exit within {timeout}s of signal {sig}:\n{self.logs()[-3000:]}")


StartDaemon = Callable[..., Daemon]


@pytest.fixture
def start_daemon(pyz_python: str, faasd_pyz: Path, tmp_path: Path) -> Iterator[StartDaemon]:
    """Factory: ``start_daemon(state_dir=None, args=(), python=None, port=0, wait_ready=True, **env)`` -> a
    ready :class:`Daemon`.

    ``port``: listen there instead of on a port the daemon picks (e.g. ``faasd up -f`` needs a known one).
    ``wait_ready=False``: return at once, without waiting for the ``ready`` line (then ``url`` is
    ``http://127.0.0.1:<port>``, empty with port 0).
    """
    with daemon_factory(pyz_python, faasd_pyz, tmp_path) as start:
        yield start


@contextlib.contextmanager
def daemon_factory(pyz_python: str, faasd_pyz: Path, tmp_path: Path) -> Iterator[StartDaemon]:
    """What :func:`start_daemon` yields, for a fixture of any scope (a module's shared daemon): state dirs
    and logs go under ``tmp_path``; on exit every daemon is stopped and the leak check runs."""
    daemons: list[Daemon] = []
    counter = iter(range(1000))

    def start(
        state_dir: Path | None = None,
        args: tuple[str, ...] = (),
        python: str | None = None,
        port: int = 0,
        wait_ready: bool = True,
        **env: str,
    ) -> Daemon:
        number = next(counter)
        state = state_dir or tmp_path / f"state{number}"
        log_path = tmp_path / f"daemon{number}.log"
        full_env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "FAASD_PASSWORD": PASSWORD,
            # No replica pool unless a test asks (tests/e2e/test_pool.py): these tests find a function's
            # replicas as the daemon's children that run ``watchdog``, and a pooled one runs ``_pooled``.
            "FAASD_POOL_SIZE": "0",
            **env,
        }
        command = [python or pyz_python, str(faasd_pyz), "up", "--port", str(port), "--state-dir", str(state), *args]
        started = time.monotonic()
        log = open(log_path, "ab")  # noqa: SIM115 -- owned by the process for its lifetime
        proc = subprocess.Popen(command, env=full_env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        url: list[str] = []
        if not wait_ready:
            daemon = Daemon(proc, f"http://127.0.0.1:{port}" if port else "", state, log_path, full_env, command)
            daemons.append(daemon)
            return daemon

        def ready() -> bool:
            match = _READY.search(log_path.read_text(errors="replace"))
            if match:
                url.append(match.group(1))
                return True
            if proc.poll() is not None:
                pytest.fail(f"daemon exited with {proc.returncode} before ready:\n{log_path.read_text()[-3000:]}")
            return False

        wait_for(ready, READY_TIMEOUT_S, "the daemon's ready line")  # wait_for scales the bound
        daemon = Daemon(proc, url[0], state, log_path, full_env, command, time.monotonic() - started)
        daemons.append(daemon)
        return daemon

    # From here on, every orphan below this process is reparented to it (see tests/process_tree.py).
    with subreaper():
        orphans = Orphans.snapshot()
        try:
            yield start
            problems = []
            for daemon in daemons:
                if daemon.proc.poll() is None:
                    code = daemon.stop()
                    if code != 0:
                        problems.append(f"daemon exited with {code} on SIGTERM:\n{daemon.logs()[-3000:]}")
            left = orphans.wait_gone(scaled(LEFTOVER_TIMEOUT_S))
            _sweep_cgroups(daemons)
            if left:
                orphans.kill()
                lines = "\n".join(f"  pid {pid}: {what}" for pid, what in left)
                problems.append(f"processes left behind {LEFTOVER_TIMEOUT_S:g}s after the daemon stopped:\n{lines}")
            if problems:
                pytest.fail("\n".join(problems))
        finally:
            for daemon in daemons:  # A test that failed before teardown: do not leave its daemons running.
                if daemon.proc.poll() is None:
                    daemon.proc.kill()
                    daemon.proc.wait()
            orphans.kill()


def _sweep_cgroups(daemons: list[Daemon]) -> None:
    """Remove the replica cgroups a daemon killed with SIGKILL left (docs/sandbox.md: its next start would;
    a test's state dir has none)."""
    parents = cgroups.parents_here()
    for daemon in daemons:
        for parent in parents:
            cgroups.sweep(cgroups.Hierarchy(parent, cgroups.base_name(str(daemon.state_dir)), ()))


def basic_auth(password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()


# -- the CLI as a subprocess ----------------------------------------------------------------------

CLI_TIMEOUT_S = 60.0
"""Upper bound on one CLI command (deploy and scale wait for replicas; the rest take well under 1 s)."""


@dataclass(frozen=True)
class CliResult:
    """One finished ``faasd`` command: its exit status and what it wrote."""

    args: tuple[str, ...]
    code: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def __str__(self) -> str:
        command = f"faasd {' '.join(self.args)} -> exit {self.code}"
        return f"{command}\nstdout: {self.out[-2000:]!r}\nstderr: {self.err[-2000:]!r}"

    def ok(self) -> CliResult:
        """Assert exit status 0 and no traceback; returns self."""
        assert self.code == 0, f"expected success:\n{self}"
        assert "Traceback" not in self.err, f"traceback:\n{self}"
        return self

    def json(self) -> Any:
        """stdout parsed as one JSON document."""
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"stdout is not JSON:\n{self}") from None

    def rows(self) -> list[list[str]]:
        """Non-empty stdout lines split on tabs (the piped, header-less table format)."""
        return [line.split("\t") for line in self.out.splitlines() if line]

    def fields(self) -> dict[str, str]:
        """``Name<TAB>value`` lines of stdout (describe/status when piped) as a dict."""
        return {row[0]: row[1] for row in self.rows() if len(row) == 2}

    def error_line(self) -> str:
        """Assert the CLI's error contract -- non-zero exit, exactly one non-empty line on stderr, no
        traceback -- and return that line."""
        assert self.code != 0, f"expected a failure:\n{self}"
        assert "Traceback" not in self.err, f"traceback:\n{self}"
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{self}"
        return lines[0]


class Cli:
    """Runs ``<python> faasd.pyz ARGS`` with a fixed environment (no terminal: stdout/stderr are pipes)."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, background: list[subprocess.Popen[bytes]]):
        self.command = command
        self.env = env
        self.cwd = cwd
        self._background = background

    def with_env(self, **env: str | None) -> Cli:
        """A copy with variables added, changed, or (None) removed."""
        merged = dict(self.env)
        for key, value in env.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return Cli(self.command, merged, self.cwd, self._background)

    def run(self, *args: str, stdin: bytes = b"", timeout: float = CLI_TIMEOUT_S, cwd: Path | None = None) -> CliResult:
        try:
            done = subprocess.run(
                [*self.command, *args],
                input=stdin,
                env=self.env,
                cwd=cwd or self.cwd,
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"faasd {' '.join(args)} did not finish within {timeout:g}s; stderr: {exc.stderr!r}"
            ) from None
        return CliResult(tuple(args), done.returncode, done.stdout, done.stderr)

    def start(self, *args: str, stdout: Path) -> subprocess.Popen[bytes]:
        """Start a long-running command (``logs --follow``) writing stdout to ``stdout`` and stderr to
        ``<stdout>.err``; stopped at teardown if still running."""
        with open(stdout, "wb") as out, open(f"{stdout}.err", "wb") as err:
            proc = subprocess.Popen(
                [*self.command, *args], env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        self._background.append(proc)
        return proc


MakeCli = Callable[..., Cli]


@pytest.fixture
def faasd_cli(pyz_python: str, faasd_pyz: Path, tmp_path: Path) -> Iterator[MakeCli]:
    """Factory: ``faasd_cli(daemon=None, **env)`` -> a :class:`Cli` for that daemon.

    The env: PATH=/usr/bin:/bin, HOME=<an empty dir> (so no password file is found by accident),
    FAASD_URL=<the daemon's URL>, FAASD_PASSWORD=<the daemon's> (when it was given one); keyword
    arguments add or override variables (None removes one).
    """
    background: list[subprocess.Popen[bytes]] = []
    home = tmp_path / "cli-home"
    home.mkdir(exist_ok=True)

    def make(daemon: Daemon | None = None, **env: str | None) -> Cli:
        base: dict[str, str] = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
        if daemon is not None:
            base["FAASD_URL"] = daemon.url
            if daemon.env.get("FAASD_PASSWORD"):
                base["FAASD_PASSWORD"] = daemon.env["FAASD_PASSWORD"]
        return Cli([pyz_python, str(faasd_pyz)], base, tmp_path, background).with_env(**env)

    yield make
    for proc in background:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 where nothing listens (it was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


# -- a callback receiver for async calls ----------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """One callback POST as the receiver got it (header names lower-cased)."""

    at: float
    """``time.monotonic()`` when it arrived."""
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    """The status the receiver answered (0: it closed the connection without answering)."""

    @property
    def call_id(self) -> str:
        return self.headers.get("x-call-id", "")


class CallbackServer:
    """A real HTTP server on 127.0.0.1 (a thread of the test) that records every POST it gets.

    ``fail_first(n, status)`` makes the first ``n`` attempts for each call id answer ``status`` (0: close
    the connection without an answer) -- a receiver that is down for a while.
    """

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self._lock = threading.Lock()
        self.received: list[Callback] = []
        self._failures = 0
        self._fail_status = 500
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = server_self._answer(headers.get("x-call-id", ""))
                server_self._record(Callback(time.monotonic(), self.path, headers, body, status))
                if status == 0:
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="callback-server", daemon=True)
        self._thread.start()

    def fail_first(self, attempts: int, status: int = 500) -> None:
        self._failures, self._fail_status = attempts, status

    def _answer(self, call_id: str) -> int:
        with self._lock:
            earlier = sum(1 for callback in self.received if callback.call_id == call_id)
        return self._fail_status if earlier < self._failures else 200

    def _record(self, callback: Callback) -> None:
        with self._lock:
            self.received.append(callback)

    def calls(self, call_id: str) -> list[Callback]:
        with self._lock:
            return [callback for callback in self.received if callback.call_id == call_id]

    def delivered(self) -> dict[str, int]:
        """Call id -> how many times it was answered 200."""
        counts: dict[str, int] = {}
        with self._lock:
            for callback in self.received:
                if callback.answered == 200:
                    counts[callback.call_id] = counts.get(callback.call_id, 0) + 1
        return counts

    def wait_delivered(self, call_ids: set[str], timeout: float) -> dict[str, int]:
        """Wait until every one of ``call_ids`` was delivered (answered 200) at least once."""
        wait_for(
            lambda: call_ids <= self.delivered().keys(),
            timeout,
            lambda: f"callbacks for {len(call_ids - self.delivered().keys())} of {len(call_ids)} calls",
        )
        return self.delivered()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture
def callback_server() -> Iterator[CallbackServer]:
    server = CallbackServer()
    try:
        yield server
    finally:
        server.close()
