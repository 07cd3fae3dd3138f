"""Task processes: real local processes, each in a session of its own, killed as Mesos kills a task.

A Mesos agent runs each task in a container and, when the task ends or is killed, destroys the whole
container. Here a task is the session its process leads (``setsid``): killing a task signals the main
process's process group with SIGTERM (a Docker task's main process alone, as ``docker stop`` does), waits
the kill grace period (``taskKillGracePeriodSeconds``, else :data:`DEFAULT_KILL_GRACE_S`), then
SIGKILLs every process still in the session; whatever is left in the
session after the main process ended on its own is SIGKILLed too (the container is gone). A process that
starts a session of its own escapes this, as it would escape no cgroup -- the one gap against Mesos.

**Adoption.** Tasks outlive the emulator process when it is killed (as Mesos tasks outlive a Marathon
failover). A restarted emulator finds them again by pid and start time (so a recycled pid is never taken
for the task) and watches them through a pidfd; their exit status is then unknown, as they are no longer
its children.

Exit messages follow Mesos: ``Command exited with status 1``, ``Command terminated with signal Killed``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

__all__ = ["DEFAULT_KILL_GRACE_S", "Exit", "TaskProcess", "kill_session", "sessions_under", "start_ticks"]

log = logging.getLogger(__name__)

DEFAULT_KILL_GRACE_S = 3.0
"""SIGTERM to SIGKILL when the app sets no ``taskKillGracePeriodSeconds`` (the Mesos executors' default)."""
_SESSION_KILL_ROUNDS = 50


@dataclass(frozen=True)
class Exit:
    """How a task process ended: its status (None when unknown: an adopted process) and Mesos' words."""

    code: int | None
    message: str

    @property
    def success(self) -> bool:
        return self.code == 0


def _stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot), or None when it is gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
                members.append(int(entry))
    return members


def kill_session(sid: int) -> None:
    """SIGKILL every live process of session ``sid`` (repeated while members fork)."""
    for _ in range(_SESSION_KILL_ROUNDS):
        members = _session_members(sid)
        if not members:
            return
        for pid in members:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    log.warning("session %d still has processes after %d kill rounds", sid, _SESSION_KILL_ROUNDS)


def sessions_under(directory: Path) -> set[int]:
    """Sessions with a live process whose working directory is ``directory`` or below it: task processes
    started in sandboxes there, whether or not anybody still knows of them."""
    found = set()
    root = str(directory.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            fields = _stat(int(entry))
            if fields is not None and fields[0] not in (b"Z", b"X"):
                found.add(int(fields[3]))
    return found


def _exit_of(returncode: int) -> Exit:
    if returncode < 0:
        name = signal.strsignal(-returncode) or f"signal {-returncode}"
        return Exit(returncode, f"Command terminated with signal {name}")
    return Exit(returncode, f"Command exited with status {returncode}")


class TaskProcess:
    """The main process of one task (it leads its session), spawned here or adopted after a restart."""

    def __init__(self, pid: int, ticks: int, process: trio.Process | None) -> None:
        self.pid = pid
        self.start_ticks = ticks
        self._process = process
        self.exit: Exit | None = None

    def __repr__(self) -> str:
        kind = "child" if self._process is not None else "adopted"
        return f"<TaskProcess pid={self.pid} {kind} exit={self.exit}>"

    @classmethod
    async def spawn(cls, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> TaskProcess:
        """Start ``argv`` in a new session in ``cwd``, stdout/stderr to ``cwd/stdout`` and ``cwd/stderr``
        (the Mesos sandbox layout).

        Raises:
            OSError: the program cannot be started.
        """
        with open(cwd / "stdout", "ab") as out, open(cwd / "stderr", "ab") as err:
            process = await trio.lowlevel.open_process(
                list(argv),
                env=dict(env),
                cwd=str(cwd),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        ticks = start_ticks(process.pid)
        return cls(process.pid, ticks if ticks is not None else -1, process)

    @classmethod
    def adopt(cls, pid: int, ticks: int) -> TaskProcess | None:
        """The process ``pid`` if it still runs and started at ``ticks`` (so it is the same process)."""
        if start_ticks(pid) != ticks:
            return None
        return cls(pid, ticks, None)

    async def wait(self) -> Exit:
        """Wait for the main process to end; then SIGKILL what is left of its session."""
        if self.exit is None:
            if self._process is not None:
                self.exit = _exit_of(await self._process.wait())
            else:
                await self._wait_adopted()
                self.exit = Exit(None, "Command ended (exit status unknown: task adopted after a restart)")
            kill_session(self.pid)
        return self.exit

    async def _wait_adopted(self) -> None:
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:
            return
        try:
            if start_ticks(self.pid) == self.start_ticks:
                await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)

    def terminate(self, *, group: bool = True) -> None:
        """SIGTERM the main process's process group (a command task), or with ``group=False`` the main
        process alone: a Docker container's is stopped with ``docker stop``, which signals its PID 1
        only, so what that process started in groups of its own is left for it to finish."""
        if self.exit is None and start_ticks(self.pid) == self.start_ticks:
            with contextlib.suppress(OSError):
                if group:
                    os.killpg(self.pid, signal.SIGTERM)
                else:
                    os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL every process of the task's session."""
        if self.exit is None and start_ticks(self.pid) == self.start_ticks:
            kill_session(self.pid)

    async def stop(self, grace_s: float) -> Exit:
        """SIGTERM, up to ``grace_s`` seconds to exit, then SIGKILL; returns how it ended."""
        self.terminate()
        with trio.move_on_after(grace_s):
            return await self.wait()
        self.kill()
        return await self.wait()
