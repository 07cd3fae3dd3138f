"""The gateway's ASGI application: the invoke routes first, Quart for everything else.

Most function calls never get here: the server answers a whole, plain call itself, on the invoke fast
path (:mod:`faasd.gateway.fastpath`); this app gets the calls that path leaves (a streamed body,
``Expect``, an Alexa request, ...) and every other route.

hypercorn + Quart cost ~0.3 ms of CPU per request on these machines before any work is done; the
routes that carry function traffic (``/function/*``, ``POST /`` with X-Function or an Alexa body) and
the ones scraped or probed all the time (``/healthz``, ``/metrics``) are answered here as raw ASGI,
so they skip Quart's routing, request objects and middleware; so do ``/async-function/*``
(:class:`faasd.queue.AsyncRoute`) and the Flock-of-Birds API, ``/api/*`` (:class:`faasd.fob.routes.FobRoutes`,
whose ``/api/call`` is an invoke route), both given by the daemon, and the web UI's static files,
``/ui/*`` (:class:`faasd.ui.UiRoute`). Quart serves the management API and receives the lifespan events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from faasd.gateway.invoke import NOSNIFF, Invoker, send_text
from faasd.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from faasd.gateway.proxy import Receive, Scope, Send

__all__ = ["AsgiApp", "GatewayApp"]


class AsgiApp(Protocol):
    """Any ASGI application (the management app is Quart's, whose own types name each event)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class GatewayApp:
    """Routes by path before Quart: see the module docstring."""

    def __init__(
        self,
        *,
        invoker: Invoker,
        management: AsgiApp,
        metrics: GatewayMetrics,
        health: Callable[[], tuple[bool, str]],
        async_route: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
        api_route: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
        ui_route: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
    ) -> None:
        self.invoker = invoker
        self.async_route = async_route
        self.api_route = api_route
        self.ui_route = ui_route
        self.management = management
        self.metrics = metrics
        self.health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.management(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/function/"):
            await self.invoker.function_route(scope, receive, send)
        elif path.startswith("/async-function/") and self.async_route is not None:
            await self.async_route(scope, receive, send)
        elif path.startswith("/api/") and self.api_route is not None:
            await self.api_route(scope, receive, send)
        elif (path == "/ui" or path.startswith("/ui/")) and self.ui_route is not None:
            await self.ui_route(scope, receive, send)
        elif path == "/" and method == "POST":
            await self.invoker.root_route(scope, receive, send)
        elif method == "GET" and path == "/healthz":
            ok, reason = self.health()
            await send_text(send, 200 if ok else 503, "OK" if ok else f"degraded: {reason}")
        elif path == "/metrics" or path == "/metrics/":  # The seed's README spells it with the slash.
            await self._metrics(method, send)
        else:
            await self.management(scope, receive, send)

    async def _metrics(self, method: str, send: Send) -> None:
        """``GET`` (and ``HEAD``) ``/metrics``; any other method is 405, as on the other routes."""
        if method not in ("GET", "HEAD"):
            await send_text(send, 405, f"Method {method} not allowed on /metrics", [(b"allow", b"GET, HEAD")])
            return
        body = self.metrics.render()
        headers = [
            (b"content-type", CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            NOSNIFF,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if method == "GET" else b""})
