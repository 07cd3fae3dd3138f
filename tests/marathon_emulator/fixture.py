"""Test fixtures: a Marathon emulator per test, as a subprocess that can be killed and restarted mid-run.

``marathon_emulator(**options)`` (the factory fixture; conftest.py re-exports it) starts
``python -m tests.marathon_emulator`` on 127.0.0.1 with a state file under the test's ``tmp_path``,
waits for its ready line and returns a :class:`MarathonEmulator`:

* ``emulator.url`` / ``emulator.client()`` -- an httpx client (with the configured credentials);
* ``emulator.crash()`` -- SIGKILL, as a Marathon leader dying: its tasks keep running (until a restarted
  emulator adopts them, or the teardown kills them);
* ``emulator.stop()`` -- SIGTERM: its tasks are stopped, it must exit 0;
* ``marathon_emulator.restart(emulator)`` -- a new emulator on the same state file and port (adopting
  the tasks of a crashed one, starting those of a stopped one anew).

Options: ``launch_delay`` (seconds a task stays staging), ``username``/``password``, ``token``,
``agent_host`` (the agent's address, where tasks listen: ``127.0.0.2`` puts them on "another host"),
``args`` (more command-line arguments), ``port``.

Teardown stops every emulator still running (exit status 0 required) and fails the test if any process
is left behind: while the fixture is active the test process is a child subreaper, so the tasks of a
crashed emulator that nobody adopted are reparented to it and found (tests/process_tree.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import scaled, wait_for
from tests.marathon_emulator.processes import kill_session, start_ticks
from tests.process_tree import Orphans, subreaper

__all__ = ["OTHER_HOST", "MarathonEmulator", "StartEmulator", "emulator_factory", "marathon_emulator"]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
LEFTOVER_TIMEOUT_S = 10.0
OTHER_HOST = "127.0.0.2"
"""An agent address that is not the API's (``agent_host=OTHER_HOST``): its tasks listen only there, so a
client that calls 127.0.0.1 instead of a task's ``host`` -- as it would a replica on another machine --
reaches nothing."""
LIFETIME_S = 900.0
"""Bound on one emulator's life, should a test leave one behind despite the teardown."""
_READY = re.compile(r"marathon-emulator ready url=(http://\S+) pid=(\d+)")


@dataclass
class MarathonEmulator:
    """One running emulator process."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    state_file: Path
    log_path: Path
    options: dict[str, Any]
    clients: list[httpx.Client] = field(default_factory=list)
    crashed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def auth(self) -> dict[str, Any]:
        """httpx keyword arguments carrying the configured credentials (basic auth first)."""
        if self.options.get("username") is not None:
            return {"auth": (self.options["username"], self.options["password"])}
        if self.options.get("token") is not None:
            return {"headers": {"Authorization": f"token={self.options['token']}"}}
        return {}

    def client(self, *, authenticated: bool = True, timeout: float = 10.0) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=scaled(timeout), **(self.auth() if authenticated else {}))
        self.clients.append(client)
        return client

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def deployments(self) -> list[dict[str, Any]]:
        with httpx.Client(base_url=self.url, timeout=scaled(10), **self.auth()) as client:
            response = client.get("/v2/deployments")
        assert response.status_code == 200, response.text
        deployments: list[dict[str, Any]] = response.json()
        return deployments

    def wait_deployed(self, timeout: float = 15.0) -> None:
        """Wait until no deployment runs."""
        wait_for(lambda: not self.deployments(), timeout, lambda: f"deployments to finish: {self.deployments()}")

    def tasks(self, app_id: str) -> list[dict[str, Any]]:
        with httpx.Client(base_url=self.url, timeout=scaled(10), **self.auth()) as client:
            response = client.get(f"/v2/apps{app_id}/tasks")
        assert response.status_code == 200, response.text
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    def wait_tasks(
        self, app_id: str, count: int, timeout: float = 15.0, *, healthy: bool = False
    ) -> list[dict[str, Any]]:
        """Wait until ``app_id`` has exactly ``count`` tasks, all TASK_RUNNING (and, with ``healthy``,
        every health check result alive); returns them."""
        found: list[list[dict[str, Any]]] = [[]]

        def reached() -> bool:
            tasks = found[0] = self.tasks(app_id)
            ok = [t for t in tasks if t["state"] == "TASK_RUNNING"]
            if healthy:
                ok = [t for t in ok if t.get("healthCheckResults") and all(h["alive"] for h in t["healthCheckResults"])]
            return len(tasks) == count and len(ok) == count

        wait_for(reached, timeout, lambda: f"{count} running tasks of {app_id}; now {found[0]}", interval=0.02)
        return found[0]

    def crash(self) -> None:
        """SIGKILL: nothing is cleaned up, the tasks keep running (a leader failover)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.crashed = True

    def task_pids(self) -> list[tuple[int, int]]:
        """(pid, start ticks) of the tasks in the state file (those a crash left running)."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return []
        return [
            (task["pid"], task["startTicks"])
            for task in state.get("tasks", [])
            if task.get("pid") is not None and task.get("startTicks") is not None
        ]

    def stop(self) -> int:
        """SIGTERM and wait: the emulator kills its tasks and exits (0 expected)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(scaled(STOP_TIMEOUT_S))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the emulator did not exit within {STOP_TIMEOUT_S}s of SIGTERM:\n{self.logs()[-3000:]}")

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()


class StartEmulator:
    """The factory: ``start(**options)`` and ``restart(emulator)``."""

    def __init__(self, tmp_path: Path, python: str, pyz: Path) -> None:
        self.tmp_path = tmp_path
        self.python = python
        self.pyz = pyz
        self.started: list[MarathonEmulator] = []

    def __call__(
        self,
        *,
        state_file: Path | None = None,
        port: int = 0,
        launch_delay: float = 0.0,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        agent_host: str | None = None,
        args: tuple[str, ...] = (),
    ) -> MarathonEmulator:
        number = len(self.started)
        state = state_file or self.tmp_path / f"marathon-state{number}.json"
        work = state.with_name(state.name + "-work")  # Kept across restarts, as the state file is.
        log_path = self.tmp_path / f"marathon{number}.log"
        options: dict[str, Any] = {
            "launch_delay": launch_delay,
            "username": username,
            "password": password,
            "token": token,
            "agent_host": agent_host,
            "args": args,
        }
        command = [sys.executable, "-m", "tests.marathon_emulator", "--port", str(port), "--state", str(state)]
        command += ["--work-dir", str(work), "--launch-delay", str(launch_delay), "--lifetime", str(LIFETIME_S)]
        command += ["--log-level", "info"]
        if username is not None:
            command += ["--username", username, "--password", password or ""]
        if token is not None:
            command += ["--token", token]
        if agent_host is not None:
            command += ["--agent-host", agent_host]
        command += ["--python", self.python, "--pyz", str(self.pyz), *args]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        found: list[re.Match[str]] = []

        def ready() -> bool:
            match = _READY.search(log_path.read_text(errors="replace"))
            if match:
                found.append(match)
                return True
            if proc.poll() is not None:
                pytest.fail(f"the emulator exited with {proc.returncode} before ready:\n{log_path.read_text()[-3000:]}")
            return False

        wait_for(ready, READY_TIMEOUT_S, "the emulator's ready line", interval=0.02)
        url = found[0].group(1)
        emulator = MarathonEmulator(proc, url, int(url.rsplit(":", 1)[1]), state, log_path, options)
        self.started.append(emulator)
        return emulator

    def restart(self, emulator: MarathonEmulator, *, crash: bool = False) -> MarathonEmulator:
        """Stop (or, with ``crash``, SIGKILL) ``emulator`` if it runs, and start a new one on its state file
        and port with the same options."""
        if crash:
            emulator.crash()
        elif emulator.proc.poll() is None:
            assert emulator.stop() == 0, emulator.logs()[-3000:]
        emulator.close_clients()
        return self(state_file=emulator.state_file, port=emulator.port, **emulator.options)


@contextlib.contextmanager
def emulator_factory(tmp_path: Path, python: str, pyz: Path) -> Iterator[StartEmulator]:
    """What :func:`marathon_emulator` yields, for a fixture of any scope; see the module docstring."""
    start = StartEmulator(tmp_path, python, pyz)
    with subreaper():
        orphans = Orphans.snapshot()
        try:
            yield start
            problems = []
            last: dict[Path, MarathonEmulator] = {}
            for emulator in start.started:
                emulator.close_clients()
                last[emulator.state_file] = emulator
                if emulator.proc.poll() is None:
                    code = emulator.stop()
                    if code != 0:
                        problems.append(f"emulator exited with {code} on SIGTERM:\n{emulator.logs()[-3000:]}")
            for emulator in last.values():
                if emulator.crashed:  # Nobody adopted its tasks: what a restart would have stopped.
                    for pid, ticks in emulator.task_pids():
                        if start_ticks(pid) == ticks:
                            kill_session(pid)
            left = orphans.wait_gone(scaled(LEFTOVER_TIMEOUT_S))
            if left:
                orphans.kill()
                lines = "\n".join(f"  pid {pid}: {what}" for pid, what in left)
                problems.append(f"processes left behind after the emulators stopped:\n{lines}")
            if problems:
                pytest.fail("\n".join(problems))
        finally:
            for emulator in start.started:
                if emulator.proc.poll() is None:
                    emulator.proc.kill()
                    emulator.proc.wait()
            orphans.kill()


@pytest.fixture
def marathon_emulator(tmp_path: Path, pyz_python: str, faasd_pyz: Path) -> Iterator[StartEmulator]:
    """Factory of emulators for one test (see the module docstring); the zipapp is built when stale."""
    with emulator_factory(tmp_path, pyz_python, faasd_pyz) as start:
        yield start
