"""One call on the invoke edge (:mod:`faasd.gateway.edge`): the replica's side, as callbacks on the edge's loop.

The rules are the trio path's (:func:`faasd.gateway.proxy.forward_raw` and
:meth:`faasd.gateway.invoke.Invoker._dispatch`), so that a call gets the same answer whichever thread takes
it: the least busy replica, another one (up to ``MAX_FAILOVER``) when a replica refuses the connection; a kept
connection checked before use, and a call whose kept connection fails before any answer sent again on a new
one only if it is replayable; the function's timeout until the answer head, then none; the answer relayed as
it comes (``Content-Length`` kept, a chunked or close-delimited body relayed chunked), reading the replica
only as fast as the client takes it; ``502`` for a replica that fails or does not answer in time, before the
answer started, and the connection cut once it has.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import time
from typing import TYPE_CHECKING

from faasd.errors import FaasdError
from faasd.gateway.invoke import CLIENT_CLOSED_STATUS, MAX_FAILOVER, log_failure
from faasd.gateway.proxy import (
    IDLE_TIMEOUT_S,
    MAX_CHUNKED_BODY_BYTES,
    MAX_IDLE_PER_ENDPOINT,
    MAX_RESPONSE_HEAD_BYTES,
    ProxyRequest,
    UpstreamClosed,
    answer_head,
    connection_error,
    invalid_answer_error,
    timeout_error,
    unreachable_error,
)
from faasd.http1 import (
    FRAMING_CHUNKED,
    FRAMING_LENGTH,
    FRAMING_NONE,
    ChunkedDecoder,
    RemoteProtocolError,
    ResponseHead,
    parse_response_head,
)
from faasd.logs import event
from faasd.providers.types import Endpoint
from faasd.tcpconnect import ip_family
from faasd.watchdog.transport import Transport

if TYPE_CHECKING:
    from faasd.gateway.edge import EdgeConnection
    from faasd.watchdog.loop import Loop

__all__ = ["EdgeCall", "Upstream", "UpstreamPool"]

log = logging.getLogger("faasd.gateway.edge")

_NONE: frozenset[str] = frozenset()
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class Upstream:
    """A connection to a replica (a transport's protocol): belongs to a call, or waits in the pool."""

    __slots__ = ("authority", "call", "idle_since", "pool", "sock", "transport")

    def __init__(self, pool: UpstreamPool, authority: str, sock: socket.socket) -> None:
        self.pool = pool
        self.sock = sock
        self.authority = authority
        self.call: EdgeCall | None = None
        self.idle_since = 0.0
        self.transport: Transport = None  # type: ignore[assignment]  # Set by connection_made.

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.call is not None:
            self.call.on_data(data)
        else:  # Idle, and the replica wrote out of turn: its state is unknown.
            self.transport.abort()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None:
        self.pool.discard(self)
        call, self.call = self.call, None
        if call is not None:
            call.upstream_lost(self, exc)


class UpstreamPool:
    """The edge's idle kept connections per replica (as :class:`faasd.gateway.proxy.UpstreamPool`, on the
    edge's loop), and its connects."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.idle: dict[str, list[Upstream]] = {}
        self.connects = 0

    def take(self, authority: str) -> Upstream | None:
        """An idle connection to ``authority`` that is fresh enough and that the replica neither closed nor
        wrote to, or None."""
        idle = self.idle.get(authority)
        now = time.monotonic()
        while idle:
            upstream = idle.pop()
            if now - upstream.idle_since < IDLE_TIMEOUT_S and _quiet(upstream.sock):
                return upstream
            upstream.transport.abort()
        return None

    def give_back(self, upstream: Upstream) -> None:
        upstream.call = None
        idle = self.idle.setdefault(upstream.authority, [])
        if len(idle) >= MAX_IDLE_PER_ENDPOINT:
            upstream.transport.close()
            return
        upstream.idle_since = time.monotonic()
        idle.append(upstream)

    def discard(self, upstream: Upstream) -> None:
        idle = self.idle.get(upstream.authority)
        if idle and upstream in idle:
            idle.remove(upstream)

    def forget(self, authority: str) -> None:
        for upstream in self.idle.pop(authority, []):
            upstream.transport.abort()

    def close_all(self) -> None:
        for authority in list(self.idle):
            self.forget(authority)

    def connect(self, endpoint: Endpoint, call: EdgeCall) -> None:
        """Open a connection to ``endpoint`` without blocking; ``call.connected(upstream)`` or
        ``call.unreachable(endpoint, error)`` follows (on a later pass of the loop, never inside this)."""
        family = ip_family(endpoint.host)
        if family is None:  # A name would be resolved here, blocking the loop: the trio path takes those.
            self.loop.call_soon(call.unreachable, endpoint, OSError(f"not an address: {endpoint.host[:80]!r}"))
            return
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self.loop.call_soon(call.unreachable, endpoint, exc)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((endpoint.host, endpoint.port))
        if code in (0, errno.EINPROGRESS):
            call.connecting = sock
            self.loop.add_writer(sock.fileno(), self._connected, sock, endpoint, call)
            return
        sock.close()
        self.loop.call_soon(call.unreachable, endpoint, OSError(code, os.strerror(code)))

    def _connected(self, sock: socket.socket, endpoint: Endpoint, call: EdgeCall) -> None:
        self.loop.remove_writer(sock.fileno())
        call.connecting = None
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            sock.close()
            call.unreachable(endpoint, OSError(code, os.strerror(code)))
            return
        self.connects += 1
        upstream = Upstream(self, endpoint.authority, sock)
        Transport(self.loop, sock, upstream)
        call.connected(upstream)


def _quiet(sock: socket.socket) -> bool:
    """The kept connection has nothing to read: the replica neither closed it nor wrote out of turn."""
    try:
        sock.recv(1, _PEEK)  # b"": the replica closed it; a byte: it wrote out of turn.
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


class EdgeCall:
    """A call from its replica's pick to its answer's last byte (see the module docstring)."""

    def __init__(
        self,
        client: EdgeConnection,
        name: str,
        endpoints: tuple[Endpoint, ...],
        request: ProxyRequest,
        call_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        started: float,
    ) -> None:
        self.client = client
        self.edge = client.edge
        self.name = name
        self.endpoints = endpoints
        self.request = request
        self.call_headers = call_headers
        self.keep_alive = keep_alive
        self.started = started
        self.tried: set[str] = set()
        self.endpoint: Endpoint | None = None
        self.slot: str | None = None
        """The authority whose in-flight count holds this call."""
        self.upstream: Upstream | None = None
        self.connecting: socket.socket | None = None
        self.reused = False
        self.replayed = False
        self.head: ResponseHead | None = None
        self.buffer = b""
        self.remaining = 0
        self.decoder: ChunkedDecoder | None = None
        self.timeout_s = 0.0
        self.over = False

    # -- sending ----------------------------------------------------------------------------------------
    def begin(self) -> None:
        self.timeout_s = self.edge.invoker.timeout_for(self.name)
        self.client.deadline = time.monotonic() + self.timeout_s
        self._attempt(self.edge.router.pick(self.name, self.endpoints))

    def _attempt(self, endpoint: Endpoint, *, fresh: bool = False) -> None:
        edge = self.edge
        self.endpoint = endpoint
        authority = endpoint.authority
        in_flight = edge.router.in_flight
        in_flight[authority] = in_flight.get(authority, 0) + 1
        self.slot = authority
        upstream = None if fresh else edge.pool.take(authority)
        if upstream is None:
            self.reused = False
            edge.pool.connect(endpoint, self)
            return
        self.reused = True
        self.connected(upstream)

    def connected(self, upstream: Upstream) -> None:
        if self.over:
            upstream.transport.close()
            return
        self.upstream = upstream
        upstream.call = self
        endpoint = self.endpoint
        assert endpoint is not None
        request = self.request
        head = request.head
        if endpoint.token_line:
            head += endpoint.token_line
        else:
            token = self.edge.invoker.call_token
            if token is not None and endpoint.call_token:
                head += token.header_line
        body = request.body
        upstream.transport.write(b"%s\r\nContent-Length: %d\r\n\r\n%s" % (head, len(body), body))

    def unreachable(self, endpoint: Endpoint, exc: OSError) -> None:
        """The replica refused the connection (nothing was sent): try another, as the trio path does."""
        if self.over:
            return
        self._release_slot()
        authority = endpoint.authority
        self.tried.add(authority)
        self.edge.pool.forget(authority)
        if len(self.tried) >= min(len(self.endpoints), MAX_FAILOVER):
            self._fail(unreachable_error(endpoint, exc))
            return
        try:
            self._attempt(self.edge.router.pick(self.name, self.endpoints, frozenset(self.tried)))
        except FaasdError as error:
            self._fail(error)

    # -- the answer ---------------------------------------------------------------------------------------
    def on_data(self, data: bytes) -> None:
        if self.over:
            return
        if self.head is None:
            buffer = self.buffer + data if self.buffer else data
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_RESPONSE_HEAD_BYTES:
                        self._invalid(RemoteProtocolError(502, "Upstream answer head too large"))
                        return
                    self.buffer = buffer
                    return
                try:
                    head = parse_response_head(buffer[:end], request_method=self.request.method)
                except RemoteProtocolError as exc:
                    self._invalid(exc)
                    return
                buffer = buffer[end + 4 :]
                if head.status != 100:  # An interim answer: the real one follows.
                    break
            self.buffer = b""
            self._answer_head(head, buffer)
            return
        self._relay(data, b"")

    def _answer_head(self, head: ResponseHead, data: bytes) -> None:
        self.head = head
        self.client.deadline = math.inf  # The function's timeout bounds the wait for the head, not the body.
        parts = answer_head(head, self.call_headers, self.keep_alive)
        if head.framing == FRAMING_LENGTH or head.framing == FRAMING_NONE:
            # No body (HEAD, 204, 304) keeps the length the replica declared, as forward_raw does.
            self.remaining = max(head.content_length, 0) if head.framing == FRAMING_LENGTH else 0
            parts.append(b"content-length: %d\r\n\r\n" % max(head.content_length, 0))
        else:
            if head.framing == FRAMING_CHUNKED:
                self.decoder = ChunkedDecoder(MAX_CHUNKED_BODY_BYTES, MAX_RESPONSE_HEAD_BYTES, error_status=502)
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
        self._relay(data, b"".join(parts))

    def _relay(self, data: bytes, out: bytes) -> None:
        head = self.head
        assert head is not None
        client = self.client
        if head.framing == FRAMING_NONE or head.framing == FRAMING_LENGTH:
            remaining = self.remaining
            piece = data[:remaining] if len(data) > remaining else data
            self.remaining = remaining - len(piece)
            client.write(out + piece if out else piece)
            if not self.remaining:
                self._done(reusable=len(piece) == len(data))
            return
        decoder = self.decoder
        if decoder is None:  # Until the replica closes (upstream_lost ends it).
            if data:
                out += b"%x\r\n%s\r\n" % (len(data), data)
            if out:
                client.write(out)
            return
        try:
            pieces = decoder.feed(data)
        except RemoteProtocolError:
            self._cut_short("replica sent an invalid chunked body")
            return
        for piece in pieces:
            if piece:
                out += b"%x\r\n%s\r\n" % (len(piece), piece)
        if decoder.done:
            client.write(out + b"0\r\n\r\n")
            self._done(reusable=not decoder.leftover)
        elif out:
            client.write(out)

    def upstream_lost(self, upstream: Upstream, exc: BaseException | None) -> None:
        if self.over or upstream is not self.upstream:
            return
        self.upstream = None
        head = self.head
        if head is None:
            endpoint = self.endpoint
            assert endpoint is not None
            if self.reused and not self.replayed and self.request.replayable:
                self.replayed = True  # The replica closed this kept connection as it was taken.
                self._release_slot()
                self._attempt(endpoint, fresh=True)
                return
            gone = exc if exc is not None else UpstreamClosed("replica closed the connection before answering")
            self._fail(connection_error(endpoint, gone))
            return
        if head.framing != FRAMING_LENGTH and head.framing != FRAMING_NONE and self.decoder is None:
            self.client.write(b"0\r\n\r\n")  # A close-delimited body ends here.
            self._done(reusable=False)
            return
        self._cut_short("replica closed the connection mid-answer")

    def pause(self) -> None:
        """The client's connection has much unsent: stop reading the replica."""
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    # -- endings ------------------------------------------------------------------------------------------
    def timed_out(self) -> None:
        """No answer head within the function's timeout (the connection's deadline)."""
        if self.over or self.head is not None:
            return
        assert self.endpoint is not None  # Set by begin(), before any deadline.
        self._fail(timeout_error(self.endpoint, self.timeout_s))

    def _invalid(self, exc: RemoteProtocolError) -> None:
        assert self.endpoint is not None
        self._fail(invalid_answer_error(self.endpoint, exc))

    def _fail(self, exc: FaasdError) -> None:
        """No answer was written yet: answer the error (the trio path's status and text)."""
        self._end(exc.http_status, reusable=False)
        log_failure(self.name, exc, self.call_headers)
        self.client.answer_error(exc.http_status, exc.message, self.call_headers, self.keep_alive)

    def _done(self, *, reusable: bool) -> None:
        head = self.head
        assert head is not None
        self._end(head.status, reusable=reusable and head.keep_alive)
        self.client.answered(self.keep_alive)

    def _cut_short(self, why: str) -> None:
        event(log, logging.WARNING, "invoke answer cut short", function=self.name, reason=why)
        self._end(500, reusable=False)
        self.client.cut_short()

    def client_gone(self) -> None:
        """The client closed its connection before its answer was complete (counted as 499)."""
        if not self.over:
            self._end(CLIENT_CLOSED_STATUS, reusable=False)

    def _end(self, status: int, *, reusable: bool) -> None:
        self.over = True
        self._release_slot()
        if self.connecting is not None:
            self.edge.loop.remove_writer(self.connecting.fileno())
            self.connecting.close()
            self.connecting = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.call = None
            if reusable:
                self.edge.pool.give_back(upstream)
            else:
                upstream.transport.abort()
        self.edge.call_finished(self.name, self.started, status, metered=True)

    def _release_slot(self) -> None:
        """The replica no longer counts this call as its load (the router's least-busy pick)."""
        if self.slot is not None:
            self.edge.router.in_flight[self.slot] -= 1
            self.slot = None
