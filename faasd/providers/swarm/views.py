"""What the Swarm backend knows of each function's tasks, and which of them are published.

A :class:`View` per function holds its live tasks (desired state ``running``, container running or
starting). :meth:`Views.apply` brings it in line with a read of the swarm (:mod:`.tasks`); a task is
probed (:mod:`faasd.providers.common.probe`) once it has an address, and published to the
:class:`~faasd.registry.EndpointRegistry` once its watchdog answers. A task seen dead (a Docker event,
or a terminal state in a read) is *tombstoned*: never published again, whatever a slower concurrent
read says.

**Not ready.** A function with replicas wanted and none ready is ``failed`` in its status, with the
reason (:meth:`Views.not_ready_reason`): at once when a task went away before it was ready (exit
status, out of memory, failed HEALTHCHECK -- as the local backend reports a replica that crashed, so a
snippet that fails at import is refused in about a second); after :data:`NOT_READY_FAILED_S` for a
running task that does not answer the probe (a service on the network that runs no watchdog) or one
without a published port (``host-port``). Nothing else changes: its tasks keep being probed, and the
first ready one clears it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import trio

from faasd.logs import event
from faasd.providers.common.probe import health_ok
from faasd.providers.swarm.spec import WATCHDOG_PORT, takes_call_token
from faasd.providers.swarm.tasks import LIVE_STATES, PENDING_STATES, Snapshot
from faasd.providers.types import Endpoint
from faasd.registry import EndpointRegistry

__all__ = ["NOT_READY_FAILED_S", "Task", "View", "Views"]

log = logging.getLogger("faasd.providers.swarm")

POLL_INITIAL_S = 0.02
"""A function whose tasks are moving is re-read after 20 ms (doubling up to :data:`.discovery.POLL_MAX_S`)."""
PROBE_INTERVAL_S = 0.02
PROBE_SLOW_INTERVAL_S = 0.25
PROBE_SLOW_AFTER_S = 5.0
"""A task's health probe runs every 20 ms for its first 5 s, then every 250 ms until it answers."""
PROBE_TIMEOUT_S = 2.0
PROBE_CONNECT_TIMEOUT_S = 0.25
"""A probe's connection attempt: an address that drops it is tried again 20 ms later, not 2 s later."""
NOT_READY_FAILED_S = 10.0
"""A function none of whose replicas answered its health check this long after they started is
``failed``, with the reason (a service on the functions network that runs no watchdog, a task without
a published port); the first ready replica clears it."""
TOMBSTONES_MAX = 10_000


@dataclass(eq=False, slots=True)
class Task:
    """A task whose desired state is running and whose container runs (or starts)."""

    id: str
    slot: int
    container_id: str
    address: tuple[str, int] | None = None
    call_token: bool = True
    """Its container was given the call token (:func:`takes_call_token`): the gateway sends it only then."""
    ready: bool = False
    gone: bool = False
    probing: bool = False
    seen_at: float = 0.0
    node: str = ""
    """The ID of the node it runs on."""


@dataclass(eq=False, slots=True)
class View:
    """What faasd knows of one function's tasks."""

    name: str
    replicas: int = 0
    tasks: dict[str, Task] = field(default_factory=dict)
    applied_seq: int = -1
    """Sequence number of the newest read applied: an older read finishing later is ignored."""
    signature: tuple[object, ...] = ()
    poll_delay_s: float = POLL_INITIAL_S
    poll_scheduled: bool = False
    unready_since: float | None = None
    """Since when replicas are wanted and none is ready (trio time); None while one is, or none is wanted."""
    last_loss: str = ""
    """Why the last replica lost meanwhile went away (:meth:`Views.note_loss`)."""
    loss_task: str = ""

    @property
    def ready_count(self) -> int:
        return sum(1 for task in self.tasks.values() if task.ready)


class Views:
    """Every function's :class:`View`, the tombstones, and the registry they publish to.

    Probes run in ``nursery`` (the discovery's, while it runs); without one, tasks wait unprobed.
    """

    def __init__(self, registry: EndpointRegistry) -> None:
        self.registry = registry
        self.nursery: trio.Nursery | None = None
        self._views: dict[str, View] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._rejected: OrderedDict[str, None] = OrderedDict()

    def get(self, name: str) -> View | None:
        return self._views.get(name)

    def names(self) -> list[str]:
        return list(self._views)

    def all(self) -> list[View]:
        return list(self._views.values())

    def known_addresses(self) -> dict[str, tuple[str, int]]:
        """Task id -> address of every task with one (a read need not look them up again)."""
        return {task.id: task.address for view in self._views.values() for task in view.tasks.values() if task.address}

    def apply(self, name: str, snapshot: Snapshot, seq: int) -> View | None:
        """Bring the view of ``name`` in line with a read; publish; start probes.

        Returns:
            The view when its tasks are still moving (fewer or more tasks than replicas, a task pending
            or without an address: the caller reads it again soon), else None.
        """
        view = self._views.get(name)
        if view is not None and seq <= view.applied_seq:
            return None  # A newer read was applied already.
        if snapshot.service is None:
            if view is not None:
                self.drop(name)
            return None
        if view is None:
            view = self._views[name] = View(name)
            event(log, logging.DEBUG, "watching function", function=name)
        view.applied_seq = seq
        mode = (snapshot.service.get("Spec") or {}).get("Mode") or {}
        replicated = mode.get("Replicated")
        view.replicas = int(replicated.get("Replicas", 0)) if replicated else len(snapshot.tasks)
        live: dict[str, dict[str, Any]] = {}
        pending = 0
        for raw in snapshot.tasks:
            task_id = raw["ID"]
            state = (raw.get("Status") or {}).get("State", "")
            if task_id in self._tombstones:
                continue
            if state in LIVE_STATES:
                live[task_id] = raw
            elif state in PENDING_STATES:
                pending += 1
            else:
                self.tombstone(task_id)  # failed, complete, rejected ...: it never runs again
        for task_id in [task_id for task_id in view.tasks if task_id not in live]:
            view.tasks.pop(task_id).gone = True
        self._note_rejections(view, snapshot.rejections)
        now = trio.current_time()
        for task_id, raw in live.items():
            task = view.tasks.get(task_id)
            container_id = ((raw.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID", "")
            if task is None:
                task = view.tasks[task_id] = Task(
                    task_id,
                    int(raw.get("Slot") or 0),
                    container_id,
                    call_token=takes_call_token((raw.get("Spec") or {}).get("ContainerSpec")),
                    seen_at=now,
                    node=str(raw.get("NodeID") or ""),
                )
            task.container_id = container_id or task.container_id
            if task.address is None:
                task.address = snapshot.addresses.get(task_id)
            if task.address is not None and not task.ready and not task.probing and self.nursery is not None:
                task.probing = True
                self.nursery.start_soon(self._probe, view, task)
        self.publish(view)
        moving = (
            len(live) + pending != view.replicas or pending > 0 or any(t.address is None for t in view.tasks.values())
        )
        signature = (view.replicas, pending, tuple(sorted((t.id, t.address is not None) for t in view.tasks.values())))
        if signature != view.signature:
            view.signature = signature
            view.poll_delay_s = POLL_INITIAL_S
        if moving:
            return view
        view.poll_delay_s = POLL_INITIAL_S
        return None

    def tombstone(self, task_id: str) -> None:
        self._tombstones[task_id] = None
        while len(self._tombstones) > TOMBSTONES_MAX:
            self._tombstones.popitem(last=False)

    def bury(self, name: str, task_id: str, why: str) -> None:
        """A task's container is dying: unpublish it now, and never again."""
        self.tombstone(task_id)
        view = self._views.get(name)
        task = view.tasks.pop(task_id, None) if view is not None else None
        if view is not None and task is not None:
            task.gone = True
            if task.ready:
                event(log, logging.INFO, "replica unpublished", function=name, replica=task_id, reason=why)
            self.publish(view)

    def _note_rejections(self, view: View, rejections: dict[str, str]) -> None:
        """Tasks that could not start on their node (a missing image): logged once each, and the reason
        of a function with no ready replica (its status names the node)."""
        for task_id, reason in rejections.items():
            if task_id in self._rejected:
                continue
            self._rejected[task_id] = None
            while len(self._rejected) > TOMBSTONES_MAX:
                self._rejected.popitem(last=False)
            event(log, logging.WARNING, "replica cannot start", function=view.name, replica=task_id, reason=reason)
            if not any(task.ready for task in view.tasks.values()):
                view.loss_task, view.last_loss = task_id, reason

    def unready(self, view: View, task: Task, why: str) -> None:
        """A ready task stopped answering (:mod:`.liveness`): unpublish it and probe it again; it is
        published again if it answers, dropped when Swarm replaces it."""
        if not task.ready or task.gone:
            return
        task.ready = False
        event(log, logging.INFO, "replica unpublished", function=view.name, replica=task.id, reason=why)
        self.publish(view)
        if not task.probing and self.nursery is not None:
            task.probing = True
            self.nursery.start_soon(self._probe, view, task)

    def note_loss(self, name: str, task_id: str, action: str, exit_code: object) -> None:
        """Remember why a replica of a function with no ready replica went away (the status says it if
        no replica is ready for long): the first word about a task counts (its "die" after "unhealthy"
        says less)."""
        view = self._views.get(name)
        if view is None or view.loss_task == task_id or any(task.ready for task in view.tasks.values()):
            return
        replica = f"replica {task_id[:12]}"
        if action == "oom":
            text = f"{replica} ran out of memory before it was ready"
        elif action.startswith("health_status"):
            text = f"{replica} failed its image's HEALTHCHECK before it was ready"
        elif action == "die" and exit_code not in (None, "", "0"):
            text = f"{replica} exited with status {exit_code} before it was ready; see 'faasd logs {name}'"
        else:
            return
        view.loss_task, view.last_loss = task_id, text

    def drop(self, name: str) -> None:
        """Forget a function (removed, or no longer a function): its endpoints go at once."""
        view = self._views.pop(name, None)
        if view is None:
            return
        for task in view.tasks.values():
            task.gone = True
        self.registry.publish(name, ())

    def reset(self) -> None:
        """Forget every function's tasks (unpublishing them) and every tombstone."""
        for name in list(self._views):
            self.drop(name)
        self._tombstones.clear()

    def publish(self, view: View) -> None:
        if self._views.get(view.name) is not view:
            return
        ready = sorted((task for task in view.tasks.values() if task.ready and task.address), key=lambda t: t.slot)
        if ready or view.replicas == 0:
            view.unready_since, view.last_loss, view.loss_task = None, "", ""
        elif view.unready_since is None:
            view.unready_since = trio.current_time()
        self.registry.publish(
            view.name, [Endpoint(t.address[0], t.address[1], t.id, call_token=t.call_token) for t in ready if t.address]
        )

    def not_ready_reason(self, view: View, *, route: str, network: str) -> str:
        """Why a function has no ready replica, or "" (it may still be starting): why the last one went
        away before it was ready, at once; else a replica running for :data:`NOT_READY_FAILED_S` that
        does not answer."""
        now = trio.current_time()
        if view.unready_since is None:
            return ""
        if view.last_loss:
            return view.last_loss
        if now - view.unready_since < NOT_READY_FAILED_S:
            return ""
        for task in sorted(view.tasks.values(), key=lambda task: task.seen_at):
            waited = now - task.seen_at
            if waited < NOT_READY_FAILED_S:
                continue
            replica = f"replica {task.id[:12]}"
            if task.address is None and route == "host-port":
                return (
                    f"{replica} publishes no host-mode port for {WATCHDOG_PORT}, the only way a daemon on the host "
                    f"reaches it: docker service update --publish-add mode=host,target={WATCHDOG_PORT} {view.name}, "
                    f"or run the daemon in a container on network {network}"
                )
            if task.address is None:
                return f"{replica} has no address on network {network}"
            host, port = task.address
            return (
                f"{replica} has not answered GET /_/health on {host}:{port} for {waited:.0f}s: a function runs "
                f"a watchdog (faasd's or OpenFaaS's) listening on port {WATCHDOG_PORT}"
            )
        return ""

    async def _probe(self, view: View, task: Task) -> None:
        """Publish ``task`` once its watchdog answers ``GET /_/health`` with 200; stop if it goes away."""
        assert task.address is not None
        host, port = task.address
        try:
            while not task.gone:
                if await health_ok(host, port, connect_timeout_s=PROBE_CONNECT_TIMEOUT_S, timeout_s=PROBE_TIMEOUT_S):
                    if task.gone:
                        return
                    task.ready = True
                    event(
                        log,
                        logging.INFO,
                        "replica ready",
                        function=view.name,
                        replica=task.id,
                        address=f"{host}:{port}",
                        startup_ms=round((trio.current_time() - task.seen_at) * 1000, 1),
                    )
                    self.publish(view)
                    return
                slow = trio.current_time() - task.seen_at > PROBE_SLOW_AFTER_S
                await trio.sleep(PROBE_SLOW_INTERVAL_S if slow else PROBE_INTERVAL_S)
        finally:
            task.probing = False
