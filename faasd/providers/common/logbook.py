"""Per-function logs kept by faasd itself: replica output cut into lines, in a ring bounded by bytes.

Used by the backends whose orchestrator keeps no logs faasd can read (``local``: processes it
supervises; ``memory``). Every line a replica writes (watchdog log lines, function stdout/stderr in
http mode) is kept in its function's :class:`LogBook` and offered to live followers (``faasd logs
-f``). Why bytes and not lines: a ring of 10,000 lines of up to 16 KiB each held up to 160 MiB per
function, so one function writing long lines could take the daemon's memory;
:data:`DEFAULT_LOG_BYTES` per function bounds it whatever the lines look like (each line is counted
with :data:`LINE_OVERHEAD_BYTES` for its object, so many tiny lines are bounded too).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import trio

from faasd.providers.types import LogMessage, LogRequest

__all__ = [
    "DEFAULT_LOG_BYTES",
    "FOLLOW_BUFFER_LINES",
    "LINE_OVERHEAD_BYTES",
    "MAX_LOG_LINE_BYTES",
    "Follower",
    "LineBuffer",
    "LogBook",
]

DEFAULT_LOG_BYTES = 4 * 1024 * 1024
"""Log kept per function (the oldest lines go first)."""

LINE_OVERHEAD_BYTES = 200
"""What one kept line costs beyond its text (the message object, its timestamp and strings)."""

MAX_LOG_LINE_BYTES = 16 * 1024
"""Longer lines are split: a replica writing without newlines cannot grow a buffer without bound."""

FOLLOW_BUFFER_LINES = 1024
"""Lines queued per ``logs(follow=True)`` reader; a slower reader loses lines (with a marker), the
replicas never wait for it."""


class Follower:
    """One ``logs(follow=True)`` reader: a bounded channel that drops (and says so) rather than block."""

    def __init__(self, name: str, instance: str) -> None:
        self.name = name
        self.instance = instance
        self.send, self.receive = trio.open_memory_channel[LogMessage](FOLLOW_BUFFER_LINES)
        self.dropped = 0

    def offer(self, message: LogMessage) -> None:
        if self.instance and message.instance != self.instance:
            return
        try:
            if self.dropped:
                marker = f"[faasd] {self.dropped} log lines dropped: this reader is slower than the replicas"
                self.send.send_nowait(
                    LogMessage(name=self.name, instance="faasd", timestamp=datetime.now(UTC), text=marker)
                )
                self.dropped = 0
            self.send.send_nowait(message)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # The reader went away; it unregisters itself.


class LogBook:
    """The last ``max_bytes`` of a function's replica output (whole lines), and its live followers."""

    def __init__(self, name: str, max_bytes: int = DEFAULT_LOG_BYTES) -> None:
        self.name = name
        self.max_bytes = max(1, max_bytes)
        self.size = 0
        """Bytes held now: the lines' text plus LINE_OVERHEAD_BYTES each."""
        self._lines: deque[LogMessage] = deque()
        self._followers: set[Follower] = set()

    def __repr__(self) -> str:
        return f"<LogBook {self.name} lines={len(self._lines)} bytes={self.size}/{self.max_bytes}>"

    def append(self, instance: str, text: str) -> None:
        message = LogMessage(name=self.name, instance=instance, timestamp=datetime.now(UTC), text=text)
        lines = self._lines
        lines.append(message)
        self.size += len(text) + LINE_OVERHEAD_BYTES
        while self.size > self.max_bytes and len(lines) > 1:
            self.size -= len(lines.popleft().text) + LINE_OVERHEAD_BYTES
        for follower in self._followers:
            follower.offer(message)

    def select(self, request: LogRequest) -> list[LogMessage]:
        since = request.since
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        lines = [
            message
            for message in self._lines
            if (not request.instance or message.instance == request.instance)
            and (since is None or message.timestamp >= since)
        ]
        return lines[-request.tail :] if request.tail > 0 else lines

    def follow(self, instance: str) -> Follower:
        follower = Follower(self.name, instance)
        self._followers.add(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        self._followers.discard(follower)
        follower.send.close()
        follower.receive.close()

    async def read(self, request: LogRequest) -> AsyncGenerator[LogMessage, None]:
        """A provider's ``logs``: kept lines (filtered by ``instance``, ``since``, then ``tail``), then
        with ``follow`` new lines as they come, until the consumer stops iterating or :meth:`close`.

        Resource handling:
            A follower's queue is bounded (:data:`FOLLOW_BUFFER_LINES`); when it is full, lines are
            dropped and a ``[faasd] N log lines dropped`` line takes their place. The queue is
            released when the iterator is closed (``aclose`` or garbage collection).
        """
        kept = self.select(request)
        follower = self.follow(request.instance) if request.follow else None
        try:
            for message in kept:
                yield message
            if follower is not None:
                async for message in follower.receive:
                    yield message
        finally:
            if follower is not None:
                self.unfollow(follower)

    def close(self) -> None:
        """The function is gone: end every follower's iteration (after what it has queued)."""
        for follower in self._followers:
            follower.send.close()
        self._followers.clear()


class LineBuffer:
    """Cuts a byte stream into text lines of at most ``limit`` bytes (a longer line is split), so a
    replica writing without newlines cannot grow the buffer without bound. Pure."""

    def __init__(self, limit: int = MAX_LOG_LINE_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[str]:
        buffer = self._buffer
        buffer += data
        lines = []
        while buffer:
            end = buffer.find(b"\n", 0, self._limit + 1)
            if end >= 0:
                lines.append(_decode_line(buffer[:end]))
                del buffer[: end + 1]
            elif len(buffer) > self._limit:
                lines.append(_decode_line(buffer[: self._limit]))
                del buffer[: self._limit]
            else:
                break
        return lines

    def flush(self) -> list[str]:
        """What is left after the stream ended (a last line without newline)."""
        lines = [_decode_line(self._buffer)] if self._buffer else []
        self._buffer.clear()
        return lines


def _decode_line(raw: bytes | bytearray) -> str:
    return bytes(raw).rstrip(b"\r").decode("utf-8", errors="replace")
