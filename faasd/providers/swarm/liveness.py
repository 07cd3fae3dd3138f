"""Ready replicas on other nodes, probed again and again: a node that goes away takes its tasks with it.

On the engine's own node, Docker's container events say at once when a task dies (:mod:`.discovery`).
A task on another node sends no event here, and when its node goes down (its dockerd stopped, its
machine gone) the manager notices only after missing several heartbeats, then Swarm replaces its
tasks elsewhere. Meanwhile the gateway would keep calling them: a refused connection fails over to
another replica (``MAX_FAILOVER``), a machine that drops packets costs each call a connect timeout.

So every :data:`LIVENESS_S` each ready task not on this node is probed (``GET /_/health``, a short
connect timeout); one that does not answer is unpublished at once (:meth:`.views.Views.unready`) and
probed from then on like a starting task: published again if it answers, forgotten when Swarm replaces
it. The probes run concurrently, one round at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from faasd.providers.common.probe import health_ok
from faasd.providers.swarm.views import Task, View, Views

__all__ = ["LIVENESS_S", "watch_remote"]

LIVENESS_S = 0.5
"""Between two probes of a ready task on another node: how long calls may go to a node that went away."""
CONNECT_TIMEOUT_S = 0.25
ANSWER_TIMEOUT_S = 2.0
PROBES_AT_ONCE = 64
"""Probes open at once in a round: hundreds of remote replicas do not open hundreds of sockets at once."""


def remote_ready(views: Views, own_node: str) -> list[tuple[View, Task]]:
    """Every ready task on another node than ``own_node`` (the engine's, whose events say when its
    tasks die), in either route."""
    return [
        (view, task)
        for view in views.all()
        for task in view.tasks.values()
        if task.ready and task.address is not None and task.node not in ("", own_node)
    ]


async def check(views: Views, view: View, task: Task, limiter: trio.CapacityLimiter) -> None:
    assert task.address is not None
    host, port = task.address
    async with limiter:
        ok = await health_ok(host, port, connect_timeout_s=CONNECT_TIMEOUT_S, timeout_s=ANSWER_TIMEOUT_S)
    if not ok:
        views.unready(view, task, f"no answer on {host}:{port} (its node may be down)")


async def watch_remote(views: Views, own_node: Callable[[], str], interval_s: float = LIVENESS_S) -> None:
    """Probe the ready tasks of other nodes every ``interval_s`` until cancelled; ``own_node()`` is the
    engine's node ID as last read."""
    limiter = trio.CapacityLimiter(PROBES_AT_ONCE)
    while True:
        await trio.sleep(interval_s)
        tasks = remote_ready(views, own_node())
        if not tasks:
            continue
        async with trio.open_nursery() as nursery:
            for view, task in tasks:
                nursery.start_soon(check, views, view, task, limiter)
