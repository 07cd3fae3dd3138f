"""What a queue worker needs around one call: the ASGI scope it hands the gateway's invoke path, the
capture of the function's answer, the callback's headers, and the memory budget workers share.

A stored call is invoked through :meth:`faasd.gateway.Invoker.invoke`, exactly as ``/function/*``
invokes -- the same replica choice, scale from zero, call token, timeouts and metrics -- with a scope
built from what was stored (:func:`invoke_scope`) and an ASGI ``send`` that keeps the answer
(:class:`Capture`): its status and headers always, its body only when there is a callback to send it
to, and then at most ``max_body_size`` of it; beyond :data:`~faasd.queue.store.PART_BYTES` the body
goes to the database in parts as it arrives instead of staying in memory.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import trio

from faasd import __version__
from faasd.gateway.proxy import HOP_BY_HOP
from faasd.queue.store import PART_BYTES, AddPart, QueueDb, StoredCall

__all__ = [
    "TRUNCATED",
    "ByteBudget",
    "Capture",
    "Result",
    "callback_headers",
    "invoke_scope",
    "marked",
    "replay",
    "stored_parts",
    "stored_result",
]

Headers = list[tuple[bytes, bytes]]

TRUNCATED = b"x-faasd-truncated"
"""On a callback whose body is the function's answer cut at ``max_body_size``."""

_NOT_COPIED = HOP_BY_HOP | {
    b"content-length",
    b"x-call-id",
    b"x-callback-url",
    b"x-duration-seconds",
    b"x-function-status",
    b"x-function-name",
    TRUNCATED,
    b"host",
}
"""Of the function's answer headers, those the callback does not copy: they describe the answer's own
connection and length, or are set by the queue (``X-Callback-Url`` is never passed on: no loops)."""


def invoke_scope(call: StoredCall) -> MutableMapping[str, Any]:
    """The ASGI scope of ``call``, as if its request had arrived on ``/function/*`` just now."""
    path, _, query = call.target.partition(b"?")
    headers = [(name, value) for name, value in call.headers if name != b"x-call-id"]
    headers.append((b"x-call-id", call.call_id.encode("latin-1")))
    headers.append((b"content-length", str(len(call.body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": call.method,
        "scheme": "http",
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": query,
        "headers": headers,
        "client": None,
        "server": None,
    }


def replay(body: bytes) -> Callable[[], Awaitable[MutableMapping[str, Any]]]:
    """The ASGI ``receive`` of a stored body: all of it at once, then a disconnect."""
    sent = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal sent
        if sent:
            await trio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class Capture:
    """The ASGI ``send`` of one invocation: keeps the answer (see the module docstring).

    Args:
        keep_body: there is a callback to send the body to.
        keep_status: ``keep_status(status)`` -- False when this answer will not be kept at all (it is
            retried), so its body is not read into memory or stored.
        spill: ``await spill(op)`` stores one part of a large body (and returns once it is written).
        limit: the most body bytes kept; the rest is dropped and :attr:`truncated` set.
    """

    def __init__(
        self,
        seq: int,
        *,
        keep_body: bool,
        keep_status: Callable[[int], bool],
        spill: Callable[[AddPart], Awaitable[object]],
        limit: int,
    ) -> None:
        self.seq = seq
        self.keep_body = keep_body
        self.keep_status = keep_status
        self.spill = spill
        self.limit = limit
        self.status = 0
        self.headers: Headers = []
        self.length = 0
        self.truncated = False
        self.complete = False
        self.parts = 0
        """Parts already stored; 0 while the body is only in :attr:`buffer`."""
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._keeping = False

    @property
    def body(self) -> bytes | None:
        """The body in hand, or None when it was stored in parts (:attr:`parts`)."""
        return None if self.parts else b"".join(self._buffer)

    def fail(self, status: int, reason: str) -> None:
        """The invocation ended without a complete answer: the result is ``status`` with ``reason``."""
        self.status = status
        self.headers = [(b"content-type", b"text/plain; charset=utf-8")]
        self._buffer = [reason.encode("utf-8", "replace") + b"\n"] if self.keep_body else []
        self._buffered = self.length = sum(len(piece) for piece in self._buffer)
        self.parts = 0
        self.truncated = False
        self.complete = True

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
            self._keeping = self.keep_body and self.keep_status(self.status)
            return
        if message["type"] != "http.response.body":
            return
        chunk: bytes = message.get("body", b"")
        if chunk and self._keeping and not self.truncated:
            room = self.limit - self.length
            if len(chunk) > room:
                chunk, self.truncated = chunk[:room], True
            self.length += len(chunk)
            self._buffer.append(chunk)
            self._buffered += len(chunk)
            while self._buffered >= PART_BYTES:
                await self._spill(PART_BYTES)
        if not message.get("more_body", False):
            if self.parts and self._buffered:
                await self._spill(self._buffered)
            self.complete = True

    async def _spill(self, size: int) -> None:
        data = b"".join(self._buffer)
        part, rest = data[:size], data[size:]
        self._buffer = [rest] if rest else []
        self._buffered = len(rest)
        await self.spill(AddPart(self.seq, self.parts, part))
        self.parts += 1


def callback_headers(
    answer: Headers, *, call_id: str, function: str, status: int, seconds: float, truncated: bool
) -> Headers:
    """The callback's headers: the function's answer headers (but those in :data:`_NOT_COPIED`), then
    OpenFaaS's ``X-Call-Id``, ``X-Duration-Seconds``, ``X-Function-Status``, ``X-Function-Name``."""
    headers = [(name, value) for name, value in answer if name.lower() not in _NOT_COPIED]
    if not any(name.lower() == b"user-agent" for name, _ in headers):
        headers.append((b"user-agent", f"faasd-queue-worker/{__version__}".encode()))
    headers += [
        (b"x-call-id", call_id.encode("latin-1")),
        (b"x-duration-seconds", f"{seconds:f}".encode()),
        (b"x-function-status", str(status).encode()),
        (b"x-function-name", function.encode()),
    ]
    if truncated:
        headers.append((TRUNCATED, b"true"))
    return headers


class ByteBudget:
    """Bytes of request bodies and answers the workers hold in memory, all calls together.

    :meth:`hold` waits until the bytes fit; a single call larger than the whole budget waits until
    nothing else is held and then goes alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = trio.Event()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.limit)
        while self.used + size > self.limit:
            await self._changed.wait()
        self.used += size
        try:
            yield
        finally:
            self.used -= size
            self._changed.set()
            self._changed = trio.Event()


@dataclass(slots=True)
class Result:
    """One invocation's answer as the callback needs it; ``body`` None: stored in parts."""

    status: int
    headers: list[tuple[bytes, bytes]]
    seconds: float
    body: bytes | None
    length: int
    truncated: bool
    stored: bool


def stored_parts(db: QueueDb, seq: int, length: int) -> Callable[[], AsyncIterator[bytes]]:
    """A stored answer of ``length`` bytes in parts, as a callback body (streamed anew for each attempt)."""

    def stream() -> _PartStream:
        return _PartStream(db, seq, math.ceil(length / PART_BYTES))

    return stream


class _PartStream:
    """A stored answer's parts, read one at a time (an async iterator)."""

    def __init__(self, db: QueueDb, seq: int, parts: int) -> None:
        self.db = db
        self.seq = seq
        self.parts = parts
        self.next = 0

    def __aiter__(self) -> _PartStream:
        return self

    async def __anext__(self) -> bytes:
        if self.next >= self.parts:
            raise StopAsyncIteration
        data = await self.db.read_part(self.seq, self.next)
        self.next += 1
        return data


def stored_result(call: StoredCall) -> Result | None:
    """The answer stored with ``call`` (its callback is being retried), or None."""
    stored = call.result
    if stored is None:
        return None
    truncated = (TRUNCATED, b"true") in stored.headers
    return Result(stored.status, stored.headers, stored.seconds, stored.body, stored.length, truncated, True)


def marked(headers: list[tuple[bytes, bytes]], truncated: bool) -> list[tuple[bytes, bytes]]:
    """The answer's headers as stored: with :data:`TRUNCATED` when its body was cut."""
    return [*headers, (TRUNCATED, b"true")] if truncated else headers
