"""``faasd watchdog``: read the env config, serve, and shut down cleanly on SIGTERM.

Lifecycle (docs/watchdog.md):

1. Unpack the handler archive, if ``handler_archive`` names one, into the working directory
   (:mod:`faasd.watchdog.unpack`). Parse the config; a bad value prints one line and exits 2. Read
   the call token (from its fd, then closed, or its file) and, when there is one, mark the process
   non-dumpable (see :func:`_protect_memory`); with ``run_as``, a watchdog started as root then becomes
   that user for good (:mod:`faasd.watchdog.privileges`). All before any function code runs.
2. Bind the invoke port (and the metrics port), write the lock file, mark ready.
3. On SIGTERM/SIGINT: remove the lock file (health turns 503), keep serving for
   ``healthcheck_interval``, close the listener and idle connections, let calls in flight finish for up
   to ``write_timeout``, then kill what is left and exit 0. A second signal skips the wait. A signal before
   the watchdog is ready (a warm mode's server or workers still starting) stops it at once, exit 0.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Coroutine

from faasd import logs
from faasd.execenv import remember
from faasd.logs import INFO, WARNING, LineLogger, event
from faasd.watchdog.config import HIDDEN, TOKEN_VARIABLE, ConfigError, WatchdogConfig
from faasd.watchdog.loop import running_loop, settle, signal_name, sleep
from faasd.watchdog.usage import HELP

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import signal
    import socket
    from typing import Any

    from faasd.archive import Extracted
    from faasd.http1 import Request
    from faasd.watchdog.metrics import WatchdogStats
    from faasd.watchdog.server import HttpConnection
else:
    import _signal as signal  # signal's functions without its enum wrappers: docs/coldstart.md
    import _socket as socket  # the C socket type without socket.py's enums (docs/coldstart.md)

__all__ = ["OWN_LOOP_MODES", "main"]

OWN_LOOP_MODES = ("fork", "streaming")
"""The modes served on :mod:`faasd.watchdog.loop` rather than asyncio's."""

log = LineLogger("faasd.watchdog")

PR_SET_DUMPABLE = 4
"""prctl option (linux/prctl.h)."""

SHUTDOWN_KILL_GRACE_S = 2.0
"""After killing what outlived the drain, how long to wait for those calls to answer."""

FLUSH_GRACE_S = 1.0
"""How long closing connections get to flush their last answers before the process exits."""

_HELP = HELP


def main(argv: list[str], before_accepting: Callable[[], Coroutine[Any, Any, bool]] | None = None) -> int:
    """Run the watchdog until SIGTERM; return the process exit status.

    ``before_accepting``: awaited once the watchdog is ready, before it accepts its first connection; False
    stops it (exit status 1). A pooled replica tells its daemon there (:mod:`faasd.sandbox.pooled`).
    """
    if argv and argv[0] in ("-h", "--help"):
        print(_HELP, end="")
        return 0
    if argv:
        print(f"faasd watchdog: unexpected argument {argv[0]!r}; configure with env vars", file=sys.stderr)
        return 2
    remember()  # Before run_as or the non-dumpable mark close /proc/self/environ to us (faasd.execenv).
    try:
        unpacked = _unpack_handler()
        config = WatchdogConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"faasd watchdog: {exc}", file=sys.stderr)
        return 2
    try:
        call_token = _read_call_token(config)
    except ConfigError as exc:
        print(f"faasd watchdog: {exc}", file=sys.stderr)
        return 2
    if config.run_as is not None:
        try:
            _drop_privileges(config)
        except OSError as exc:
            print(f"faasd watchdog: run_as={os.environ.get('run_as', '').strip()}: {exc}", file=sys.stderr)
            return 2
    logs.configure_lines(config.log_level)
    if unpacked is not None:
        event(log, INFO, "handler unpacked", files=unpacked.files, bytes=unpacked.bytes, dir=os.getcwd())
    if call_token is not None:
        _protect_memory()
    try:
        served = _run(config.mode, serve(config, call_token, before_accepting))
    except OSError as exc:
        print(f"faasd watchdog: cannot serve: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0 if served else 1


def _run(mode: str, main_task: Coroutine[Any, Any, bool]) -> bool:
    """Run ``main_task`` on the watchdog's own loop (fork and streaming modes, :mod:`faasd.watchdog.loop`:
    no ``asyncio`` import at start), or on asyncio's (python and http modes use more of it)."""
    if mode in OWN_LOOP_MODES:
        from faasd.watchdog import loop

        return bool(loop.run(main_task))
    import asyncio

    return asyncio.run(main_task)


def _inherited_listener(fd: int, mode: str) -> socket.socket:
    """The listening socket the starter bound (``listen_fd``), made non-blocking and not inheritable (else
    every function process would hold a copy of the port).

    The own loop takes the C socket type (:mod:`faasd.watchdog.transport`); asyncio's accepts through
    ``socket.socket.accept``, so python and http modes get socket.py's type, which asyncio imported anyway.
    """
    if mode in OWN_LOOP_MODES:
        listener = socket.socket(fileno=fd)
    else:
        import socket as stdlib_socket

        listener = stdlib_socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    listener.setblocking(False)
    return listener


def _unpack_handler() -> Extracted | None:
    """The function's handler archive (``handler_archive``), unpacked into the working directory
    before the settings that may name its files are read (:mod:`faasd.watchdog.unpack`)."""
    if not os.environ.get("handler_archive", "").strip():
        return None  # The common case imports nothing more.
    from faasd.watchdog.unpack import unpack_handler

    return unpack_handler(os.environ)


def _read_call_token(config: WatchdogConfig) -> bytes | None:
    """The call token from ``call_token_fd`` (closed after), ``call_token_file`` or ``call_token`` (taken
    out of ``os.environ``), or None.

    Raises:
        ConfigError: the source is set but gives no usable token.
    """
    from faasd.calltoken import TokenError, check_token, read_token_fd, read_token_file

    try:
        if config.call_token_fd is not None:
            return read_token_fd(config.call_token_fd)
        if config.call_token_file:
            return read_token_file(config.call_token_file)
        if config.call_token_env:
            return check_token(os.environ.pop(TOKEN_VARIABLE, "").encode())
    except TokenError as exc:
        if config.call_token_env:
            raise ConfigError(TOKEN_VARIABLE, HIDDEN, str(exc)) from None
        if config.call_token_fd is not None:
            raise ConfigError("call_token_fd", str(config.call_token_fd), str(exc)) from None
        raise ConfigError("call_token_file", config.call_token_file, str(exc)) from None
    return None


def _drop_privileges(config: WatchdogConfig) -> None:
    """Become ``run_as`` now that the token is read and the archive unpacked (module docstring, 1)."""
    from faasd.watchdog.privileges import drop_to

    assert config.run_as is not None
    drop_to(config.run_as)


def _protect_memory() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: the call token in this process's memory stays out of reach of
    its functions, which run as the same user -- ``/proc/<pid>/mem``, ``environ`` and ``fd`` and
    ptrace then need CAP_SYS_PTRACE. Children get the flag back at exec, so functions are unaffected.
    Costs ~5 ms (ctypes), paid only by a watchdog that has a token.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError, ImportError) as exc:
        event(log, WARNING, "cannot protect the call token from same-user processes", error=str(exc))


async def serve(
    config: WatchdogConfig,
    call_token: bytes | None = None,
    before_accepting: Callable[[], Coroutine[Any, Any, bool]] | None = None,
) -> bool:
    """Serve until a stop signal, then drain (see module docstring); False when ``before_accepting`` (see
    :func:`main`) said not to serve. A stop signal before it answered stops it at once (it never accepted)."""
    from faasd.watchdog.app import FORBIDDEN, WatchdogApp
    from faasd.watchdog.metrics import WatchdogStats
    from faasd.watchdog.server import HttpServer

    loop = running_loop()
    stats = WatchdogStats()
    app = WatchdogApp(config, stats, loop, call_token)
    server = HttpServer(
        app,
        read_timeout_s=config.read_timeout_s,
        write_timeout_s=config.write_timeout_s,
        max_header_bytes=config.max_header_bytes,
        max_body_bytes=config.max_body_bytes,
        on_response=stats.record,
        gate=app.forbidden if call_token is not None else None,
        refusal=FORBIDDEN,
    )
    app.server = server
    stop = loop.create_future()  # Done at the first stop signal.
    signals_seen: list[int] = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    def on_parent_gone() -> None:
        # The daemon is gone (killed without cleaning up): its connections died with it, so no answer
        # can be delivered -- stop at once, as on a second signal (calls in flight are killed), so no
        # replica outlives its daemon for as long as a call may run.
        on_signal(signal.SIGTERM)
        on_signal(signal.SIGTERM)

    if config.parent_pid:
        _watch_parent(loop, config.parent_pid, on_parent_gone)

    inherited: socket.socket | None = None
    if config.listen_fd is not None:
        inherited = _inherited_listener(config.listen_fd, config.mode)
    else:
        await server.listen(config.bind, config.port)
    metrics_server: HttpServer | None = None
    if config.metrics_port:
        metrics_server = HttpServer(
            _MetricsApp(stats),
            read_timeout_s=config.read_timeout_s,
            write_timeout_s=config.write_timeout_s,
            max_header_bytes=config.max_header_bytes,
            max_body_bytes=1024,
        )
        await metrics_server.listen(config.bind, config.metrics_port)
    try:
        # Warm modes: the function's server or workers are up before we say ready. A stop signal meanwhile
        # ends the wait (else it lasted until start_timeout, past the backend's stop grace).
        started, _ = await _unless_stopped(loop, app.runner.start(), stop)
    except BaseException:
        await app.runner.aclose()  # A server or workers started before the failure must not outlive us.
        raise
    told: bool | None = None
    if started:
        if not config.suppress_lock:
            _write_lock(config.lock_file)
        app.ready = True
        told = await _told_to_serve(loop, before_accepting, stop) if before_accepting is not None else True
    if told is not True:  # Told not to serve (False), or stopped before it was ready or told (None).
        if not config.suppress_lock:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(config.lock_file)
        server.stop_accepting()
        server.close()
        await app.runner.aclose()
        if metrics_server is not None:
            metrics_server.close()
        return told is None
    if inherited is not None:
        # A socket the starter bound and listens on already: connections made meanwhile wait in its backlog
        # (the local backend's readiness probe among them), so accepting only now answers the first one
        # 200 rather than 503 -- the probe need not come back a poll later.
        await server.listen(config.bind, config.port, sock=inherited)
    event(
        log,
        INFO,
        "ready",
        mode=config.mode,
        fprocess=" ".join(config.argv),
        port=config.port if config.listen_fd is None else f"fd:{config.listen_fd}",
        metrics_port=config.metrics_port,
        lock_file="" if config.suppress_lock else config.lock_file,
        call_token="required" if call_token is not None else "none",
    )

    await stop
    event(log, INFO, "shutting down", signal=signal_name(signals_seen[0]))
    if not config.suppress_lock:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.lock_file)
    app.ready = False
    if config.healthcheck_interval_s and len(signals_seen) < 2:
        await _sleep_unless(config.healthcheck_interval_s, lambda: len(signals_seen) > 1)
    server.stop_accepting()
    drained = await _wait_until(
        lambda: not app.calls_in_flight() and not server.busy_connections(),
        config.write_timeout_s,
        abort=lambda: len(signals_seen) > 1,
    )
    if not drained:
        event(log, WARNING, "drain time over, killing calls", calls=app.calls_in_flight())
        app.kill_all("shutdown")
        await _wait_until(lambda: not server.busy_connections(), SHUTDOWN_KILL_GRACE_S)
    for connection in list(server.connections):
        connection.close()
    await _wait_until(lambda: not server.connections, FLUSH_GRACE_S)
    server.close()
    await app.runner.aclose()
    if metrics_server is not None:
        metrics_server.stop_accepting()
        metrics_server.close()
    event(log, INFO, "stopped", answered=sum(stats.requests_by_code().values()))
    return True


async def _told_to_serve(
    loop: Any, before_accepting: Callable[[], Coroutine[Any, Any, bool]], stop: Any
) -> bool | None:
    """``before_accepting``'s answer, or None when a stop signal (``stop`` done) came first."""
    answered, told = await _unless_stopped(loop, before_accepting(), stop)
    return bool(told) if answered else None


async def _unless_stopped(loop: Any, work: Coroutine[Any, Any, Any], stop: Any) -> tuple[bool, Any]:
    """Run ``work`` until it ends or a stop signal comes (``stop`` done): (True, its result; its exception
    propagates), or (False, None) once it was cancelled and has ended. On either loop: futures and done
    callbacks only."""
    task = loop.create_task(work)
    await _first_done(loop, task, stop)
    if task.done():
        return True, task.result()
    task.cancel()
    await _first_done(loop, task)
    return False, None


async def _first_done(loop: Any, *futures: Any) -> None:
    """Wait until one of ``futures`` is done (``asyncio.wait(FIRST_COMPLETED)`` on either loop)."""
    first = loop.create_future()
    for future in futures:
        future.add_done_callback(functools.partial(settle, first))
    await first


def _watch_parent(loop: Any, pid: int, stop: Callable[[], None]) -> None:
    """Call ``stop`` when process ``pid`` ends (at once if it is already gone)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        if os.getppid() != pid:
            stop()
        return

    def parent_exited() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        event(log, WARNING, "parent process ended", parent_pid=pid)
        stop()

    loop.add_reader(fd, parent_exited)


def _write_lock(path: str) -> None:
    """Create the lock file health checks look for (mode 0660, as the OpenFaaS watchdogs)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o660)
    except OSError as exc:
        reason = f"cannot write lock_file {path}: {exc.strerror} (set suppress_lock=true to skip)"
        raise OSError(exc.errno, reason) from None
    os.close(fd)


async def _wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    abort: Callable[[], bool] | None = None,
    poll_s: float = 0.01,
) -> bool:
    """Poll ``condition()`` until true (return True) or ``timeout_s`` passes or ``abort()`` (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline or (abort is not None and abort()):
            return False
        await sleep(poll_s)
    return True


async def _sleep_unless(seconds: float, abort: Callable[[], bool]) -> None:
    await _wait_until(lambda: False, seconds, abort=abort, poll_s=0.05)


class _MetricsApp:
    """Serves ``GET /metrics`` on the metrics port."""

    def __init__(self, stats: WatchdogStats) -> None:
        self.stats = stats

    def handle(self, request: Request, connection: HttpConnection) -> None:
        if request.path != "/metrics":
            connection.respond(404, b"Not found; metrics are at /metrics\n", "text/plain")
        elif request.method not in ("GET", "HEAD"):
            connection.respond(405, b"Method not allowed\n", "text/plain", b"Allow: GET, HEAD\r\n")
        else:
            body = self.stats.render()
            connection.respond(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def tick(self, now: float) -> bool:
        return False
