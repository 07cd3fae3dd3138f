"""The daemon's HTTP/1.1 server: hypercorn's HTTP/1.1 protocol on trio, with the limits of an exposed server.

hypercorn parses HTTP (``H11Protocol`` on h11) and runs the ASGI app; this module replaces its trio
TCP layer (``hypercorn/trio/tcp_server.py`` and ``run.py``), because that layer as of hypercorn 0.18:

* has one ``read_timeout`` for every read, also while the app works on a request it has whole, so it
  would cut a function call running longer than it, or a ``/system/logs?follow`` stream; left unset,
  nothing bounds a slow request body (one byte every 10 s held a connection for minutes), and a slow
  request head is bounded only by the keep-alive timeout; nothing bounds a client that does not read
  its answer, nor the number of connections;
* closes a connection from inside the app's ``send()``: when the app answers before the request body
  came (a 401, 404 or 405), the close runs in that ``send()``, and quart-trio cancels its response
  task as soon as hypercorn, in the same call, reports the disconnect -- the close is cancelled at
  ``send_eof()`` before ``aclose()``, the socket stays open for good (CLOSE-WAIT once the client gives
  up) and the next request on it is read and never answered;
* blocks the app's last ``send()`` for good when the app answered without reading a body that filled
  its receive queue: the disconnect is put into that full queue from inside the app's own call.

So here, per connection (names as in Go's ``net/http``):

* **idle**: waiting for the first byte of the next request, up to ``keep_alive_timeout``; a new
  connection must send a whole request head within ``header_timeout`` of being accepted;
* **head**: a request head must arrive whole within ``header_timeout`` of its first byte (over
  ``max_header_bytes``: 431);
* **body**: while a request body is being received, no pause may exceed ``read_timeout`` and, after
  the first ``read_timeout``, the body must arrive at :data:`MIN_BODY_RATE` bytes/s on average;
* **busy**: the app has the request whole: no read deadline (a call may take ``upstream_timeout``, a
  log follower for ever); the client closing is still noticed;
* every write (a piece of an answer, up to 64 KiB) must be taken by the client within ``write_timeout``:
  a client that stops reading cannot hold a connection and its call.

A head or body that times out is answered ``408`` (if no answer started) and the connection closed at
once.

The invoke fast path (:mod:`faasd.gateway.fastpath`, given as ``fast_route``): between requests, a whole
plain function call in the bytes received is answered on the connection's own task without the
protocol or the ASGI app; anything else goes to the protocol from its first byte. The deadlines above
hold on both paths (a head being held for the fast path is in the **head** phase; a fast call is
**busy**).
Closing never runs in the app's task: the app's ``Closed`` only half-closes the socket, and the
connection's own task drains what the client still sends for up to :data:`LINGER_S` (so the client
reads the answer instead of a reset) and closes it. An answer sent before its request body was read
carries ``Connection: close``. Over ``max_connections`` open connections, a new one is answered
``503`` and closed. HTTP/1.1 only: ``Upgrade: h2c`` is ignored (RFC 9110 §7.8 allows it), other
versions get ``505``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import math
import resource
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, repr_socket_addr, wrap_app

from faasd.gateway._protocol import AppTasks, ClientGone, Http1Protocol, RequestRefused
from faasd.gateway.fastpath import FastInvokeRoute, Verdict, classify
from faasd.gateway.proxy import receive_now, receive_waiting, send_now
from faasd.logs import event

__all__ = [
    "LINGER_S",
    "MIN_BODY_RATE",
    "ClientGone",
    "HttpServer",
    "ServerLimits",
    "ServerStatistics",
    "fit_connections",
]

log = logging.getLogger(__name__)

MAX_RECV = 64 * 1024
MIN_BODY_RATE = 1024.0
"""Bytes/s a request body must average once it has been arriving for ``read_timeout`` (as Kestrel's
``MinRequestBodyDataRate``): a body trickled in one byte at a time is cut off early."""
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024 * 1024
"""After an answer that ends the connection (a 413, a 401 before the body), what the client still sends
is read and dropped for up to ``LINGER_S`` / ``LINGER_BYTES`` before the socket closes: closing with
unread data sends a reset, which destroys the answer before a client that sends its whole body first
reads it. Dropping costs no memory; the time bound keeps it cheap."""
ACCEPT_RETRY_S = 0.1
"""Out of descriptors or memory, how long accepting waits before it tries again (trio's own delay)."""
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
REFUSE_TIMEOUT_S = 1.0
"""How long a connection over ``max_connections`` gets to take its 503."""
FD_RESERVE = 256
"""Open files kept for the daemon itself (database, listening and replica sockets, pipes, probes)
when fitting ``max_connections`` under the open-files limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """Per-connection deadlines and sizes (see the module docstring); the daemon's config sets them."""

    header_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    keep_alive_timeout_s: float = 75.0
    """Longer than common client pools keep idle connections, so a client never reuses one we close."""
    write_timeout_s: float = 30.0
    max_connections: int = 1024
    max_header_bytes: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of the server's counters."""

    connections: int
    refused: int
    timed_out: int


class _Phase(enum.Enum):
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    BUSY = "busy"


class HttpServer:
    """Serves an ASGI app on HTTP/1.1 with :class:`ServerLimits`; see the module docstring.

    Args:
        app: the ASGI application (it also receives the lifespan events).
        bind: ``host:port`` strings, as hypercorn's ``bind``.
        limits: the deadlines and sizes.
        graceful_timeout_s: after the shutdown trigger, how long requests in flight may take.

    Resource handling: every connection is a task in the nursery of :meth:`serve`; each closes its
    socket as soon as its request loop ends, before waiting for the app's task.
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        bind: list[str],
        limits: ServerLimits,
        graceful_timeout_s: float,
        fast_route: FastInvokeRoute | None = None,
        answered: trio.Event | None = None,
    ) -> None:
        config = HypercornConfig()
        config.bind = bind
        config.accesslog = None
        config.errorlog = logging.getLogger("faasd.gateway.server")
        config.include_server_header = False
        config.keep_alive_timeout = limits.keep_alive_timeout_s
        config.h11_max_incomplete_size = limits.max_header_bytes
        config.backlog = 1024
        config.graceful_timeout = graceful_timeout_s
        self.config = config
        self.limits = limits
        self.app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self.context = WorkerContext(None)
        self.fast_route = fast_route
        """Serves whole invoke requests without hypercorn (:mod:`faasd.gateway.fastpath`); None: off."""
        self.connections: set[_Connection] = set()
        self.refused = 0
        self.timed_out = 0
        self.stopping = False
        self.fast_calls = 0
        """Requests answered on the fast path since start (tests read it: the path was taken)."""
        self.answered = answered if answered is not None else trio.Event()
        """Set once a first request was answered (or its connection closed): the daemon starts its second
        stage then, so that the first answer does not wait for the interpreter's lock (faasd.daemon)."""
        self.listen_sockets: list[socket.socket] = []
        """The listening sockets, once :meth:`serve` bound them (the invoke edge accepts on duplicates)."""
        self.adopted = 0
        """Connections handed over by the invoke edge since start (:meth:`adopt`)."""
        self._handler: Callable[[trio.SocketStream, bytes, float], Awaitable[None]] | None = None
        self._connections: trio.Nursery | None = None
        self._accept_scope = trio.CancelScope()
        self._accept_again = trio.Event()
        self.extra_connections: Callable[[], int] = lambda: 0
        """Connections held elsewhere that count against ``max_connections`` (the invoke edge's)."""
        self.serving = trio.Event()
        """Set once :meth:`serve` listens (the invoke edge starts after it)."""

    def __repr__(self) -> str:
        stats = self.statistics()
        return f"<HttpServer bind={self.config.bind} connections={stats.connections} refused={stats.refused}>"

    def working(self) -> int:
        """Requests being worked on now: the request is whole and its answer not sent yet (fast path or
        ASGI app). Not counted: idle connections and requests whose client is still sending the body (a
        slow upload is the client's to retry). What a graceful shutdown waits for; read from each
        connection's phase, so nothing is counted per request."""
        return sum(1 for c in self.connections if c.phase is _Phase.BUSY and c.closing_since is None)

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(connections=len(self.connections), refused=self.refused, timed_out=self.timed_out)

    async def serve(
        self,
        *,
        shutdown_trigger: Callable[[], Awaitable[object]],
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind, report the URLs to ``task_status``, serve until ``shutdown_trigger()`` returns, then
        stop accepting, close idle connections and let requests in flight finish (bounded by
        ``graceful_timeout_s``)."""
        lifespan_state: dict[str, Any] = {}
        lifespan = Lifespan(self.app, self.config, lifespan_state)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            sockets = self.config.create_sockets()
            listeners = []
            binds = []
            for sock in sockets.insecure_sockets:
                sock.listen(self.config.backlog)
                self.listen_sockets.append(sock)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            async with trio.open_nursery() as connections:
                self._connections = connections
                handler = partial(self._connection, lifespan_state)
                self._handler = handler
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(self._accept, handler, listeners, connections)
                    task_status.started(binds)
                    self.serving.set()
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
                for listener in listeners:
                    listener.socket.close()
                self.stopping = True
                await self.context.terminated.set()
                for connection in list(self.connections):
                    connection.shutdown()
                connections.cancel_scope.deadline = trio.current_time() + self.config.graceful_timeout
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _accept(
        self, handler: Callable[[trio.SocketStream], Awaitable[None]], listeners: list[Any], nursery: trio.Nursery
    ) -> None:
        """Accept connections, except while the invoke edge does (:meth:`pause_accepting`). Not
        ``trio.serve_listeners``, which closes its listeners when cancelled: a pause must leave them open."""
        while True:
            with self._accept_scope:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(_accept_from, listener, handler, nursery)
            await self._accept_again.wait()
            self._accept_scope = trio.CancelScope()
            self._accept_again = trio.Event()

    def pause_accepting(self) -> None:
        """The invoke edge accepts on the listening sockets now (:mod:`faasd.gateway.edge`)."""
        self._accept_scope.cancel()

    def resume_accepting(self) -> None:
        """The invoke edge stopped: accept here again."""
        self._accept_again.set()

    def adopt(self, sock: socket.socket, data: bytes, waited_s: float = 0.0) -> None:
        """Serve a connection the invoke edge accepted, starting with the bytes it read and did not answer
        (``data``), as if this server had accepted it and read them; ``waited_s``: how long ago the edge
        accepted it, for a connection that has not completed a request head yet (its ``header_timeout``
        runs from the accept, not from here). Called on the trio thread (through
        ``TrioToken.run_sync_soon``); a server that stops closes it."""
        nursery, handler = self._connections, self._handler
        if nursery is None or handler is None or self.stopping:
            sock.close()
            return
        if type(sock) is not socket.socket:  # The edge's loop accepts with _socket's type, which trio refuses.
            sock = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.adopted += 1
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        nursery.start_soon(handler, stream, data, waited_s)

    async def _connection(
        self, state: dict[str, Any], stream: trio.SocketStream, data: bytes = b"", waited_s: float = 0.0
    ) -> None:
        if len(self.connections) + self.extra_connections() >= self.limits.max_connections:
            self.refused += 1
            await _refuse(stream, self.limits.max_connections)
            return
        connection = _Connection(self, stream, ConnectionState(state.copy()))
        connection.phase_started -= waited_s
        self.connections.add(connection)
        try:
            await connection.run(data)
        finally:
            self.connections.discard(connection)


async def _accept_from(
    listener: trio.SocketListener, handler: Callable[[trio.SocketStream], Awaitable[None]], nursery: trio.Nursery
) -> None:
    """Accept on ``listener`` until cancelled; out of descriptors or memory, wait a little and go on (as
    ``trio.serve_listeners``)."""
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                raise
            event(log, logging.ERROR, "cannot accept a connection; retrying", error=exc.strerror or str(exc))
            await trio.sleep(ACCEPT_RETRY_S)
            continue
        nursery.start_soon(handler, stream)


def fit_connections(max_connections: int) -> int:
    """Raise the soft open-files limit to the hard one, and return how many client connections fit.

    Each client connection may need an upstream connection to a replica too, so at most half of what
    is left after :data:`FD_RESERVE` goes to clients; a lower ``max_connections`` is kept as it is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = _kernel_open_files_max()  # An unlimited hard limit still stops at fs.nr_open.
    if soft == resource.RLIM_INFINITY:
        return max_connections
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            event(log, logging.WARNING, "cannot raise the open-files limit", soft=soft, hard=hard, error=str(exc))
    fitting = max(1, (soft - FD_RESERVE) // 2)
    if fitting < max_connections:
        event(
            log,
            logging.WARNING,
            "max_connections lowered to fit the open-files limit",
            max_connections=max_connections,
            now=fitting,
            open_files_limit=soft,
        )
        return fitting
    return max_connections


def _kernel_open_files_max() -> int:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1024 * 1024


async def _refuse(stream: trio.SocketStream, limit: int) -> None:
    body = f"Too many connections (max_connections = {limit}); try again later\n".encode()
    head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    with trio.move_on_after(REFUSE_TIMEOUT_S):
        try:
            await stream.send_all(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            stream.socket.shutdown(socket.SHUT_WR)
            await stream.receive_some(MAX_RECV)  # The client's request, or its close: then close.
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


class _Connection:
    """One client connection: reads bytes into the HTTP/1.1 protocol (hypercorn's, adapted in
    :mod:`faasd.gateway._protocol`), enforces the deadlines, writes what the protocol sends, and closes
    the socket from its own task."""

    def __init__(self, server: HttpServer, stream: trio.SocketStream, state: ConnectionState) -> None:
        self.server = server
        self.limits = server.limits
        self.stream = stream
        self.state = state
        self.send_lock = trio.Lock()
        now = trio.current_time()
        self.phase = _Phase.IDLE
        self.phase_started = now
        self.fresh = True
        """No request head completed yet: the first must come within header_timeout of the accept."""
        self.body_started = now
        self.body_bytes = 0
        self.last_read = now
        self.closing_since: float | None = None
        self.lingered = 0
        self.writable = True
        self.scope: trio.CancelScope | None = None
        self.reading = False
        self.protocol: Http1Protocol | None = None
        self.held = b""
        """The start of a request head that may be for the fast path, not yet given to the protocol."""
        self.client_host = ""

    async def run(self, data: bytes = b"") -> None:
        """Serve the connection; ``data``: bytes already read from it (the invoke edge's hand-over)."""
        sock = self.stream.socket
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            self.client_host = client[0] if client else ""
            async with AppTasks() as tasks:
                protocol = Http1Protocol(
                    self.server.app,
                    self.server.config,
                    self.server.context,
                    tasks,
                    self.state,
                    False,
                    client,
                    server,
                    self._protocol_send,
                )
                self.protocol = protocol
                try:
                    await self._read_loop(protocol, data)
                finally:
                    self._close_socket()
                    await protocol.handle(Closed())
        except OSError:
            pass
        except Exception:  # One connection's failure is not the server's: log it, close it, go on.
            log.exception("connection failed")
        finally:
            self._close_socket()

    def shutdown(self) -> None:
        """The server stops: an idle connection closes now, a busy one after its answer (hypercorn's
        protocol sees ``context.terminated`` and does not recycle)."""
        if self.phase is _Phase.IDLE:
            self._begin_close(linger=False)

    # -- reading and deadlines ------------------------------------------------------------------------
    async def _read_loop(self, protocol: Http1Protocol, first: bytes = b"") -> None:
        """Read, enforce the phase's deadline, feed the protocol; linger once closing.

        Bytes already waiting are read at once, with no cancel scope: a keep-alive client's next request
        is often there by the time an answer's bookkeeping is done, and a scope per read was a tenth of
        the daemon's work on that path. Only a read that must wait gets a scope, carrying the phase's
        deadline (a deadline already past, such as a head trickling in too slowly, ends it at once).
        While the protocol handles bytes it runs in a scope without a deadline (hypercorn may wait in
        there: for the app to take a body chunk, or for an answer to finish before a pipelined request),
        which :meth:`_begin_close` cancels if the connection starts closing meanwhile (hypercorn would not
        wake up for that). The fast path needs none: it never waits on the client. ``first``: bytes read
        before (the invoke edge's), handled as the first read.
        """
        stream = self.stream
        while True:
            data: bytes | None = None
            probed = self.closing_since is None
            if first:
                data, first = first, b""
            elif probed:
                await trio.lowlevel.checkpoint_if_cancelled()
                data = receive_waiting(stream, MAX_RECV)
            if data is None:  # Nothing waiting (or lingering): wait under the phase's deadline.
                with trio.CancelScope(deadline=self._deadline()) as scope:
                    self.scope = scope
                    self.reading = True
                    try:
                        if probed:  # The probe just found nothing: wait before reading, not a second EAGAIN.
                            await trio.lowlevel.wait_readable(stream.socket)
                        data = await receive_now(stream, MAX_RECV)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    self.reading = False
                self.scope = None
            if data and self.closing_since is None:
                self._received(len(data))
                if self.held or (self.server.fast_route is not None and _between_requests(protocol)):
                    data = await self._serve_fast(data)
                if data:
                    with trio.CancelScope() as scope:  # For _begin_close: hypercorn may wait in there.
                        self.scope = scope
                        with contextlib.suppress(RequestRefused, ClientGone):
                            await protocol.handle(RawData(data))
                    self.scope = None
                if self.closing_since is None:
                    self._after_events(protocol)
                continue
            if self.closing_since is not None:  # Lingering: drop what comes until EOF or the deadline.
                if not data:
                    return
                self.lingered += len(data)
                if self.lingered > LINGER_BYTES:
                    return
            elif data is None:
                await self._timed_out(protocol)
            else:  # The client closed (or reset) the connection.
                with contextlib.suppress(RequestRefused, ClientGone):
                    if self.held:  # The start of a head the fast path was waiting on: the protocol's now.
                        held, self.held = self.held, b""
                        await protocol.handle(RawData(held))
                    await protocol.handle(RawData(b""))  # A head cut short is answered 400.
                return

    async def _serve_fast(self, data: bytes) -> bytes:
        """Answer the whole invoke requests at the start of ``data`` (plus what was held); return the
        bytes that are the protocol's (from the first request the fast path does not take)."""
        route = self.server.fast_route
        assert route is not None
        buffer = self.held + data if self.held else data
        self.held = b""
        limit = self.limits.max_header_bytes
        while buffer:
            verdict, request, target, rest = classify(buffer, route, limit)
            if verdict is Verdict.SLOW:
                return buffer
            if verdict is Verdict.MORE:
                self.held = buffer
                return b""
            assert request is not None
            self.fresh = False
            self.phase = _Phase.BUSY
            if self.server.stopping:
                request.keep_alive = False
            self.server.fast_calls += 1
            try:
                keep = await route.serve(request, target, self.client_host, self._write_fast)
            except OSError:  # ClientGone: the client left (the call is counted as 499).
                self._begin_close(linger=False)
                return b""
            except Exception:  # A replica failing mid-answer: the answer is cut short, as on the ASGI path.
                log.exception("invoke answer cut short")
                self._begin_close(linger=False)
                return b""
            if not keep or self.server.stopping or not self.writable:
                self._begin_close(linger=True)
                return b""
            self._became_idle()
            buffer = rest
            if buffer:
                self.phase = _Phase.HEAD
                self.phase_started = trio.current_time()
        return b""

    async def _write_fast(self, data: bytes) -> None:
        """Write for the fast path: its answers go out on the connection's own task, never concurrently
        with the protocol's, so without the lock; same deadline and failure handling as :meth:`_write`.

        The connection is not read while a fast call runs, so a client that closed meanwhile is found
        here, by a peek (one non-blocking syscall): its call is counted as 499 and nothing is written,
        as the ASGI route, whose read loop sees the close, does."""
        if not self.writable or _peer_closed(self.stream):
            self._close_socket()
            raise ClientGone("the client's connection is closed")
        try:
            sent = send_now(self.stream, data)  # A whole small answer, without a trip through trio's loop.
        except OSError:
            sent = -1
        if sent == len(data):
            return
        if sent < 0:
            self._close_socket()
            raise ClientGone("the client's connection is closed")
        with trio.CancelScope(deadline=trio.current_time() + self.limits.write_timeout_s, shield=True) as timer:
            try:
                await self.stream.send_all(memoryview(data)[sent:])
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if timer.cancelled_caught:
            event(log, logging.DEBUG, "client does not read its answer, closing")
        self._close_socket()
        raise ClientGone("the client's connection is closed")

    def _received(self, size: int) -> None:
        now = trio.current_time()
        self.last_read = now
        if self.phase is _Phase.IDLE:
            self.phase = _Phase.HEAD
            if not self.fresh:
                self.phase_started = now
        elif self.phase is _Phase.BODY:
            self.body_bytes += size

    def _after_events(self, protocol: Http1Protocol) -> None:
        """Where the request stands once the protocol took the bytes (h11's view of the client)."""
        connection = protocol.connection
        if not isinstance(connection, h11.Connection):
            self.phase = _Phase.BUSY  # A websocket handshake: the app decides.
            return
        their_state = connection.their_state
        if their_state is h11.SEND_BODY:
            if self.phase is not _Phase.BODY:
                self.fresh = False
                self.phase = _Phase.BODY
                self.body_started = self.last_read
                self.body_bytes = 0
        elif their_state is not h11.IDLE:
            self.fresh = False
            self.phase = _Phase.BUSY

    def _deadline(self) -> float:
        limits = self.limits
        if self.closing_since is not None:
            return self.closing_since + LINGER_S
        phase = self.phase
        if phase is _Phase.IDLE:
            wait = limits.header_timeout_s if self.fresh else limits.keep_alive_timeout_s
            return self.phase_started + wait
        if phase is _Phase.HEAD:
            return self.phase_started + limits.header_timeout_s
        if phase is _Phase.BODY:
            rate_deadline = self.body_started + limits.read_timeout_s + self.body_bytes / MIN_BODY_RATE
            return min(self.last_read + limits.read_timeout_s, rate_deadline)
        return math.inf

    def _reschedule(self) -> None:
        if self.scope is not None and self.reading:
            self.scope.deadline = self._deadline()

    def _became_idle(self) -> None:
        """The answer went out and the connection is kept for the next request."""
        self.server.answered.set()
        self.phase = _Phase.IDLE
        self.phase_started = trio.current_time()
        protocol = self.protocol
        connection = protocol.connection if protocol is not None else None
        if isinstance(connection, h11.Connection) and connection.trailing_data[0]:
            self.phase = _Phase.HEAD  # Part of the next head came with the last body.
        self._reschedule()

    async def _timed_out(self, protocol: Http1Protocol) -> None:
        """A head or body did not arrive in time (408 unless an answer started), or the connection sat
        idle for its keep-alive timeout: close."""
        phase = self.phase
        if phase is _Phase.HEAD or phase is _Phase.BODY:
            self.server.timed_out += 1
            event(log, logging.DEBUG, "client too slow, closing", phase=phase.value, client=protocol.client)
            answer_started = False
            if isinstance(protocol.connection, h11.Connection):
                answer_started = protocol.connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE)
            if phase is _Phase.BODY:
                await protocol.handle(Closed())  # The app hears the client is gone.
            if not answer_started:
                what = "request head" if phase is _Phase.HEAD else "request body"
                limit = self.limits.header_timeout_s if phase is _Phase.HEAD else self.limits.read_timeout_s
                with contextlib.suppress(ClientGone):
                    await self._write(_timeout_answer(f"The {what} did not arrive in time (timeout {limit:g}s)"))
        # No lingering for a client this slow: it would only keep trickling.
        self._begin_close(linger=False)

    # -- writing and closing ------------------------------------------------------------------------
    async def _protocol_send(self, message: Event) -> None:
        if isinstance(message, RawData):
            await self._write(message.data)
        elif isinstance(message, Closed):
            self._begin_close(linger=True)
        elif isinstance(message, Updated) and message.idle:
            self._became_idle()

    async def _write(self, data: bytes) -> None:
        """Write under the lock, shielded (a cancelled app must not cut an answer in the middle), within
        write_timeout; a failed or stuck write ends the connection.

        Raises:
            ClientGone: the connection is closed (now or before): the app stops producing its answer.
        """
        if not data:
            return  # h11 ends a Content-Length body with nothing to send.
        async with self.send_lock:
            if not self.writable:
                raise ClientGone("the client's connection is closed")
            # Shielded from the app's cancellation, not from its own deadline.
            with trio.CancelScope(deadline=trio.current_time() + self.limits.write_timeout_s, shield=True) as timer:
                try:
                    await self.stream.send_all(data)
                    return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            if timer.cancelled_caught:
                event(log, logging.DEBUG, "client does not read its answer, closing")
            self.writable = False
            self._close_socket()
        raise ClientGone("the client's connection is closed")

    def _begin_close(self, *, linger: bool) -> None:
        """The protocol is done with this connection. Synchronous on purpose: it may run in the app's
        task, which may be cancelled at any checkpoint; the connection's own task does the rest."""
        if self.closing_since is not None:
            return
        self.server.answered.set()
        self.writable = False
        if linger:
            self.closing_since = trio.current_time()
            with contextlib.suppress(OSError):
                self.stream.socket.shutdown(socket.SHUT_WR)
        else:
            self.closing_since = -math.inf
            self._close_socket()
        if self.scope is not None and not self.reading:
            self.scope.cancel()  # The protocol is handling bytes and might wait in there.
        self._reschedule()

    def _close_socket(self) -> None:
        self.writable = False
        self.stream.socket.close()  # Wakes the read loop (ClosedResourceError) if it waits.


def _peer_closed(stream: trio.SocketStream) -> bool:
    """Has the client closed its side (EOF or reset waiting to be read)? Never blocks.

    On TCP the connection's state answers first (``TCP_INFO``, one system call that raises nothing): an
    established connection has not seen the client's FIN. Only otherwise a peek decides, so bytes the
    client pipelined before closing still count as a client that is there. The peek alone raised
    ``BlockingIOError`` on every answer: 2.1 µs against 0.5 µs for ``TCP_INFO`` in a hot loop, and this
    runs between the replica's answer and the client's (docs/gateway.md, "Where a c1 call's time goes").
    """
    raw = getattr(stream.socket, "_sock", None)  # trio's socket wraps a stdlib one; its recv would wait.
    if raw is None:
        return False
    if _TCP_INFO is not None and raw.family != socket.AF_UNIX:
        try:
            if raw.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0] == _TCP_ESTABLISHED:
                return False
        except OSError:
            return True
    try:
        return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
"""Linux's ``TCP_INFO`` socket option; its first byte is the connection's state (``tcpi_state``)."""
_TCP_ESTABLISHED = 1
"""``TCP_ESTABLISHED`` in ``include/net/tcp_states.h``: no FIN from the peer yet."""


def _between_requests(protocol: Http1Protocol) -> bool:
    """Has hypercorn's protocol nothing of a request in hand (so the next bytes start a new one)?"""
    connection = protocol.connection
    return (
        isinstance(connection, h11.Connection)
        and connection.their_state is h11.IDLE
        and connection.our_state is h11.IDLE
        and not connection.trailing_data[0]
    )


def _timeout_answer(message: str) -> bytes:
    body = message.encode() + b"\n"
    return (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
