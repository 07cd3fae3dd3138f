"""HTTP mode: start the function's own server once (``fprocess``), proxy every call to ``upstream_url``.

For functions that are servers already (Flask, express, ...), as OpenFaaS of-watchdog ``mode=http``.
The watchdog waits until the upstream accepts connections before it reports ready, keeps idle
keep-alive connections to it (reused on the hot path with no task or coroutine: asyncio protocol
callbacks, like the rest of the watchdog), and relays answers as they come.

Wire choices (measured gotchas, performance.md section 2): the request body goes up with a
``Content-Length`` (never chunked: simple upstream servers mis-read chunked bodies), and asyncio
transports set TCP_NODELAY, so no Nagle/delayed-ACK stalls.

Output limit: an answer is held (and sent in one write) only up to ``max_output_bytes`` or 1 MiB, whichever
is smaller; past that it is relayed as it comes with back-pressure, so no call holds more.

Failures: a call past ``exec_timeout`` (or an ``X-Timeout`` request header below it) gets **504**, as
of-watchdog answers, and its upstream connection is dropped; an upstream that closes mid-call gets
**502**. If the server process exits, calls in flight get 502, later calls wait for its restart
(bounded by their deadline), and it is restarted with a growing delay; its stdout and stderr go to
the watchdog's log. A fork bomb in the server (its handlers, or a process it started in a session of its
own) is stopped at the replica's process limit (:mod:`faasd.watchdog.httplimit`): the offending calls get
500 naming the limit, as in the other modes, and the replica cools down (429) before it serves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from typing import TYPE_CHECKING

from faasd.http1 import (
    FRAMING_CHUNKED,
    FRAMING_LENGTH,
    FRAMING_NONE,
    FRAMING_UNTIL_CLOSE,
    ChunkedDecoder,
    RemoteProtocolError,
    ResponseHead,
    parse_response_head,
)
from faasd.logs import ERROR, INFO, WARNING, LineLogger, event
from faasd.units import parse_duration
from faasd.watchdog.fork import DEFAULT_CONTENT_TYPE, original_environ
from faasd.watchdog.httplimit import check_server
from faasd.watchdog.proclimit import ProcessLimit

if TYPE_CHECKING:
    from faasd.http1 import Request
    from faasd.watchdog.config import WatchdogConfig
    from faasd.watchdog.metrics import WatchdogStats
    from faasd.watchdog.server import HttpConnection

__all__ = ["HttpRunner"]

log = LineLogger("faasd.watchdog")

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
)
_DROP_UP = _HOP_BY_HOP | {"content-length", "x-timeout"}
_DROP_DOWN = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"content-type",
        b"date",
        b"server",
    }
)
MAX_IDLE_CONNECTIONS = 256
BUFFER_LIMIT_BYTES = 1 << 20
"""Answers up to this size (or ``max_output_bytes`` when smaller) are sent in one write; larger ones
are streamed with back-pressure."""
RESTART_DELAY_S = 0.1
MAX_RESTART_DELAY_S = 5.0
PROBE_INTERVAL_S = 0.02
STOP_GRACE_S = 2.0


class HttpCall:
    """One proxied call."""

    __slots__ = (
        "abandoned",
        "answered",
        "connection",
        "deadline",
        "limit_s",
        "request",
        "runner",
        "streaming",
        "upstream",
    )

    def __init__(self, runner: HttpRunner, request: Request, connection: HttpConnection) -> None:
        self.runner = runner
        self.request = request
        self.connection = connection
        self.limit_s = runner.call_limit(request)
        self.deadline = time.monotonic() + self.limit_s
        self.upstream: Upstream | None = None
        self.answered = False
        self.streaming = False
        self.abandoned = False

    def abandon(self) -> None:
        """The client went away: drop the call and the upstream connection it was using."""
        self.abandoned = True
        upstream = self.upstream
        if upstream is not None:
            upstream.drop()
        self.runner.finished(self)


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the function's server, carrying one call at a time."""

    def __init__(self, runner: HttpRunner) -> None:
        self.runner = runner
        self.transport: asyncio.Transport | None = None
        self.call: HttpCall | None = None
        self.buffer = b""
        self.head: ResponseHead | None = None
        self.remaining = 0
        self.decoder: ChunkedDecoder | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.closed = False

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.runner.forget(self)
        call = self.call
        if call is None:
            return
        self.call = None
        head = self.head
        if head is not None and head.framing == FRAMING_UNTIL_CLOSE and not call.answered:  # The close ends it.
            self._complete(call)
            return
        self.runner.fail(call, 502, "Upstream closed the connection before answering completely")

    def data_received(self, data: bytes) -> None:
        call = self.call
        if call is None:
            self.drop()  # Nothing was asked: an upstream talking out of turn cannot be trusted.
            return
        try:
            self._feed(call, data)
        except RemoteProtocolError as exc:
            self.call = None
            self.drop()
            self.runner.fail(call, 502, f"Upstream sent an invalid answer: {exc.reason}")

    def pause_writing(self) -> None:  # Never: we write one request at a time.
        pass

    # -- one exchange -----------------------------------------------------------------------------
    def send(self, call: HttpCall, data: bytes) -> None:
        self.call = call
        call.upstream = self
        self.buffer = b""
        self.head = None
        self.decoder = None
        self.body = []
        self.body_size = 0
        assert self.transport is not None
        self.transport.write(data)

    def _feed(self, call: HttpCall, data: bytes) -> None:
        if self.head is None:
            buffer = self.buffer + data if self.buffer else data
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    raise RemoteProtocolError(502, "answer head too large")
                self.buffer = buffer
                return
            head = parse_response_head(buffer[:end], request_method=call.request.method)
            if head.status == 100:
                self.buffer = b""
                self._feed(call, buffer[end + 4 :])
                return
            self.head = head
            self.buffer = b""
            data = buffer[end + 4 :]
            if head.framing == FRAMING_LENGTH:
                self.remaining = head.content_length
            elif head.framing == FRAMING_CHUNKED:
                self.decoder = ChunkedDecoder(1 << 62, 65536, error_status=502)
            elif head.framing == FRAMING_NONE:
                self._complete(call)
                return
        head = self.head
        if head.framing == FRAMING_LENGTH:
            piece = data[: self.remaining]
            self.remaining -= len(piece)
            self._body(call, piece)
            if not self.remaining:
                self._complete(call)
        elif head.framing == FRAMING_CHUNKED:
            assert self.decoder is not None
            for piece in self.decoder.feed(data):
                self._body(call, piece)
            if self.decoder.done:
                self._complete(call)
        else:
            self._body(call, data)

    def _body(self, call: HttpCall, piece: bytes) -> None:
        if not piece:
            return
        if call.streaming:
            call.connection.stream_write(piece)
            self._flow(call)
            return
        self.body.append(piece)
        self.body_size += len(piece)
        if self.body_size > self.runner.buffer_limit:
            self._start_stream(call)

    def _start_stream(self, call: HttpCall) -> None:
        """The answer is large: send the head now and the body as it comes, with back-pressure."""
        head = self.head
        assert head is not None
        call.streaming = True
        content_type, headers = _downstream_headers(head, call)
        length = head.content_length if head.framing == FRAMING_LENGTH else None
        call.connection.start_stream(head.status, content_type, headers, length, on_writable=self._resume)
        for piece in self.body:
            call.connection.stream_write(piece)
        self.body = []
        self._flow(call)

    def _flow(self, call: HttpCall) -> None:
        if not call.connection.writable and self.transport is not None:
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _complete(self, call: HttpCall) -> None:
        head = self.head
        assert head is not None
        self.call = None
        call.upstream = None
        reusable = head.keep_alive and head.framing != FRAMING_UNTIL_CLOSE and not self.closed
        if call.streaming:
            call.connection.end_stream(complete=True)
        elif not call.abandoned:
            content_type, headers = _downstream_headers(head, call)
            # A HEAD answer keeps the Content-Length the function's server declared for it.
            declared = head.content_length if head.content_length >= 0 else None
            call.connection.respond(head.status, b"".join(self.body), content_type, headers, declared)
        call.answered = True
        self.body = []
        self.runner.finished(call)
        if reusable:
            # The last piece may have paused reading (back-pressure from a slow client), and the
            # stream's end dropped the callback that would resume it: an idle connection must read.
            self._resume()
            self.runner.idle(self)
        else:
            self.drop()

    def drop(self) -> None:
        """Close this connection (its call, if any, is the caller's business)."""
        self.call = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()
        self.runner.forget(self)


def _downstream_headers(head: ResponseHead, call: HttpCall) -> tuple[str, bytes]:
    content_type = None
    lines = []
    for name, value in head.headers:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name not in _DROP_DOWN:
            lines.append(name + b": " + value + b"\r\n")
    config = call.runner.config
    return content_type or config.content_type or DEFAULT_CONTENT_TYPE, b"".join(lines)


class HttpRunner:
    """The function's server process and the connections to it (see the module docstring)."""

    def __init__(self, config: WatchdogConfig, stats: WatchdogStats, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.stats = stats
        self.loop = loop
        self.calls: set[HttpCall] = set()
        self.waiting: deque[HttpCall] = deque()
        self.idle_pool: list[Upstream] = []
        self.connections: set[Upstream] = set()
        self.address = (config.upstream_host, config.upstream_port)
        self.buffer_limit = min(BUFFER_LIMIT_BYTES, config.max_output_bytes)
        """Answers up to this size are held and sent in one write; past it they are relayed as they
        come, so no call holds more than ``max_output_bytes`` of its answer."""
        self.ready = False
        self.closing = False
        self.pid = 0
        self.pidfd = -1
        self._log_buffers: dict[int, bytearray] = {}
        """Per log pipe (one per server start) its partial last line. A restarted server gets a new pipe
        while the old one may still be open: a process its predecessor started can hold it for good."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._restart_delay = RESTART_DELAY_S
        self._spawned_at = 0.0
        self.process_limit = ProcessLimit()

    # -- the server process -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the server and return once it accepts connections.

        Raises:
            OSError: it exits or does not listen within start_timeout.
        """
        self._spawn()
        deadline = time.monotonic() + self.config.start_timeout_s
        while not await self._accepts():
            if self.pid == 0:
                raise OSError(f"the function's server ({' '.join(self.config.argv)}) exited before listening")
            if time.monotonic() > deadline:
                raise OSError(
                    f"the function's server did not listen on {self._url()} within {self.config.start_timeout_s:g}s"
                )
            await asyncio.sleep(PROBE_INTERVAL_S)
        event(log, INFO, "upstream ready", upstream=self._url(), pid=self.pid)
        self._became_ready()

    def _url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    def _spawn(self) -> None:
        log_read, log_write = os.pipe2(os.O_CLOEXEC)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_write, 1),
            (os.POSIX_SPAWN_DUP2, log_write, 2),
        ]
        try:
            self.pid = os.posix_spawn(
                self.config.executable, self.config.argv, original_environ(), file_actions=actions, setpgroup=0
            )
        except BaseException:
            os.close(log_read)
            raise
        finally:
            os.close(log_write)
        self.process_limit.lower(self.pid)
        os.set_blocking(log_read, False)
        self._log_buffers[log_read] = bytearray()
        self.loop.add_reader(log_read, self._on_log, log_read)
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except OSError:
            self.pidfd = -1
        else:
            self.loop.add_reader(self.pidfd, self._on_exit)
        self._spawned_at = time.monotonic()

    async def _accepts(self) -> bool:
        try:
            _, writer = await asyncio.open_connection(*self.address)
        except OSError:
            return False
        writer.close()
        return True

    def _on_log(self, fd: int) -> None:
        """Relay the lines of one server start's log pipe (``fd``) to the watchdog's log."""
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.loop.remove_reader(fd)
            os.close(fd)
            del self._log_buffers[fd]
            return
        buffer = self._log_buffers[fd] + data
        *lines, rest = buffer.split(b"\n")
        self._log_buffers[fd] = bytearray(rest[-16384:])
        for line in lines:
            event(log, INFO, "function", text=line[:16384].decode("utf-8", "replace"))

    def _on_exit(self) -> None:
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = -1
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 0
        self.pid = 0
        self.ready = False
        for upstream in list(self.connections):
            upstream.drop()
        for call in list(self.calls):
            if call.upstream is not None or call.streaming:
                self.fail(call, 502, "The function's server exited during the call")
        if self.closing:
            return
        code = os.waitstatus_to_exitcode(status)
        event(log, WARNING, "function server exited; restarting", exit=code, delay_s=self._restart_delay)
        if time.monotonic() - self._spawned_at > 10:
            self._restart_delay = RESTART_DELAY_S
        self.loop.call_later(self._restart_delay, self._restart)
        self._restart_delay = min(self._restart_delay * 2, MAX_RESTART_DELAY_S)

    def _restart(self) -> None:
        if self.closing:
            return
        try:
            self._spawn()
        except OSError as exc:
            event(log, ERROR, "cannot restart the function's server", error=exc.strerror or str(exc))
            self.loop.call_later(self._restart_delay, self._restart)
            return
        self._keep(self.loop.create_task(self._probe_until_ready()))

    async def _probe_until_ready(self) -> None:
        while not self.closing and self.pid and not await self._accepts():
            await asyncio.sleep(PROBE_INTERVAL_S)
        if self.pid and not self.closing:
            event(log, INFO, "upstream ready again", pid=self.pid)
            self._became_ready()

    def _became_ready(self) -> None:
        """Serve from now on, starting with the calls that arrived while the server was (re)starting."""
        self.ready = True
        while self.waiting:
            call = self.waiting.popleft()
            if not call.abandoned and not call.answered:
                self._dispatch(call)

    def healthy(self) -> bool:
        return self.ready

    async def aclose(self) -> None:
        self.closing = True
        for upstream in list(self.connections):
            upstream.drop()
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while self.pid and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if self.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
                self.pid = 0

    # -- calls ------------------------------------------------------------------------------------
    def call_limit(self, request: Request) -> float:
        """exec_timeout, lowered by an ``X-Timeout`` request header (of-watchdog's rule)."""
        limit = self.config.call_limit_s
        wanted = request.header("x-timeout")
        if wanted:
            with contextlib.suppress(ValueError):
                limit = min(limit, parse_duration(wanted))
        return limit

    def run(self, request: Request, connection: HttpConnection) -> HttpCall | None:
        if self.process_limit.refuse(connection, time.monotonic()):
            return None  # The server just filled the replica's process limit (faasd.watchdog.httplimit).
        call = HttpCall(self, request, connection)
        self.calls.add(call)
        self.stats.in_flight = len(self.calls)
        if self.ready:
            self._dispatch(call)
        else:
            self.waiting.append(call)
        return call

    def _dispatch(self, call: HttpCall) -> None:
        request = call.request
        if request.forwardable:  # The common case: the client's own head is fine for the upstream.
            data = request.raw_head + b"\r\n\r\n" + request.body
        else:
            parts = [request.method.encode(), b" ", request.target.encode("latin-1"), b" HTTP/1.1\r\n"]
            for name, value in request.headers:
                if name not in _DROP_UP:
                    parts += (name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
            parts += (b"Content-Length: %d\r\n\r\n" % len(request.body), request.body)
            data = b"".join(parts)
        while self.idle_pool:
            upstream = self.idle_pool.pop()
            if not upstream.closed:
                upstream.send(call, data)
                return
        self._keep(self.loop.create_task(self._connect_and_send(call, data)))

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a reference until ``task`` ends: the event loop keeps only a weak one, and a task
        collected mid-way would leave its call unanswered and its socket open."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_and_send(self, call: HttpCall, data: bytes) -> None:
        try:
            _, upstream = await self.loop.create_connection(lambda: Upstream(self), *self.address)
        except OSError as exc:
            self.fail(call, 502, f"Cannot reach the function's server at {self._url()}: {exc.strerror or exc}")
            return
        self.connections.add(upstream)
        if call.abandoned or call.answered:
            self.idle(upstream)
            return
        upstream.send(call, data)

    def idle(self, upstream: Upstream) -> None:
        self.connections.add(upstream)
        if len(self.idle_pool) < MAX_IDLE_CONNECTIONS and not self.closing:
            self.idle_pool.append(upstream)
        else:
            upstream.drop()

    def forget(self, upstream: Upstream) -> None:
        self.connections.discard(upstream)
        with contextlib.suppress(ValueError):
            self.idle_pool.remove(upstream)

    def finished(self, call: HttpCall) -> None:
        self.calls.discard(call)
        self.stats.in_flight = len(self.calls)
        with contextlib.suppress(ValueError):
            self.waiting.remove(call)

    def fail(self, call: HttpCall, status: int, reason: str) -> None:
        """End a call with an error (or cut its streamed answer)."""
        if call.answered:
            return
        call.answered = True
        upstream = call.upstream
        if upstream is not None:
            call.upstream = None
            upstream.drop()
        self.finished(call)
        if call.abandoned:
            return
        if call.streaming:
            call.connection.end_stream(complete=False)
        else:
            internal = b"X-OpenFaaS-Internal: faasd-watchdog\r\n"
            call.connection.respond(status, reason.encode() + b"\n", "text/plain", internal)

    def check_deadlines(self, now: float) -> None:
        for call in list(self.calls):
            if now >= call.deadline:
                self.stats.count_kill("timeout")
                self.fail(call, 504, f"Function timed out after {call.limit_s:g}s")
        check_server(self, now)

    def kill_all(self, reason: str) -> None:
        for call in list(self.calls):
            self.fail(call, 503, "Shutting down: call stopped before it finished")
