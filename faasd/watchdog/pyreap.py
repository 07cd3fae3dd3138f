"""A python worker reaps the children the watchdog killed: a setsid bomb leaves no zombie behind.

A handler's process that left the worker's process group (``setsid``, ``setpgid``) is still the worker's
child. When it fills the replica's process limit, the watchdog's sweep kills it
(:mod:`faasd.watchdog.proclimit`, "Processes that left their call") -- but only its parent can reap it,
and a worker runs the function's code, not a wait loop: the killed process stayed a zombie, one per bomb,
counted against the replica's ``pids.max``, until the worker was replaced. (Its own children were
reparented to an init -- bwrap's, or the host's -- which reaps them.)

So the worker reaps, with ``waitpid`` of that pid alone, each child of its own that is a zombie, outside
its process group, and was killed by SIGKILL (the sweep's signal, or the kernel's OOM killer's): on
``SIGCHLD`` while it waits for the next call, and after each call for what died during it. Never during a
call -- a handler that killed such a child itself may be about to wait for it -- and never any other child:
an exit status a handler waits for is its own. A process the handler forks gets ``SIGCHLD`` back at its
default (ignored) and does none of this. The handler is installed without ``SA_RESTART`` (as Python installs
every handler), so that the worker's idle ``read`` is interrupted and the reaping runs; a handler's own
child that ends during a call can then interrupt a system call with ``EINTR``, which Python retries by
itself (PEP 475) and which C code under Python handles already (``SIGINT`` is installed the same way).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from faasd.procstat import stat_fields

__all__ = ["Reaper"]

_EXIT_CODE_FIELD = 49
"""Index of ``exit_code`` (field 52 of ``/proc/PID/stat``, Linux >= 3.5) in the fields after the command
name: the zombie's wait status, readable without reaping it."""


class Reaper:
    """The worker's reaping of killed children (see the module docstring)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.group = os.getpgid(0)
        self.busy = False
        """A call is running: reaping waits until it is over."""
        self.pending = False
        """A child ended since the last reaping: :meth:`after_call` looks (a look costs ~0.1 ms of /proc
        reads, so calls whose handler started no process pay nothing)."""

    def install(self) -> None:
        """Reap on ``SIGCHLD`` from now on (forked children go back to the default)."""
        signal.signal(signal.SIGCHLD, self._on_sigchld)
        os.register_at_fork(after_in_child=_default_sigchld)

    def _on_sigchld(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:
            return  # A process a handler forked, before its at-fork reset ran.
        self.pending = True
        if not self.busy:
            self.reap()

    def after_call(self) -> None:
        """The call is over: reap what the watchdog killed meanwhile, if any child ended."""
        self.busy = False
        if self.pending:
            self.reap()

    def reap(self) -> int:
        """Reap every killed child that left the worker's process group; returns how many."""
        self.pending = False
        reaped = 0
        for child in _children(self.pid):
            fields = stat_fields(child)
            if fields is None or fields[0] != b"Z" or int(fields[2]) == self.group:
                continue
            status = int(fields[_EXIT_CODE_FIELD]) if len(fields) > _EXIT_CODE_FIELD else 0
            if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                continue
            try:
                if os.waitpid(child, os.WNOHANG)[0]:
                    reaped += 1
            except ChildProcessError:
                pass
        return reaped


def _default_sigchld() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _children(pid: int) -> list[int]:
    """The children of ``pid`` (of each of its threads), else from a scan of /proc."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        found = []
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as file:
                found += [int(child) for child in file.read().split()]
        return found
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found
