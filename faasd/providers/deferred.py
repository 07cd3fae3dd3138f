"""The local backend as the daemon's second stage: imported, built and started once the gateway serves.

Why: the local backend's modules (its supervisor, replica pool, working directories, the sandbox's
plans and control groups, the watchdog's config check) and its start (the sandbox decision, the
control groups, its state directories cleaned, each a worker thread's hop) were, after the async
queue, the largest part of what ``faasd up`` did beyond a hypercorn-trio hello world before
``/healthz`` answered (docs/coldstart.md). Right after a start nothing runs yet -- every stored
function is ``restoring`` and its calls are held as at zero replicas -- so no request needs the
backend before it is up; the daemon only has to be able to *wait* for it.

:class:`DeferredProvider` is the :class:`~faasd.providers.base.Provider` the daemon's parts see
meanwhile. ``name``, ``orchestration`` and ``persistent`` are known without the backend; once
:meth:`begin` is called (the daemon, after its ready line), :meth:`run` imports the backend's package
in a worker thread, builds it on the trio thread and starts it in its own nursery. Every other method
waits for that (at most :data:`LOAD_WAIT_S`, then :class:`~faasd.errors.BackendUnavailable`, a 503)
and then is the backend's own: a deploy, scale or call to a restoring function that comes first is
served as it would be a moment later. ``/healthz`` answers as the local backend does (it has nothing
to reach), and ``/system/info`` shows the sandbox as ``pending`` until it is decided, as it always did
until the backend started. A backend that cannot start (``--sandbox bwrap`` without bwrap) stops the
daemon with its one error line and status 1 *before* the ready line, as it always did: the daemon defers
the backend only for ``sandbox = auto`` (the default), whose check always finds a mode that works; an
explicitly requested mode is started before the gateway serves (``faasd.daemon._provider``), so a daemon
that cannot keep the promise of its configuration never says it is ready.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import AsyncGenerator, Callable

import trio

from faasd.errors import BackendUnavailable
from faasd.logs import event
from faasd.providers.base import Provider
from faasd.providers.types import FunctionSpec, FunctionStatus, LogMessage, LogRequest
from faasd.stagegate import StageGate

__all__ = ["LOAD_WAIT_S", "DeferredProvider"]

log = logging.getLogger("faasd.providers")

LOAD_WAIT_S = 60.0
"""How long a request waits for the backend to start (its start waits for the sandbox check, which
starts a test replica: well under a second on an idle machine, seconds on a loaded one)."""


class DeferredProvider:
    """A backend started after the gateway serves; see the module docstring.

    Args:
        name, orchestration, persistent: the backend's own (what ``/system/info`` and the daemon read).
        module: the package imported in a worker thread before ``build`` runs.
        build: makes the backend (on the trio thread; it imports ``module`` again, a dictionary lookup).
        pending_info: what :meth:`sandbox_info` says until the backend is built.
    """

    def __init__(
        self,
        *,
        name: str,
        orchestration: str,
        persistent: bool,
        module: str,
        build: Callable[[], Provider],
        pending_info: dict[str, object],
    ) -> None:
        self.name = name
        self.orchestration = orchestration
        self.persistent = persistent
        self._module = module
        self._build = build
        self._pending_info = pending_info
        self._provider: Provider | None = None
        self.gate = StageGate(LOAD_WAIT_S)
        """Opened once the backend is started (also when it failed to: then the daemon is stopping)."""

    def begin(self) -> None:
        """Start loading the backend now (the daemon, once it serves; a request that needs it does too)."""
        self.gate.begin()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Started at once; after :meth:`begin`, import, build and run the backend until cancelled.

        Raises:
            whatever the backend's own start raises (the daemon stops with it).
        """
        task_status.started()
        try:
            await self.gate.begun()
            started = time.monotonic()
            await trio.to_thread.run_sync(importlib.import_module, self._module)
            provider = self._build()
            async with trio.open_nursery() as nursery:
                await nursery.start(provider.run)
                self._provider = provider
                self.gate.open()
                event(
                    log,
                    logging.INFO,
                    "backend started",
                    backend=self.name,
                    ms=round((time.monotonic() - started) * 1000),
                )
        finally:
            self.gate.open()

    async def _ready(self) -> Provider:
        """The started backend, waited for (bounded)."""
        if self._provider is None:
            await self.gate.wait()
        if self._provider is None:
            raise BackendUnavailable(f"the {self.name} backend has not started; see the daemon's log")
        return self._provider

    def health(self) -> tuple[bool, str]:
        if self._provider is None:
            return True, "local processes (starting)"
        return self._provider.health()

    def sandbox_info(self) -> dict[str, object]:
        """The backend's ``sandbox_info()``; ``pending_info`` until it is built."""
        info = getattr(self._provider, "sandbox_info", None)
        return dict(self._pending_info) if info is None else info()

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        await (await self._ready()).deploy(spec, replicas)

    async def update(self, spec: FunctionSpec) -> None:
        await (await self._ready()).update(spec)

    async def remove(self, name: str) -> None:
        await (await self._ready()).remove(name)

    async def scale(self, name: str, replicas: int) -> None:
        await (await self._ready()).scale(name, replicas)

    async def list(self) -> list[FunctionStatus]:
        return await (await self._ready()).list()

    async def status(self, name: str) -> FunctionStatus:
        return await (await self._ready()).status(name)

    async def logs(self, request: LogRequest) -> AsyncGenerator[LogMessage, None]:
        provider = await self._ready()
        async with contextlib.aclosing(provider.logs(request)) as messages:
            async for message in messages:
                yield message

    async def aclose(self) -> None:
        if self._provider is not None:
            await self._provider.aclose()
