"""The watchdog's routes: health, admission (method, draining, ``max_inflight``) and the function call.

Everything that is not ``/_/health`` runs the function. The mode's runner does the call; this module
decides whether a request may run and turns the runner's result into the answer.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from faasd.watchdog.fork import CallResult, ForkRunner

if TYPE_CHECKING:
    import asyncio

    from faasd.http1 import Request
    from faasd.watchdog.config import WatchdogConfig
    from faasd.watchdog.metrics import WatchdogStats
    from faasd.watchdog.server import HttpConnection, HttpServer

__all__ = ["HEALTH_PATH", "WatchdogApp"]

HEALTH_PATH = "/_/health"
INVOKE_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_ALLOW = b"Allow: GET, POST, PUT, PATCH, DELETE\r\n"
_INTERNAL = b"X-OpenFaaS-Internal: faasd-watchdog\r\n"
_DEFAULT_CONTENT_TYPE = "text/plain; charset=utf-8"


class WatchdogApp:
    """Routes requests for one watchdog process.

    Attributes:
        ready: set by ``main`` once the listener accepts (and the lock file is written).
        server: the HTTP server, set once it exists (needed to know whether we are draining).
    """

    def __init__(self, config: WatchdogConfig, stats: WatchdogStats, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.stats = stats
        self.runner = ForkRunner(config, stats, loop)
        self.ready = False
        self.server: HttpServer | None = None
        self._limit_body = (
            f"Concurrent request limit exceeded. Max concurrent requests: {config.max_inflight}\n".encode()
        )

    def healthy(self) -> bool:
        """Ready, not draining, and the lock file present (unless suppressed)."""
        if not self.ready or (self.server is not None and self.server.draining):
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
        if request.method not in INVOKE_METHODS:
            connection.respond(405, b"Method not allowed\n", "text/plain", _ALLOW)
            return
        if self.server is not None and self.server.draining:
            connection.respond(503, b"Shutting down\n", "text/plain")
            return
        config = self.config
        if config.max_inflight and len(self.runner.calls) >= config.max_inflight:
            connection.respond(429, self._limit_body, "text/plain", _INTERNAL)
            return

        def done(result: CallResult) -> None:
            status, body, content_type = result
            if content_type is None:
                content_type = config.content_type or request.content_type or _DEFAULT_CONTENT_TYPE
            connection.respond(status, body, content_type)

        connection.call = self.runner.start(request, done)
        if connection.call is not None and self.server is not None:
            self.server.wake_tick()

    def tick(self, now: float) -> bool:
        """Enforce call deadlines; True while calls are in flight."""
        runner = self.runner
        if runner.calls:
            runner.check_deadlines(now)
        return bool(runner.calls)

    def calls_in_flight(self) -> int:
        return len(self.runner.calls)

    def kill_all(self, reason: str) -> None:
        self.runner.kill_all(reason)
