"""An ASGI application imported and built after the gateway already serves: the management API.

Quart pulls in Flask, Werkzeug, Jinja2 and hypercorn's asyncio worker: about 40 % of the daemon's
imports (``python -X importtime``), none of which the routes that carry calls need -- they are raw ASGI
(:mod:`faasd.gateway.app`). So the daemon's first stage serves ``/healthz``, ``/function/*``,
``/async-function/*``, ``/api/*``, ``/metrics`` and ``/ui/*`` at once, and :class:`LazyApp` loads
the management API meanwhile:

* the lifespan ``startup`` event (hypercorn waits for it before it serves) is answered at once; then,
  inside the same long-lived lifespan call, once the daemon says it serves (:meth:`LazyApp.begin`) or a
  request asks for the app, the module is imported in a worker thread (the event loop keeps serving
  calls) and the app is built on the trio thread and sent its own ``startup``; at ``shutdown`` it gets
  its own ``shutdown`` first. A load still under way then is left to its thread (an import cannot be
  interrupted, and the daemon is about to exit): waiting for it made a stop right after ``faasd up``
  take the import's 0.3-0.5 s;
* a request for the management API that arrives before that waits for it (a first ``faasd deploy``
  right after ``faasd up`` answers a few hundred milliseconds later, it does not fail). With no
  lifespan at all (an ASGI test client), the first request loads the app itself.

So ``/healthz`` answering 200 still means the gateway serves calls; the management API follows.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

import trio

from faasd.gateway.invoke import send_text
from faasd.gateway.proxy import Receive, Scope, Send
from faasd.logs import event

__all__ = ["LazyApp"]

log = logging.getLogger("faasd.gateway")

AsgiCallable = Callable[[Any, Any, Any], Any]


class LazyApp:
    """Loads ``module`` and calls ``build()`` (see the module docstring); an ASGI application meanwhile.

    Args:
        module: what to import off the event loop before ``build`` runs (``build`` imports it again,
            which is then only a dictionary lookup).
        build: makes the application, on the trio thread.
        what: its name in log lines.
    """

    def __init__(self, module: str, build: Callable[[], AsgiCallable], *, what: str = "management API") -> None:
        self._module = module
        self._build = build
        self._what = what
        self._app: AsgiCallable | None = None
        self._loaded = trio.Event()
        self._loading = False
        self._go = trio.Event()
        self._lifespan_running = False

    def begin(self) -> None:
        """Start loading now: the daemon calls this once it serves (a request for the app starts it too).
        Not earlier: the import holds the interpreter's lock much of the time, and the daemon's own start
        would wait for it."""
        self._go.set()

    @property
    def loaded(self) -> bool:
        """The application is built (and started, when a lifespan runs)."""
        return self._app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if self._app is None:
            self._go.set()
            if not self._lifespan_running and not self._loading:  # No lifespan to load it (a test client).
                await self._load()
            await self._loaded.wait()
        if self._app is None:
            await send_text(send, 503, f"The {self._what} could not be loaded; see the daemon's log.\n")
            return
        await self._app(scope, receive, send)

    async def _load(self, *, abandon_on_cancel: bool = False) -> AsgiCallable | None:
        """Import the module in a worker thread, build the app here; None (logged) if either fails.

        ``abandon_on_cancel``: a cancel leaves the import to its thread (the lifespan's load, cancelled only
        at shutdown); whoever waits for the app is then told it is not there."""
        self._loading = True
        started = trio.current_time()
        try:
            await trio.to_thread.run_sync(importlib.import_module, self._module, abandon_on_cancel=abandon_on_cancel)
            app = self._build()
        except trio.Cancelled:
            self._loaded.set()
            raise
        except Exception as exc:  # A bug or a broken install: the gateway keeps serving calls.
            log.error("cannot load the %s: %s", self._what, exc, exc_info=exc)
            self._loaded.set()
            return None
        event(log, logging.DEBUG, "loaded", what=self._what, ms=round((trio.current_time() - started) * 1000))
        if self._app is None:
            self._app = app
        self._loaded.set()
        return app

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``startup`` at once, then load the app and run its own lifespan inside this one."""
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        await send({"type": "lifespan.startup.complete"})
        self._lifespan_running = True
        to_inner, inner_events = trio.open_memory_channel[MutableMapping[str, Any]](2)
        inner_stopped = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_inner, scope, inner_events, inner_stopped)
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self._app is not None:
                await to_inner.send({"type": "lifespan.shutdown"})
                await inner_stopped.wait()
            nursery.cancel_scope.cancel()  # Never begun, or still loading: nothing to shut down.
        await send({"type": "lifespan.shutdown.complete"})

    async def _run_inner(
        self, scope: Scope, events: trio.MemoryReceiveChannel[MutableMapping[str, Any]], stopped: trio.Event
    ) -> None:
        """Load the app, then run its lifespan: ``startup`` now, ``shutdown`` when the outer one ends."""
        try:
            await self._go.wait()
            if self._loading:  # A request began a load of its own meanwhile: run that app's lifespan.
                await self._loaded.wait()
                app = self._app
            else:
                app = await self._load(abandon_on_cancel=True)
            if app is None:
                await events.receive()  # Nothing to shut down: wait for the outer shutdown.
                return
            startup_sent = False

            async def receive_inner() -> MutableMapping[str, Any]:
                nonlocal startup_sent
                if not startup_sent:
                    startup_sent = True
                    return {"type": "lifespan.startup"}
                return await events.receive()

            async def send_inner(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "lifespan.startup.failed":
                    event(log, logging.ERROR, "startup failed", what=self._what, error=message.get("message", ""))
                elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                    stopped.set()

            await app(dict(scope), receive_inner, send_inner)
        finally:
            stopped.set()
