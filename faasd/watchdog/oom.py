"""Telling an out-of-memory kill from any other SIGKILL, for the answer of the call it ended.

Where a replica has a cgroup v2 memory limit (``memory.max``, docs/sandbox.md "Limits"), a function
that allocates past it is not refused an allocation: the kernel's OOM killer SIGKILLs a process of the
replica -- the biggest, usually the call's. ``killed by signal SIGKILL`` alone would leave its author
guessing, so the watchdog compares the cgroup's ``oom_kill`` count (``memory.events``, kept open by
:mod:`faasd.sandbox.enter` before the function could run) with the last one it saw whenever a process
it did not kill dies of SIGKILL: a higher count is an OOM kill, and the answer says so and names the
limit. Nothing is read on the hot path; without such a limit (rlimits, cgroup v1, no sandbox) nothing
changes.
"""

from __future__ import annotations

from faasd.sandbox import enter

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import signal
else:
    import _signal as signal  # signal's functions without its enum wrappers: docs/coldstart.md

__all__ = ["OomWatch"]


class OomWatch:
    """The replica's OOM kill count as last seen (see the module docstring)."""

    def __init__(self) -> None:
        self._seen = enter.oom_kills()

    def __repr__(self) -> str:
        return f"<OomWatch seen={self._seen}>"

    def explain(self, exitcode: int) -> str:
        """Why a process that ended with ``exitcode`` (as :func:`os.waitstatus_to_exitcode`) was killed,
        when it was the memory limit; else ``""``."""
        if exitcode != -signal.SIGKILL or self._seen is None:
            return ""
        count = enter.oom_kills()
        if count is None or count <= self._seen:
            return ""
        self._seen = count
        limit = enter.memory_max()
        size = f" of {_mib(limit)}" if limit else ""
        return f"out of memory: the replica reached its memory limit{size} (limits.memory)"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"
