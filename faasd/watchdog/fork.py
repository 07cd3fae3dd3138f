"""Fork mode: run the function's process once per request, body on stdin, stdout as the answer.

Why it is built this way (measured on the 2-core project machines, see docs/performance notes in the
closing notes and ``bench/watchdog.py``):

* CPython's own vfork + exec, :func:`faasd.watchdog.spawn.spawn` (``_posixsubprocess.fork_exec``,
  what ``subprocess`` runs underneath: its child does a few syscalls before ``execve`` where glibc's
  ``posix_spawn`` child does ~130), on the event loop: the loop waits the ~40 us until the child has
  exec'd, which measured faster than handing spawns to threads (docs/watchdog.md); pipes made by
  ``os.pipe2(O_CLOEXEC)``; no ``subprocess.Popen`` (its bookkeeping costs more than the spawn). The
  environment is handed over as ready ``NAME=value`` bytes: the watchdog's own encoded once, only the
  request's ``Http_*`` per call. Measured: docs/watchdog.md, "Performance (fork mode)".
* The pipes and a pidfd (``os.pidfd_open``) are watched by an epoll of fork mode's own
  (:class:`~faasd.watchdog.fdwatch.FdWatch`, one fd on the event loop's): one ``epoll_ctl`` per fd each
  way, no asyncio handle per fd, no task, no future, no transport object per call.
* Small bodies (<= :data:`PIPE_ATOMIC_BYTES`) are written to stdin before the event loop runs again:
  a fresh pipe always has room for them. An empty body gives the process ``/dev/null``.
* The child gets its own process group so a timeout, an output flood or shutdown kills everything the
  function started, not only its first process.
* Each call's process runs at nice +5 against the watchdog (:data:`~faasd.watchdog.proclimit.CALL_NICE`,
  set right after the spawn): the watchdog, which answers every call, no longer waits for a CPU behind
  them (docs/watchdog.md).

Kill policy (trio's ``deliver_cancel`` in spirit, but immediate): a call past its deadline, over
``max_output_bytes``, abandoned by its client, filling its replica's process limit
(:mod:`faasd.watchdog.proclimit`), or still running when shutdown's drain time is up gets its process
group SIGKILLed. Functions that need a graceful stop should be written to finish within
``exec_timeout``; there is nothing useful a fork-mode call can do with a SIGTERM grace period.
Error handling: a process that cannot start answers 500 ``Cannot start process: <reason>`` (with a pids
cgroup, a refusal at the replica's process limit names the limit,
:meth:`~faasd.watchdog.proclimit.ProcessLimit.full_reason`); a request whose metadata no environment
variable can carry answers 400 (a NUL decoded into the path) or 431 (a value past the kernel's 128 KiB
limit), with a one-line reason. Every fd a call opens is closed on every path, failures included (issue
11: a ``ValueError`` from ``posix_spawn`` once leaked two per call).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable

from faasd.execenv import exec_environ
from faasd.http1 import canonical_header_name
from faasd.logs import ERROR, INFO, WARNING, LineLogger, event
from faasd.watchdog.config import TOKEN_VARIABLE
from faasd.watchdog.fdwatch import FdWatch
from faasd.watchdog.loop import signal_name
from faasd.watchdog.oom import OomWatch
from faasd.watchdog.proclimit import ProcessLimit
from faasd.watchdog.spawn import prepare, spawn

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import asyncio
    import signal

    from faasd.http1 import Request
    from faasd.watchdog.config import WatchdogConfig
    from faasd.watchdog.metrics import WatchdogStats
    from faasd.watchdog.server import HttpConnection
else:
    import _signal as signal  # signal's functions without its enum wrappers: docs/coldstart.md

__all__ = ["CallResult", "ForkRunner", "UnpassableRequest", "original_environ"]

log = LineLogger("faasd.watchdog")

PIPE_ATOMIC_BYTES = 4096
"""A body this small fits in any new pipe (even one the kernel limited to a single page), so it is
written with one blocking ``write`` that cannot block."""

READ_CHUNK_BYTES = 256 * 1024
"""Bytes asked for per read of the function's output (pipes hold 64 KiB; this drains them in one)."""

FORCE_FINISH_AFTER_KILL_S = 1.0
"""After a kill, how long to wait for the output pipes to close before answering anyway: a process
that left the group (``setsid``) can keep them open for ever."""

DEFAULT_CONTENT_TYPE = "text/plain; charset=utf-8"
"""Answer type when neither ``content_type`` nor the request says one (as Go's text sniffing would)."""

ENV_TOO_LARGE = (
    "Request headers too large to pass to the function as environment variables (Http_*): "
    "one value may not exceed 128 KiB"
)
"""431 reason when the spawn fails with E2BIG (MAX_ARG_STRLEN, or the whole environment over ARG_MAX)."""

CallResult = tuple[int, bytes, str | None]
"""(status, body, content type override or None) handed to the call's ``done`` callback."""


_REQUEST_KEYS = ("Http_Method", "Http_Path", "Http_Query", "Http_ContentType", "Http_Content_Length", "Http_Host")
"""The request metadata :meth:`ForkRunner.child_env` passes whatever the headers say."""


_assigned_environ: dict[str, str] | None = None


def _env_item(key: str, value: str) -> bytes:
    """``NAME=value`` as ``execve`` takes it (the encoding ``os.fsencode`` uses)."""
    return (key + "=" + value).encode("utf-8", "surrogateescape")


def assign_environ(env: dict[str, str]) -> None:
    """A pooled replica (:mod:`faasd.sandbox.pooled`) was started with a generic environment and given its
    function's when it was assigned: from then on that is what :func:`original_environ` returns."""
    global _assigned_environ
    _assigned_environ = dict(env)


def original_environ() -> dict[str, str]:
    """The environment this process was started with (or was assigned, :func:`assign_environ`): what the
    function must see -- not ``os.environ``, which Python's locale coercion changed (:mod:`faasd.execenv`).
    Never the call token (``call_token``, on Marathon): the function must not learn what opens its replica.
    """
    env = _assigned_environ if _assigned_environ is not None else exec_environ()
    return {key: value for key, value in env.items() if key != TOKEN_VARIABLE}


class UnpassableRequest(ValueError):
    """The request carries a value no environment variable can hold (a NUL byte): answered 400."""


class ForkRunner:
    """Starts fork-mode calls and owns every call in flight.

    Resource handling: each call owns its pipes, pidfd and process group until it finishes; the runner
    keeps the set of live calls so :meth:`check_deadlines` and :meth:`kill_all` can reach them.
    """

    call_class: type[ForkCall]

    def __init__(self, config: WatchdogConfig, stats: WatchdogStats, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.stats = stats
        self.loop = loop
        self.calls: set[ForkCall] = set()
        self.base_env = original_environ()
        self._base_env_items = [_env_item(key, value) for key, value in self.base_env.items()]
        """:attr:`base_env` as the ``NAME=value`` bytes :func:`spawn` takes, encoded once."""
        self._base_overridden = [key for key in _REQUEST_KEYS if key in self.base_env]
        """Variables of the watchdog's own that a request's metadata (:data:`_REQUEST_KEYS`) replaces."""
        self._executable = os.fsencode(config.executable)
        self._argv = [os.fsencode(arg) for arg in config.argv]
        self.oom = OomWatch()
        self.process_limit = ProcessLimit(nice_calls=True)
        self._env_keys: dict[str, str] = {}
        self.fds = FdWatch(loop)
        """Where calls watch their pipes and pidfds: not the loop's ``add_reader`` (:mod:`~faasd.watchdog.fdwatch`)."""
        prepare()

    async def start(self) -> None:
        """Nothing to start ahead of calls."""

    async def aclose(self) -> None:
        self.fds.close()

    def healthy(self) -> bool:
        return True

    def run(self, request: Request, connection: HttpConnection) -> ForkCall | None:
        """Answer ``request`` on ``connection`` with one run of the function; returns the live call."""
        config = self.config
        if self.process_limit.refuse(connection, time.monotonic()):
            return None  # A call just filled the replica's process limit (faasd.watchdog.proclimit).

        def done(result: CallResult) -> None:
            status, body, content_type = result
            if content_type is None:
                content_type = config.content_type or request.content_type or DEFAULT_CONTENT_TYPE
            connection.respond(status, body, content_type)

        return self.start_call(request, done, connection)

    def start_call(
        self, request: Request, done: Callable[[CallResult], None], connection: HttpConnection | None = None
    ) -> ForkCall | None:
        """Spawn the function for ``request``; ``done`` is called exactly once with the result.

        Returns the live call, or None when it finished at once (the process could not start).
        """
        call = self.call_class(self, request, done, connection)
        if call.spawn():
            self.calls.add(call)
            self.stats.in_flight = len(self.calls)
            return call
        return None

    def release(self, call: ForkCall) -> None:
        """Forget a call whose process is gone and whose pipes are closed (it is answered next)."""
        self.calls.discard(call)
        self.stats.in_flight = len(self.calls)
        if call.kill_reason == "process_limit":
            self.process_limit.answered(time.monotonic())

    def child_env(self, request: Request) -> list[bytes]:
        """The function's environment, as ``NAME=value`` bytes: the watchdog's own plus ``Http_*`` request
        metadata (a variable of the watchdog's own is not overridden by a header's).

        Raises:
            UnpassableRequest: a value no environment variable can carry (NUL); nothing was opened.
        """
        env = self._base_env_items.copy()
        if not self.config.cgi_headers:
            return env
        base = self.base_env
        keys = self._env_keys
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = keys.get(name)
            if key is None:
                key = keys[name] = "Http_" + canonical_header_name(name).replace("-", "_")
            if key not in headers and key not in base:  # The first of repeated headers, as before.
                headers[key] = value
        path = request.path
        if path and "\x00" in path:  # Decoded from %00. Header values and the raw query cannot hold one (http1).
            raise UnpassableRequest("NUL byte in the request path: it cannot be passed to the function (Http_Path)")
        extra = {"Http_Method": request.method}
        if path:
            extra["Http_Path"] = path
        if request.query:
            extra["Http_Query"] = request.query
        if request.content_type is not None:
            extra["Http_ContentType"] = request.content_type
        extra["Http_Content_Length"] = str(request.content_length)
        extra["Http_Host"] = request.host
        # The request's own metadata wins over a header's (Host, Content-Length) and over ours: those
        # entries go, and it comes last. A dict, not a scan of the list per override (two per call).
        for key in extra:
            headers.pop(key, None)
        if self._base_overridden:  # Rare: the watchdog was itself given one of these Http_* variables.
            drop = {key.encode() for key in self._base_overridden if key in extra}
            env = [item for item in env if item.partition(b"=")[0] not in drop]
        env += [_env_item(key, value) for key, value in headers.items()]
        env += [_env_item(key, value) for key, value in extra.items()]
        return env

    def stdin_bytes(self, request: Request) -> bytes:
        """What the function reads on stdin: the body, or the OpenFaaS marshalled request."""
        if not self.config.marshal_request:
            return request.body
        header: dict[str, list[str]] = {}
        for name, value in request.headers:
            header.setdefault(canonical_header_name(name), []).append(value)
        import base64  # Only for marshal_request: not on every watchdog's start path.
        import json

        document = {"header": header, "body": {"raw": base64.b64encode(request.body).decode("ascii")}}

        return json.dumps(document).encode()

    def check_deadlines(self, now: float) -> None:
        """Kill calls past their deadline, and the one that filled its replica's process limit
        (:mod:`faasd.watchdog.proclimit`); force-finish killed calls whose pipes never closed."""
        for call in list(self.calls):
            if call.pidfd < 0:
                call.poll_exit()
                if call not in self.calls:
                    continue
            if call.kill_reason is None:
                if now >= call.deadline:
                    call.kill("timeout")
            elif now >= call.force_deadline and call.pid:  # (pid 0: its spawn is still under way)
                call.force_finish()
        if self.process_limit.active:
            groups = {call.pid: call for call in self.calls if call.pid > 0 and call.kill_reason is None}
            culprit = self.process_limit.to_kill(groups, now)
            if culprit is not None:
                culprit.kill("process_limit")

    def kill_all(self, reason: str) -> None:
        """Kill every call in flight (shutdown after the drain time)."""
        for call in list(self.calls):
            if call.kill_reason is None:
                call.kill(reason)


def _refused_by_kernel(exc: BaseException) -> bool:
    """The kernel refused the process (``EAGAIN`` from the fork): with a pids cgroup, the replica is at its
    limit."""
    return isinstance(exc, OSError) and exc.errno == errno.EAGAIN


class ForkCall:
    """One process run for one request, from spawn to the ``done`` callback."""

    __slots__ = (
        "_done",
        "_err_chunks",
        "_out_chunks",
        "_stdin_view",
        "connection",
        "deadline",
        "err_fd",
        "force_deadline",
        "in_fd",
        "kill_reason",
        "out_bytes",
        "out_fd",
        "pid",
        "pidfd",
        "request",
        "runner",
        "started",
        "status",
    )

    def __init__(
        self,
        runner: ForkRunner,
        request: Request,
        done: Callable[[CallResult], None],
        connection: HttpConnection | None = None,
    ) -> None:
        self.runner = runner
        self.request = request
        self.connection = connection
        self._done: Callable[[CallResult], None] | None = done
        self.started = time.monotonic()
        self.deadline = self.started + runner.config.call_limit_s
        self.force_deadline = 0.0
        self.pid = 0
        self.pidfd = -1
        self.in_fd = -1
        self.out_fd = -1
        self.err_fd = -1
        self.status: int | None = None
        self.kill_reason: str | None = None
        self.out_bytes = 0
        self._out_chunks: list[bytes] = []
        self._err_chunks: list[bytes] = []
        self._stdin_view: memoryview | None = None

    # -- start ------------------------------------------------------------------------------------
    def spawn(self) -> bool:
        """Start the process; False if it could not start (``done`` was then called).

        Resource handling: every fd opened here is either owned by the call once this returns True
        (and closed when it finishes) or closed before this returns False, whatever failed.
        Error handling: a request whose metadata an environment variable cannot carry is answered 400
        (NUL in the path) or 431 (a value past the kernel's size limit) before or instead of a spawn;
        a process that cannot start is answered 500 with the reason.

        Spawned on the event loop, which waits until the child has exec'd (~40 us): two spawn threads
        with the loop going on meanwhile measured slower, at c16 and on a host busy with other work
        (docs/watchdog.md, "Performance (fork mode)").
        """
        runner = self.runner
        config = runner.config
        try:
            env = runner.child_env(self.request)
        except UnpassableRequest as exc:
            self._refuse(400, str(exc), INFO)
            return False
        body = runner.stdin_bytes(self.request)
        child_ends: list[int] = []
        try:
            stdin = -1  # /dev/null
            if body:
                stdin, self.in_fd = os.pipe2(os.O_CLOEXEC)
                child_ends.append(stdin)
            self.out_fd, w_out = os.pipe2(os.O_CLOEXEC)
            child_ends.append(w_out)
            w_err = w_out
            if not config.combine_output:
                self.err_fd, w_err = os.pipe2(os.O_CLOEXEC)
                child_ends.append(w_err)
            pid = spawn(runner._executable, runner._argv, env, stdin, w_out, w_err)
        except Exception as exc:  # Whatever failed, no fd of this call may outlive it.
            self._spawn_failed(child_ends, exc)
            return False
        self._spawned(pid, child_ends, body)
        return True

    def _spawn_failed(self, child_ends: list[int], exc: BaseException) -> None:
        for fd in child_ends:
            os.close(fd)
        self._close_own_fds()
        self._start_failed(exc)

    def _close_own_fds(self) -> None:
        for fd in (self.in_fd, self.out_fd, self.err_fd):
            if fd >= 0:
                os.close(fd)
        self.in_fd = self.out_fd = self.err_fd = -1
        self._stdin_view = None

    def _start_failed(self, exc: BaseException) -> None:
        """Answer a call whose process could not be started, by why."""
        if isinstance(exc, OSError) and exc.errno == errno.E2BIG:
            self._refuse(431, ENV_TOO_LARGE, INFO)
        elif isinstance(exc, ValueError):  # spawn: "embedded null byte" in a value we did not foresee.
            self._refuse(400, f"Request cannot be passed to the function: {exc}", INFO)
        else:
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
            if _refused_by_kernel(exc) and self.runner.process_limit.active:
                reason = self.runner.process_limit.full_reason()
            self._refuse(500, f"Cannot start process: {reason}", ERROR)

    def _refuse(self, status: int, reason: str, level: int) -> None:
        """Answer ``status`` with a one-line ``reason``, no process having been started."""
        self.runner.release(self)
        event(log, level, "process not started", status=status, reason=reason)
        self._finish_with((status, reason.encode() + b"\n", "text/plain"))

    def _spawned(self, pid: int, child_ends: list[int], body: bytes) -> None:
        """Finish starting (on the event loop): close the child's pipe ends, watch ours, feed stdin."""
        for fd in child_ends:
            os.close(fd)
        runner = self.runner
        self.pid = pid
        runner.process_limit.lower(pid)
        runner.stats.process_starts += 1
        fds = runner.fds
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError:  # No pidfd (kernel < 5.3 or a seccomp filter): the deadline tick polls instead.
            self.pidfd = -1
        else:
            fds.add(self.pidfd, self._on_exit)
        fds.add(self.out_fd, self._on_stdout)
        if self.err_fd >= 0:
            fds.add(self.err_fd, self._on_stderr)
        if body:
            self._write_stdin(body)

    def _write_stdin(self, body: bytes) -> None:
        fd = self.in_fd
        if len(body) <= PIPE_ATOMIC_BYTES:
            try:  # noqa: SIM105 -- hot path; contextlib.suppress costs a context manager per call.
                os.write(fd, body)
            except OSError:  # The process exited without reading: its answer says what happened.
                pass
            os.close(fd)
            self.in_fd = -1
            return
        os.set_blocking(fd, False)
        self._stdin_view = memoryview(body)
        self._on_stdin_writable(first=True)

    def _on_stdin_writable(self, first: bool = False) -> None:
        view = self._stdin_view
        assert view is not None
        try:
            written = os.write(self.in_fd, view)
        except BlockingIOError:
            written = 0
        except OSError:  # EPIPE: the process stopped reading; drop the rest.
            written = len(view)
        view = view[written:]
        if view:
            self._stdin_view = view
            if first:
                self.runner.loop.add_writer(self.in_fd, self._on_stdin_writable)
            return
        if not first:
            self.runner.loop.remove_writer(self.in_fd)
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.in_fd >= 0:
            if self._stdin_view is not None:
                self.runner.loop.remove_writer(self.in_fd)
            os.close(self.in_fd)
            self.in_fd = -1
            self._stdin_view = None

    # -- output and exit --------------------------------------------------------------------------
    def _on_stdout(self) -> None:
        try:
            data = os.read(self.out_fd, READ_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        if data:
            self._output(data)
            return
        self.runner.fds.remove(self.out_fd)
        os.close(self.out_fd)
        self.out_fd = -1
        self._maybe_finish()

    def _on_stderr(self) -> None:
        try:
            data = os.read(self.err_fd, READ_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        if data:
            self._take(data, self._err_chunks)
            return
        self.runner.fds.remove(self.err_fd)
        os.close(self.err_fd)
        self.err_fd = -1
        self._maybe_finish()

    def _output(self, data: bytes) -> None:
        """What to do with a piece of stdout: fork mode collects it (bounded) for one answer."""
        self._take(data, self._out_chunks)

    def _take(self, data: bytes, chunks: list[bytes]) -> None:
        if self.kill_reason is not None:
            return  # Killed: drain and drop until EOF.
        self.out_bytes += len(data)
        if self.out_bytes > self.runner.config.max_output_bytes:
            self._out_chunks.clear()
            self._err_chunks.clear()
            self.kill("output_limit")
            return
        chunks.append(data)

    def _on_exit(self) -> None:
        self.runner.fds.remove(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = -1
        self._reap(blocking=True)
        self._maybe_finish()

    def _reap(self, blocking: bool) -> None:
        try:
            pid, status = os.waitpid(self.pid, 0 if blocking else os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid:
            self.status = status

    def poll_exit(self) -> None:
        """Reap without a pidfd (fallback path), from the deadline tick."""
        if self.pid > 0 and self.pidfd < 0 and self.status is None:
            self._reap(blocking=False)
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.status is None or self.out_fd >= 0 or self.err_fd >= 0:
            return
        self._close_stdin()
        self.runner.release(self)
        if self._done is not None:
            self._finish_with(self._result())

    def _result(self) -> CallResult:
        config = self.runner.config
        reason = self.kill_reason
        if reason == "timeout":
            message = f"Killed process: exceeded exec_timeout of {config.call_limit_s:g}s\n"
            return 408, message.encode(), "text/plain"
        if reason == "output_limit":
            limit = config.max_output_bytes
            message = f"Function output exceeded max_output_bytes ({limit} bytes); process killed\n"
            return 502, message.encode(), "text/plain"
        if reason == "shutdown":
            return 503, b"Shutting down: call stopped before it finished\n", "text/plain"
        if reason == "process_limit":
            return 500, self.runner.process_limit.killed_message(), "text/plain"
        output = b"".join(self._out_chunks)
        errors = b"".join(self._err_chunks)
        if errors:
            event(log, INFO, "stderr", text=errors[:4096].decode("utf-8", "replace"))
        if config.write_debug:
            event(log, INFO, "output", text=output[:4096].decode("utf-8", "replace"))
        code = os.waitstatus_to_exitcode(self.status or 0)
        if code == 0:
            return 200, output, None
        if code > 0:
            head = f"exit status {code}\n".encode()
        else:
            why = self.runner.oom.explain(code)  # The kernel at the replica's memory limit (cgroup v2).
            head = f"killed by signal {signal_name(-code)}{': ' + why if why else ''}\n".encode()
        return 500, head + output + errors, "text/plain"

    def _finish_with(self, result: CallResult) -> None:
        done = self._done
        self._done = None
        if done is not None:
            done(result)

    # -- killing ----------------------------------------------------------------------------------
    def kill(self, reason: str) -> None:
        """SIGKILL the call's process group; the call answers by ``reason`` once its pipes close."""
        if self.kill_reason is not None:
            return
        self.kill_reason = reason
        self.force_deadline = time.monotonic() + FORCE_FINISH_AFTER_KILL_S
        self.runner.stats.count_kill(reason)
        event(log, WARNING, "killing process group", pid=self.pid, reason=reason)
        if self.pid > 0:  # Always, once spawned; killpg(0) would be the watchdog's own group.
            self._signal_group()
            self._close_stdin()

    def _signal_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def abandon(self) -> None:
        """The client went away: kill the process and never answer."""
        self._done = None
        self.kill("client_gone")

    def force_finish(self) -> None:
        """Answer a killed call whose pipes are still held open by an escaped descendant."""
        fds = self.runner.fds
        for fd in (self.out_fd, self.err_fd):
            if fd >= 0:
                fds.remove(fd)
                os.close(fd)
        self.out_fd = self.err_fd = -1
        if self.status is None:
            self._reap(blocking=False)
        if self.status is None:
            # The leader itself is stuck (uninterruptible sleep); answer now, reap when its pidfd fires.
            self.status = -1
        self.runner.release(self)
        self._close_stdin()
        if self._done is not None:  # Not for an abandoned call: its status may be that -1, no wait status.
            self._finish_with(self._result())


ForkRunner.call_class = ForkCall
