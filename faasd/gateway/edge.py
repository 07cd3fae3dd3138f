"""The invoke edge: plain function calls answered on a lean event loop, in a thread of the daemon.

Why (docs/gateway.md, "The invoke edge"): a call through the trio server's fast path costs the daemon about
0.33 ms of CPU and adds twice what any Python hop adds to a call's latency; a third of that is trio's run
loop (its scheduler, cancel scopes, the readable waits), which no cut to faasd's own code removes. The same
per-call work on the watchdog's loop (:mod:`faasd.watchdog.loop`: one ``epoll``, callbacks) costs under
half, measured side by side (``bench/gateway.py``'s lean relay).

How: once the daemon serves, the edge takes over accepting on the gateway's listening sockets (the trio
server stops accepting, and starts again if the edge ever stops). Every connection starts here. A request
that is a whole plain call (:func:`faasd.gateway.fastpath.classify`: head and body in hand, HTTP/1.1,
nothing unusual) to a function with a ready replica is answered here, with the trio path's checks, headers,
routing, call token, failover, timeout and error answers. Anything else -- another route, a request not
whole in what came, a function at zero replicas (trio holds the call: scale from zero), a replica named by
host name (trio resolves it) -- hands the connection over, with the bytes read so far and before anything
of that request was answered, to the trio server (:meth:`faasd.gateway.server.HttpServer.adopt`), which
serves it from then on as if it had accepted it: every hostile-input answer stays the one it gives.

Threads: the edge only reads the daemon's state (the registry's endpoint tuples, the function set, the
timeouts: each a dict lookup, atomic under the interpreter's lock) and never writes it; what it has to tell
-- calls started and answered -- goes through :class:`faasd.gateway.edgefeed.EdgeFeed`. It runs in a worker
thread of the daemon's nursery (``trio.to_thread``) and stops when the daemon does, after its calls in
flight (bounded by ``shutdown_timeout``).
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable

from faasd.errors import FaasdError, InvalidRequest
from faasd.gateway.edgecall import EdgeCall, UpstreamPool
from faasd.gateway.edgefeed import FLUSH_DELAY_S, EdgeFeed
from faasd.gateway.fastpath import FastInvokeRoute, Verdict, classify, split_call
from faasd.gateway.invoke import NUL_MESSAGE, Invoker, Router, log_failure, raw_call_headers, text_answer
from faasd.gateway.server import ServerLimits
from faasd.http1 import Request
from faasd.tcpconnect import ip_family
from faasd.watchdog.loop import Handle, Loop
from faasd.watchdog.transport import Server, Transport

__all__ = ["Edge"]

MAX_PENDING_BYTES = 64 * 1024
"""Bytes of a pipelined next request kept while a call runs; past this the connection is not read."""
SWEEP_S = 0.1
"""How often the connections' deadlines are checked (while there are connections): one timer for the edge
instead of one or two per call, which would pile up cancelled in the loop's heap (and keep their calls alive
for the garbage collector to walk) until each one's time came, a minute or more later."""
HANDOVER_POLL_S = 0.01
"""How often a connection waiting to be handed over checks that its last answer went out."""

HandOver = Callable[[socket.socket, bytes, float], None]
"""``hand_over(sock, data, waited_s)``: the trio server takes the connection (called on the edge's thread;
``waited_s``: since the accept, for a connection that has not sent a whole request head yet)."""


class Edge:
    """The edge's loop, its connections and its pool of replica connections; see the module docstring.

    Args:
        listeners: the gateway's listening sockets (duplicates: the edge closes its own).
        invoker: the daemon's invoke path, read for the function set, endpoints, timeouts and call token.
        limits: the server's deadlines and sizes (``max_connections`` counts the trio server's as well,
            through ``others``).
        hand_over: gives a connection to the trio server.
        others: how many connections the trio server holds now.
        feed: where calls started and answered go.
        drain_soon: asks the trio thread to apply the feed soon (through ``TrioToken.run_sync_soon``).
    """

    def __init__(
        self,
        *,
        listeners: list[socket.socket],
        invoker: Invoker,
        limits: ServerLimits,
        hand_over: HandOver,
        others: Callable[[], int],
        feed: EdgeFeed,
        drain_soon: Callable[[], None],
    ) -> None:
        self.loop = Loop()
        self.listeners = listeners
        self.invoker = invoker
        self.route = FastInvokeRoute(invoker)
        self.limits = limits
        self.hand_over = hand_over
        self.others = others
        self.feed = feed
        self.drain_soon = drain_soon
        self.router = Router()
        self.pool = UpstreamPool(self.loop)
        self.connections: set[EdgeConnection] = set()
        self.server: Server | None = None
        self.stopping = False
        self.calls = 0
        """Calls taken here since start, counted as each begins (tests read it: the edge took them)."""
        self.handed_over = 0
        """Connections given to the trio server since start."""
        self._flush_scheduled = False
        self._done = self.loop.create_future()
        self._sweeping: Handle | None = None
        self._closing = threading.Lock()
        self._closed = False

    # -- the thread ---------------------------------------------------------------------------------
    def run(self, started: Callable[[], object] = lambda: None) -> None:
        """Serve until :meth:`stop` (run in a worker thread); ``started()`` once accepting."""
        loop = self.loop
        try:
            server = self.server = Server(loop, self.listeners, self._new_connection)
            for listener in self.listeners:
                listener.setblocking(False)
                loop.add_reader(listener.fileno(), server.accept, listener)
            started()
            loop.run_until_complete(self._done)
        finally:
            for connection in list(self.connections):
                connection.transport.abort()
            self.pool.close_all()
            if self.server is not None:
                self.server.close()
            loop.call_soon(_nothing)  # So that the pass below does not wait for readiness: no timeout is left.
            with contextlib.suppress(Exception):
                loop._run_once()  # The aborts' connection_lost callbacks: their calls are counted.
            self._flush()
            with self._closing:
                self._closed = True
                loop.close()

    def stop(self, grace_s: float) -> None:
        """Stop accepting, close idle connections, finish the calls in flight (for up to ``grace_s``; 0
        ends them now, also after a graceful stop began), then end :meth:`run`. Thread-safe; nothing once
        :meth:`run` has ended."""
        with self._closing:
            if not self._closed:
                self.loop.call_soon_threadsafe(self._stop, grace_s)

    def _stop(self, grace_s: float) -> None:
        if self.stopping:
            if grace_s <= 0:
                self._finish()
            return
        self.stopping = True
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.shutdown()
        self.loop.call_later(grace_s, self._finish)
        self.check_drained()

    def watch(self, connection: EdgeConnection) -> None:
        """Count ``connection`` in, and check its deadline from now on."""
        self.connections.add(connection)
        if self._sweeping is None:
            self._sweeping = self.loop.call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            if connection.deadline <= now:
                connection.deadline_passed()
        self._sweeping = self.loop.call_later(SWEEP_S, self._sweep) if self.connections else None

    def working(self) -> int:
        """Calls in flight here now (read from another thread: a sum over a copy)."""
        return sum(1 for connection in list(self.connections) if connection.call is not None)

    def check_drained(self) -> None:
        if self.stopping and not self.connections:
            self._finish()

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    # -- what the connections call ------------------------------------------------------------------
    def _new_connection(self) -> EdgeConnection:
        return EdgeConnection(self)

    def call_started(self, name: str, started: float, metered: bool) -> None:
        """A call began at ``started`` (fed now: see :mod:`faasd.gateway.edgefeed`)."""
        self.feed.started(name, started, metered)
        self._schedule_flush()

    def call_finished(self, name: str, started: float, status: int, metered: bool) -> None:
        now = time.monotonic()
        self.feed.finished(name, now, status, now - started, metered)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_later(FLUSH_DELAY_S, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if len(self.feed):
            with contextlib.suppress(Exception):  # trio has finished: the daemon is gone.
                self.drain_soon()

    def give(self, sock: socket.socket, data: bytes, waited_s: float) -> None:
        self.handed_over += 1
        try:
            self.hand_over(sock, data, waited_s)
        except Exception:  # trio has finished: nobody can serve it.
            sock.close()


class EdgeConnection:
    """One client connection on the edge (a :class:`~faasd.watchdog.transport.Transport`'s protocol)."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.transport: Transport = None  # type: ignore[assignment]  # Set by connection_made.
        self.buffer = b""
        self.client_host = ""
        self.call: EdgeCall | None = None
        self.deadline = math.inf
        """When the connection's wait ends (checked by :meth:`Edge._sweep`): the first request's head
        (``header_timeout``), the next one (``keep_alive_timeout``), or the call's answer head (its function's
        timeout); none while an answer is relayed."""
        self.write_timer: Handle | None = None
        self.write_mark = 0
        self.closing = False
        self.accepted = 0.0
        self.fresh = True
        """No request taken yet: a hand-over passes on how long the head has been awaited."""
        self.leaving = False
        """Being handed over: no more reads or callbacks here."""

    # -- the transport's protocol ---------------------------------------------------------------------
    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.accepted = time.monotonic()
        edge = self.edge
        limits = edge.limits
        if edge.stopping or len(edge.connections) + edge.others() >= limits.max_connections:
            self._leave()  # The trio server answers 503 (too many) or closes it (stopping).
            return
        peer = transport.get_extra_info("peername")
        self.client_host = str(peer[0]) if isinstance(peer, tuple) else ""
        self.deadline = self.accepted + limits.header_timeout_s
        edge.watch(self)

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if self.call is not None:
            if len(self.buffer) > MAX_PENDING_BYTES:
                self.transport.pause_reading()
            return
        self._next()

    def eof_received(self) -> bool:
        return False  # The transport closes: a call in flight hears it in connection_lost (499).

    def pause_writing(self) -> None:
        if self.call is not None:
            self.call.pause()

    def resume_writing(self) -> None:
        if self.call is not None:
            self.call.resume()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = True
        self._cancel_timers()
        self.edge.connections.discard(self)
        call = self.call
        if call is not None:
            self.call = None
            call.client_gone()
        self.edge.check_drained()

    # -- requests -------------------------------------------------------------------------------------
    def _next(self) -> None:
        """Serve the next request in the buffer, if it is whole; else wait for it, or hand over."""
        buffer = self.buffer
        if self.closing or self.leaving:
            return
        if not buffer:
            self.deadline = time.monotonic() + self.edge.limits.keep_alive_timeout_s
            return
        verdict, request, target, rest = classify(buffer, self.edge.route, self.edge.limits.max_header_bytes)
        if verdict is not Verdict.FAST:
            self._leave()
            return
        assert request is not None
        self.buffer = rest
        if not self._start(request, target):
            self.buffer = buffer
            self._leave()

    def _start(self, request: Request, target: bytes) -> bool:
        """Begin the call ``request``, or answer its error; False: the trio server must take it."""
        edge = self.edge
        invoker = edge.invoker
        name, upstream, nul = split_call(request, target)
        keep_alive = request.keep_alive and not edge.stopping
        started_ns = time.time_ns()
        started = time.monotonic()
        try:
            if nul:
                raise InvalidRequest(NUL_MESSAGE)
            name, endpoints = invoker.resolve(name)
        except FaasdError as exc:
            self._take()
            self.answer_error(exc.http_status, exc.message, raw_call_headers(request, started_ns), keep_alive)
            return True
        if not endpoints or ip_family(endpoints[0].host) is None:
            return False  # Held (scale from zero, or refused: a failed restore), or resolved by the trio path.
        self._take()
        call_headers = raw_call_headers(request, started_ns)
        try:
            proxy_request = invoker.raw_proxy_request(request, upstream, call_headers, self.client_host)
        except FaasdError as exc:
            edge.call_started(name, started, metered=False)
            edge.call_finished(name, started, exc.http_status, metered=False)
            log_failure(name, exc, call_headers)
            self.answer_error(exc.http_status, exc.message, call_headers, keep_alive)
            return True
        self.call = EdgeCall(self, name, endpoints, proxy_request, call_headers, keep_alive, started)
        edge.call_started(name, started, metered=True)
        self.call.begin()
        return True

    def _take(self) -> None:
        """This request is answered here (counted before its answer, as the trio server's ``fast_calls``)."""
        self.edge.calls += 1
        self.fresh = False

    def answer_error(
        self, status: int, message: str, call_headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        self.write(text_answer(status, message, call_headers, keep_alive))
        self.answered(keep_alive)

    # -- what the call calls --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write to the client; a client that does not take it within ``write_timeout`` loses the connection."""
        transport = self.transport
        transport.write(data)
        if transport.get_write_buffer_size() and self.write_timer is None:
            self.write_mark = transport.get_write_buffer_size()
            self.write_timer = self.edge.loop.call_later(self.edge.limits.write_timeout_s, self._write_check)

    def _write_check(self) -> None:
        self.write_timer = None
        left = self.transport.get_write_buffer_size()
        if not left:
            return
        if left >= self.write_mark:  # Nothing taken in write_timeout: the client does not read.
            self.transport.abort()
            return
        self.write_mark = left
        self.write_timer = self.edge.loop.call_later(self.edge.limits.write_timeout_s, self._write_check)

    def answered(self, keep_alive: bool) -> None:
        """The call's answer is all written (or buffered): next request, or close."""
        self.call = None
        if not keep_alive or self.edge.stopping or self.closing:
            self.closing = True
            self.transport.close()
            return
        self.transport.resume_reading()
        if self.buffer:  # Pipelined: the next request on a later pass (no recursion however many came).
            self.edge.loop.call_soon(self._next)
        else:
            self._next()  # Sets the keep-alive deadline.

    def cut_short(self) -> None:
        """The answer started and cannot be finished (the replica failed mid-answer): close at once."""
        self.call = None
        self.closing = True
        self.transport.abort()

    # -- endings --------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """The edge stops: an idle connection closes now, a busy one after its answer."""
        if self.call is None and not self.leaving:
            self.closing = True
            self.transport.close()

    def deadline_passed(self) -> None:
        """Idle too long: close; a call without its answer head in time: its timeout (502)."""
        self.deadline = math.inf
        if self.call is not None:
            self.call.timed_out()
        else:
            self.shutdown()

    def _cancel_timers(self) -> None:
        self.deadline = math.inf
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def _leave(self) -> None:
        """Hand the connection to the trio server, with what it sent and we did not answer, once our last
        answer went out (a client still reading it gets ``write_timeout``)."""
        self.leaving = True
        self._cancel_timers()
        self.transport.pause_reading()
        self._leave_when_written(time.monotonic() + self.edge.limits.write_timeout_s)

    def _leave_when_written(self, deadline: float) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size():
            if time.monotonic() > deadline:
                transport.abort()
                return
            self.edge.loop.call_later(HANDOVER_POLL_S, self._leave_when_written, deadline)
            return
        edge = self.edge
        edge.connections.discard(self)
        data, self.buffer = self.buffer, b""
        waited_s = time.monotonic() - self.accepted if self.fresh else 0.0
        edge.give(transport.detach(), data, waited_s)
        edge.check_drained()


def _nothing() -> None:
    """A callback that makes the loop's last pass poll without waiting."""
