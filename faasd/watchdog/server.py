"""The watchdog's HTTP/1.1 server: asyncio-style protocols around the sans-I/O parser in :mod:`faasd.http1`.

Why asyncio and not trio here (measured on the project machines): the watchdog starts once per replica
and its budget is ~150 ms to ready, while ``import trio`` alone costs 70-220 ms there; and per request
a trio task plus stream wrappers cost more CPU than the whole rest of the server. asyncio's protocol
callbacks (no task per request) keep the watchdog's own share of a fork-mode call near 0.1 ms. The
daemon, which starts once, uses trio. The same protocol runs on asyncio's loop (python and http modes)
and on the watchdog's own (fork and streaming modes, :mod:`faasd.watchdog.loop`: no ``asyncio`` import at
start), whose transports keep the asyncio semantics relied on here.

Structure: :class:`HttpServer` owns the listeners, the live connections and one periodic tick that
enforces every deadline (idle and slow-client read timeouts, stuck writes, and the app's own, e.g. a
function's exec timeout) -- one timer for the whole process instead of one per request. Each
:class:`HttpConnection` answers its requests strictly in order (pipelining is allowed, answers are
not interleaved) through :meth:`HttpConnection.respond`, which writes the whole answer in one send
(no Nagle/delayed-ACK stalls; asyncio also sets TCP_NODELAY).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from faasd.http1 import RemoteProtocolError, RequestParser
from faasd.logs import INFO, LineLogger, event
from faasd.watchdog.loop import running_loop

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import asyncio
    import socket
    from typing import Protocol

    from faasd.http1 import Request
else:
    Protocol = object  # The base of App, a description for type checkers only.

__all__ = ["App", "HttpConnection", "HttpServer"]

log = LineLogger("faasd.watchdog")

FAST_TICK_S = 0.05
"""Deadline check period while anything is in flight (the precision of timeouts)."""

IDLE_TICK_S = 1.0
"""Deadline check period when idle: only keep-alive idle timeouts are due then."""

MAX_PIPELINED_BYTES = 1024 * 1024
"""Bytes of a next request buffered while the current one runs; past it reading pauses."""

_HEAD_TEMPLATE = b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n%sX-Duration-Seconds: %.6f\r\n"
_REASONS: dict[int, bytes] = {200: b"OK"}
"""Reason phrases answered so far. Only the usual one is written here: ``http.HTTPStatus``, where the
others come from, is an enum of 60-odd members whose import cost ~0.5 ms of every watchdog's start."""


def _reason(status: int) -> bytes:
    """The reason phrase for ``status`` (``Unknown`` for a code ``http.HTTPStatus`` does not name)."""
    phrase = _REASONS.get(status)
    if phrase is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b"Unknown"
        _REASONS[status] = phrase
    return phrase


class App(Protocol):
    """What the server calls for each complete request."""

    def handle(self, request: Request, connection: HttpConnection) -> None:
        """Answer ``request`` by calling ``connection.respond`` exactly once, now or later."""

    def tick(self, now: float) -> bool:
        """Enforce the app's own deadlines; return True while it has work in flight."""


class HttpServer:
    """Listeners, connections and the deadline tick for one app.

    Args:
        app: answers requests.
        read_timeout_s: a request must arrive whole within this (and idle keep-alive connections
            are closed after it).
        write_timeout_s: an answer must be taken by the client within this.
        max_header_bytes, max_body_bytes: parser limits (431 / 413).
        on_response: called with (status, method, seconds) for every answer, for metrics.
        gate, refusal: refuse a request on its head alone (the call token), see :attr:`gate`.
    """

    def __init__(
        self,
        app: App,
        *,
        read_timeout_s: float,
        write_timeout_s: float,
        max_header_bytes: int,
        max_body_bytes: int,
        on_response: Callable[[int, str, float], None] | None = None,
        gate: Callable[[Request], bool] | None = None,
        refusal: bytes = b"Forbidden\n",
    ) -> None:
        self.app = app
        self.gate = gate
        """Asked about each request whose body is still to come: True refuses it at once (403 with
        ``refusal``, then the connection closes: its body is never read)."""
        self.refusal = refusal
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.on_response = on_response
        self.connections: set[HttpConnection] = set()
        self.listeners: list[asyncio.Server] = []
        self.draining = False
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick_fast = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        busy = sum(1 for connection in self.connections if connection.busy)
        return f"<HttpServer connections={len(self.connections)} busy={busy} draining={self.draining}>"

    async def listen(self, host: str, port: int, sock: socket.socket | None = None) -> asyncio.Server:
        """Start accepting on ``host:port`` (or on the listening ``sock`` given); returns once bound."""
        loop = running_loop()
        self._loop = loop
        if sock is not None:
            server = await loop.create_server(lambda: HttpConnection(self), sock=sock, backlog=1024)
        else:
            server = await loop.create_server(
                lambda: HttpConnection(self), host, port, backlog=1024, reuse_address=True
            )
        self.listeners.append(server)
        if self._tick_handle is None:
            self._tick_handle = loop.call_later(IDLE_TICK_S, self._tick)
        return server

    def wake_tick(self) -> None:
        """Make sure deadlines are checked at the fast rate (called when work starts)."""
        if not self._tick_fast and self._loop is not None:
            self._tick_fast = True
            if self._tick_handle is not None:
                self._tick_handle.cancel()
            self._tick_handle = self._loop.call_later(FAST_TICK_S, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        busy = self.app.tick(now)
        for connection in list(self.connections):
            if connection.busy:
                busy = True
            elif connection.deadline and now >= connection.deadline:
                connection.read_timed_out()
            if connection.write_deadline and now >= connection.write_deadline:
                connection.write_timed_out()
            elif connection.partial:
                busy = True
        self._tick_fast = busy
        assert self._loop is not None
        self._tick_handle = self._loop.call_later(FAST_TICK_S if busy else IDLE_TICK_S, self._tick)

    def stop_accepting(self) -> None:
        """Close the listeners and every connection that has no request in flight."""
        self.draining = True
        for server in self.listeners:
            server.close()
        for connection in list(self.connections):
            if not connection.busy:
                connection.close()

    def busy_connections(self) -> int:
        """Connections with a request in flight."""
        return sum(1 for connection in self.connections if connection.busy)

    def close(self) -> None:
        """Stop the tick and abort whatever connections remain."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        for connection in list(self.connections):
            connection.close()


class HttpConnection:
    """One client connection: parse, hand complete requests to the app, write answers in order.

    An ``asyncio.Protocol`` by its methods (not its base class: that would import asyncio)."""

    __slots__ = (
        "_bodyless",
        "_chunked",
        "_continue_sent",
        "_in_process",
        "_on_writable",
        "_paused",
        "_stream_keep_alive",
        "_stream_status",
        "busy",
        "call",
        "closed",
        "deadline",
        "parser",
        "partial",
        "peer_eof",
        "request",
        "server",
        "started",
        "transport",
        "write_deadline",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = RequestParser(server.max_header_bytes, server.max_body_bytes)
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False
        self.peer_eof = False
        self.partial = False
        self.request: Request | None = None
        self.call: object | None = None
        """The app's handle on the work running for ``request`` (it has an ``abandon()``)."""
        self.started = 0.0
        self.deadline = 0.0
        self.write_deadline = 0.0
        self._continue_sent = False
        self._in_process = False
        self._paused = False
        self._chunked = False
        self._bodyless = False
        """The streamed answer is to a HEAD request: its head is sent, its body is not."""
        self._stream_keep_alive = False
        self._stream_status = 0
        self._on_writable: Callable[[], None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if self.server.draining:
            transport.close()
            return
        self.server.connections.add(self)
        self.deadline = time.monotonic() + self.server.read_timeout_s

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        if self.busy:
            if len(self.parser._buffer) > MAX_PIPELINED_BYTES and not self._paused:
                self._paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool:
        self.peer_eof = True
        if not self.busy:
            self.close()
        return True  # Keep the write side open: an answer may still be on its way.

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        call = self.call
        if call is not None:
            self.call = None
            abandon = getattr(call, "abandon", None)
            if abandon is not None:
                abandon()

    def pause_writing(self) -> None:
        self.write_deadline = time.monotonic() + self.server.write_timeout_s

    def resume_writing(self) -> None:
        self.write_deadline = 0.0
        if self._on_writable is not None:
            self._on_writable()

    # -- requests ---------------------------------------------------------------------------------
    def _process(self) -> None:
        """Hand every complete buffered request to the app, one at a time."""
        self._in_process = True
        try:
            parser = self.parser
            while not self.busy and not self.closed:
                try:
                    request = parser.next_request()
                except RemoteProtocolError as exc:
                    self._protocol_error(exc)
                    return
                if request is None:
                    self._waiting_for_more()
                    return
                self.partial = False
                self._continue_sent = False
                self.busy = True
                self.request = request
                self.started = time.monotonic()
                try:
                    self.server.app.handle(request, self)
                except Exception:
                    # A bug must cost one request, never the connection or the process.
                    log.exception("request handler failed")
                    if self.busy and self.request is request:
                        self.call = None
                        self.respond(500, b"Internal watchdog error\n", "text/plain")
        finally:
            self._in_process = False

    def _waiting_for_more(self) -> None:
        parser = self.parser
        pending = parser.pending
        gate = self.server.gate
        if pending is not None and gate is not None and gate(pending):
            self.busy = True
            self.started = time.monotonic()
            self.request = pending
            self.peer_eof = True  # Forces Connection: close: the body is not read.
            self.respond(403, self.server.refusal, "text/plain")
            return
        if pending is not None and pending.expect_continue and not self._continue_sent:
            self._continue_sent = True
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if parser.has_partial_request:
            if not self.partial:
                self.partial = True
                self.deadline = time.monotonic() + self.server.read_timeout_s
                self.server.wake_tick()
        elif self.peer_eof or self.server.draining:
            self.close()
        if self._paused:
            self._paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        extra_headers: bytes = b"",
        head_length: int | None = None,
    ) -> None:
        """Write the answer to the current request in one send, then go on with the next one.

        ``extra_headers`` are complete ``Name: value\\r\\n`` lines. The answer to a HEAD request is sent
        without its body; its ``Content-Length`` is ``head_length`` when given (what the function's own
        server declared for it), else the length of ``body``.
        """
        request = self.request
        keep_alive = self._finish_request(status)
        if self.closed:
            return
        head_only = request is not None and request.method == "HEAD"
        length = head_length if head_only and head_length is not None else len(body)
        head = self._head(status, content_type, extra_headers, length, keep_alive)
        if head_only:
            body = b""
        assert self.transport is not None
        self.transport.write(head + body)
        self._next(keep_alive)

    # -- streamed answers -------------------------------------------------------------------------
    def start_stream(
        self,
        status: int,
        content_type: str,
        extra_headers: bytes = b"",
        length: int | None = None,
        on_writable: Callable[[], None] | None = None,
    ) -> None:
        """Send the head of an answer whose body follows through :meth:`stream_write`.

        The body is chunked unless ``length`` is given. While the client is slower than the producer,
        :attr:`writable` is False; ``on_writable`` is called when it may write again (back-pressure:
        memory stays bounded whatever the size). ``X-Duration-Seconds`` is the time to this head.
        """
        self._stream_status = status
        self._chunked = length is None
        self._on_writable = on_writable
        request = self.request
        keep_alive = request is not None and request.keep_alive and not self.server.draining and not self.peer_eof
        self._stream_keep_alive = keep_alive
        self._bodyless = request is not None and request.method == "HEAD"
        if self.closed or self.transport is None:
            return
        self.transport.write(self._head(status, content_type, extra_headers, length, keep_alive))

    def stream_write(self, data: bytes) -> None:
        """Send one piece of a streamed body (nothing when empty, or when answering HEAD)."""
        if self.closed or not data or self.transport is None or self._bodyless:
            return
        if self._chunked:
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.transport.write(data)

    def end_stream(self, complete: bool = True) -> None:
        """Finish a streamed answer; ``complete=False`` cuts it (the client sees a truncated body)."""
        keep_alive = self._stream_keep_alive and complete
        self._finish_request(self._stream_status)
        self._on_writable = None
        if self.closed or self.transport is None:
            return
        if not complete:
            self.transport.abort()
            self.closed = True
            self.server.connections.discard(self)
            return
        if self._chunked and not self._bodyless:
            self.transport.write(b"0\r\n\r\n")
        self._next(keep_alive)

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is over its high-water mark."""
        return not self.write_deadline

    # -- shared steps of an answer ----------------------------------------------------------------
    def _finish_request(self, status: int) -> bool:
        """Bookkeeping when an answer is decided; returns whether the connection stays open."""
        request = self.request
        duration = time.monotonic() - self.started
        self.busy = False
        self.request = None
        self.call = None
        if self.server.on_response is not None:
            self.server.on_response(status, request.method if request is not None else "-", duration)
        return request is not None and request.keep_alive and not self.server.draining and not self.peer_eof

    def _head(
        self, status: int, content_type: str, extra_headers: bytes, length: int | None, keep_alive: bool
    ) -> bytes:
        framing = b"Content-Length: %d\r\n" % length if length is not None else b"Transfer-Encoding: chunked\r\n"
        head = _HEAD_TEMPLATE % (
            status,
            _reason(status),
            _http_date(),
            content_type.encode("latin-1"),
            framing,
            time.monotonic() - self.started,
        )
        if not keep_alive:
            head += b"Connection: close\r\n"
        return head + extra_headers + b"\r\n"

    def _next(self, keep_alive: bool) -> None:
        """After an answer: close, or wait for (and maybe at once parse) the next request."""
        if not keep_alive:
            self.close()
            return
        self.deadline = time.monotonic() + self.server.read_timeout_s
        if not self._in_process and (self.parser._buffer or self._paused):
            self._process()

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        """Answer a request we could not parse, then close (the stream position is lost)."""
        event(log, INFO, "bad request", status=exc.status, reason=exc.reason)
        self.busy = True
        self.started = time.monotonic()
        self.request = None
        self.peer_eof = True  # Forces Connection: close.
        self.respond(exc.status, exc.reason.encode() + b"\n", "text/plain")

    # -- timeouts and closing ---------------------------------------------------------------------
    def read_timed_out(self) -> None:
        """No complete request within read_timeout: answer 408 if one had started, then close."""
        if self.parser.has_partial_request:
            self._protocol_error(RemoteProtocolError(408, "Request not received within read_timeout"))
        else:
            self.close()

    def write_timed_out(self) -> None:
        """The client did not take the answer within write_timeout: drop the connection."""
        event(log, INFO, "write timeout, closing connection")
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close after flushing what is already written."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.server.connections.discard(self)
            self.transport.close()


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The ``Date`` header value, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
    return _date_cache[1]
