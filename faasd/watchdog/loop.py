"""The event loop fork and streaming modes serve on: the part of asyncio's API they use, on one ``epoll``.

Why (docs/coldstart.md, "The watchdog's start"): ``import asyncio`` is about two thirds of the watchdog's
imports -- ``concurrent.futures`` with ``logging``, ``inspect``/``ast``/``dis``, ``typing``, ``ssl``'s
guard -- and the watchdog starts once per replica, on the cold start's path. Fork and streaming modes
need very little of it: callbacks, timers, fd readiness, a signal or two, a listening socket whose
connections drive :class:`faasd.watchdog.server.HttpConnection`, and a coroutine runner for ``serve``.
This module is that, with asyncio's semantics where the watchdog relies on them, so the server and the
calls run unchanged on either loop (python and http modes, which use more of asyncio, stay on it).

What it keeps of asyncio's behaviour: callbacks run in the order scheduled, a callback that raises is
logged and the loop goes on, a reader removed earlier in a batch of readiness does not run;
:class:`Transport` sends at once when nothing is buffered, buffers the rest, pauses and resumes its
protocol's writing around the same 64/16 KiB water marks, keeps the write side open after end of file
when ``eof_received`` says so, flushes before closing and calls ``connection_lost`` exactly once.
Signals come through ``signal.set_wakeup_fd`` on the loop's self-pipe, as in asyncio.

What it does not do: TLS, subprocess transports, executors, debug mode, task cancellation beyond what
``serve`` needs (a cancelled task gets :class:`CancelledError` at its ``await``).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import os
import select
import signal
import socket
from collections import deque
from time import monotonic

from faasd.logs import LineLogger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator
    from typing import Any

__all__ = ["CancelledError", "Future", "Loop", "Task", "Transport", "run", "running_loop", "sleep"]

MAX_READ_BYTES = 256 * 1024
"""Bytes asked for per ``recv`` (asyncio's ``max_size``)."""
HIGH_WATER_BYTES = 64 * 1024
"""Buffered output past which a protocol is told to pause writing; it resumes at a quarter (asyncio's)."""
ACCEPT_RETRY_S = 1.0
"""Out of descriptors (EMFILE...): accepting pauses this long rather than spinning (asyncio's delay)."""

_READ = select.EPOLLIN
_WRITE = select.EPOLLOUT
_running: Loop | None = None


def running_loop() -> Any:
    """The loop running now: this module's, or else asyncio's (python and http modes)."""
    if _running is not None:
        return _running
    import asyncio

    return asyncio.get_running_loop()


async def sleep(seconds: float) -> None:
    """``asyncio.sleep`` on whichever loop runs (a future and a timer: both loops have them)."""
    loop = running_loop()
    future = loop.create_future()
    loop.call_later(seconds, _settle, future)
    await future


def _settle(future: Any, _: object = None) -> None:
    if not future.done():
        future.set_result(None)


def _report(what: str, callback: object) -> None:
    """A callback raised: log it as asyncio does, and go on."""
    LineLogger("faasd.watchdog").error("%s %r", what, callback, exc_info=True)


class CancelledError(BaseException):
    """What a cancelled :class:`Task` gets at its ``await`` (asyncio's is a BaseException too)."""


class Handle:
    """A scheduled callback; :meth:`cancel` keeps it from running."""

    __slots__ = ("_args", "_callback", "cancelled")

    def __init__(self, callback: Callable[..., object], args: tuple[object, ...]) -> None:
        self._callback = callback
        self._args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def run(self) -> None:
        try:
            self._callback(*self._args)
        except Exception:
            _report("exception in callback", self._callback)


TimerHandle = Handle


class Future:
    """A result to come, awaitable from a :class:`Task`; done callbacks run on the loop, as asyncio's."""

    __slots__ = ("_callbacks", "_exception", "_loop", "_result", "_state")

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._state = 0  # 0 pending, 1 done, 2 cancelled
        self._result: Any = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Any], object]] = []

    def done(self) -> bool:
        return self._state != 0

    def cancelled(self) -> bool:
        return self._state == 2

    def result(self) -> Any:
        if self._state == 2:
            raise CancelledError
        if self._state == 0:
            raise RuntimeError("result is not ready")
        if self._exception is not None:
            raise self._exception
        return self._result

    def set_result(self, result: object) -> None:
        self._finish(1, result, None)

    def set_exception(self, exception: BaseException) -> None:
        self._finish(1, None, exception)

    def cancel(self) -> bool:
        if self._state:
            return False
        self._finish(2, None, None)
        return True

    def _finish(self, state: int, result: object, exception: BaseException | None) -> None:
        if self._state:
            raise RuntimeError("future already done")
        self._state, self._result, self._exception = state, result, exception
        for callback in self._callbacks:
            self._loop.call_soon(callback, self)
        self._callbacks.clear()

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        if self._state:
            self._loop.call_soon(callback, self)
        else:
            self._callbacks.append(callback)

    def __await__(self) -> Generator[Future, None, Any]:
        if not self._state:
            yield self
        return self.result()


class Task(Future):
    """Runs a coroutine on the loop, step by step, each step when the future it awaits is done."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, loop: Loop, coro: Coroutine[Any, Any, Any]) -> None:
        super().__init__(loop)
        self._coro = coro
        self._waiting: Future | None = None
        loop.call_soon(self._step, None)

    def cancel(self) -> bool:
        if self._state:
            return False
        waiting = self._waiting
        if waiting is None or not waiting.cancel():  # Else the cancelled future wakes it with the error.
            self._waiting = None
            self._loop.call_soon(self._step, None, CancelledError())
        return True

    def _wakeup(self, future: Future) -> None:
        if future is self._waiting:
            self._waiting = None
            self._step(future)

    def _step(self, future: Future | None, error: BaseException | None = None) -> None:
        if self._state:
            return
        try:
            if error is None and future is not None and future._state == 2:
                error = CancelledError()
            if error is not None:
                awaited = self._coro.throw(error)
            elif future is not None and future._exception is not None:
                awaited = self._coro.throw(future._exception)
            else:
                awaited = self._coro.send(None if future is None else future._result)
        except StopIteration as stop:
            self._finish(1, stop.value, None)
        except CancelledError:
            self._finish(2, None, None)
        except BaseException as exc:
            self._finish(1, None, exc)
        else:
            self._waiting = awaited
            awaited.add_done_callback(self._wakeup)


class Loop:
    """One ``epoll``, a ready queue, a timer heap and a self-pipe (see the module docstring)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._ready: deque[Handle] = deque()
        self._timers: list[tuple[float, int, Handle]] = []
        self._sequence = 0
        self._readers: dict[int, Handle] = {}
        self._writers: dict[int, Handle] = {}
        self._signals: dict[int, Handle] = {}
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.add_reader(self._wake_read, self._woken)

    # -- callbacks and timers ---------------------------------------------------------------------
    def time(self) -> float:
        return monotonic()

    def call_soon(self, callback: Callable[..., object], *args: object) -> Handle:
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: object) -> Handle:
        handle = Handle(callback, args)
        self._ready.append(handle)  # deque.append is atomic
        with contextlib.suppress(OSError):  # Full: the loop wakes anyway.
            os.write(self._wake_write, b"\0")
        return handle

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> Handle:
        return self.call_at(monotonic() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: object) -> Handle:
        handle = Handle(callback, args)
        self._sequence += 1
        heapq.heappush(self._timers, (when, self._sequence, handle))
        return handle

    def create_future(self) -> Future:
        return Future(self)

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> Task:
        return Task(self, coro)

    # -- fds --------------------------------------------------------------------------------------
    def _watch(
        self, fd: int, table: dict[int, Handle], callback: Callable[..., object] | None, args: tuple[object, ...]
    ) -> None:
        had = bool(self._readers.get(fd)) * _READ | bool(self._writers.get(fd)) * _WRITE
        old = table.pop(fd, None)
        if old is not None:
            old.cancel()  # A readiness already collected for it must not run.
        if callback is not None:
            table[fd] = Handle(callback, args)
        mask = (fd in self._readers) * _READ | (fd in self._writers) * _WRITE
        if mask == had:
            return
        if not had:
            self._epoll.register(fd, mask)
        elif mask:
            self._epoll.modify(fd, mask)
        else:
            self._epoll.unregister(fd)

    def add_reader(self, fd: int, callback: Callable[..., object], *args: object) -> None:
        self._watch(fd, self._readers, callback, args)

    def remove_reader(self, fd: int) -> bool:
        watched = fd in self._readers
        if watched:
            self._watch(fd, self._readers, None, ())
        return watched

    def add_writer(self, fd: int, callback: Callable[..., object], *args: object) -> None:
        self._watch(fd, self._writers, callback, args)

    def remove_writer(self, fd: int) -> bool:
        watched = fd in self._writers
        if watched:
            self._watch(fd, self._writers, None, ())
        return watched

    # -- signals ----------------------------------------------------------------------------------
    def add_signal_handler(self, signum: int, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the loop after ``signum`` arrives (through the self-pipe)."""
        signal.set_wakeup_fd(self._wake_write)
        self._signals[signum] = Handle(callback, args)
        signal.signal(signum, _ignore)
        signal.siginterrupt(signum, False)

    def _woken(self) -> None:
        try:
            data = os.read(self._wake_read, 4096)
        except OSError:
            return
        for signum in data:
            handle = self._signals.get(signum)
            if handle is not None:
                self._ready.append(handle)

    # -- running ----------------------------------------------------------------------------------
    def run_until_complete(self, future: Future) -> Any:
        global _running
        future.add_done_callback(self._stop)
        _running = self
        try:
            while not self._stopping:
                self._run_once()
        finally:
            _running = None
            self._stopping = False
        return future.result()

    def _stop(self, _: object) -> None:
        self._stopping = True

    def _run_once(self) -> None:
        ready = self._ready
        timers = self._timers
        timeout = -1.0
        if ready:
            timeout = 0.0
        elif timers:
            timeout = max(0.0, timers[0][0] - monotonic())
        for fd, mask in self._epoll.poll(timeout):
            if mask & ~_WRITE:  # in, hang-up, error: readable (a read says which)
                handle = self._readers.get(fd)
                if handle is not None:
                    ready.append(handle)
            if mask & ~_READ:
                handle = self._writers.get(fd)
                if handle is not None:
                    ready.append(handle)
        if timers:
            now = monotonic()
            while timers and timers[0][0] <= now:
                ready.append(heapq.heappop(timers)[2])
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle.cancelled:
                handle.run()

    def close(self) -> None:
        """Put the signals back, close the self-pipe and the epoll."""
        for signum in self._signals:
            signal.signal(signum, signal.SIG_DFL)
        if self._signals:
            signal.set_wakeup_fd(-1)
        self._signals.clear()
        self.remove_reader(self._wake_read)
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._epoll.close()

    # -- servers ----------------------------------------------------------------------------------
    async def create_server(
        self,
        factory: Callable[[], Any],
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        reuse_address: bool = True,
    ) -> Server:
        """Listen on ``host:port`` (every address it resolves to) or on ``sock``; each connection gets a
        protocol from ``factory()`` driven by a :class:`Transport`."""
        sockets = [sock] if sock is not None else _bind(host, port or 0, reuse_address)
        server = Server(self, sockets, factory)
        for listener in sockets:
            listener.setblocking(False)
            listener.listen(backlog)
            self.add_reader(listener.fileno(), server.accept, listener)
        return server


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler: the wakeup fd carries the signal to the loop."""


def _bind(host: str | None, port: int, reuse_address: bool) -> list[socket.socket]:
    """A listening socket per address of ``host`` (as asyncio's ``create_server``: IPv6 ones V6ONLY)."""
    name = host.encode() if host and host.isascii() else (host or None)  # bytes: no ``encodings.idna`` import
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            listener = socket.socket(family, kind, proto)
            sockets.append(listener)
            if reuse_address:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
    except OSError as exc:
        for listener in sockets:
            listener.close()
        raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: {exc.strerror}") from None
    return sockets


class Server:
    """The listening sockets of one :meth:`Loop.create_server`; :meth:`close` stops accepting (connections
    already made go on)."""

    def __init__(self, loop: Loop, sockets: list[socket.socket], factory: Callable[[], Any]) -> None:
        self._loop = loop
        self.sockets = sockets
        self._factory = factory

    def accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, _address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._loop.remove_reader(listener.fileno())
                    self._loop.call_later(ACCEPT_RETRY_S, self._resume, listener)
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            Transport(self._loop, conn, self._factory())

    def _resume(self, listener: socket.socket) -> None:
        if listener in self.sockets:
            self._loop.add_reader(listener.fileno(), self.accept, listener)

    def close(self) -> None:
        for listener in self.sockets:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        self.sockets = []


class Transport:
    """One connection's socket for its protocol: asyncio's selector socket transport, the parts the
    watchdog's server uses (see the module docstring)."""

    __slots__ = (
        "_buffer",
        "_closing",
        "_fd",
        "_high",
        "_loop",
        "_lost",
        "_low",
        "_paused",
        "_protocol",
        "_sock",
        "_writing_paused",
    )

    def __init__(self, loop: Loop, sock: socket.socket, protocol: Any) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buffer = bytearray()
        self._closing = False
        self._lost = False
        self._paused = False
        self._writing_paused = False
        self._high = HIGH_WATER_BYTES
        self._low = HIGH_WATER_BYTES // 4
        protocol.connection_made(self)
        if not self._closing:
            loop.add_reader(self._fd, self._read_ready)

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "socket":
            return self._sock
        if name == "peername":
            try:
                return self._sock.getpeername()
            except OSError:
                return default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(MAX_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        if not data:
            if self._protocol.eof_received():
                self._loop.remove_reader(self._fd)  # Half-closed: the answer may still go out.
            else:
                self.close()
            return
        try:
            self._protocol.data_received(data)
        except Exception as exc:  # As asyncio: a protocol that failed loses its connection.
            _report("data_received failed", self._protocol)
            self._force_close(exc)

    def pause_reading(self) -> None:
        if not self._closing and not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._closing and self._paused:
            self._paused = False
            self._loop.add_reader(self._fd, self._read_ready)

    def write(self, data: bytes) -> None:
        """Send now what the socket takes; buffer the rest (its writer sends it when it can)."""
        if not data or self._lost:
            return
        if not self._buffer:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._force_close(exc)
                return
            if sent == len(data):
                return
            self._buffer += memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        else:
            self._buffer += data
        if len(self._buffer) > self._high and not self._writing_paused:
            self._writing_paused = True
            self._protocol.pause_writing()

    def writelines(self, pieces: list[bytes]) -> None:
        self.write(b"".join(pieces))

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        del self._buffer[:sent]
        if self._writing_paused and len(self._buffer) <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()  # May write more.
        if not self._buffer:
            self._loop.remove_writer(self._fd)
            if self._closing and not self._lost:
                self._lost = True
                self._loop.call_soon(self._connection_lost, None)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER_BYTES if high is None else high
        self._low = (self._high // 4 if high is not None else HIGH_WATER_BYTES // 4) if low is None else low

    def close(self) -> None:
        """Stop reading; ``connection_lost`` once what is buffered is sent."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._buffer:
            self._lost = True
            self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        """Close now, dropping what is buffered."""
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._buffer.clear()
        self._loop.remove_writer(self._fd)
        self._loop.remove_reader(self._fd)
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._loop.remove_writer(self._fd)
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` on this module's loop: run ``coro`` to its end, then close the loop."""
    loop = Loop()
    try:
        return loop.run_until_complete(loop.create_task(coro))
    finally:
        loop.close()
