"""The watchdog's routes: health, admission (method, draining, ``max_inflight``) and the function call.

Everything that is not ``/_/health`` runs the function. The mode's :class:`Runner` does the call and
answers on the connection; this module decides whether a request may run at all.

Call token (:mod:`faasd.calltoken`): when the watchdog was given one, every request but the health
check must carry it or is answered 403 -- checked in constant time, as soon as the request head has
arrived (a refused client cannot make the watchdog hold its body). The parser has already taken the
header out of the request, so no mode ever passes it on to the function.

Modes (env ``mode``): ``fork`` (a process per call, answer buffered), ``streaming`` (a process per
call, stdout streamed), ``http`` (one long-lived server process, calls proxied to it), ``python``
(pre-started worker processes that imported the handler once).
"""

from __future__ import annotations

import os
from _operator import _compare_digest as compare_digest  # hmac.compare_digest's C fallback
from collections.abc import Sized

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import asyncio
    from typing import Protocol

    from faasd.http1 import Request
    from faasd.watchdog.config import WatchdogConfig
    from faasd.watchdog.metrics import WatchdogStats
    from faasd.watchdog.server import HttpConnection, HttpServer
else:
    Protocol = object  # The base of Runner, a description for type checkers only.

__all__ = ["FORBIDDEN", "HEALTH_PATH", "Runner", "WatchdogApp", "make_runner"]

HEALTH_PATH = "/_/health"
INVOKE_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods that run the function. OPTIONS and HEAD too, so a function can answer CORS preflights itself
(as OpenFaaS lets it); a HEAD answer is sent without its body. TRACE, CONNECT and the rest: 405."""
_ALLOW = b"Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n"
_INTERNAL = b"X-OpenFaaS-Internal: faasd-watchdog\r\n"
FORBIDDEN = b"Forbidden: this replica takes calls only from its faasd gateway\n"
"""403 body for a request without the call token. ``hmac`` is not imported for its compare_digest:
that costs ~20 ms of start-up (OpenSSL); ``_operator._compare_digest`` is the same constant-time
comparison (hmac's own fallback)."""


class Runner(Protocol):
    """What every mode provides."""

    @property
    def calls(self) -> Sized:
        """Calls in flight (``max_inflight`` counts these)."""
        ...

    async def start(self) -> None:
        """Start what the mode keeps running (server process, workers); return once it is ready.

        Raises:
            OSError: it cannot start (the watchdog then exits non-zero with the reason).
        """

    def run(self, request: Request, connection: HttpConnection) -> object | None:
        """Answer ``request`` on ``connection``, now or later; return a handle with ``abandon()``."""

    def check_deadlines(self, now: float) -> None:
        """Enforce per-call deadlines and the process limit (called by the server's tick: every 50 ms while
        calls are in flight, every second otherwise)."""

    def kill_all(self, reason: str) -> None:
        """Stop every call in flight (shutdown after the drain time)."""

    def healthy(self) -> bool:
        """False while the mode cannot serve (its server process or every worker is down)."""

    async def aclose(self) -> None:
        """Stop what :meth:`start` started."""


def make_runner(config: WatchdogConfig, stats: WatchdogStats, loop: asyncio.AbstractEventLoop) -> Runner:
    """The runner for ``config.mode`` (each mode's module is imported only when used)."""
    if config.mode == "streaming":
        from faasd.watchdog.streaming import StreamingRunner

        return StreamingRunner(config, stats, loop)
    if config.mode == "http":
        from faasd.watchdog.http import HttpRunner

        return HttpRunner(config, stats, loop)
    if config.mode == "python":
        from faasd.watchdog.python import PythonRunner

        return PythonRunner(config, stats, loop)
    from faasd.watchdog.fork import ForkRunner

    return ForkRunner(config, stats, loop)


class WatchdogApp:
    """Routes requests for one watchdog process.

    Attributes:
        ready: set by ``main`` once the listener accepts (and the lock file is written).
        server: the HTTP server, set once it exists (needed to know whether we are draining).
    """

    def __init__(
        self,
        config: WatchdogConfig,
        stats: WatchdogStats,
        loop: asyncio.AbstractEventLoop,
        call_token: bytes | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.call_token = call_token
        """Calls must carry this (:mod:`faasd.calltoken`); None: no check (a watchdog run by hand)."""
        self.runner = make_runner(config, stats, loop)
        self.ready = False
        self.server: HttpServer | None = None
        limit = config.max_inflight
        self._limit_body = f"Concurrent request limit exceeded. Max concurrent requests: {limit}\n".encode()

    def healthy(self) -> bool:
        """Ready, not draining, the mode able to serve, and the lock file present (unless suppressed)."""
        if not self.ready or (self.server is not None and self.server.draining) or not self.runner.healthy():
            return False
        return self.config.suppress_lock or os.path.exists(self.config.lock_file)

    def handle(self, request: Request, connection: HttpConnection) -> None:
        if request.path == HEALTH_PATH:
            if request.method not in ("GET", "HEAD"):
                connection.respond(405, b"Method not allowed\n", "text/plain", b"Allow: GET, HEAD\r\n")
            elif self.healthy():
                connection.respond(200, b"OK", "text/plain")
            else:
                connection.respond(503, b"Not ready\n", "text/plain")
            return
        token = self.call_token
        if token is not None and not compare_digest(request.call_token or b"", token):
            connection.respond(403, FORBIDDEN, "text/plain", _INTERNAL)
            return
        if request.method not in INVOKE_METHODS:
            connection.respond(405, b"Method not allowed\n", "text/plain", _ALLOW)
            return
        if self.server is not None and self.server.draining:
            connection.respond(503, b"Shutting down\n", "text/plain")
            return
        if self.config.max_inflight and len(self.runner.calls) >= self.config.max_inflight:
            connection.respond(429, self._limit_body, "text/plain", _INTERNAL)
            return
        connection.call = self.runner.run(request, connection)
        if connection.call is not None and self.server is not None:
            self.server.wake_tick()

    def forbidden(self, request: Request) -> bool:
        """True when ``request`` (its head, its body maybe still to come) must be refused 403."""
        token = self.call_token
        return (
            token is not None and request.path != HEALTH_PATH and not compare_digest(request.call_token or b"", token)
        )

    def tick(self, now: float) -> bool:
        """Enforce call deadlines, and the process limit also when idle (a process that left its call can
        fill it: :mod:`faasd.watchdog.proclimit`); True while calls are in flight or such processes are being
        stopped (the fast tick then)."""
        runner = self.runner
        runner.check_deadlines(now)
        limit = getattr(runner, "process_limit", None)  # every mode has one (http: faasd.watchdog.httplimit)
        return bool(runner.calls) or (limit is not None and limit.sweeping)

    def calls_in_flight(self) -> int:
        return len(self.runner.calls)

    def kill_all(self, reason: str) -> None:
        self.runner.kill_all(reason)
