"""The async queue as the daemon's second stage: loaded once the gateway serves, waited for until then.

Why: the queue's modules (its store's frozen dataclasses and SQL, the dispatcher, the callbacks) and
the opening and reading of ``queue.db`` were about a fifth of what ``faasd up`` imported and did
beyond a hypercorn-trio hello world before ``/healthz`` answered (docs/coldstart.md), and no
synchronous call needs them. So the daemon binds first and then, in a task of its root nursery,
opens ``queue.db`` and imports the queue in a worker thread, builds it on the trio thread, loads the
stored calls and starts the queue's workers (:meth:`QueueStage.run`).

Until then :class:`QueueStage` stands in for the queue:

* ``POST /async-function/*`` waits for the load (at most :data:`LOAD_WAIT_S`) and is then answered
  by the real route, so a call sent as soon as ``/healthz`` answers is stored (202) as it always was,
  never refused;
* the autoscaler's queued load and the metrics' queue lines read as empty (nothing is queued that
  the queue has not loaded; its stored calls are counted from the moment they are loaded);
* a deploy still checks its queue labels (:mod:`faasd.queue.settings` is small and imported then).

A ``queue.db`` that cannot be opened stops the daemon with its one error line, as before; only now
after the ready line. This module imports nothing of the queue itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from faasd.gateway.invoke import send_text
from faasd.gateway.proxy import Receive, Scope, Send
from faasd.logs import event
from faasd.stagegate import StageGate

if TYPE_CHECKING:
    from faasd.queue.queue import AsyncQueue, QueueStats
    from faasd.queue.route import AsyncRoute
    from faasd.queue.store import QueueDb

__all__ = ["LOAD_WAIT_S", "QueueStage"]

log = logging.getLogger("faasd.queue")

LOAD_WAIT_S = 30.0
"""How long an async call arriving before the queue is loaded waits for it (the load takes tens of
milliseconds; a ``queue.db`` holding many calls, or a machine under load, longer)."""

Build = Callable[["QueueDb"], tuple["AsyncQueue", "AsyncRoute"]]


class QueueStage:
    """The queue, its route and its database once loaded; see the module docstring.

    Args:
        build: wires the queue and its route around an open database (on the trio thread).
    """

    def __init__(self, build: Build) -> None:
        self._build = build
        self.queue: AsyncQueue | None = None
        self.db: QueueDb | None = None
        self._route: AsyncRoute | None = None
        self.gate = StageGate(LOAD_WAIT_S)
        """Opened once the queue takes calls (also when its load failed: then the daemon is stopping)."""

    def begin(self) -> None:
        """Start loading now (the daemon's second stage; an async call that comes first starts it too)."""
        self.gate.begin()

    def install(self, db: QueueDb) -> AsyncQueue:
        """Build the queue around ``db`` now (in-process tests, and :meth:`run`); the caller loads it."""
        self.db = db
        self.queue, self._route = self._build(db)
        return self.queue

    async def run(
        self,
        path: str,
        shutdown: trio.Event,
        gateway_port: int,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """After :meth:`begin`, open ``path``, build and load the queue, run its workers until ``shutdown``
        (the daemon's second stage; ``task_status`` is told at once: nothing waits for the load but async
        calls).

        Raises:
            StateError: ``queue.db`` cannot be used (the daemon stops with it, as at its start).
        """
        task_status.started()
        try:
            await self.gate.begun()
            started = time.monotonic()
            db = await trio.to_thread.run_sync(_open, path)
            queue = self.install(db)
            queued = await queue.load()
            queue.callbacks.gateway_port = gateway_port
            async with trio.open_nursery() as nursery:
                await nursery.start(queue.run, shutdown)
                self.gate.open()
                event(
                    log,
                    logging.INFO,
                    "async queue loaded",
                    async_calls=queued,
                    ms=round((time.monotonic() - started) * 1000),
                )
        finally:
            self.gate.open()  # Waiting calls are answered (a 503 if the queue never came).

    async def drain(self, timeout_s: float) -> None:
        """The queue's :meth:`~faasd.queue.queue.AsyncQueue.drain`; nothing if it was never loaded."""
        if self.queue is not None and self.gate.opened:
            await self.queue.drain(timeout_s)

    async def aclose(self) -> None:
        """Close ``queue.db`` if it was opened."""
        if self.db is not None:
            await self.db.aclose()

    def waiting_load(self, function: str) -> float:
        """The queue's waiting load for ``function`` (the autoscaler's ``queued``); 0 until loaded."""
        return self.queue.waiting_load(function) if self.queue is not None else 0.0

    def stats(self) -> dict[str, QueueStats]:
        """The queue's lines (the metrics'); empty until loaded."""
        return self.queue.stats() if self.queue is not None else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/async-function/*``: the queue's route, once it is loaded (waited for, bounded)."""
        await self.gate.wait()
        route = self._route if self.gate.opened else None
        if route is None or self.queue is None:
            await send_text(send, 503, "The async queue is not loaded; see the daemon's log.\n")
            return
        await route(scope, receive, send)


def _open(path: str) -> QueueDb:
    """Import the queue and open ``path`` (in a worker thread: the event loop keeps serving)."""
    import faasd.queue.route  # noqa: F401 -- imported here, off the event loop, for ``build``
    from faasd.queue.store import QueueDb

    return QueueDb.open(path)
