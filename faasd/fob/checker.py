"""The daemon's side of checking a snippet: cheap checks here, the compile in a child process.

See :mod:`faasd.fob.checkproc` for why a child. One checker process serves one check at a time (uploads
wait their turn: a normal snippet takes milliseconds) and is kept between uploads, so an upload does not
pay an interpreter's start. It is replaced when it grew past :data:`RECYCLE_RSS_BYTES` (a big source
leaves its memory with it), when it died, and when a check ran longer than ``timeout_s`` (it is
killed; the upload is a 400). :meth:`SourceChecker.aclose` stops it; the daemon's snippet service owns it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess

import trio

from faasd.fob.checkproc import FRAME
from faasd.fob.source import CheckedSource, SourceError, check_bytes
from faasd.logs import event
from faasd.runtime import self_command

__all__ = ["CHECK_TIMEOUT_S", "RECYCLE_RSS_BYTES", "SourceChecker"]

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 30.0
"""Longest one check may take (a plain 256 KiB source takes about a second; this leaves room for a
loaded machine)."""
RECYCLE_RSS_BYTES = 96 * 1024 * 1024
"""A checker whose peak resident size passed this is replaced after its check."""


class _Broken(Exception):
    """The checker process ended or answered garbage."""


_BROKEN = (_Broken, OSError, ValueError, trio.BrokenResourceError, trio.ClosedResourceError)
"""How a checker that died or misbehaves shows (ValueError: an answer that is not JSON)."""


class SourceChecker:
    """Checks uploads: :func:`~faasd.fob.source.check_bytes` in the daemon, the compile in a child."""

    def __init__(self, *, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = trio.Lock()
        self._process: trio.Process | None = None
        self._buffer = bytearray()
        command = self_command()
        self._argv = [*command.argv, "_checksource"]
        self._env = {"PATH": os.environ.get("PATH", os.defpath), **command.env}

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"<SourceChecker pid={pid}>"

    async def check(self, source: bytes, language: str | None) -> CheckedSource:
        """The checked snippet.

        Raises:
            SourceError: why it cannot be used (line and column when known); also when the check ran
                out of time or memory, or the checker failed (that is logged).
        """
        checked = check_bytes(source, language or "")
        async with self._lock:
            try:
                with trio.move_on_after(self.timeout_s) as scope:
                    verdict = await self._ask(checked.language.encode() + b"\n" + source)
            except BaseException as exc:  # Cancelled too: a check cut short leaves the pipe mid-frame.
                how = await self._stop()
                if not isinstance(exc, _BROKEN):
                    raise
                event(log, logging.WARNING, "snippet check failed", how=how, error=str(exc))
                raise SourceError(f"the source cannot be compiled: the check {how} (too large or complex?)") from None
            if scope.cancelled_caught:
                await self._stop()
                raise SourceError(f"the source did not compile within {self.timeout_s:g}s")
            rss = verdict.get("rss")
            if isinstance(rss, int) and rss > RECYCLE_RSS_BYTES:
                await self._stop()
        if verdict.get("ok") is True:
            return checked
        error, line, column = verdict.get("error"), verdict.get("line"), verdict.get("column")
        if not isinstance(error, str):
            raise SourceError("the source cannot be compiled: the check answered nothing usable")
        raise SourceError(error, line if isinstance(line, int) else None, column if isinstance(column, int) else None)

    async def warm(self) -> None:
        """Start the checker now, so the first upload does not wait for it."""
        async with self._lock:
            if self._process is None:
                await self._start()

    async def aclose(self) -> None:
        """Stop the checker (at shutdown)."""
        with trio.CancelScope(shield=True):
            await self._stop()

    async def _ask(self, request: bytes) -> dict[str, object]:
        if self._process is None:
            await self._start()
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        await process.stdin.send_all(FRAME.pack(len(request)) + request)
        (size,) = FRAME.unpack(await self._read(process, FRAME.size))
        answer = json.loads(await self._read(process, size))
        if not isinstance(answer, dict):
            raise _Broken("the checker's answer is not an object")
        return answer

    async def _read(self, process: trio.Process, size: int) -> bytes:
        assert process.stdout is not None
        while len(self._buffer) < size:
            chunk = await process.stdout.receive_some(65536)
            if not chunk:
                raise _Broken("the checker closed its output")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _start(self) -> None:
        self._buffer.clear()
        self._process = await trio.lowlevel.open_process(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self._env
        )

    async def _stop(self) -> str:
        """Kill the checker (if any) and reap it; how it ended, for the log and the error."""
        process, self._process = self._process, None
        self._buffer.clear()
        if process is None:
            return "was not running"
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await stream.aclose()
        return _ended(process.returncode)


def _ended(returncode: int | None) -> str:
    if returncode is None:
        return "did not end"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"ended with status {returncode}"
