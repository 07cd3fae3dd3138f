"""Operating-system chores around a local replica process: its token pipe, its exit, its leftovers.

Small blocking functions (the /proc scan, a directory removal) that :mod:`.supervisor` calls through
``trio.to_thread``, and the words a replica's end is logged and reported with.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import signal
import subprocess
from typing import TYPE_CHECKING

import trio

from faasd.procstat import stat_fields

if TYPE_CHECKING:
    from faasd.sandbox.plan import Launch

__all__ = ["exit_fields", "exit_text", "kill_session", "remove_tree", "start_replica", "token_pipe"]


async def start_replica(launch: Launch, log_fd: int, pass_fds: tuple[int, ...] = ()) -> trio.Process:
    """Start a replica as ``launch`` plans it -- a pooled one or a function's: stdin from /dev/null, stdout
    and stderr into the daemon's log pipe ``log_fd``, ``pass_fds`` inherited besides the plan's own, and a
    session of its own (its autogroup, and :func:`kill_session` reaches everything it starts)."""
    return await trio.lowlevel.open_process(
        list(launch.argv),
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        env=launch.env,
        cwd=launch.cwd,
        pass_fds=(*pass_fds, *launch.pass_fds),
        start_new_session=True,
    )


def token_pipe(token: bytes) -> int:
    """A pipe holding ``token`` (written whole: far below PIPE_BUF), its write end closed; the read end
    is for the replica, which reads it once and closes it."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(write_end, token)
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def exit_text(returncode: int | None) -> str:
    """How a replica ended, for a status reason: ``exited with code 1``, ``was killed by SIGKILL``."""
    fields = exit_fields(returncode)
    if "signal" in fields:
        return f"was killed by {fields['signal']}"
    return f"exited with code {returncode}"


def exit_fields(returncode: int | None) -> dict[str, object]:
    """Log fields for how a replica ended: ``exit_code``, or ``signal``, or ``not_started``."""
    if returncode is None:
        return {"not_started": True}
    if returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:
            return {"signal": -returncode}
    return {"exit_code": returncode}


async def remove_tree(path: str) -> None:
    """``rm -rf path`` in a worker thread; errors ignored (what cannot go now goes with the next start)."""
    await trio.to_thread.run_sync(functools.partial(shutil.rmtree, path, ignore_errors=True))


def kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` (a replica's watchdog and its calls); how many.

    Blocking (reads /proc): run through ``trio.to_thread``. The kernel does not reuse a pid while it
    still names a session, so this cannot hit an unrelated process.
    """
    killed = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = stat_fields(int(entry))  # state ppid pgrp session ...
        if fields is None or len(fields) < 4 or int(fields[3]) != sid:
            continue
        try:
            os.kill(int(entry), signal.SIGKILL)
            killed += 1
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise
    return killed
