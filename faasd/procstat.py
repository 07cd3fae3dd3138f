"""One reader of ``/proc/PID/stat`` for the daemon and the watchdog: the fields after a process's name.

Why its own module: the sandbox (which host pid runs a replica's command), the replica pool (which
processes belong to a pooled replica) and the python worker's reaper (which children the watchdog killed)
each read a process's state, parent or process group from the same file, and the file has one trap: the
command name, in parentheses, may itself hold spaces and parentheses, so the fields start after the last
``)``. It imports nothing: the watchdog's python workers load it at their start.
"""

from __future__ import annotations

__all__ = ["parent_of", "stat_fields"]


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, pgrp, session, ...), or None
    when the process is gone (or was never there)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid``, or None when it is gone."""
    fields = stat_fields(pid)
    return int(fields[1]) if fields is not None and len(fields) > 1 else None
