"""The event loop fork and streaming modes serve on: the part of asyncio's API they use, on one ``epoll``.

Why (docs/coldstart.md, "The watchdog's own loop"): ``import asyncio`` was about two thirds of the
watchdog's imports -- ``concurrent.futures`` with ``logging``, ``inspect``/``ast``/``dis``, ``typing``,
``ssl``'s guard -- and the watchdog starts once per replica, on the cold start's path. Fork and streaming
modes need very little of it: callbacks, timers, fd readiness, a signal or two, a listening socket whose
connections drive :class:`faasd.watchdog.server.HttpConnection` (:mod:`faasd.watchdog.transport`), and a
coroutine runner for ``serve``. This module is that, with asyncio's semantics where the watchdog relies on
them, so the server and the calls run unchanged on either loop (python and http modes, which use more of
asyncio, stay on it; :func:`running_loop` gives whichever runs).

What it keeps of asyncio's behaviour: callbacks run in the order scheduled, a callback that raises is
logged and the loop goes on, a reader removed earlier in a batch of readiness does not run; signals come
through ``signal.set_wakeup_fd`` on the loop's self-pipe, which ``call_soon_threadsafe`` writes to as well.

What it does not do: TLS, subprocess transports, executors, debug mode, task cancellation beyond what
``serve`` needs (a cancelled task gets :class:`CancelledError` at its ``await``).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import select
from collections import deque
from time import monotonic

from faasd.logs import LineLogger
from faasd.watchdog.transport import Server, Transport, bind

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    import socket
    from collections.abc import Callable, Coroutine, Generator
    from typing import Any
else:
    # signal's and socket's C modules: socket.py and signal.py turn their constants into enums at import, and
    # with ``enum`` that was about 4 ms of every watchdog's exec -> first 200 (docs/coldstart.md).
    import _signal as signal

__all__ = [
    "CancelledError",
    "Future",
    "Loop",
    "Task",
    "Transport",
    "run",
    "running_loop",
    "settle",
    "signal_name",
    "sleep",
]


_READ = select.EPOLLIN
_WRITE = select.EPOLLOUT
_running: Loop | None = None


def running_loop() -> Any:
    """The loop running now: this module's, or else asyncio's (python and http modes)."""
    if _running is not None:
        return _running
    import asyncio

    return asyncio.get_running_loop()


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15 (the number, for one the platform does not name): for log lines and answers, so
    ``signal``'s enums are imported only when one is named."""
    from signal import Signals

    try:
        return Signals(signum).name
    except ValueError:
        return str(signum)


async def sleep(seconds: float) -> None:
    """``asyncio.sleep`` on whichever loop runs (a future and a timer: both loops have them)."""
    loop = running_loop()
    future = loop.create_future()
    loop.call_later(seconds, settle, future)
    await future


def settle(future: Any, _: object = None) -> None:
    """Set ``future``'s result to None unless it is done already: a timer's, a reader's or another future's
    done callback (the ignored argument) that wakes whoever awaits ``future``, on either loop."""
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
        self._callback, self._args = _nothing, ()  # A cancelled timer waits in the heap: not with its objects.

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
    ) -> bool:
        """Set (or with ``callback`` None, drop) ``fd``'s entry in ``table``; True (for the removers)."""
        had = bool(self._readers.get(fd)) * _READ | bool(self._writers.get(fd)) * _WRITE
        old = table.pop(fd, None)
        if old is not None:
            old.cancel()  # A readiness already collected for it must not run.
        if callback is not None:
            table[fd] = Handle(callback, args)
        mask = (fd in self._readers) * _READ | (fd in self._writers) * _WRITE
        if mask == had:
            return True
        if not had:
            self._epoll.register(fd, mask)
        elif mask:
            self._epoll.modify(fd, mask)
        else:
            self._epoll.unregister(fd)
        return True

    def add_reader(self, fd: int, callback: Callable[..., object], *args: object) -> None:
        self._watch(fd, self._readers, callback, args)

    def add_writer(self, fd: int, callback: Callable[..., object], *args: object) -> None:
        self._watch(fd, self._writers, callback, args)

    def remove_reader(self, fd: int) -> bool:
        return fd in self._readers and self._watch(fd, self._readers, None, ())

    def remove_writer(self, fd: int) -> bool:
        return fd in self._writers and self._watch(fd, self._writers, None, ())

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
        sockets = [sock] if sock is not None else bind(host, port or 0, reuse_address)
        server = Server(self, sockets, factory)
        for listener in sockets:
            listener.setblocking(False)
            listener.listen(backlog)
            self.add_reader(listener.fileno(), server.accept, listener)
        return server


def _nothing() -> None:
    """What a cancelled :class:`Handle` holds instead of its callback."""


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler: the wakeup fd carries the signal to the loop."""


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` on this module's loop: run ``coro`` to its end, then close the loop."""
    loop = Loop()
    try:
        return loop.run_until_complete(loop.create_task(coro))
    finally:
        loop.close()
