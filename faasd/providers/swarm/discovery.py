"""How the Swarm backend follows the swarm: Docker's event stream, targeted re-reads, periodic resyncs.

:meth:`Discovery.run` follows Docker's event stream (service and container events) and refreshes the
function an event names: one ``inspect service`` plus one ``tasks`` call (:mod:`.tasks`). A function
whose tasks are still moving (fewer or more tasks than replicas, a task pending or without an address)
is polled again after 20 ms, backing off to 2 s, because Swarm emits no task events. A full resync
runs every ``resync_s`` and after every (re)connection. The event stream blocks: it is read in a
worker thread that hands events to trio; on cancellation the trio side closes the stream, which ends
the thread, so no thread outlives :meth:`Discovery.run`.

A task is unpublished at once when its desired state leaves ``running`` (a scale-down or an update:
visible ≈ 8 ms after the call, while Swarm stops the container only 2+ s later), when its container
dies, is killed or turns unhealthy (container events), and when the function is removed.

**Docker down.** When dockerd cannot be reached, or is not a swarm manager, :attr:`Discovery.up` is
False with the reason, every endpoint is unpublished (dockerd stops the containers when it stops);
the discovery reconnects every 0.5 s and rebuilds its view from the swarm.

**Other nodes.** Every read knows the swarm's nodes (:mod:`.nodes`, read again at each resync and
whenever a task runs on a node not seen yet): a task is called at its node's address. Their tasks send
no events here; :mod:`.liveness` probes the ready ones so a node that goes away is noticed in
:data:`~.liveness.LIVENESS_S`, long before the manager marks it down. A node that becomes eligible
again (back, joined, made active) gets its share of each function's replicas (:mod:`.rebalance`).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Awaitable, Callable

import docker
import docker.types
import trio

from faasd.errors import BackendUnavailable, FaasdError
from faasd.logs import event
from faasd.providers.swarm.client import DockerClient, NotManager, close_stream, drain_in_thread, map_exceptions
from faasd.providers.swarm.liveness import watch_remote
from faasd.providers.swarm.nodes import Nodes
from faasd.providers.swarm.rebalance import force_update, to_rebalance
from faasd.providers.swarm.site import Site
from faasd.providers.swarm.tasks import NodeEngine, read_all, read_function
from faasd.providers.swarm.views import View, Views

__all__ = ["RESYNC_S", "Discovery"]

log = logging.getLogger("faasd.providers.swarm")

POLL_MAX_S = 2.0
"""A function whose tasks are moving is re-read after 20 ms, doubling up to 2 s while nothing changes."""
RESYNC_S = 10.0
"""Full re-read of every function: catches what events cannot say (other nodes, missed events)."""
RECONNECT_S = 0.5
"""Between two attempts to reach dockerd while it is down."""

DEAD_ACTIONS = frozenset({"die", "kill", "stop", "destroy", "oom"})
EVENT_FILTERS = {
    "type": ["service", "container"],
    "event": ["create", "start", "die", "kill", "stop", "destroy", "oom", "health_status", "update", "remove"],
}
"""Health-check probes produce exec_* events every interval per container: filtered out by dockerd."""


class Discovery:
    """Keeps :class:`~.views.Views` in line with the swarm while :meth:`run` runs.

    Args:
        on_connect: awaited on every connection to dockerd, before the first resync (the provider
            locates the daemon and adopts the swarm's call token there); a ``BackendUnavailable`` it
            raises counts as a lost connection.
    """

    def __init__(
        self,
        client: DockerClient,
        site: Site,
        views: Views,
        *,
        resync_s: float = RESYNC_S,
        on_connect: Callable[[], Awaitable[None]],
        engines: NodeEngine | None = None,
    ) -> None:
        self.client = client
        self.engines = engines
        """The other nodes' engines (``swarm_engines``): where a new task's port is read before Swarm reports it."""
        self.site = site
        self.views = views
        self.resync_s = resync_s
        self.on_connect = on_connect
        self.up = False
        self.connected_once = False
        self.reason = f"connecting to dockerd at {client.where}"
        """Why the backend is down (while it is)."""
        self.nodes = Nodes()
        """The swarm's nodes as last read (where tasks answer)."""
        self._spread_keys: dict[str, frozenset[tuple[str, str]]] = {}
        """Function -> the nodes' state when it was last spread again (:mod:`.rebalance`: once per state)."""
        self.events = 0
        self.refreshes = 0
        self.resyncs = 0
        self.nursery: trio.Nursery | None = None
        self._seq = itertools.count()
        self._dirty: set[str] = set()
        self._wake = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the swarm until cancelled.

        Calls ``task_status.started()`` once the first full view is published, or as soon as dockerd
        turns out to be unreachable (the daemon then starts degraded and this keeps reconnecting).
        """
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = self.views.nursery = nursery
                nursery.start_soon(self._refresher)
                nursery.start_soon(watch_remote, self.views, lambda: self.nodes.own)
                await nursery.start(self._watch)
                task_status.started()
        finally:
            self.nursery = self.views.nursery = None
            for name in self.views.names():
                self.views.drop(name)

    def mark_dirty(self, name: str) -> None:
        """Read ``name`` again soon (batched with the other functions marked meanwhile)."""
        self._dirty.add(name)
        self._wake.set()

    # -- the connection -----------------------------------------------------------------------------

    async def _watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, read everything, follow events; on any loss, mark the backend down and start over."""
        started = False
        while True:
            try:
                stream, client = await self._open_events()
            except BackendUnavailable as exc:
                self._set_down(exc.message)
                if not started:
                    task_status.started()
                    started = True
                await trio.sleep(RECONNECT_S)
                continue
            try:
                async with trio.open_nursery() as nursery:
                    await self.on_connect()
                    await self.resync()
                    self._set_up()
                    if not started:
                        task_status.started()
                        started = True
                    nursery.start_soon(self._resync_periodically)
                    await self._pump_events(stream)
                    nursery.cancel_scope.cancel()
            except* FaasdError as group:  # From the nursery: trio wraps it in an ExceptionGroup.
                self._set_down(_first_leaf(group).message)
            finally:
                close_stream(stream)
                client.close()
                # Whatever happened while no event could be seen (a dockerd restart re-creates tasks and
                # ports) is read afresh: nothing of this connection's view is trusted after it.
                self.views.reset()
            if not started:
                task_status.started()
                started = True
            # The stream ended: dockerd stopped, restarted, or dropped the connection.
            try:
                await self.client.call("checking dockerd", lambda api: api.ping())
            except FaasdError as exc:
                self._set_down(exc.message)
            await trio.sleep(RECONNECT_S if not self.up else 0.1)

    async def _open_events(self) -> tuple[docker.types.CancellableStream, docker.APIClient]:
        """A dedicated client (its stream is closed from the trio side) following the events we use,
        after checking that the engine is a swarm manager."""
        where = self.client.where

        def open_stream() -> tuple[docker.types.CancellableStream, docker.APIClient]:
            client = self.client.new_client()
            try:
                swarm = client.info().get("Swarm") or {}
                if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
                    state = swarm.get("LocalNodeState") or "unknown"
                    role = "a worker" if state == "active" else f"swarm {state}"
                    raise NotManager(
                        f"the Docker engine at {where} is not a swarm manager ({role}); "
                        "run: docker swarm init --advertise-addr 127.0.0.1"
                    )
                return client.events(decode=True, filters=EVENT_FILTERS), client
            except BaseException:
                client.close()
                raise

        try:
            with map_exceptions(f"connecting to dockerd at {where}"):
                return await trio.to_thread.run_sync(open_stream)
        except NotManager as exc:
            raise BackendUnavailable(str(exc)) from None

    async def _pump_events(self, stream: docker.types.CancellableStream) -> None:
        """Hand every event of ``stream`` to :meth:`_on_event` (on the trio thread) until it ends."""

        def pump() -> None:
            for item in stream:
                try:
                    trio.from_thread.run_sync(self._on_event, item)
                except trio.RunFinishedError:
                    return

        await drain_in_thread(stream, pump, "Docker events")

    def _on_event(self, item: object) -> None:
        """One Docker event (on the trio thread): unpublish what died, refresh what it names."""
        if not isinstance(item, dict):
            return
        self.events += 1
        kind = item.get("Type")
        action = str(item.get("Action", ""))
        attributes = (item.get("Actor") or {}).get("Attributes") or {}
        if kind == "service":
            name = attributes.get("name")
            if not name:
                return
            if action == "remove":
                self.views.drop(name)
            else:
                self.mark_dirty(name)
        elif kind == "container":
            name = attributes.get("com.docker.swarm.service.name")
            task_id = attributes.get("com.docker.swarm.task.id")
            if not name or self.views.get(name) is None:
                return
            if task_id and (action in DEAD_ACTIONS or action.startswith("health_status: unhealthy")):
                self.views.bury(name, task_id, action.split(":")[0])
                self.views.note_loss(name, task_id, action, attributes.get("exitCode"))
            self.mark_dirty(name)

    def _set_up(self) -> None:
        if not self.up:
            event(log, logging.INFO, "swarm connected", docker=self.client.where, functions=len(self.views.names()))
        self.up = True
        self.connected_once = True

    def _set_down(self, reason: str) -> None:
        """dockerd is gone (or not a manager): unpublish everything -- its containers stop with it."""
        if self.up or reason != self.reason:
            event(log, logging.WARNING, "swarm unavailable", docker=self.client.where, reason=reason)
        self.up = False
        self.reason = reason
        self.client.close()  # A restarted dockerd gets a fresh client (and API version).
        self.views.reset()

    # -- reading ------------------------------------------------------------------------------------

    async def resync(self) -> None:
        """Read every function, task and node at once (a handful of API calls) and apply it; then spread
        again what a node's return left piled up (:mod:`.rebalance`)."""
        seq = next(self._seq)
        site = self.site
        site.rule, self.nodes, snapshots = await self.client.call(
            "reading the swarm",
            functools.partial(
                read_all,
                known=self.views.known_addresses(),
                route=site.route,
                network=site.network,
                rule=site.rule,
                engines=self.engines,
            ),
        )
        self.resyncs += 1
        for name in self.views.names():
            view = self.views.get(name)
            if name not in snapshots and view is not None and view.applied_seq < seq:
                self.views.drop(name)
        for name, snapshot in snapshots.items():
            self._poll_again(self.views.apply(name, snapshot, seq))
        await self._rebalance()

    async def _rebalance(self) -> None:
        """Spread again the functions with no replica on an eligible node (once per state of the nodes)."""
        key = self.nodes.eligible_key()
        for name in list(self._spread_keys):
            if self.views.get(name) is None:
                del self._spread_keys[name]
        for name in to_rebalance(self.views.all(), self.nodes.eligible()):
            if self._spread_keys.get(name) == key:
                continue
            self._spread_keys[name] = key
            try:
                await self.client.call(
                    f"spreading {name}", functools.partial(force_update, name=name, rule=self.site.rule)
                )
            except BackendUnavailable:
                raise
            except FaasdError as exc:
                event(log, logging.WARNING, "rebalance failed", function=name, error=exc.message)
                continue
            event(log, logging.INFO, "replicas spread again", function=name)
            self.mark_dirty(name)

    async def _resync_periodically(self) -> None:
        while True:
            await trio.sleep(self.resync_s)
            try:
                await self.resync()
            except BackendUnavailable:
                raise  # The watcher marks the backend down and reconnects.
            except FaasdError as exc:
                event(log, logging.WARNING, "swarm resync failed", error=exc.message)

    async def _refresh(self, name: str) -> None:
        seq = next(self._seq)
        site = self.site
        try:
            snapshot = await self.client.call(
                f"reading {name}",
                functools.partial(
                    read_function,
                    name=name,
                    known=self.views.known_addresses(),
                    route=site.route,
                    network=site.network,
                    rule=site.rule,
                    nodes=self.nodes,
                    engines=self.engines,
                ),
            )
        except FaasdError as exc:
            if self.up:
                event(log, logging.DEBUG, "refresh failed", function=name, error=exc.message)
                self._poll_again(self.views.get(name))
            return
        self.refreshes += 1
        if snapshot.nodes is not None:
            self.nodes = snapshot.nodes
        self._poll_again(self.views.apply(name, snapshot, seq))

    async def _refresher(self) -> None:
        """Refresh the functions marked dirty, all of a batch concurrently, one batch at a time (so two
        reads of one function never overlap here)."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            names, self._dirty = self._dirty, set()
            if not self.up:
                continue
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(self._refresh, name)

    def _poll_again(self, view: View | None) -> None:
        """Read ``view``'s function again after its poll delay (doubling up to :data:`POLL_MAX_S`); None
        (a view that is not moving) does nothing."""
        if view is None or view.poll_scheduled or self.nursery is None:
            return
        view.poll_scheduled = True
        delay = view.poll_delay_s
        view.poll_delay_s = min(delay * 2, POLL_MAX_S)

        async def poll() -> None:
            await trio.sleep(delay)
            view.poll_scheduled = False
            if self.views.get(view.name) is view:
                self.mark_dirty(view.name)

        self.nursery.start_soon(poll)


def _first_leaf(group: BaseExceptionGroup[FaasdError]) -> FaasdError:
    """The first exception in ``group`` (nested nurseries nest groups)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, FaasdError)
    return exc
