"""Fixtures that run real watchdog processes (``python3 dist/faasd.pyz watchdog``) on 127.0.0.1.

``start_watchdog(fprocess, **env)`` starts one, waits until ``GET /_/health`` answers 200 and returns a
:class:`Watchdog`. On teardown every watchdog still running gets SIGTERM (then SIGKILL on its process
group), and the test fails if any process it started -- a function, a grandchild -- is still alive:
each watchdog runs in its own session, so its descendants are found by session id even though every
function runs in a process group of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port, session_members, wait_for

READY_TIMEOUT_S = 10.0
"""Upper bound on start-up before a test fails (the target is ~150 ms; see test_startup_time)."""

EXIT_TIMEOUT_S = 10.0
"""How long a config-error run may take before it counts as hung."""

CLEAN_PATH = "/usr/bin:/bin"


@dataclass
class Watchdog:
    """A running watchdog process and how to reach it."""

    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    lock_path: Path
    log_path: Path
    env: dict[str, str]
    startup_s: float = 0.0
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def logs(self) -> str:
        """Everything the watchdog wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client on ``base_url`` (closed at teardown)."""
        kwargs.setdefault("timeout", 10.0)
        client = httpx.Client(base_url=self.base_url, **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    def request(self, method: str, path: str = "/", **kwargs: object) -> httpx.Response:
        """One request on a fresh connection."""
        kwargs.setdefault("timeout", 10.0)
        with httpx.Client(base_url=self.base_url) as client:
            return client.request(method, path, **kwargs)  # type: ignore[arg-type]

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit; fail (with its log) if it does not within ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"watchdog did not exit within {timeout:g}s; log:\n{self.logs()}") from None

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Scrape ``/metrics``: {(sample name, frozenset(labels)): value}."""
        response = httpx.get(self.metrics_url, timeout=5.0)
        assert response.status_code == 200, response.text
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples


StartWatchdog = Callable[..., Watchdog]


def watchdog_command(pyz_python: str, faasd_pyz: Path) -> list[str]:
    return [pyz_python, str(faasd_pyz), "watchdog"]


@pytest.fixture
def watchdog_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Build a clean child environment: PATH=/usr/bin:/bin plus the given variables (None drops one)."""

    def build(**variables: str | None) -> dict[str, str]:
        env = {"PATH": CLEAN_PATH}
        for name, value in variables.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    return build


@pytest.fixture
def run_watchdog(
    pyz_python: str, faasd_pyz: Path, tmp_path: Path
) -> Callable[[dict[str, str]], subprocess.CompletedProcess[str]]:
    """Run a watchdog that is expected to exit by itself (bad config); returns the finished process."""

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                watchdog_command(pyz_python, faasd_pyz),
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=EXIT_TIMEOUT_S,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"watchdog with env {env} did not exit within {EXIT_TIMEOUT_S}s: {exc}") from None

    return run


def _health_ok(port: int) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/_/health", timeout=1.0)
    except httpx.TransportError:
        return False
    return response.status_code == 200


@pytest.fixture
def start_watchdog(pyz_python: str, faasd_pyz: Path, tmp_path: Path) -> Iterator[StartWatchdog]:
    """Factory: ``start_watchdog(fprocess="cat", *, wait_ready=True, pass_fds=(), sandbox_spec=None, cwd=None,
    **env) -> Watchdog``.

    ``sandbox_spec``: run it as a replica is, ``faasd _sandbox SPEC watchdog`` (faasd.sandbox.enter).
    The env always has PATH=/usr/bin:/bin, port and metrics_port (free ports), bind=127.0.0.1 and
    lock_file=<tmp_path>/<n>.lock; keyword arguments add or override variables (None removes one).
    """
    started: list[Watchdog] = []
    counter = iter(range(1_000_000))

    def start(
        fprocess: str | None = "cat",
        *,
        wait_ready: bool = True,
        pass_fds: Sequence[int] = (),
        sandbox_spec: str | None = None,
        cwd: Path | None = None,
        **variables: str | None,
    ) -> Watchdog:
        command = watchdog_command(pyz_python, faasd_pyz)
        if sandbox_spec is not None:
            command[-1:-1] = ["_sandbox", sandbox_spec]
        for attempt in range(3):
            n = next(counter)
            port, metrics_port = free_port(), free_port()
            while metrics_port == port:
                metrics_port = free_port()
            env = {
                "PATH": CLEAN_PATH,
                "port": str(port),
                "metrics_port": str(metrics_port),
                "bind": "127.0.0.1",
                "lock_file": str(tmp_path / f"watchdog{n}.lock"),
            }
            if fprocess is not None:
                env["fprocess"] = fprocess
            for name, value in variables.items():
                if value is None:
                    env.pop(name, None)
                else:
                    env[name] = value
            log_path = tmp_path / f"watchdog{n}.log"
            t0 = time.monotonic()
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    command,
                    env=env,
                    cwd=cwd or tmp_path,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=pass_fds,
                )
            watchdog = Watchdog(
                proc=proc,
                port=int(env.get("port", port)),
                metrics_port=int(env.get("metrics_port", metrics_port)),
                lock_path=Path(env.get("lock_file", "/tmp/.lock")),
                log_path=log_path,
                env=env,
            )
            started.append(watchdog)
            if not wait_ready:
                return watchdog
            deadline = t0 + READY_TIMEOUT_S
            while True:
                if _health_ok(watchdog.port):
                    watchdog.startup_s = time.monotonic() - t0
                    return watchdog
                if proc.poll() is not None:
                    break
                if time.monotonic() >= deadline:
                    pytest.fail(
                        f"watchdog not ready (GET /_/health != 200) within {READY_TIMEOUT_S}s; "
                        f"env={env}\nlog:\n{watchdog.logs()}"
                    )
                time.sleep(0.005)
            # Exited during start-up: a port taken between free_port() and bind is worth a retry.
            if "in use" in watchdog.logs().lower() and attempt < 2 and "port" not in variables:
                continue
            pytest.fail(
                f"watchdog exited with status {proc.returncode} before it was ready; env={env}\nlog:\n{watchdog.logs()}"
            )
        raise AssertionError("unreachable")

    yield start

    problems: list[str] = []
    for watchdog in started:
        for client in watchdog.clients:
            client.close()
        proc = watchdog.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                problems.append(f"watchdog pid {proc.pid} ignored SIGTERM for 5s; killed its process group")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5.0)
        try:
            wait_for(lambda sid=proc.pid: not session_members(sid), 3.0, "")
        except AssertionError:
            leftovers = session_members(proc.pid)
            for pid, _ in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            problems.append(f"processes left behind by watchdog pid {proc.pid}: {leftovers}")
    if problems:
        pytest.fail("; ".join(problems))


from tests.daemon_fixtures import callback_server, faasd_cli, start_daemon  # noqa: E402, F401 -- the fixtures
