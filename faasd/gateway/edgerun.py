"""Running the invoke edge (:mod:`faasd.gateway.edge`) from the daemon's trio side.

The edge starts once the gateway serves and has answered its first request (or after
``SECOND_STAGE_WAIT_S``: its imports and thread must not delay that answer, the start-up figure), in a
worker thread of the daemon's nursery; the trio server stops accepting once the edge accepts. On the
shutdown signal the edge stops accepting, closes its idle connections and finishes its calls (up to the
shutdown timeout), as the trio server does with its own; the daemon stops the replicas only after both.
If the edge thread fails, the failure is logged and the trio server accepts again: every call still has
a way in.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from faasd.gateway.edgefeed import EdgeFeed
from faasd.gateway.invoke import Invoker
from faasd.gateway.server import HttpServer
from faasd.logs import event

if TYPE_CHECKING:
    from faasd.gateway.edge import Edge

__all__ = ["EDGE_START_WAIT_S", "run_edge"]

log = logging.getLogger("faasd.gateway.edge")

EDGE_START_WAIT_S = 0.1
"""After the gateway serves, how long the edge waits for the first answer before it starts anyway."""


def edge_feed(invoker: Invoker) -> EdgeFeed:
    """The feed of the edge's calls into the invoker's metrics and load meter, which now pull it before
    every read."""
    metrics, meter = invoker.metrics, invoker.meter

    def started(name: str, now: float, metered: bool) -> None:
        metrics.started(name)
        if metered:
            meter.started_at(name, now)

    def finished(name: str, now: float, status: int, seconds: float, metered: bool) -> None:
        if metered:
            meter.finished_at(name, now)
        metrics.finished(name, status, seconds)

    feed = EdgeFeed(started, finished)
    metrics.pull = meter.pull = feed.drain
    return feed


async def run_edge(
    server: HttpServer,
    invoker: Invoker,
    grace_s: float,
    shutdown: trio.Event,
    answered: trio.Event,
    accepting_hook: Callable[[Edge], object] = lambda edge: None,
) -> None:
    """Run the edge in front of ``server`` until ``shutdown`` (see the module docstring);
    ``accepting_hook(edge)`` once the edge accepts (tests)."""
    await server.serving.wait()
    with trio.move_on_after(EDGE_START_WAIT_S):
        await answered.wait()
    if shutdown.is_set():
        return
    # Imported in a worker thread, off the start-up path and off the trio thread (as the second stage's).
    edge_module = await trio.to_thread.run_sync(importlib.import_module, "faasd.gateway.edge")
    if shutdown.is_set():
        return

    token = trio.lowlevel.current_trio_token()
    feed = edge_feed(invoker)

    def adopt(sock: socket.socket, data: bytes, waited_s: float) -> None:
        try:
            server.adopt(sock, data, waited_s)
        except Exception:  # Raised in a run_sync_soon callback, it would end trio, so the daemon.
            log.exception("cannot adopt a connection from the invoke edge")
            sock.close()

    def drain() -> None:
        try:
            feed.drain()
        except Exception:
            log.exception("cannot count the invoke edge's calls")

    def hand_over(sock: socket.socket, data: bytes, waited_s: float) -> None:
        token.run_sync_soon(adopt, sock, data, waited_s)

    edge: Edge = edge_module.Edge(
        listeners=[sock.dup() for sock in server.listen_sockets],
        invoker=invoker,
        limits=server.limits,
        hand_over=hand_over,
        others=lambda: len(server.connections),
        feed=feed,
        drain_soon=lambda: token.run_sync_soon(drain),
    )
    accepting = trio.Event()

    async def follow() -> None:
        try:
            await accepting.wait()
            server.extra_connections = lambda: len(edge.connections)
            server.pause_accepting()
            event(log, logging.INFO, "invoke edge accepting")
            accepting_hook(edge)
            await shutdown.wait()
            edge.stop(grace_s)
            await trio.sleep_forever()  # Until the edge's thread returns...
        finally:
            edge.stop(0.0)  # ...or a second signal cancels everything: then at once.

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            try:
                await trio.to_thread.run_sync(edge.run, lambda: token.run_sync_soon(accepting.set))
            except Exception:
                log.exception("invoke edge failed; the gateway takes every call")
            nursery.cancel_scope.cancel()
    finally:
        server.extra_connections = lambda: 0
        server.resume_accepting()
        feed.drain()
