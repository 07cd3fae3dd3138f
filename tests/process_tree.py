"""Every process a test left behind, orphans included: the daemon fixture's leak check.

A faasd daemon's descendants do not stay below it: each replica runs in a session of its own, each
function call in a process group of its own, a function may ``setsid`` and double-fork, and whatever is
still running when the daemon exits is reparented. Walking the daemon's children (or one session) at the
end therefore misses exactly the leaks worth finding. Instead, while a daemon fixture is active the test
process is a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``, as bench/_harness.py does): every
orphan in the tree below it is reparented to the test process rather than to init. A process the test
did not start itself but that is now its child is such an orphan; it and everything below it are what
was left behind.

"Started by the test" is known exactly: :func:`track_popen` (installed once per session by
tests/conftest.py) records ``(pid, start time)`` of every ``subprocess.Popen`` -- which is also what trio
and asyncio use to spawn -- so a recycled pid is never mistaken for one of ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Orphans", "ProcInfo", "orphans", "orphans_to_init", "proc_table", "subreaper", "track_popen"]

_PR_SET_CHILD_SUBREAPER = 36
_started: set[tuple[int, int]] = set()
"""(pid, start time) of every process this test session started through ``subprocess.Popen``."""
_subreaper_users = 0
_lock = threading.Lock()


@dataclass(frozen=True)
class ProcInfo:
    """One line of ``/proc/<pid>/stat``: what the leak check needs."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start: int  # clock ticks after boot: with the pid, identifies a process for good

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def _stat(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    # pid (comm) state ppid pgrp session ... starttime is field 22 -- comm may hold spaces and ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return ProcInfo(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def proc_table() -> dict[int, ProcInfo]:
    """Every process on the machine, from one pass over /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            table[info.pid] = info
    return table


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def track_popen() -> None:
    """Record every ``subprocess.Popen`` this process makes from now on (idempotent)."""
    if getattr(subprocess.Popen, "_faasd_tracked", False):
        return
    original = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def execute_child(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        info = _stat(self.pid)
        if info is not None:
            _started.add((info.pid, info.start))

    subprocess.Popen._execute_child = execute_child  # type: ignore[attr-defined]
    subprocess.Popen._faasd_tracked = True  # type: ignore[attr-defined]


def _set_subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


@contextlib.contextmanager
def subreaper():  # type: ignore[no-untyped-def]
    """Within the block, orphans below this process are reparented to it (nesting is counted)."""
    global _subreaper_users
    with _lock:
        _subreaper_users += 1
        if _subreaper_users == 1 and not _set_subreaper(True):
            _subreaper_users -= 1
            raise RuntimeError("prctl(PR_SET_CHILD_SUBREAPER) failed: cannot track orphaned processes")
    try:
        yield
    finally:
        with _lock:
            _subreaper_users -= 1
            if _subreaper_users == 0:
                _set_subreaper(False)


@dataclass
class Orphans:
    """What was reparented to this process since :meth:`snapshot`, and the processes below them."""

    known: frozenset[tuple[int, int]]
    """(pid, start) of this process's children when the snapshot was taken: not orphans of this test."""

    @classmethod
    def snapshot(cls) -> Orphans:
        me = os.getpid()
        return cls(frozenset((p.pid, p.start) for p in proc_table().values() if p.ppid == me))

    def _roots(self, table: dict[int, ProcInfo]) -> list[ProcInfo]:
        me = os.getpid()
        return [
            p
            for p in table.values()
            if p.ppid == me and (p.pid, p.start) not in self.known and (p.pid, p.start) not in _started
        ]

    def reap(self) -> None:
        """Collect the exit status of orphans that have exited (nobody else will: we did not start them)."""
        for root in self._roots(proc_table()):
            if not root.alive:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(root.pid, os.WNOHANG)

    def alive(self) -> list[tuple[int, str]]:
        """Live orphans and every live process below them, as (pid, "ppid=... sid=... <command line>")."""
        self.reap()
        table = proc_table()
        below: dict[int, list[ProcInfo]] = {}
        for info in table.values():
            below.setdefault(info.ppid, []).append(info)
        found: list[ProcInfo] = []
        todo = self._roots(table)
        while todo:
            info = todo.pop()
            found.append(info)
            todo.extend(below.get(info.pid, ()))
        found.sort(key=lambda p: p.pid)
        return [(p.pid, f"pgid={p.pgid} sid={p.sid} {cmdline(p.pid)}") for p in found if p.alive]

    def wait_gone(self, timeout: float) -> list[tuple[int, str]]:
        """Wait up to ``timeout`` s for every orphan to exit; returns what is still alive then."""
        deadline = time.monotonic() + timeout
        while (left := self.alive()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return left

    def kill(self) -> None:
        """SIGKILL every live orphan and its process group, then reap them (bounded)."""
        for pid, _ in self.alive():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                pgid = os.getpgid(pid)
                if pgid not in (os.getpgrp(), 0, 1):
                    os.killpg(pgid, signal.SIGKILL)
        self.wait_gone(5.0)


@contextlib.contextmanager
def orphans_to_init():  # type: ignore[no-untyped-def]
    """Within the block, this process is no child subreaper: orphans go to init, which reaps them.

    A subreaper that reaps only at teardown keeps every orphan that exited a zombie -- and a zombie still
    counts against its replica's process limit (``RLIMIT_NPROC``, ``pids.max``) until it is reaped.
    Without a PID namespace (sandbox ``uid`` and ``none``) a fork bomb orphans processes by the
    thousand: under a daemon fixture they would fill its limit for good, which never happens under init;
    and reaping them here would cost the test process the CPU it measures with. What is orphaned in the
    block escapes the leak check: use it only where something else ends those processes (a replica's
    cgroup is emptied when the replica ends).
    """
    with _lock:
        active = _subreaper_users > 0
    if active:
        _set_subreaper(False)
    try:
        yield
    finally:
        if active:
            _set_subreaper(True)


def orphans() -> Orphans:
    """Shorthand for :meth:`Orphans.snapshot`."""
    return Orphans.snapshot()
