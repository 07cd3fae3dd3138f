"""Forward an ASGI request to a function replica over pooled keep-alive HTTP/1.1 connections.

The invoke hot path. Why hand-written on trio streams rather than httpx: an httpx request costs
hundreds of microseconds of Python, as much again as hypercorn itself (~0.3 ms per request here);
this forwards with one ``send_all`` for a small request and usually one ``receive_some`` for a small
answer, parsing the head with :mod:`faasd.http1`.

Streaming: request bodies are forwarded as they arrive (``Content-Length`` kept, else chunked);
response bodies are relayed as they arrive, so neither side is buffered whole.

Error handling: a pooled connection is checked before it is reused -- an idle keep-alive connection
the replica closed (or wrote to) is readable, and is dropped for another. One that still fails before
any answer byte is replayed once on a fresh connection only if the request is replayable (GET, HEAD,
OPTIONS or TRACE, or one carrying an ``Idempotency-Key``, with no body streamed yet), the rule of Go's
``net/http`` Transport: a POST the replica may have started (its watchdog killed mid-call) must not run
twice, so it gets the 502.
Connect failures raise :class:`~faasd.errors.InvocationError` before anything was sent, so the caller
may try another replica. A replica that does not answer within the timeout raises
:class:`~faasd.errors.FunctionTimeout`. Once the response has started, a failure can only cut the
response short (the client sees a truncated body / reset), which is what every proxy does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

import trio

from faasd.calltoken import HEADER_LOWER
from faasd.errors import FunctionTimeout, InvocationError
from faasd.http1 import (
    FRAMING_CHUNKED,
    FRAMING_LENGTH,
    FRAMING_NONE,
    ChunkedDecoder,
    RemoteProtocolError,
    ResponseHead,
    parse_response_head,
)
from faasd.providers.types import Endpoint
from faasd.tcpconnect import open_tcp

__all__ = [
    "DROP_ANSWER",
    "DROP_REQUEST",
    "HOP_BY_HOP",
    "ORIGIN_WIDE",
    "ProxyRequest",
    "ReplicaUnreachable",
    "UpstreamClosed",
    "UpstreamPool",
    "Write",
    "answer_head",
    "connection_error",
    "describe_error",
    "forward",
    "forward_raw",
    "http_date",
    "invalid_answer_error",
    "receive_now",
    "send_now",
    "timeout_error",
    "unreachable_error",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

CALL_TOKEN_HEADER = HEADER_LOWER.encode()

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 7.6.1, as OpenFaaS drops them)."""

DROP_REQUEST = HOP_BY_HOP | {b"expect", b"content-length", b"host", CALL_TOKEN_HEADER}
"""Also not copied from the client: hypercorn already answered ``Expect``; length, Host and the call
token (:mod:`faasd.calltoken`) are set by us."""

ORIGIN_WIDE = frozenset({b"service-worker-allowed", b"clear-site-data"})
"""A function's answer shares its origin with the web UI (``/ui/``) and the other functions; these two
act on the whole origin rather than on the answer: ``Service-Worker-Allowed`` would let a service
worker served under ``/function/NAME/`` take ``/ui/`` as its scope, ``Clear-Site-Data`` would wipe the
UI's storage (log the admin out) and unregister its workers. Never relayed (docs/ui.md). ``Set-Cookie``
is: functions use cookies, and no faasd route reads one."""

DROP_ANSWER = HOP_BY_HOP | ORIGIN_WIDE | {b"content-length", b"date", b"server"}
"""Not relayed from a function's answer by :func:`forward` and :func:`forward_raw`, which every invoke
path goes through (``/function/*``, ``POST /`` routing, ``/api/call``, the async queue's captured
answers; the fast path of :mod:`faasd.gateway.fastpath`): connection
headers, :data:`ORIGIN_WIDE`, and the length (re-stated by us), Date and Server (hypercorn adds its own)."""

READ_BYTES = 65536
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
MAX_CHUNKED_BODY_BYTES = 1 << 62
"""Upstream chunked bodies are streamed, so no size limit applies to them here."""

IDLE_TIMEOUT_S = 20.0
"""Pooled connections unused for longer are closed instead of reused; below the watchdog's own idle
timeout (its read_timeout, 30 s by default), so we never reuse one the replica is about to close."""

MAX_IDLE_PER_ENDPOINT = 256


_REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class ReplicaUnreachable(InvocationError):
    """The replica refused the connection: nothing was sent, so another replica may be tried."""


class UpstreamClosed(Exception):
    """The replica closed the connection before a complete answer head."""


class UpstreamConnection:
    __slots__ = ("authority", "buffer", "idle_since", "stream")

    def __init__(self, stream: trio.SocketStream, authority: str) -> None:
        self.stream = stream
        self.authority = authority
        self.buffer = b""
        self.idle_since = 0.0


class UpstreamPool:
    """Idle keep-alive connections per replica endpoint.

    Resource handling: connections are taken out while a request uses them and given back only when
    the answer was read completely and the replica allows keep-alive; :meth:`aclose` closes all idle
    ones (the daemon calls it at shutdown).
    """

    def __init__(self, *, idle_timeout_s: float = IDLE_TIMEOUT_S, max_idle: int = MAX_IDLE_PER_ENDPOINT) -> None:
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self.idle_timeout_s = idle_timeout_s
        self.max_idle = max_idle
        self.connects = 0

    def __repr__(self) -> str:
        idle = sum(len(connections) for connections in self._idle.values())
        return f"<UpstreamPool endpoints={len(self._idle)} idle={idle} connects={self.connects}>"

    def take(self, authority: str) -> UpstreamConnection | None:
        """An idle connection to ``authority`` that is fresh enough, or None."""
        idle = self._idle.get(authority)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self.idle_timeout_s and not connection.stream.socket.is_readable():
                return connection
            _close_quietly(connection)  # Too old, or the replica closed it (EOF) or wrote out of turn.
        return None

    async def connect(self, endpoint: Endpoint) -> UpstreamConnection:
        """Open a new connection (TCP_NODELAY is trio's default).

        Raises:
            InvocationError: the replica does not accept connections.
        """
        try:
            stream = await open_tcp(endpoint.host, endpoint.port)
        except OSError as exc:
            raise unreachable_error(endpoint, exc) from exc
        self.connects += 1
        return UpstreamConnection(stream, endpoint.authority)

    async def preconnect(self, endpoint: Endpoint) -> None:
        """Connect to ``endpoint`` ahead of its first call and keep the connection idle, unless one is
        idle there already (:meth:`faasd.registry.EndpointRegistry.announce`). The replica is not ready yet:
        the connection waits in its socket's backlog until it accepts, and the request a held call sends on
        it is read then -- the call saves the connect, a loop turn and a wake. A replica restarted on the
        same socket accepts it as well; a socket closed unaccepted resets it, and :meth:`take` drops it
        then; one that cannot be made is left to the call."""
        if self._idle.get(endpoint.authority):
            return
        try:
            connection = await self.connect(endpoint)
        except InvocationError:
            return
        self.give_back(connection)

    def give_back(self, connection: UpstreamConnection) -> None:
        idle = self._idle.setdefault(connection.authority, [])
        if len(idle) >= self.max_idle:
            _close_quietly(connection)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def forget(self, authority: str) -> None:
        """Close the idle connections of a replica that went away."""
        for connection in self._idle.pop(authority, []):
            _close_quietly(connection)

    async def aclose(self) -> None:
        for authority in list(self._idle):
            self.forget(authority)


def _close_quietly(connection: UpstreamConnection) -> None:
    # SocketStream.close is sync-safe through its socket; aclose would need a checkpoint.
    connection.stream.socket.close()


class ProxyRequest:
    """What to send upstream: the head (request line + headers, ending without the blank line) and
    the body source. ``body`` is what is already in hand; ``more_body`` says whether ``receive`` has
    more; ``length`` is the declared Content-Length or -1."""

    __slots__ = ("body", "head", "length", "method", "more_body", "receive")

    def __init__(
        self, *, method: str, head: bytes, body: bytes, more_body: bool, length: int, receive: Receive
    ) -> None:
        self.method = method
        self.head = head
        self.body = body
        self.more_body = more_body
        self.length = length
        self.receive = receive

    @property
    def replayable(self) -> bool:
        """Whether sending this request twice is safe (RFC 9110 9.2.2; the methods Go's Transport replays,
        or the client's ``Idempotency-Key`` saying so). Asked only when a reused connection failed."""
        return self.method in _REPLAYABLE_METHODS or b"\r\nidempotency-key:" in self.head.lower()


async def forward(
    pool: UpstreamPool,
    endpoint: Endpoint,
    request: ProxyRequest,
    send: Send,
    *,
    timeout_s: float,
    response_headers: list[tuple[bytes, bytes]],
) -> int:
    """Send ``request`` to ``endpoint`` and relay the answer to the ASGI ``send``; return its status.

    ``response_headers`` are added to the answer's headers (X-Call-Id, X-Start-Time).

    Raises:
        InvocationError: nothing was answered yet (the caller answers 502 or tries another replica).
        FunctionTimeout: no answer head within ``timeout_s``.
    """
    connection, head = await _exchange_within(pool, endpoint, request, timeout_s)
    headers = [(name, value) for name, value in head.headers if name not in DROP_ANSWER]
    headers.extend(response_headers)
    if head.framing == FRAMING_LENGTH or head.framing == FRAMING_NONE:
        headers.append((b"content-length", str(max(head.content_length, 0)).encode()))
    try:
        await send({"type": "http.response.start", "status": head.status, "headers": headers})
        reusable = await _relay_body(connection, head, send)
    except BaseException:
        _close_quietly(connection)
        raise
    _release(pool, connection, reusable and head.keep_alive)
    return head.status


Write = Callable[[bytes], Awaitable[None]]
"""Writes bytes to the client's connection (the invoke fast path); raises OSError once it is gone."""

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


async def forward_raw(
    pool: UpstreamPool,
    endpoint: Endpoint,
    request: ProxyRequest,
    write: Write,
    *,
    timeout_s: float,
    response_headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
) -> int:
    """:func:`forward` for the invoke fast path: the answer goes to the client as bytes, not ASGI events.

    The head is written with the first piece of the body (a small answer is one write); ``Date`` is
    added as hypercorn does, and ``Connection: close`` when ``keep_alive`` is false. A body without a
    length (chunked, or until the replica closes) is relayed chunked.

    Raises:
        InvocationError, FunctionTimeout: as :func:`forward`, before anything was written.
        OSError: the client is gone (the answer is cut short).
        UpstreamClosed, RemoteProtocolError: the replica failed mid-answer (the answer is cut short).
    """
    connection, head = await _exchange_within(pool, endpoint, request, timeout_s)
    parts = answer_head(head, response_headers, keep_alive)
    framing = head.framing
    try:
        if framing in (FRAMING_LENGTH, FRAMING_NONE):
            parts += (b"content-length: %d\r\n\r\n" % max(head.content_length, 0),)
            reusable = await _relay_length(connection, head, b"".join(parts), write)
        else:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
            reusable = await _relay_chunked(connection, head, b"".join(parts), write)
    except BaseException:
        _close_quietly(connection)
        raise
    _release(pool, connection, reusable and head.keep_alive)
    return head.status


def answer_head(head: ResponseHead, response_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> list[bytes]:
    """The client's answer head for the replica's ``head``, all but its framing line and the blank line:
    the status, the replica's headers but :data:`DROP_ANSWER`, ``response_headers``, ``Date`` (as hypercorn
    adds it) and ``Connection: close`` unless ``keep_alive``. Shared by :func:`forward_raw` and the invoke
    edge (:mod:`faasd.gateway.edgecall`)."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (head.status, _REASONS.get(head.status, b""))]
    for name, value in head.headers:
        if name not in DROP_ANSWER:
            parts += (name, b": ", value, b"\r\n")
    for name, value in response_headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"date: ", http_date(), b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    return parts


async def _relay_length(connection: UpstreamConnection, head: ResponseHead, out: bytes, write: Write) -> bool:
    """Relay a body of known length (or none) after the answer head ``out``."""
    buffer = connection.buffer
    connection.buffer = b""
    if head.framing == FRAMING_NONE:
        await write(out)
        return not buffer
    remaining = head.content_length
    if len(buffer) >= remaining:
        await write(out + buffer[:remaining])
        return len(buffer) == remaining
    await write(out + buffer)
    remaining -= len(buffer)
    stream = connection.stream
    while remaining:
        data = await receive_now(stream, min(READ_BYTES, remaining))
        if not data:
            raise UpstreamClosed("replica closed the connection mid-answer")
        remaining -= len(data)
        await write(data)
    return True


async def _relay_chunked(connection: UpstreamConnection, head: ResponseHead, out: bytes, write: Write) -> bool:
    """Relay a chunked or close-delimited body as chunked, after the answer head ``out``."""
    stream = connection.stream
    data = connection.buffer
    connection.buffer = b""
    if head.framing == FRAMING_CHUNKED:
        decoder = ChunkedDecoder(MAX_CHUNKED_BODY_BYTES, MAX_RESPONSE_HEAD_BYTES, error_status=502)
        while True:
            pieces = decoder.feed(data)
            for piece in pieces:
                if piece:
                    out += b"%x\r\n%s\r\n" % (len(piece), piece)
            if decoder.done:
                await write(out + b"0\r\n\r\n")
                return not decoder.leftover
            if out:
                await write(out)
                out = b""
            data = await receive_now(stream, READ_BYTES)
            if not data:
                raise UpstreamClosed("replica closed the connection mid-answer")
    # Until the replica closes: what came with the head, then every read, each as a chunk.
    while True:
        if data:
            await write(out + b"%x\r\n%s\r\n" % (len(data), data))
            out = b""
        data = await receive_now(stream, READ_BYTES)
        if not data:
            break
    await write(out + b"0\r\n\r\n")
    return False


def send_now(stream: trio.SocketStream, data: bytes) -> int:
    """Send what the kernel takes at once, without a trio checkpoint; return the bytes sent (0: it
    would block). Why: ``send_all`` yields to the scheduler after every send even when the socket took
    everything, a round trip through trio's run loop per write; a small request or answer is one
    write into an empty socket buffer. Only for a stream no other task writes to.

    Raises:
        OSError: the connection is broken (reset, closed).
    """
    raw = getattr(stream.socket, "_sock", None)  # trio's socket wraps a non-blocking stdlib one
    if raw is None:
        return 0
    try:
        sent: int = raw.send(data)
    except BlockingIOError:
        return 0
    return sent


async def receive_now(stream: trio.SocketStream, max_bytes: int) -> bytes:
    """``stream.receive_some(max_bytes)`` without the trip through trio's scheduler that follows every
    read there, also one that did not have to wait (the reason is :func:`send_now`'s). Still a
    checkpoint for cancellation first (a deadline that passed is honoured even when bytes are waiting),
    and waits like ``receive_some`` when nothing has come. Only for a stream no other task reads.

    Raises:
        trio.BrokenResourceError: the connection is broken (reset), as ``receive_some``.
        trio.ClosedResourceError: the socket was closed, before or while waiting.
    """
    raw = getattr(stream.socket, "_sock", None)  # trio's socket wraps a non-blocking stdlib one
    if raw is None:
        return await stream.receive_some(max_bytes)
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        try:
            data: bytes = raw.recv(max_bytes)
            return data
        except BlockingIOError:
            await trio.lowlevel.wait_readable(raw)
        except OSError as exc:
            if raw.fileno() < 0:
                raise trio.ClosedResourceError("the socket was closed") from exc
            raise trio.BrokenResourceError(str(exc)) from exc


def receive_waiting(stream: trio.SocketStream, max_bytes: int) -> bytes | None:
    """The bytes already waiting on ``stream`` (b"" once the peer closed or the connection broke), or
    None when a read would wait. Not a checkpoint: a caller that finds bytes need not arm a deadline
    (a cancel scope costs about as much as parsing a request), and only one that finds none waits,
    through :func:`receive_now` under its deadline. Only for a stream no other task reads."""
    raw = getattr(stream.socket, "_sock", None)  # trio's socket wraps a non-blocking stdlib one
    if raw is None:
        return None
    try:
        data: bytes = raw.recv(max_bytes)
    except BlockingIOError:
        return None
    except OSError:  # Reset, or closed under us: the connection is over, as receive_now reports it.
        return b""
    return data


async def send_all_now(stream: trio.SocketStream, data: bytes) -> None:
    """:func:`send_now`, then ``send_all`` for whatever the kernel did not take at once."""
    sent = send_now(stream, data)
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])


_date_cache: list[Any] = [0, b""]
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date() -> bytes:
    """The ``Date`` header's value now (RFC 9110 5.6.7), formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        _date_cache[0] = now
        _date_cache[1] = b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
            _DAYS[t.tm_wday].encode(),
            t.tm_mday,
            _MONTHS[t.tm_mon - 1].encode(),
            t.tm_year,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
        )
    value: bytes = _date_cache[1]
    return value


async def _exchange_within(
    pool: UpstreamPool, endpoint: Endpoint, request: ProxyRequest, timeout_s: float
) -> tuple[UpstreamConnection, ResponseHead]:
    """:func:`_exchange` bounded by the function's timeout: both :func:`forward` and
    :func:`forward_raw` wait this long for the answer head, and no longer.

    Raises:
        FunctionTimeout: no answer head within ``timeout_s``.
    """
    with trio.move_on_after(timeout_s):
        return await _exchange(pool, endpoint, request)
    raise timeout_error(endpoint, timeout_s)


def _release(pool: UpstreamPool, connection: UpstreamConnection, reusable: bool) -> None:
    """After an answer was relayed: the connection goes back to the pool when the replica keeps it alive
    and the whole body was read, else it is closed (its state is unknown)."""
    if reusable:
        pool.give_back(connection)
    else:
        _close_quietly(connection)


async def _exchange(
    pool: UpstreamPool, endpoint: Endpoint, request: ProxyRequest
) -> tuple[UpstreamConnection, ResponseHead]:
    """Write the request and read the answer head, retrying once on a stale pooled connection."""
    for attempt in (0, 1):
        connection = pool.take(endpoint.authority) if attempt == 0 else None
        reused = connection is not None
        if connection is None:
            connection = await pool.connect(endpoint)
        streamed = False
        try:
            streamed = await _send_request(connection, request)
            head = await _read_head(connection, request.method)
        except (UpstreamClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            _close_quietly(connection)
            if reused and not streamed and request.replayable:
                continue  # The replica closed this idle connection as it was taken; a fresh one will do.
            raise connection_error(endpoint, exc) from exc
        except RemoteProtocolError as exc:
            _close_quietly(connection)
            raise invalid_answer_error(endpoint, exc) from exc
        except BaseException:
            _close_quietly(connection)  # Cancelled (timeout or client gone): the connection is mid-request.
            raise
        return connection, head
    raise AssertionError("unreachable")


async def _send_request(connection: UpstreamConnection, request: ProxyRequest) -> bool:
    """Write head and body; return True once body bytes were streamed (no longer replayable)."""
    stream = connection.stream
    if not request.more_body:
        body = request.body
        await send_all_now(stream, b"%s\r\nContent-Length: %d\r\n\r\n%s" % (request.head, len(body), body))
        return False
    if request.length >= 0:
        head = b"%s\r\nContent-Length: %d\r\n\r\n" % (request.head, request.length)
        await stream.send_all(head + request.body)
        while True:
            message = await request.receive()
            if message["type"] != "http.request":
                raise UpstreamClosed("client disconnected while sending its body")
            chunk = message.get("body", b"")
            if chunk:
                await stream.send_all(chunk)
            if not message.get("more_body", False):
                return True
    first = request.body
    first_chunk = b"%x\r\n%s\r\n" % (len(first), first) if first else b""
    await stream.send_all(request.head + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + first_chunk)
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise UpstreamClosed("client disconnected while sending its body")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        out = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b""
        if not more:
            await stream.send_all(out + b"0\r\n\r\n")
            return True
        if out:
            await stream.send_all(out)


async def _read_head(connection: UpstreamConnection, method: str) -> ResponseHead:
    stream = connection.stream
    buffer = connection.buffer
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = parse_response_head(buffer[:end], request_method=method)
            connection.buffer = buffer[end + 4 :]
            if head.status == 100:  # An interim answer: the real one follows.
                buffer = connection.buffer
                continue
            return head
        if len(buffer) > MAX_RESPONSE_HEAD_BYTES:
            raise RemoteProtocolError(502, "Upstream answer head too large")
        data = await receive_now(stream, READ_BYTES)
        if not data:
            raise UpstreamClosed("replica closed the connection before answering")
        buffer = buffer + data if buffer else data


async def _relay_body(connection: UpstreamConnection, head: ResponseHead, send: Send) -> bool:
    """Relay the answer body; return True when the connection is positioned at a clean boundary."""
    stream = connection.stream
    buffer = connection.buffer
    connection.buffer = b""
    framing = head.framing
    if framing == FRAMING_NONE:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return not buffer
    if framing == FRAMING_LENGTH:
        remaining = head.content_length
        if len(buffer) >= remaining:
            await send({"type": "http.response.body", "body": buffer[:remaining], "more_body": False})
            return len(buffer) == remaining
        if buffer:
            await send({"type": "http.response.body", "body": buffer, "more_body": True})
            remaining -= len(buffer)
        while remaining:
            data = await stream.receive_some(min(READ_BYTES, remaining))
            if not data:
                raise UpstreamClosed("replica closed the connection mid-answer")
            remaining -= len(data)
            await send({"type": "http.response.body", "body": data, "more_body": bool(remaining)})
        return True
    if framing == FRAMING_CHUNKED:
        decoder = ChunkedDecoder(MAX_CHUNKED_BODY_BYTES, MAX_RESPONSE_HEAD_BYTES, error_status=502)
        data = buffer
        while True:
            pieces = decoder.feed(data)
            for piece in pieces:
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            if decoder.done:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return not decoder.leftover
            data = await stream.receive_some(READ_BYTES)
            if not data:
                raise UpstreamClosed("replica closed the connection mid-answer")
    # Until close.
    if buffer:
        await send({"type": "http.response.body", "body": buffer, "more_body": True})
    while data := await stream.receive_some(READ_BYTES):
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return False


# The errors of a call to a replica, worded once for both invoke paths (this module and faasd.gateway.edgecall).


def unreachable_error(endpoint: Endpoint, exc: OSError) -> ReplicaUnreachable:
    """The replica refused the connection (or it failed): nothing was sent, another replica may be tried."""
    return ReplicaUnreachable(f"Can't reach replica {endpoint.replica} at {endpoint.authority}: {describe_error(exc)}")


def timeout_error(endpoint: Endpoint, timeout_s: float) -> FunctionTimeout:
    """No answer head within the function's timeout."""
    return FunctionTimeout(f"Function replica {endpoint.replica} did not answer within {timeout_s:g}s")


def connection_error(endpoint: Endpoint, exc: BaseException) -> InvocationError:
    """The connection failed before any answer (a call that may have started: not sent again)."""
    return InvocationError(f"Connection to replica {endpoint.replica} failed: {describe_error(exc)}")


def invalid_answer_error(endpoint: Endpoint, exc: RemoteProtocolError) -> InvocationError:
    """The replica's answer head does not parse."""
    return InvocationError(f"Replica {endpoint.replica} sent an invalid answer: {exc.reason}")


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
