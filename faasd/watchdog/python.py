"""Python mode: a pool of worker processes that imported the handler once; a call costs no process start.

Each worker (:mod:`faasd.watchdog.pyworker`) runs one call at a time. A call goes to an idle worker, or
waits in arrival order for one (``max_inflight`` still bounds how many calls are accepted at all).
The watchdog talks to a worker over two pipes (requests on its fd 3, answers on its fd 4) with small
length-prefixed frames, all driven by the event loop's epoll callbacks like fork mode.

Kill policy, each answered with a clear reason and followed by a fresh worker:

* a call past ``exec_timeout`` (or ``write_timeout`` when that is 0) -> 408, the worker is SIGKILLed;
* a worker that dies during a call -> 500 ``worker crashed: ...``;
* an answer over ``max_output_bytes`` -> 502; the worker refuses it itself and stays, but one that sends
  a frame claiming more (a handler writing to the answer pipe) or one that does not parse is killed;
* a worker whose resident memory passes ``max_memory`` -> 500 ``worker exceeded max_memory ...``
  (checked after each call and every tick while busy; the worker also caps its address space so a
  runaway allocation fails with MemoryError instead of exhausting the machine);
* a busy worker that filled the replica's process limit (a fork bomb in the handler: the processes it
  forked stay in its process group) -> 500 naming the limit, and the replica cools down
  (:mod:`faasd.watchdog.proclimit`, as in fork mode).

Workers that keep dying at start (a broken handler) are restarted with a growing delay and the
watchdog reports unhealthy while none is alive; at start-up an import error stops the watchdog with
the error, so a bad deploy shows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from faasd.logs import ERROR, INFO, WARNING, LineLogger, event
from faasd.runtime import self_command
from faasd.watchdog.fork import DEFAULT_CONTENT_TYPE, original_environ
from faasd.watchdog.oom import OomWatch
from faasd.watchdog.proclimit import ProcessLimit

if TYPE_CHECKING:
    from faasd.http1 import Request
    from faasd.watchdog.config import WatchdogConfig
    from faasd.watchdog.metrics import WatchdogStats
    from faasd.watchdog.server import HttpConnection

__all__ = ["PythonCall", "PythonRunner"]

log = LineLogger("faasd.watchdog")

HEADER = struct.Struct("!II")
READ_BYTES = 256 * 1024
RESTART_DELAY_S = 0.1
MAX_RESTART_DELAY_S = 5.0
STABLE_AFTER_S = 5.0
"""A worker that lived this long resets the restart delay."""
STOP_GRACE_S = 1.0
MAX_META_BYTES = 1024 * 1024
"""Largest answer metadata (status, headers, content type, error text) accepted from a worker when
``max_output_bytes`` is smaller."""
_SKIP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "content-type", "date"})
_PAGE = os.sysconf("SC_PAGE_SIZE")

_UNSAFE_HEADER = re.compile(r"[^\x20-\x7e\x80-\xff]")
STARTING, IDLE, BUSY, DEAD = range(4)


class PythonCall:
    """One call: queued, then on a worker, then answered (once)."""

    __slots__ = ("abandoned", "connection", "deadline", "request", "runner", "worker")

    def __init__(self, runner: PythonRunner, request: Request, connection: HttpConnection) -> None:
        self.runner = runner
        self.request = request
        self.connection = connection
        self.deadline = time.monotonic() + runner.config.call_limit_s
        self.worker: Worker | None = None
        self.abandoned = False

    def abandon(self) -> None:
        """The client went away: drop the call (a running one finishes and its answer is discarded)."""
        self.abandoned = True
        if self.worker is None:
            self.runner.drop(self)


class Worker:
    """One worker process and its pipes."""

    __slots__ = (
        "buffer",
        "call",
        "doomed",
        "from_fd",
        "log_buffer",
        "log_fd",
        "out_view",
        "pid",
        "pidfd",
        "runner",
        "spawned",
        "state",
        "to_fd",
    )

    def __init__(self, runner: PythonRunner) -> None:
        self.runner = runner
        self.state = STARTING
        self.pid = 0
        self.pidfd = -1
        self.to_fd = -1
        self.from_fd = -1
        self.log_fd = -1
        self.buffer = bytearray()
        self.log_buffer = bytearray()
        self.out_view: memoryview | None = None
        self.call: PythonCall | None = None
        self.doomed = False
        """Killed for what it sent: its further output is drained and dropped."""
        self.spawned = time.monotonic()

    def __repr__(self) -> str:
        return f"<Worker pid={self.pid} state={('starting', 'idle', 'busy', 'dead')[self.state]}>"


class PythonRunner:
    """The worker pool of one watchdog (see the module docstring)."""

    def __init__(self, config: WatchdogConfig, stats: WatchdogStats, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.stats = stats
        self.loop = loop
        self.calls: set[PythonCall] = set()
        self.workers: list[Worker] = []
        self.queue: deque[PythonCall] = deque()
        self.closing = False
        self.start_error: str | None = None
        self._restart_delay = RESTART_DELAY_S
        self._ready = asyncio.Event()
        command = self_command(no_site=False)  # A handler may need the interpreter's site-packages.
        self._argv = (*command.argv, "_pyworker", os.path.abspath(config.handler))
        self._env = original_environ()
        self._oom = OomWatch()
        self.process_limit = ProcessLimit()
        if config.max_memory_bytes:
            self._env["FAASD_WORKER_MEMORY_LIMIT"] = str(config.max_memory_bytes)
        self._env["FAASD_WORKER_OUTPUT_LIMIT"] = str(config.max_output_bytes)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the workers; return when one is ready.

        Raises:
            OSError: the handler cannot be imported, or no worker became ready within start_timeout.
        """
        for _ in range(self.config.workers):
            self._spawn()
        try:
            await asyncio.wait_for(self._ready.wait(), self.config.start_timeout_s)
        except TimeoutError:
            raise OSError(f"no python worker ready within {self.config.start_timeout_s:g}s") from None
        if self.start_error is not None and not any(w.state in (IDLE, BUSY) for w in self.workers):
            raise OSError(self.start_error)
        event(log, INFO, "python workers started", workers=self.config.workers, handler=self.config.handler)

    def healthy(self) -> bool:
        return any(worker.state in (IDLE, BUSY) for worker in self.workers)

    async def aclose(self) -> None:
        """Close the request pipes (workers exit at end of file), then kill what is left."""
        self.closing = True
        for worker in self.workers:
            self._close_fd(worker, "to_fd")
        deadline = time.monotonic() + STOP_GRACE_S
        while any(worker.state != DEAD for worker in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for worker in list(self.workers):
            if worker.state != DEAD:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(worker.pid, 0)
                self._worker_gone(worker, 0)

    def _spawn(self) -> None:
        """Start one worker. Resource handling: on any failure every pipe end opened is closed and a
        respawn is scheduled; on success the worker's ends belong to it until :meth:`_worker_gone`."""
        worker = Worker(self)
        child_ends: list[int] = []
        try:
            request_read, worker.to_fd = _pipe()
            child_ends.append(request_read)
            worker.from_fd, answer_write = _pipe()
            child_ends.append(answer_write)
            worker.log_fd, log_write = _pipe()
            child_ends.append(log_write)
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_write, 1),
                (os.POSIX_SPAWN_DUP2, log_write, 2),
                (os.POSIX_SPAWN_DUP2, request_read, 3),
                (os.POSIX_SPAWN_DUP2, answer_write, 4),
            ]
            worker.pid = os.posix_spawn(self._argv[0], self._argv, self._env, file_actions=actions, setpgroup=0)
            self.process_limit.lower(worker.pid)
        except Exception as exc:  # OSError (EMFILE, ENOMEM, ...) or anything else: no fd may leak.
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            event(log, ERROR, "cannot start a python worker", error=reason)
            for name in ("to_fd", "from_fd", "log_fd"):
                self._close_fd(worker, name)
            self._schedule_respawn()
            return
        finally:
            for fd in child_ends:
                os.close(fd)
        os.set_blocking(worker.to_fd, False)
        self.workers.append(worker)
        try:
            worker.pidfd = os.pidfd_open(worker.pid)
        except OSError:
            worker.pidfd = -1
        else:
            self.loop.add_reader(worker.pidfd, self._on_exit, worker)
        self.loop.add_reader(worker.from_fd, self._on_answer, worker)
        self.loop.add_reader(worker.log_fd, self._on_log, worker)

    def _schedule_respawn(self) -> None:
        if self.closing:
            return
        delay = self._restart_delay
        self._restart_delay = min(self._restart_delay * 2, MAX_RESTART_DELAY_S)
        self.loop.call_later(delay, self._respawn)

    def _respawn(self) -> None:
        if not self.closing and sum(1 for w in self.workers if w.state != DEAD) < self.config.workers:
            self._spawn()

    # -- calls ------------------------------------------------------------------------------------
    def run(self, request: Request, connection: HttpConnection) -> PythonCall | None:
        if self.process_limit.refuse(connection, time.monotonic()):
            return None  # A call just filled the replica's process limit (faasd.watchdog.proclimit).
        call = PythonCall(self, request, connection)
        self.calls.add(call)
        self.stats.in_flight = len(self.calls)
        for worker in self.workers:
            if worker.state == IDLE:
                self._dispatch(call, worker)
                return call
        self.queue.append(call)
        return call

    def _dispatch(self, call: PythonCall, worker: Worker) -> None:
        request = call.request
        meta = json.dumps(
            {"method": request.method, "path": request.path, "query": request.query, "headers": request.headers},
            separators=(",", ":"),
        ).encode()
        body = request.body
        frame = HEADER.pack(len(meta), len(body)) + meta + body
        worker.state = BUSY
        worker.call = call
        call.worker = worker
        try:
            written = os.write(worker.to_fd, frame)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # The worker is dying: its exit answers the call.
        if written < len(frame):
            worker.out_view = memoryview(frame)[written:]
            self.loop.add_writer(worker.to_fd, self._on_writable, worker)

    def _on_writable(self, worker: Worker) -> None:
        view = worker.out_view
        assert view is not None
        try:
            view = view[os.write(worker.to_fd, view) :]
        except BlockingIOError:
            return
        except OSError:
            view = view[len(view) :]
        if not view:
            self.loop.remove_writer(worker.to_fd)
            worker.out_view = None
        else:
            worker.out_view = view

    def _next(self, worker: Worker) -> None:
        """A worker is idle: give it the oldest waiting call."""
        worker.state = IDLE
        worker.call = None
        while self.queue:
            call = self.queue.popleft()
            if not call.abandoned:
                self._dispatch(call, worker)
                return

    def _answer(self, call: PythonCall, status: int, body: bytes, content_type: str, headers: bytes = b"") -> None:
        self.calls.discard(call)
        self.stats.in_flight = len(self.calls)
        if not call.abandoned:
            call.abandoned = True  # Answered once, never again.
            call.connection.respond(status, body, content_type, headers)

    def drop(self, call: PythonCall) -> None:
        """Forget a queued call (its client went away)."""
        with contextlib.suppress(ValueError):
            self.queue.remove(call)
        self.calls.discard(call)
        self.stats.in_flight = len(self.calls)

    # -- worker events ----------------------------------------------------------------------------
    def _on_answer(self, worker: Worker) -> None:
        try:
            data = os.read(worker.from_fd, READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._close_fd(worker, "from_fd")
            return
        if worker.doomed:
            return  # Killed: drain and drop until it exits.
        buffer = worker.buffer
        buffer += data
        limit = self.config.max_output_bytes
        while len(buffer) >= HEADER.size:
            meta_length, body_length = HEADER.unpack_from(buffer)
            if body_length > limit or meta_length > max(limit, MAX_META_BYTES):
                # The worker refuses answers over the limit itself; a frame claiming more comes from a
                # handler writing to the answer pipe: never held, the worker is replaced.
                message = f"Function output exceeded max_output_bytes ({limit} bytes); worker killed\n"
                self._doom(worker, 502, message, "output_limit")
                return
            end = HEADER.size + meta_length + body_length
            if len(buffer) < end:
                break
            try:
                meta = json.loads(bytes(buffer[HEADER.size : HEADER.size + meta_length]))
                if not isinstance(meta, dict):
                    raise ValueError("not an object")
                body = bytes(buffer[HEADER.size + meta_length : end])
                del buffer[:end]
                self._on_frame(worker, meta, body)
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                event(log, WARNING, "python worker sent an invalid answer", pid=worker.pid, error=str(exc))
                self._doom(worker, 502, "python worker sent an invalid answer; worker killed\n", "protocol")
                return

    def _doom(self, worker: Worker, status: int, message: str, reason: str) -> None:
        """Answer the worker's call (if any) with ``message`` and kill the worker; it is replaced."""
        worker.doomed = True
        worker.buffer = bytearray()
        call = worker.call
        if call is not None:
            self._answer(call, status, message.encode(), "text/plain")
        self._kill(worker, reason)

    def _on_frame(self, worker: Worker, meta: dict[str, Any], body: bytes) -> None:
        """One frame from a worker: its start, or its answer to the call it runs. ``meta`` is JSON our own
        worker wrote (faasd/watchdog/pyworker.py), so its values are whatever that JSON holds."""
        if worker.state == STARTING:
            if meta.get("ready"):
                self._next(worker)
                self._ready.set()
            else:
                self.start_error = str(meta.get("error", "worker failed to start"))
                event(log, ERROR, "python worker failed to start", error=self.start_error)
                if not self.healthy():
                    self._ready.set()  # start() reports the error.
            return
        call = worker.call
        if call is None:
            return
        error = meta.get("error")
        status = int(meta.get("status", 500 if error is not None else 200))
        if not 200 <= status <= 599:  # 1xx would leave the body unframed; past 599 is not HTTP.
            error, status = f"Function returned an invalid status code: {status}", 502
        elif status in (204, 304):  # No body allowed: one sent anyway would corrupt the connection.
            body = b""
        if error is not None:
            self._answer(call, status, f"{error}\n".encode(), "text/plain")
        else:
            headers = b"".join(
                f"{name}: {value}\r\n".encode("latin-1", "replace")
                for name, value in meta.get("headers", [])
                if name.lower() not in _SKIP_HEADERS and "\n" not in name + value and "\r" not in name + value
            )
            config = self.config
            content_type = (
                _header_value(meta.get("content_type"))
                or config.content_type
                or call.request.content_type
                or DEFAULT_CONTENT_TYPE
            )
            if self._over_memory(worker):
                rss = _resident_bytes(worker.pid)
                message = f"worker exceeded max_memory ({rss} > {config.max_memory_bytes} bytes); replaced\n"
                self._answer(call, 500, message.encode(), "text/plain")
                self._kill(worker, "memory")
                return
            self._answer(call, status, body, content_type, headers)
        if meta.get("exit"):
            worker.call = None
            return  # It exits by itself; its exit brings a replacement.
        self._next(worker)

    def _on_log(self, worker: Worker) -> None:
        try:
            data = os.read(worker.log_fd, READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._close_fd(worker, "log_fd")
            return
        buffer = worker.log_buffer
        buffer += data
        *lines, rest = buffer.split(b"\n")
        worker.log_buffer = bytearray(rest[-16384:])
        for line in lines:
            event(log, INFO, "function", worker=worker.pid, text=line[:16384].decode("utf-8", "replace"))

    def _on_exit(self, worker: Worker) -> None:
        self.loop.remove_reader(worker.pidfd)
        os.close(worker.pidfd)
        worker.pidfd = -1
        try:
            _, status = os.waitpid(worker.pid, 0)
        except ChildProcessError:
            status = 0
        self._worker_gone(worker, status)

    def _worker_gone(self, worker: Worker, status: int) -> None:
        if worker.state == DEAD:
            return
        was_starting = worker.state == STARTING
        worker.state = DEAD
        for name in ("to_fd", "from_fd", "log_fd"):
            self._close_fd(worker, name)
        if worker.pidfd >= 0:
            self.loop.remove_reader(worker.pidfd)
            os.close(worker.pidfd)
            worker.pidfd = -1
        self.workers.remove(worker)
        call = worker.call
        worker.call = None
        code = os.waitstatus_to_exitcode(status)
        how = f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        why = self._oom.explain(code)  # The kernel at the replica's memory limit (cgroup v2).
        how += f": {why}" if why else ""
        if call is not None:
            self._answer(call, 500, f"worker crashed during the call: {how}\n".encode(), "text/plain")
        if self.closing:
            return
        event(log, WARNING, "python worker ended", pid=worker.pid, how=how, starting=was_starting)
        if time.monotonic() - worker.spawned > STABLE_AFTER_S:
            self._restart_delay = RESTART_DELAY_S
        if was_starting and not self._ready.is_set() and not self.healthy():
            self._ready.set()  # start() sees no live worker and reports why.
        self._schedule_respawn()

    def _close_fd(self, worker: Worker, name: str) -> None:
        fd = getattr(worker, name)
        if fd < 0:
            return
        if name == "to_fd":
            if worker.out_view is not None:
                self.loop.remove_writer(fd)
                worker.out_view = None
        else:
            self.loop.remove_reader(fd)
        os.close(fd)
        setattr(worker, name, -1)

    # -- deadlines and killing --------------------------------------------------------------------
    def _kill(self, worker: Worker, reason: str) -> None:
        self.stats.count_kill(reason)
        event(log, WARNING, "killing python worker", pid=worker.pid, reason=reason)
        worker.call = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)

    def _over_memory(self, worker: Worker) -> bool:
        limit = self.config.max_memory_bytes
        return bool(limit) and _resident_bytes(worker.pid) > limit

    def check_deadlines(self, now: float) -> None:
        for call in list(self.calls):
            worker = call.worker
            if now >= call.deadline:
                limit = self.config.call_limit_s
                if worker is not None:
                    self._answer(
                        call, 408, f"Killed worker: exceeded exec_timeout of {limit:g}s\n".encode(), "text/plain"
                    )
                    self._kill(worker, "timeout")
                else:
                    self.drop(call)
                    if not call.abandoned:
                        call.abandoned = True
                        message = f"No python worker became free within exec_timeout of {limit:g}s\n"
                        call.connection.respond(408, message.encode(), "text/plain")
            elif worker is not None and self._over_memory(worker):
                message = f"worker exceeded max_memory ({self.config.max_memory_bytes} bytes); replaced\n"
                self._answer(call, 500, message.encode(), "text/plain")
                self._kill(worker, "memory")
        if self.process_limit.active:
            busy = {worker.pid: worker for worker in self.workers if worker.call is not None}
            culprit = self.process_limit.to_kill(busy, now, keep=[worker.pid for worker in self.workers])
            if culprit is not None and culprit.call is not None:
                self._answer(culprit.call, 500, self.process_limit.killed_message(), "text/plain")
                self._kill(culprit, "process_limit")

    def kill_all(self, reason: str) -> None:
        for call in list(self.calls):
            if call.worker is not None:
                self._answer(call, 503, b"Shutting down: call stopped before it finished\n", "text/plain")
                self._kill(call.worker, reason)
            else:
                self.drop(call)
                if not call.abandoned:
                    call.abandoned = True
                    call.connection.respond(503, b"Shutting down\n", "text/plain")


def _pipe() -> tuple[int, int]:
    """A pipe whose ends are above the fds the worker's file actions write (0-4), so no action can
    overwrite an end another action still has to copy."""
    ends = list(os.pipe2(os.O_CLOEXEC))
    try:
        for index, fd in enumerate(ends):
            if fd <= 4:
                ends[index] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                os.close(fd)
    except OSError:
        for fd in ends:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    return ends[0], ends[1]


def _header_value(value: object) -> str | None:
    """``value`` if it can be written as a header value as is (Latin-1, no control characters), else None:
    a CR/LF from a handler would split the answer's head."""
    if not isinstance(value, str) or not value:
        return None
    if value.isascii() and value.isprintable():  # The common case, checked in C.
        return value
    return None if _UNSAFE_HEADER.search(value) else value


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as file:
            return int(file.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0
