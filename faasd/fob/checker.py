"""The daemon's side of checking a snippet: cheap checks here, the compile in a child process.

See :mod:`faasd.fob.checkproc` for why a child. At most :data:`MAX_CHECKS` run at once (further
uploads wait their turn), each bounded by :data:`CHECK_TIMEOUT_S` of wall time and killed after it.
"""

from __future__ import annotations

import json
import logging
import os
import signal

import trio

from faasd.fob.source import CheckedSource, SourceError, check_bytes
from faasd.logs import event
from faasd.runtime import self_command

__all__ = ["CHECK_TIMEOUT_S", "MAX_CHECKS", "SourceChecker"]

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 30.0
"""Longest one check may take (a plain 256 KiB source takes about a second; the child's CPU limit is
20 s, so this leaves room for a loaded machine)."""
MAX_CHECKS = 2
"""Checks running at once."""


class SourceChecker:
    """Checks uploads: :func:`~faasd.fob.source.check_bytes` in the daemon, the compile in a child."""

    def __init__(self, *, timeout_s: float = CHECK_TIMEOUT_S, max_checks: int = MAX_CHECKS) -> None:
        self.timeout_s = timeout_s
        self._limiter = trio.CapacityLimiter(max_checks)
        command = self_command()
        self._argv = [*command.argv, "_checksource"]
        self._env = {"PATH": os.environ.get("PATH", os.defpath), **command.env}

    async def check(self, source: bytes, language: str | None) -> CheckedSource:
        """The checked snippet.

        Raises:
            SourceError: why it cannot be used (line and column when known); also when the check
                ran out of time or memory, or the checker failed (that is logged).
        """
        checked = check_bytes(source, language or "")
        async with self._limiter:
            with trio.move_on_after(self.timeout_s) as scope:
                done = await trio.run_process(
                    [*self._argv, checked.language],
                    stdin=source,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=self._env,
                    deliver_cancel=_kill,
                )
        if scope.cancelled_caught:
            raise SourceError(f"the source did not compile within {self.timeout_s:g}s")
        try:
            verdict = json.loads(done.stdout)
        except ValueError:
            verdict = None
        if not isinstance(verdict, dict) or not (verdict.get("ok") or isinstance(verdict.get("error"), str)):
            how = _ended(done.returncode)
            stderr = done.stderr.decode("utf-8", "replace").strip().splitlines()
            event(log, logging.WARNING, "snippet check failed", how=how, stderr=stderr[-1] if stderr else "")
            raise SourceError(f"the source cannot be compiled: the check {how} (too large or complex?)")
        if verdict.get("ok"):
            return checked
        line, column = verdict.get("line"), verdict.get("column")
        raise SourceError(
            verdict["error"], line if isinstance(line, int) else None, column if isinstance(column, int) else None
        )


async def _kill(process: trio.Process) -> None:
    process.kill()


def _ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"ended with status {returncode}"
