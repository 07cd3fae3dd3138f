"""Fixtures that run a real daemon: ``python3 dist/faasd.pyz up`` on 127.0.0.1 with a fresh state dir.

``start_daemon(**env)`` starts one (port 0: the daemon picks a free port and logs it in its ``ready``
line), waits for that line and returns a :class:`Daemon`. Teardown sends SIGTERM, waits for a clean
exit (status 0), and fails the test if any replica process the daemon started is still alive.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import process_alive, wait_for

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
PASSWORD = "test-password-0123456789"
_READY = re.compile(r"event=ready .*url=(http://\S+)")


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
    seen_children: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, *, auth: bool = True, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=("admin", PASSWORD) if auth else None, timeout=timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def replicas(self) -> list[int]:
        pids = children(self.pid)
        self.seen_children.update(pids)
        return pids

    def deploy(self, name: str, fprocess: str, *, wait: bool = True, **fields: Any) -> None:
        with self.client() as client:
            response = client.post("/system/functions", json={"service": name, "envProcess": fprocess, **fields})
            assert response.status_code == 202, response.text
        if wait:
            self.wait_available(name, 1, exact=False)

    def status(self, name: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/system/function/{name}")
            assert response.status_code == 200, response.text
            return response.json()

    def wait_available(self, name: str, count: int, timeout: float = 15.0, *, exact: bool = True) -> dict[str, Any]:
        """Wait until ``name`` has ``count`` ready replicas (at least ``count`` when not ``exact``)."""
        result: dict[str, Any] = {}

        def reached() -> bool:
            result.update(self.status(name))
            available = result.get("availableReplicas", 0)
            return available == count if exact else available >= count

        wait_for(reached, timeout, lambda: f"{name} to have {count} available replicas (last: {result})")
        self.replicas()
        return result

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        self.replicas()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"daemon did not exit within {timeout}s of signal {sig}:\n{self.logs()[-3000:]}")


StartDaemon = Callable[..., Daemon]


@pytest.fixture
def start_daemon(pyz_python: str, faasd_pyz: Path, tmp_path: Path) -> Iterator[StartDaemon]:
    """Factory: ``start_daemon(state_dir=None, args=(), python=None, **env)`` -> a ready :class:`Daemon`."""
    daemons: list[Daemon] = []
    counter = iter(range(1000))

    def start(
        state_dir: Path | None = None, args: tuple[str, ...] = (), python: str | None = None, **env: str
    ) -> Daemon:
        number = next(counter)
        state = state_dir or tmp_path / f"state{number}"
        log_path = tmp_path / f"daemon{number}.log"
        full_env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "FAASD_PASSWORD": PASSWORD,
            **env,
        }
        command = [python or pyz_python, str(faasd_pyz), "up", "--port", "0", "--state-dir", str(state), *args]
        started = time.monotonic()
        log = open(log_path, "ab")  # noqa: SIM115 -- owned by the process for its lifetime
        proc = subprocess.Popen(command, env=full_env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        url: list[str] = []

        def ready() -> bool:
            match = _READY.search(log_path.read_text(errors="replace"))
            if match:
                url.append(match.group(1))
                return True
            if proc.poll() is not None:
                pytest.fail(f"daemon exited with {proc.returncode} before ready:\n{log_path.read_text()[-3000:]}")
            return False

        wait_for(ready, READY_TIMEOUT_S, "the daemon's ready line")
        daemon = Daemon(proc, url[0], state, log_path, full_env, command, time.monotonic() - started)
        daemons.append(daemon)
        return daemon

    yield start
    leftovers = []
    for daemon in daemons:
        if daemon.proc.poll() is None:
            code = daemon.stop()
            assert code == 0, f"daemon exited with {code} on SIGTERM:\n{daemon.logs()[-3000:]}"
        for pid in daemon.seen_children:
            if not wait_for_gone(pid):
                leftovers.append(pid)
                os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"replica processes outlived their daemon: {leftovers}"


def wait_for_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.02)
    return False


def basic_auth(password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
