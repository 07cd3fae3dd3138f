"""The ``swarm`` backend: every function is a Docker Swarm service, every replica a task.

Swarm keeps the deployments (``persistent = True``): the daemon holds no state of its own about them
and rebuilds everything from the swarm after a restart. Services made by hand are functions too when
they carry the OpenFaaS labels (anywhere) or are attached to the functions network -- the faas seed's
rule, ``docker service create --network=functions --name catservice IMAGE`` with no label
(:class:`~faasd.providers.swarm.spec.FunctionRule`: ``function=false`` opts a service on the network
out; the daemon's own service never counts). How a FunctionSpec becomes a service (labels, secrets,
read-only root, health check, resources, ...) is in :mod:`faasd.providers.swarm.spec`.

**Docker.** Everything goes through the docker SDK, whose calls block: each runs in a worker thread
(``trio.to_thread.run_sync``), never on the event loop, and its errors are translated into
:mod:`faasd.errors` by :func:`map_exceptions` (dockerd unreachable or not a swarm manager ->
``BackendUnavailable``, 503). Images are used by ID (a tag is resolved on this engine first), so Swarm
never tries a registry unless ``pull`` is set. Scaling rewrites the service's raw spec with only a
new replica count: docker-py's ``Service.scale()`` would write back defaults and restart a replica.

**Discovery.** :meth:`SwarmProvider.run` follows Docker's event stream (service and container events)
and refreshes the function an event names: one ``inspect service`` plus one ``tasks`` call. A function
whose tasks are still moving (fewer or more tasks than replicas, a task pending or without an
address) is polled again after 20 ms, backing off to 2 s, because Swarm emits no task events. A full
resync runs every ``resync_s`` and after every (re)connection. The event stream blocks: it is read
in a worker thread that hands events to trio; on cancellation the trio side closes the stream, which
ends the thread, so no thread outlives :meth:`run`.

**Endpoints.** A task is published to the :class:`~faasd.registry.EndpointRegistry` once its desired
state is ``running``, its container runs, and faasd's own probe (``GET /_/health`` on the watchdog)
answers 200 -- faasd does not wait for Swarm's health check, whose first probe comes 2 s after the
start. Where it is called depends on ``route``:

* ``host-port`` (a daemon on the host): each task faasd deploys publishes the watchdog port in host
  mode on a port Docker picks, and faasd calls ``127.0.0.1:<that port>`` (read from the container as
  soon as it starts; Swarm reports it only once the task is healthy). No IPVS is needed. Only tasks
  on this node are reachable that way, and a service made by hand only if it publishes one.
* ``overlay-dns`` (the daemon runs in a container or as a Swarm service on the functions network, as
  the seed's and OpenFaaS's gateways did): faasd calls each task's address on that network, port
  8080 -- the addresses ``tasks.<name>`` resolves to there. Nothing is published on the host.
* ``auto`` (the default) is one of them, chosen on connecting from where the daemon runs
  (:mod:`faasd.providers.swarm.placement`): ``overlay-dns`` in a container attached to the network.

Each endpoint says whether its task was given the call token (mounted by faasd as a Docker secret):
the gateway sends the token only to those, never to a service made by hand without it.

A task is unpublished at once when its desired state leaves ``running`` (a scale-down or an update:
visible ≈ 8 ms after the call, while Swarm stops the container only 2+ s later), when its container
dies, is killed or turns unhealthy (container events), and when the function is removed. A task once
seen dead is never published again, whatever a slower concurrent read says.

**Not ready.** A function that has had replicas wanted and none ready for 10 s is ``failed`` in its
status, with the reason: a running task that does not answer the probe (a service on the network that
runs no watchdog), one without a published port (``host-port``), or how the last task went away
(exit status, out of memory, failed HEALTHCHECK). Nothing else changes: its tasks keep being probed,
and the first ready one clears it.

**Docker down.** When dockerd cannot be reached, or is not a swarm manager, :meth:`health` says so,
every endpoint is unpublished (dockerd stops the containers when it stops) and every call raises
``BackendUnavailable``; :meth:`run` reconnects every 0.5 s and rebuilds its view from the swarm.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types
import docker.utils
import requests.exceptions
import trio

from faasd.calltoken import CallToken, TokenError
from faasd.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    Conflict,
    FaasdError,
    FunctionNotFound,
    InvalidRequest,
)
from faasd.logs import event
from faasd.namelocks import NameLocks
from faasd.providers.swarm.placement import Placement, locate, network_ids
from faasd.providers.swarm.spec import (
    CALL_TOKEN_CONFIG,
    CALL_TOKEN_LABEL,
    LABEL_OWNER,
    LABEL_SECRET,
    ROUTE_SETTINGS,
    SECRET_OWNER,
    WATCHDOG_PORT,
    FunctionRule,
    SecretRef,
    call_token_secret_name,
    check_spec,
    parse_docker_time,
    parse_log_line,
    secret_version,
    service_spec,
    spec_from_service,
    takes_call_token,
)
from faasd.providers.types import Endpoint, FunctionSpec, FunctionStatus, LogMessage, LogRequest, validate_name
from faasd.registry import EndpointRegistry

__all__ = ["DEFAULT_IMAGE", "SwarmProvider", "SwarmStatistics", "map_exceptions"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_IMAGE = "faasd/watchdog:latest"
"""What a spec without ``image`` runs (``faasd build-base`` makes it): the watchdog and busybox."""

LOCALHOST = "127.0.0.1"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
API_TIMEOUT_S = 30
"""Socket timeout of every Docker API call: a hung dockerd cannot hold a worker thread longer."""

POLL_INITIAL_S = 0.02
POLL_MAX_S = 2.0
"""A function whose tasks are moving is re-read after 20 ms, doubling up to 2 s while nothing changes."""
RESYNC_S = 10.0
"""Full re-read of every function: catches what events cannot say (other nodes, missed events)."""
RECONNECT_S = 0.5
"""Between two attempts to reach dockerd while it is down."""

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
HEALTH_REQUEST = b"GET /_/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

LOG_LINES_MAX = 10_000
"""Lines kept for a ``logs`` call without ``tail`` (Docker's json-file logs are unbounded)."""
FOLLOW_BUFFER_LINES = 1024
TOMBSTONES_MAX = 10_000
UPDATE_RETRIES = 5
"""Attempts of a service update that loses a race with another writer ("update out of sequence")."""

LIVE_STATES = frozenset({"starting", "running"})
PENDING_STATES = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready"})
DEAD_ACTIONS = frozenset({"die", "kill", "stop", "destroy", "oom"})
EVENT_FILTERS = {
    "type": ["service", "container"],
    "event": ["create", "start", "die", "kill", "stop", "destroy", "oom", "health_status", "update", "remove"],
}
"""Health-check probes produce exec_* events every interval per container: filtered out by dockerd."""

SecretLookup = Callable[[str], Awaitable[bytes | None]]


# -- errors -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def map_exceptions(what: str, *, not_found: str | None = None) -> Iterator[None]:
    """Translate docker SDK and transport errors raised in the block into :mod:`faasd.errors`.

    Args:
        what: what was being done, the start of the message (``scaling f``).
        not_found: message of the ``FunctionNotFound`` a Docker 404 becomes; without it a 404 is a
            ``BackendError`` (something faasd relies on vanished).

    Error handling:
        404 -> FunctionNotFound (or BackendError); 400 -> InvalidRequest (Docker refused the spec, e.g.
        a malformed constraint); 409 -> Conflict; 503 (not a swarm manager) and connection failures
        -> BackendUnavailable; timeouts -> BackendTimeout; anything else -> BackendError.
    """
    try:
        yield
    except docker.errors.NotFound as exc:
        if not_found is not None:
            raise FunctionNotFound(not_found) from exc
        raise BackendError(f"{what}: {_explain(exc)}") from exc
    except docker.errors.APIError as exc:
        status = exc.status_code or 500
        message = f"{what}: {_explain(exc)}"
        if status == 503:
            raise BackendUnavailable(message) from exc
        if status == 400:
            raise InvalidRequest(message) from exc
        if status == 409:
            raise Conflict(message) from exc
        raise BackendError(message) from exc
    except requests.exceptions.Timeout as exc:
        raise BackendTimeout(f"{what}: dockerd did not answer within {API_TIMEOUT_S}s") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise BackendUnavailable(f"{what}: dockerd unreachable: {_first_line(exc)}") from exc


def _explain(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _first_line(text or exc)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def _out_of_sequence(exc: docker.errors.APIError) -> bool:
    return "out of sequence" in str(exc.explanation or "")


# -- snapshots and bookkeeping ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SwarmStatistics:
    """Counts as of the call."""

    up: bool
    functions: int
    tasks: int
    ready_tasks: int
    events: int
    """Docker events handled since the start."""
    refreshes: int
    resyncs: int


@dataclass(eq=False, slots=True)
class _Task:
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


@dataclass(eq=False, slots=True)
class _View:
    """What faasd knows of one function's tasks."""

    name: str
    replicas: int = 0
    tasks: dict[str, _Task] = field(default_factory=dict)
    applied_seq: int = -1
    """Sequence number of the newest read applied: an older read finishing later is ignored."""
    signature: tuple[object, ...] = ()
    poll_delay_s: float = POLL_INITIAL_S
    poll_scheduled: bool = False
    unready_since: float | None = None
    """Since when replicas are wanted and none is ready (trio time); None while one is, or none is wanted."""
    last_loss: str = ""
    """Why the last replica lost meanwhile went away (:meth:`SwarmProvider._note_loss`)."""
    loss_task: str = ""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One read of a function from Docker (made in a worker thread)."""

    service: dict[str, Any] | None
    tasks: list[dict[str, Any]]
    addresses: dict[str, tuple[str, int]]


# -- the provider -----------------------------------------------------------------------------------


class SwarmProvider:
    """Runs functions as Docker Swarm services (see the module docstring).

    Args:
        registry: where ready tasks are published.
        secrets: the daemon's secret store (name -> value, None when missing); Docker secrets are
            made from it at deploy time.
        docker_host: dockerd's address; empty: ``$DOCKER_HOST``, else the local socket.
        network: the attachable overlay network functions join (created when missing); every
            service attached to it is a function too (:class:`FunctionRule`).
        route: ``host-port`` or ``overlay-dns`` (how the daemon reaches tasks), or ``auto``: chosen
            from where the daemon runs when it connects (:mod:`faasd.providers.swarm.placement`).
        pull: let Swarm pull images missing on this engine from their registry (off: such a deploy
            is refused, nothing ever reaches a registry).
        default_image: what a spec without ``image`` runs.
        stop_grace_s: between SIGTERM and SIGKILL when Swarm stops a task.
        resync_s: period of the full re-read.
        extra_labels: added to every service and Docker secret created (tests mark what they make).
        call_token: mounted into every function as a Docker secret; replicas refuse calls without it.
            On connecting, the value is replaced by the swarm's own when there is one (Docker config
            ``faasd-call-token``), else the swarm's is made from it: every daemon on one swarm, and a
            daemon restarted with a new state dir, calls the functions already running.

    Resource handling:
        Services, secrets and the network live in the swarm, not in this object: cancelling
        :meth:`run` or :meth:`aclose` stops watching and probing and closes the Docker clients, and
        leaves every function running (a restarted daemon finds them again). The event stream's and
        log followers' worker threads end before :meth:`run` (or the log iterator) returns.
    """

    name = "swarm"
    orchestration = "swarm"
    persistent = True

    def __init__(
        self,
        *,
        registry: EndpointRegistry,
        secrets: SecretLookup | None = None,
        docker_host: str = "",
        network: str = "functions",
        route: str = "auto",
        pull: bool = False,
        default_image: str = DEFAULT_IMAGE,
        stop_grace_s: float = 5.0,
        resync_s: float = RESYNC_S,
        extra_labels: Mapping[str, str] | None = None,
        call_token: CallToken | None = None,
    ) -> None:
        if route not in ROUTE_SETTINGS:
            raise InvalidRequest(f"swarm_route {route!r}: use one of {', '.join(ROUTE_SETTINGS)}")
        self._registry = registry
        self._secrets = secrets
        self._docker_host = docker_host
        self._where = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self._network = network
        self._route_setting = route
        self._route = "" if route == "auto" else route
        """The route in use; empty until :meth:`_locate` chose it (``auto``)."""
        self._placement: Placement | None = None
        self._rule = FunctionRule(networks=frozenset({network}))
        self._locate_lock = trio.Lock()
        self._pull = pull
        self._default_image = default_image
        self._stop_grace_s = stop_grace_s
        self._resync_s = resync_s
        self._extra_labels = dict(extra_labels or {})
        self._call_token = call_token
        self._api: docker.APIClient | None = None
        self._api_lock = trio.Lock()
        self._network_lock = trio.Lock()
        self._locks = NameLocks()
        self._views: dict[str, _View] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._seq = itertools.count()
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._up = False
        self._connected_once = False
        self._reason = f"connecting to dockerd at {self._where}"
        self._events = 0
        self._refreshes = 0
        self._resyncs = 0

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<SwarmProvider {self._where} up={stats.up} route={self._route} functions={stats.functions} "
            f"tasks={stats.tasks} ready={stats.ready_tasks}>"
        )

    def statistics(self) -> SwarmStatistics:
        tasks = [task for view in self._views.values() for task in view.tasks.values()]
        return SwarmStatistics(
            up=self._up,
            functions=len(self._views),
            tasks=len(tasks),
            ready_tasks=sum(1 for task in tasks if task.ready),
            events=self._events,
            refreshes=self._refreshes,
            resyncs=self._resyncs,
        )

    def health(self) -> tuple[bool, str]:
        if not self._up:
            return False, self._reason
        stats = self.statistics()
        return True, (
            f"swarm manager at {self._where}: {stats.functions} functions, {stats.ready_tasks} ready replicas"
        )

    # -- docker plumbing ----------------------------------------------------------------------------

    def _new_client(self) -> docker.APIClient:
        """A client bound to the engine's API version (blocking: asks dockerd for it)."""
        if self._docker_host:
            return docker.APIClient(base_url=self._docker_host, version="auto", timeout=API_TIMEOUT_S)
        kwargs = docker.utils.kwargs_from_env()
        return docker.APIClient(version="auto", timeout=API_TIMEOUT_S, **kwargs)

    async def _client(self) -> docker.APIClient:
        if self._api is None:
            async with self._api_lock:
                if self._api is None:
                    with map_exceptions(f"connecting to dockerd at {self._where}"):
                        self._api = await trio.to_thread.run_sync(self._new_client)
        return self._api

    async def _docker(self, what: str, call: Callable[[docker.APIClient], T], *, not_found: str | None = None) -> T:
        """Run ``call(client)`` in a worker thread, with Docker errors translated (:func:`map_exceptions`)."""
        api = await self._client()
        with map_exceptions(what, not_found=not_found):
            return await trio.to_thread.run_sync(call, api)

    # -- watching -----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the swarm until cancelled (see "Discovery" in the module docstring).

        Calls ``task_status.started()`` once the first full view is published, or as soon as dockerd
        turns out to be unreachable (the daemon then starts degraded and this keeps reconnecting).
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._refresher)
                await nursery.start(self._watch)
                task_status.started()
        finally:
            self._nursery = None
            for name in builtins.list(self._views):
                self._drop_view(name)

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
                    await self._locate()
                    try:
                        await self._adopt_call_token()
                    except BackendUnavailable:
                        raise
                    except FaasdError as exc:  # Deploys retry it; discovery must not wait for it.
                        event(log, logging.WARNING, "cannot read the swarm's call token", error=exc.message)
                    await self._resync()
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
                _close_stream(stream)
                client.close()
                # Whatever happened while no event could be seen (a dockerd restart re-creates tasks and
                # ports) is read afresh: nothing of this connection's view is trusted after it.
                self._reset_views()
            if not started:
                task_status.started()
                started = True
            # The stream ended: dockerd stopped, restarted, or dropped the connection.
            try:
                await self._docker("checking dockerd", lambda api: api.ping())
            except FaasdError as exc:
                self._set_down(exc.message)
            await trio.sleep(RECONNECT_S if not self._up else 0.1)

    async def _open_events(self) -> tuple[docker.types.CancellableStream, docker.APIClient]:
        """A dedicated client (its stream is closed from the trio side) following the events we use,
        after checking that the engine is a swarm manager."""

        def open_stream() -> tuple[docker.types.CancellableStream, docker.APIClient]:
            client = self._new_client()
            try:
                swarm = client.info().get("Swarm") or {}
                if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
                    state = swarm.get("LocalNodeState") or "unknown"
                    role = "a worker" if state == "active" else f"swarm {state}"
                    raise _NotManager(
                        f"the Docker engine at {self._where} is not a swarm manager ({role}); "
                        "run: docker swarm init --advertise-addr 127.0.0.1"
                    )
                return client.events(decode=True, filters=EVENT_FILTERS), client
            except BaseException:
                client.close()
                raise

        try:
            with map_exceptions(f"connecting to dockerd at {self._where}"):
                return await trio.to_thread.run_sync(open_stream)
        except _NotManager as exc:
            raise BackendUnavailable(str(exc)) from None

    async def _pump_events(self, stream: docker.types.CancellableStream) -> None:
        """Hand every event of ``stream`` to :meth:`_on_event` (on the trio thread) until it ends."""

        def pump() -> None:
            for item in stream:
                try:
                    trio.from_thread.run_sync(self._on_event, item)
                except trio.RunFinishedError:
                    return

        await _drain_in_thread(stream, pump, "Docker events")

    def _on_event(self, item: object) -> None:
        """One Docker event (on the trio thread): unpublish what died, refresh what it names."""
        if not isinstance(item, dict):
            return
        self._events += 1
        kind = item.get("Type")
        action = str(item.get("Action", ""))
        attributes = (item.get("Actor") or {}).get("Attributes") or {}
        if kind == "service":
            name = attributes.get("name")
            if not name:
                return
            if action == "remove":
                self._drop_view(name)
            else:
                self._mark_dirty(name)
        elif kind == "container":
            name = attributes.get("com.docker.swarm.service.name")
            task_id = attributes.get("com.docker.swarm.task.id")
            if not name or name not in self._views:
                return
            if task_id and (action in DEAD_ACTIONS or action.startswith("health_status: unhealthy")):
                self._bury(name, task_id, action.split(":")[0])
                self._note_loss(name, task_id, action, attributes.get("exitCode"))
            self._mark_dirty(name)

    async def _resync_periodically(self) -> None:
        while True:
            await trio.sleep(self._resync_s)
            try:
                await self._resync()
            except BackendUnavailable:
                raise  # The watcher marks the backend down and reconnects.
            except FaasdError as exc:
                event(log, logging.WARNING, "swarm resync failed", error=exc.message)

    def _set_up(self) -> None:
        if not self._up:
            event(log, logging.INFO, "swarm connected", docker=self._where, functions=len(self._views))
        self._up = True
        self._connected_once = True

    def _set_down(self, reason: str) -> None:
        """dockerd is gone (or not a manager): unpublish everything -- its containers stop with it."""
        if self._up or reason != self._reason:
            event(log, logging.WARNING, "swarm unavailable", docker=self._where, reason=reason)
        self._up = False
        self._reason = reason
        api, self._api = self._api, None  # A restarted dockerd gets a fresh client (and API version).
        if api is not None:
            api.close()
        self._reset_views()

    def _reset_views(self) -> None:
        """Forget every function's tasks (unpublishing them) and every tombstone."""
        for name in builtins.list(self._views):
            self._drop_view(name)
        self._tombstones.clear()

    # -- where this daemon runs ---------------------------------------------------------------------

    async def _locate(self) -> str:
        """Find where this daemon runs -- its own container and service, the functions network's ID --
        and choose the route when it is ``auto`` (:mod:`faasd.providers.swarm.placement`); return the route.

        Run on every connection to dockerd (a few API calls), and by the first deploy if that comes
        before the first connection; logged when it changes.
        """
        async with self._locate_lock:

            def find(api: docker.APIClient) -> tuple[frozenset[str], Placement]:
                networks = network_ids(api, self._network)
                return networks, locate(api, networks=networks, network_name=self._network)

            networks, placement = await self._docker("finding where this daemon runs", find)
            self._rule = FunctionRule(
                networks=networks, exclude=frozenset({placement.service}) if placement.service else frozenset()
            )
            route = placement.route if self._route_setting == "auto" else self._route_setting
            if placement != self._placement or route != self._route:
                warn = placement.warning and self._route_setting == "auto"
                event(
                    log,
                    logging.WARNING if warn else logging.INFO,
                    "swarm route",
                    route=route,
                    swarm_route=self._route_setting,
                    where=placement.reason,
                )
            self._placement = placement
            self._route = route
            return route

    async def _current_route(self) -> str:
        return self._route or await self._locate()

    # -- reading the swarm --------------------------------------------------------------------------

    def _known_addresses(self) -> dict[str, tuple[str, int]]:
        return {task.id: task.address for view in self._views.values() for task in view.tasks.values() if task.address}

    async def _resync(self) -> None:
        """Read every function and task at once (two API calls) and apply it."""
        seq = next(self._seq)
        known = self._known_addresses()
        self._rule, snapshots = await self._docker(
            "reading the swarm",
            functools.partial(_read_all, known=known, route=self._route, network=self._network, rule=self._rule),
        )
        self._resyncs += 1
        for name in builtins.list(self._views):
            if name not in snapshots and self._views[name].applied_seq < seq:
                self._drop_view(name)
        for name, snapshot in snapshots.items():
            self._apply(name, snapshot, seq)

    async def _refresh(self, name: str) -> None:
        seq = next(self._seq)
        known = self._known_addresses()
        try:
            snapshot = await self._docker(
                f"reading {name}",
                functools.partial(
                    _read_function, name=name, known=known, route=self._route, network=self._network, rule=self._rule
                ),
            )
        except FaasdError as exc:
            if self._up:
                event(log, logging.DEBUG, "refresh failed", function=name, error=exc.message)
                view = self._views.get(name)
                if view is not None:
                    self._schedule_poll(view)
            return
        self._refreshes += 1
        self._apply(name, snapshot, seq)

    def _mark_dirty(self, name: str) -> None:
        self._dirty.add(name)
        self._wake.set()

    async def _refresher(self) -> None:
        """Refresh the functions marked dirty, all of a batch concurrently, one batch at a time (so two
        reads of one function never overlap here)."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            names, self._dirty = self._dirty, set()
            if not self._up:
                continue
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(self._refresh, name)

    def _schedule_poll(self, view: _View) -> None:
        if view.poll_scheduled or self._nursery is None:
            return
        view.poll_scheduled = True
        delay = view.poll_delay_s
        view.poll_delay_s = min(delay * 2, POLL_MAX_S)

        async def poll() -> None:
            await trio.sleep(delay)
            view.poll_scheduled = False
            if self._views.get(view.name) is view:
                self._mark_dirty(view.name)

        self._nursery.start_soon(poll)

    def _apply(self, name: str, snapshot: _Snapshot, seq: int) -> None:
        """Bring the view of ``name`` in line with a read; publish; start probes; poll if still moving."""
        view = self._views.get(name)
        if view is not None and seq <= view.applied_seq:
            return  # A newer read was applied already.
        if snapshot.service is None:
            if view is not None:
                self._drop_view(name)
            return
        if view is None:
            view = self._views[name] = _View(name)
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
                self._tombstone(task_id)  # failed, complete, rejected ...: it never runs again
        for task_id in [task_id for task_id in view.tasks if task_id not in live]:
            view.tasks.pop(task_id).gone = True
        now = trio.current_time()
        for task_id, raw in live.items():
            task = view.tasks.get(task_id)
            container_id = ((raw.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID", "")
            if task is None:
                task = view.tasks[task_id] = _Task(
                    task_id,
                    int(raw.get("Slot") or 0),
                    container_id,
                    call_token=takes_call_token((raw.get("Spec") or {}).get("ContainerSpec")),
                    seen_at=now,
                )
            task.container_id = container_id or task.container_id
            if task.address is None:
                task.address = snapshot.addresses.get(task_id)
            if task.address is not None and not task.ready and not task.probing and self._nursery is not None:
                task.probing = True
                self._nursery.start_soon(self._probe, view, task)
        self._publish(view)
        moving = (
            len(live) + pending != view.replicas or pending > 0 or any(t.address is None for t in view.tasks.values())
        )
        signature = (view.replicas, pending, tuple(sorted((t.id, t.address is not None) for t in view.tasks.values())))
        if signature != view.signature:
            view.signature = signature
            view.poll_delay_s = POLL_INITIAL_S
        if moving:
            self._schedule_poll(view)
        else:
            view.poll_delay_s = POLL_INITIAL_S

    def _tombstone(self, task_id: str) -> None:
        self._tombstones[task_id] = None
        while len(self._tombstones) > TOMBSTONES_MAX:
            self._tombstones.popitem(last=False)

    def _bury(self, name: str, task_id: str, why: str) -> None:
        """A task's container is dying: unpublish it now, and never again."""
        self._tombstone(task_id)
        view = self._views.get(name)
        task = view.tasks.pop(task_id, None) if view is not None else None
        if view is not None and task is not None:
            task.gone = True
            if task.ready:
                event(log, logging.INFO, "replica unpublished", function=name, replica=task_id, reason=why)
            self._publish(view)

    def _note_loss(self, name: str, task_id: str, action: str, exit_code: object) -> None:
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

    def _drop_view(self, name: str) -> None:
        view = self._views.pop(name, None)
        if view is None:
            return
        for task in view.tasks.values():
            task.gone = True
        self._registry.publish(name, ())

    def _publish(self, view: _View) -> None:
        if self._views.get(view.name) is not view:
            return
        ready = sorted((task for task in view.tasks.values() if task.ready and task.address), key=lambda t: t.slot)
        if ready or view.replicas == 0:
            view.unready_since, view.last_loss, view.loss_task = None, "", ""
        elif view.unready_since is None:
            view.unready_since = trio.current_time()
        self._registry.publish(
            view.name, [Endpoint(t.address[0], t.address[1], t.id, call_token=t.call_token) for t in ready if t.address]
        )

    async def _probe(self, view: _View, task: _Task) -> None:
        """Publish ``task`` once its watchdog answers ``GET /_/health`` with 200; stop if it goes away."""
        assert task.address is not None
        host, port = task.address
        try:
            while not task.gone:
                if await _health_ok(host, port):
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
                    self._publish(view)
                    return
                slow = trio.current_time() - task.seen_at > PROBE_SLOW_AFTER_S
                await trio.sleep(PROBE_SLOW_INTERVAL_S if slow else PROBE_INTERVAL_S)
        finally:
            task.probing = False

    # -- operations ---------------------------------------------------------------------------------

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        check_spec(spec)
        async with self._locks.hold(spec.name):
            image = await self._resolve_image(spec.image or self._default_image)
            secrets = await self._docker_secrets(spec.secrets)
            network = await self._ensure_network()
            document = service_spec(
                spec,
                image=image,
                replicas=replicas,
                network=network,
                route=await self._current_route(),
                secrets=secrets,
                stop_grace_s=self._stop_grace_s,
                extra_labels=self._extra_labels,
                call_token=await self._call_token_ref(),
            )
            existing = await self._inspect(spec.name, must_exist=False)
            if existing is None:
                await self._docker(f"creating {spec.name}", functools.partial(_create_service, document=document))
                event(log, logging.INFO, "service created", function=spec.name, replicas=replicas, image=image[:19])
            else:
                old = spec_from_service(existing)
                await self._docker(
                    f"updating {spec.name}", functools.partial(_update_service, name=spec.name, document=document)
                )
                event(log, logging.INFO, "service replaced", function=spec.name, replicas=replicas, image=image[:19])
                self._collect_secrets(old.secrets)
            self._mark_dirty(spec.name)
            self._collect_secrets(spec.secrets)

    async def update(self, spec: FunctionSpec) -> None:
        check_spec(spec)
        async with self._locks.hold(spec.name):
            existing = await self._inspect(spec.name)
            assert existing is not None
            replicas = ((existing["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
            image = await self._resolve_image(spec.image or self._default_image)
            secrets = await self._docker_secrets(spec.secrets)
            network = await self._ensure_network()
            document = service_spec(
                spec,
                image=image,
                replicas=int(replicas),
                network=network,
                route=await self._current_route(),
                secrets=secrets,
                stop_grace_s=self._stop_grace_s,
                extra_labels=self._extra_labels,
                call_token=await self._call_token_ref(),
            )
            document["Mode"] = existing["Spec"].get("Mode") or document["Mode"]
            old = spec_from_service(existing)
            await self._docker(
                f"updating {spec.name}", functools.partial(_update_service, name=spec.name, document=document)
            )
            event(log, logging.INFO, "service updated", function=spec.name, image=image[:19])
            self._mark_dirty(spec.name)
            self._collect_secrets((*old.secrets, *spec.secrets))

    async def remove(self, name: str) -> None:
        validate_name(name, "function name")
        async with self._locks.hold(name):
            existing = await self._inspect(name)
            assert existing is not None
            self._drop_view(name)
            await self._docker(
                f"removing {name}",
                lambda api: api.remove_service(existing["ID"]),
                not_found=f"No such function: {name}",
            )
            event(log, logging.INFO, "service removed", function=name)
            self._collect_secrets(spec_from_service(existing).secrets)

    async def scale(self, name: str, replicas: int) -> None:
        """Set the service's replica count through its raw spec (never ``Service.scale()``)."""
        validate_name(name, "function name")
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        async with self._locks.hold(name):
            await self._docker(
                f"scaling {name}",
                functools.partial(_scale_service, name=name, replicas=replicas, rule=self._rule),
                not_found=f"No such function: {name}",
            )
        event(log, logging.DEBUG, "service scaled", function=name, replicas=replicas)
        self._mark_dirty(name)

    async def list(self) -> list[FunctionStatus]:
        """Every function service, its desired replicas, and the ready ones as faasd probed them.

        Before dockerd was ever reached the answer is empty rather than an error, so a daemon started
        while Docker is down comes up (degraded) and adopts the functions once it is back.
        """
        try:
            services = await self._docker("listing functions", lambda api: api.services())
        except BackendUnavailable:
            if self._connected_once:
                raise
            return []
        statuses = []
        rule = self._rule
        for service in services:
            name = rule.name(service)
            if name is None:
                continue
            try:
                statuses.append(self._status(service))
            except InvalidRequest as exc:
                event(log, logging.DEBUG, "service ignored", service=name, error=exc.message)
        return sorted(statuses, key=lambda status: status.name)

    async def status(self, name: str) -> FunctionStatus:
        validate_name(name, "function name")
        existing = await self._inspect(name)
        assert existing is not None
        return self._status(existing)

    def _status(self, service: dict[str, Any]) -> FunctionStatus:
        spec = spec_from_service(service)
        mode = (service.get("Spec") or {}).get("Mode") or {}
        view = self._views.get(spec.name)
        available = sum(1 for task in view.tasks.values() if task.ready) if view is not None else 0
        replicated = mode.get("Replicated")
        replicas = int(replicated.get("Replicas", 0)) if replicated else available
        reason = self._not_ready_reason(view) if view is not None and not available else ""
        return FunctionStatus(
            spec=spec,
            replicas=replicas,
            available_replicas=available,
            created_at=parse_docker_time(str(service.get("CreatedAt", ""))),
            state="failed" if reason else "deployed",
            reason=reason,
        )

    def _not_ready_reason(self, view: _View) -> str:
        """Why a function has had no ready replica for :data:`NOT_READY_FAILED_S`, or "" (it may still be
        starting): a replica running that long that does not answer, else why the last one went away."""
        now = trio.current_time()
        if view.unready_since is None or now - view.unready_since < NOT_READY_FAILED_S:
            return ""
        for task in sorted(view.tasks.values(), key=lambda task: task.seen_at):
            waited = now - task.seen_at
            if waited < NOT_READY_FAILED_S:
                continue
            replica = f"replica {task.id[:12]}"
            if task.address is None and self._route == "host-port":
                return (
                    f"{replica} publishes no host-mode port for {WATCHDOG_PORT}, the only way a daemon on the host "
                    f"reaches it: docker service update --publish-add mode=host,target={WATCHDOG_PORT} {view.name}, "
                    f"or run the daemon in a container on network {self._network}"
                )
            if task.address is None:
                return f"{replica} has no address on network {self._network}"
            host, port = task.address
            return (
                f"{replica} has not answered GET /_/health on {host}:{port} for {waited:.0f}s: a function runs "
                f"a watchdog (faasd's or OpenFaaS's) listening on port {WATCHDOG_PORT}"
            )
        return view.last_loss

    async def _inspect(self, name: str, *, must_exist: bool = True) -> dict[str, Any] | None:
        """The service named ``name`` if it is a function; None or FunctionNotFound otherwise.

        Raises:
            FunctionNotFound: no such function and ``must_exist``.
            Conflict: a service of that name exists but is not a function (only when not ``must_exist``:
                deploy must not take it over).
        """
        missing = f"No such function: {name}"
        try:
            service: dict[str, Any] = await self._docker(
                f"inspecting {name}", lambda api: api.inspect_service(name), not_found=missing
            )
        except FunctionNotFound:
            if must_exist:
                raise
            return None
        if (service.get("Spec") or {}).get("Name") != name:
            # inspect also matches an ID or an ID prefix: only the exact name counts.
            if must_exist:
                raise FunctionNotFound(missing)
            return None
        if self._rule.name(service) is None:
            if must_exist:
                raise FunctionNotFound(missing)
            raise Conflict(
                f"a Swarm service named {name} exists and is not a function (no com.openfaas.function label, "
                f"not on network {self._network}, or this daemon's own service)"
            )
        return service

    async def _resolve_image(self, reference: str) -> str:
        """The image ID ``reference`` names on this engine (the reference itself when pulling is allowed).

        Raises:
            InvalidRequest: the image is not on this engine and ``pull`` is off.
        """

        def resolve(api: docker.APIClient) -> str | None:
            try:
                return str(api.inspect_image(reference)["Id"])
            except docker.errors.ImageNotFound:
                return None

        image_id = await self._docker(f"inspecting image {reference}", resolve)
        if image_id is not None:
            return image_id
        if self._pull:
            return reference
        raise InvalidRequest(
            f"image {reference} is not on this Docker engine; build it ('faasd build-base', 'faasd build DIR') "
            "or load it ('docker load'); faasd pulls from registries only with swarm_pull = true"
        )

    async def _ensure_network(self) -> str:
        """The overlay network's ID, creating it (attachable, labelled) when missing."""
        async with self._network_lock:
            network_id = await self._docker(
                f"preparing network {self._network}", functools.partial(_ensure_network, name=self._network)
            )
        if network_id not in self._rule.networks:
            self._rule = dataclasses.replace(self._rule, networks=self._rule.networks | {network_id})
        return network_id

    async def _adopt_call_token(self) -> None:
        """Use the swarm's call token (making it from ours when the swarm has none yet)."""
        token = self._call_token
        if token is None:
            return
        labels = {LABEL_OWNER: SECRET_OWNER, CALL_TOKEN_LABEL: "true", **self._extra_labels}
        value = await self._docker(
            "reading the call token", functools.partial(_swarm_call_token, value=token.value, labels=labels)
        )
        if value != token.value:
            try:
                token.set(value)
            except TokenError as exc:
                event(log, logging.ERROR, f"Docker config {CALL_TOKEN_CONFIG} is not a call token", error=str(exc))
                return
            event(log, logging.INFO, "using the swarm's call token", config=CALL_TOKEN_CONFIG)

    async def _call_token_ref(self) -> SecretRef | None:
        """The Docker secret holding the call token for the services deployed now (made when missing;
        the swarm's copy is made again too if someone removed it)."""
        token = self._call_token
        if token is None:
            return None
        await self._adopt_call_token()
        docker_name = call_token_secret_name(token.value)
        labels = {LABEL_OWNER: SECRET_OWNER, CALL_TOKEN_LABEL: "true", **self._extra_labels}
        docker_id = await self._docker(
            "creating the call token secret",
            functools.partial(_ensure_secret, docker_name=docker_name, value=token.value, labels=labels),
        )
        return SecretRef(name="", docker_id=docker_id, docker_name=docker_name)

    async def _docker_secrets(self, names: Sequence[str]) -> list[SecretRef]:
        """A Docker secret per faasd secret, named after a digest of its value (created when missing).

        Raises:
            InvalidRequest: a secret is not in the daemon's store (the message names it).
        """
        refs = []
        for name in names:
            value = await self._secrets(name) if self._secrets is not None else None
            if value is None:
                raise InvalidRequest(f"secret {name!r} not found; create it first (POST /system/secrets)")
            docker_name = secret_version(name, value)
            labels = {LABEL_OWNER: SECRET_OWNER, LABEL_SECRET: name, **self._extra_labels}
            docker_id = await self._docker(
                f"creating secret {name}",
                functools.partial(_ensure_secret, docker_name=docker_name, value=value, labels=labels),
            )
            refs.append(SecretRef(name=name, docker_id=docker_id, docker_name=docker_name))
        return refs

    def _collect_secrets(self, names: Sequence[str]) -> None:
        """In the background: remove versions of these secrets no service uses any more."""
        if not names or self._nursery is None:
            return

        async def collect() -> None:
            try:
                removed = await self._docker(
                    "removing unused secrets", functools.partial(_remove_unused_secrets, names=set(names))
                )
            except FaasdError as exc:
                event(log, logging.DEBUG, "secret cleanup failed", error=exc.message)
                return
            if removed:
                event(log, logging.DEBUG, "unused secret versions removed", secrets=",".join(removed))

        self._nursery.start_soon(collect)

    # -- logs ---------------------------------------------------------------------------------------

    async def logs(self, request: LogRequest) -> AsyncIterator[LogMessage]:  # type: ignore[override]
        """Lines of the function's tasks (``docker service logs`` with details), oldest first.

        Without ``follow``: at most ``tail`` (else :data:`LOG_LINES_MAX`) lines, merged across tasks by
        time. With ``follow``: the last ``tail`` lines of each task, then new lines as they come.

        Resource handling:
            A follower reads in a worker thread; closing the iterator closes the Docker stream from the
            trio side, which ends the thread before ``aclose`` returns.
        """
        validate_name(request.name, "function name")
        await self._inspect(request.name)
        if not request.follow:
            lines = await self._docker(
                f"reading logs of {request.name}",
                functools.partial(_read_logs, request=request),
                not_found=f"No such function: {request.name}",
            )
            for message in lines:
                yield message
            return
        if self._nursery is None:
            raise BackendUnavailable("the swarm backend is not running")
        stream = await self._docker(
            f"following logs of {request.name}",
            functools.partial(_open_logs, request=request),
            not_found=f"No such function: {request.name}",
        )
        send, receive = trio.open_memory_channel[LogMessage](FOLLOW_BUFFER_LINES)
        done = trio.Event()

        def pump() -> None:
            with send:
                for message in _messages(stream, request):
                    try:
                        trio.from_thread.run(send.send, message)
                    except (trio.BrokenResourceError, trio.RunFinishedError):
                        return

        async def read() -> None:
            try:
                await _drain_in_thread(stream, pump, f"logs of {request.name}")
            finally:
                send.close()
                done.set()

        # The reader runs in the provider's nursery: an async generator must not hold a nursery open
        # across its yields (it runs in its consumer's task and cancel scopes).
        self._nursery.start_soon(read)
        try:
            async with receive:
                async for message in receive:
                    yield message
        finally:
            _close_stream(stream)
            with trio.CancelScope(shield=True):
                await done.wait()

    async def aclose(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            api.close()


class _NotManager(Exception):
    """The engine answers but cannot run services (no swarm, or a worker node)."""


# -- blocking helpers (run in worker threads) -------------------------------------------------------


def _first_leaf(group: BaseExceptionGroup[FaasdError]) -> FaasdError:
    """The first exception in ``group`` (nested nurseries nest groups)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, FaasdError)
    return exc


def _close_stream(stream: docker.types.CancellableStream) -> None:
    """Close a Docker stream from any thread: shuts its socket down so a blocked read returns."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.close()


async def _drain_in_thread(stream: docker.types.CancellableStream, pump: Callable[[], None], what: str) -> None:
    """Run ``pump`` (blocking reads of ``stream``) in a worker thread until it returns.

    Resource handling:
        The thread gets a limiter of its own (it is held for the stream's whole life and must not
        starve the API calls). When the caller is cancelled, a sibling task closes ``stream``, the
        blocked read fails, the thread returns, and only then does the cancellation go on: no thread
        outlives this call.

    Error handling:
        A read error ends the stream like its end does (logged at debug level): the caller decides
        what an ended stream means.
    """

    def guarded() -> None:
        try:
            pump()
        except Exception as exc:  # A thread boundary: whatever broke the read ends the stream.
            event(log, logging.DEBUG, "stream ended with an error", stream=what, error=_first_line(exc))

    async def close_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            _close_stream(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_on_cancel)
        try:
            await trio.to_thread.run_sync(guarded, limiter=trio.CapacityLimiter(1))
        finally:
            nursery.cancel_scope.cancel()


def _read_function(
    api: docker.APIClient,
    *,
    name: str,
    known: Mapping[str, tuple[str, int]],
    route: str,
    network: str,
    rule: FunctionRule,
) -> _Snapshot:
    try:
        service = api.inspect_service(name)
    except docker.errors.NotFound:
        return _Snapshot(None, [], {})
    if (service.get("Spec") or {}).get("Name") != name or rule.name(service) is None:
        return _Snapshot(None, [], {})
    tasks = api.tasks(filters={"service": service["ID"], "desired-state": "running"})
    return _Snapshot(service, tasks, _addresses(api, tasks, known, route, network))


def _read_all(
    api: docker.APIClient, *, known: Mapping[str, tuple[str, int]], route: str, network: str, rule: FunctionRule
) -> tuple[FunctionRule, dict[str, _Snapshot]]:
    """Every function and its tasks; with the rule brought up to date (the network may have been made
    again, with a new ID, by hand)."""
    rule = dataclasses.replace(rule, networks=network_ids(api, network))
    services = {service["ID"]: service for service in api.services() if rule.name(service) is not None}
    by_service: dict[str, list[dict[str, Any]]] = {service_id: [] for service_id in services}
    for task in api.tasks(filters={"desired-state": "running"}):
        if task.get("ServiceID") in by_service:
            by_service[task["ServiceID"]].append(task)
    result = {}
    for service_id, service in services.items():
        tasks = by_service[service_id]
        result[service["Spec"]["Name"]] = _Snapshot(service, tasks, _addresses(api, tasks, known, route, network))
    return rule, result


def _addresses(
    api: docker.APIClient,
    tasks: Sequence[dict[str, Any]],
    known: Mapping[str, tuple[str, int]],
    route: str,
    network: str,
) -> dict[str, tuple[str, int]]:
    """Where each live task answers: 127.0.0.1 and its host-mode port, or its overlay address."""
    result: dict[str, tuple[str, int]] = {}
    for task in tasks:
        status = task.get("Status") or {}
        if status.get("State") not in LIVE_STATES:
            continue
        task_id = task["ID"]
        if task_id in known:
            result[task_id] = known[task_id]
            continue
        address = _overlay_address(task, network) if route == "overlay-dns" else _published_port(api, task)
        if address is not None:
            result[task_id] = address
    return result


def _overlay_address(task: Mapping[str, Any], network: str) -> tuple[str, int] | None:
    for attachment in task.get("NetworksAttachments") or []:
        spec = (attachment.get("Network") or {}).get("Spec") or {}
        if spec.get("Name") == network or (attachment.get("Network") or {}).get("ID") == network:
            for address in attachment.get("Addresses") or []:
                return str(address).split("/", 1)[0], WATCHDOG_PORT
    return None


def _published_port(api: docker.APIClient, task: Mapping[str, Any]) -> tuple[str, int] | None:
    """The host-mode port of the watchdog: from the task once Swarm reports it (after the first health
    check), else from the container, which has it from its start."""
    status = task.get("Status") or {}
    for port in (status.get("PortStatus") or {}).get("Ports") or []:
        if port.get("TargetPort") == WATCHDOG_PORT and port.get("PublishedPort"):
            return LOCALHOST, int(port["PublishedPort"])
    container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
    if not container_id:
        return None
    try:
        container = api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    bindings = ((container.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{WATCHDOG_PORT}/tcp") or []
    for binding in bindings:
        if binding.get("HostPort"):
            return LOCALHOST, int(binding["HostPort"])
    return None


def _create_service(api: docker.APIClient, *, document: dict[str, Any]) -> None:
    api.create_service(
        document["TaskTemplate"],
        name=document["Name"],
        labels=document["Labels"],
        mode=document["Mode"],
        update_config=document["UpdateConfig"],
        rollback_config=document["RollbackConfig"],
        endpoint_spec=document["EndpointSpec"],
    )


def _write_spec(api: docker.APIClient, service: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """``POST /services/{id}/update`` with exactly ``spec`` (no defaults filled in, nothing fetched)."""
    api.update_service(
        service["ID"],
        service["Version"]["Index"],
        task_template=spec.get("TaskTemplate"),
        name=spec.get("Name"),
        labels=spec.get("Labels") or {},
        mode=spec.get("Mode"),
        update_config=spec.get("UpdateConfig"),
        rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )


def _retry_out_of_sequence(change: Callable[[], None]) -> None:
    for attempt in range(UPDATE_RETRIES):
        try:
            change()
            return
        except docker.errors.APIError as exc:
            if not _out_of_sequence(exc) or attempt == UPDATE_RETRIES - 1:
                raise


def _update_service(api: docker.APIClient, *, name: str, document: dict[str, Any]) -> None:
    def change() -> None:
        _write_spec(api, api.inspect_service(name), document)

    _retry_out_of_sequence(change)


def _scale_service(api: docker.APIClient, *, name: str, replicas: int, rule: FunctionRule) -> None:
    """Rewrite the raw spec with a new replica count: the task template is passed back untouched, so
    Swarm starts or stops tasks and restarts none."""

    def change() -> None:
        service = api.inspect_service(name)  # raw: without insertDefaults
        spec = service["Spec"]
        if (spec.get("Name") != name) or rule.name(service) is None:
            raise docker.errors.NotFound(f"no function {name}")
        if "Replicated" not in (spec.get("Mode") or {}):
            raise docker.errors.APIError(f"{name} is a global service", explanation=f"{name} is a global service")
        if int(spec["Mode"]["Replicated"].get("Replicas", 0)) == replicas:
            return
        _write_spec(api, service, {**spec, "Mode": {"Replicated": {"Replicas": replicas}}})

    _retry_out_of_sequence(change)


def _ensure_network(api: docker.APIClient, *, name: str) -> str:
    networks = [network for network in api.networks(names=[name]) if network.get("Name") == name]
    for network in networks:
        if network.get("Scope") == "swarm":
            return str(network["Id"])
    if networks:
        raise InvalidRequest(f"network {name} exists but is not a swarm-scoped overlay network")
    created = api.create_network(
        name,
        driver="overlay",
        attachable=True,
        labels={LABEL_OWNER: SECRET_OWNER, "openfaas": "true"},
        check_duplicate=True,
    )
    event(log, logging.INFO, "network created", network=name)
    return str(created["Id"])


def _ensure_secret(api: docker.APIClient, *, docker_name: str, value: bytes, labels: dict[str, str]) -> str:
    for secret in api.secrets(filters={"name": docker_name}):
        if (secret.get("Spec") or {}).get("Name") == docker_name:
            return str(secret["ID"])
    try:
        return str(api.create_secret(docker_name, value, labels=labels)["ID"])
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
    for secret in api.secrets(filters={"name": docker_name}):  # Created concurrently by someone else.
        if (secret.get("Spec") or {}).get("Name") == docker_name:
            return str(secret["ID"])
    raise BackendError(f"secret {docker_name} exists and cannot be read")


def _swarm_call_token(api: docker.APIClient, *, value: bytes, labels: dict[str, str]) -> bytes:
    """The call token kept in the swarm (Docker config ``faasd-call-token``); made from ``value`` when
    the swarm has none. Readable only through the Docker API, which is root on the host anyway."""
    for _ in range(2):
        for config in api.configs(filters={"name": CALL_TOKEN_CONFIG}):
            if (config.get("Spec") or {}).get("Name") == CALL_TOKEN_CONFIG:
                data = (api.inspect_config(config["ID"]).get("Spec") or {}).get("Data") or ""
                return base64.b64decode(data)
        try:
            api.create_config(CALL_TOKEN_CONFIG, value, labels=labels)
            return value
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise  # 409: another daemon made it meanwhile; read theirs.
    raise BackendError(f"Docker config {CALL_TOKEN_CONFIG} exists and cannot be read")


def _remove_unused_secrets(api: docker.APIClient, *, names: set[str]) -> list[str]:
    """Remove faasd's Docker secrets for ``names`` that no service references (Docker refuses the
    removal of one in use: that refusal is the check)."""
    used = set()
    for service in api.services():
        container = ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
        used.update(ref.get("SecretID") for ref in container.get("Secrets") or [])
    removed = []
    for secret in api.secrets(filters={"label": f"{LABEL_OWNER}={SECRET_OWNER}"}):
        labels = (secret.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_SECRET) not in names or secret["ID"] in used:
            continue
        try:
            api.remove_secret(secret["ID"])
            removed.append(secret["Spec"]["Name"])
        except docker.errors.APIError:
            continue  # Taken into use meanwhile.
    return removed


def _log_params(request: LogRequest, follow: bool) -> dict[str, Any]:
    params: dict[str, Any] = {
        "details": True,
        "follow": follow,
        "stdout": True,
        "stderr": True,
        "timestamps": True,
        "tail": str(request.tail) if request.tail > 0 else ("all" if follow else str(LOG_LINES_MAX)),
    }
    if request.since is not None:
        moment = request.since.astimezone(UTC)
        params["since"] = f"{math.floor(moment.timestamp())}.{moment.microsecond * 1000:09d}"
    return params


def _open_logs(api: docker.APIClient, *, request: LogRequest) -> docker.types.CancellableStream:
    """A following ``/services/{name}/logs`` stream that can be closed from another thread.

    docker-py's ``service_logs`` returns a bare generator that cannot be interrupted, so this makes the
    same request and wraps the response in the SDK's ``CancellableStream`` (as ``events`` does).
    """
    response = api._get(
        api._url("/services/{0}/logs", request.name),
        params=_log_params(request, follow=True),
        stream=True,
    )
    api._raise_for_status(response)
    return docker.types.CancellableStream(api._multiplexed_response_stream_helper(response), response)


def _messages(chunks: Iterator[bytes] | docker.types.CancellableStream, request: LogRequest) -> Iterator[LogMessage]:
    """Log frames -> LogMessages of ``request`` (instance and since filters applied)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            message = _message(line, request)
            if message is not None:
                yield message
    if pending:
        message = _message(pending, request)
        if message is not None:
            yield message


def _message(line: bytes, request: LogRequest) -> LogMessage | None:
    parsed = parse_log_line(line.decode("utf-8", "replace").rstrip("\r"))
    if parsed is None:
        return None
    timestamp, task_id, text = parsed
    if request.instance and task_id != request.instance:
        return None
    if request.since is not None and timestamp < request.since:
        return None
    return LogMessage(name=request.name, instance=task_id, timestamp=timestamp, text=text)


def _read_logs(api: docker.APIClient, *, request: LogRequest) -> list[LogMessage]:
    """The kept lines of every task, merged by time; the last ``tail`` of them when asked."""
    params = _log_params(request, follow=False)
    chunks = api.service_logs(
        request.name,
        details=True,
        follow=False,
        stdout=True,
        stderr=True,
        timestamps=True,
        since=params.get("since"),
        tail=params["tail"],
        is_tty=False,
    )
    messages = sorted(_messages(chunks, request), key=lambda message: message.timestamp)
    limit = request.tail if request.tail > 0 else LOG_LINES_MAX
    return messages[-limit:]


async def _health_ok(host: str, port: int) -> bool:
    """True when the watchdog at ``host:port`` answers ``GET /_/health`` with 200 (fresh connection).

    The connection gets :data:`PROBE_CONNECT_TIMEOUT_S`, the answer :data:`PROBE_TIMEOUT_S`: a new
    task's overlay address drops connection attempts (no refusal) for about a second after the task
    starts, and a probe that waited out the whole timeout there published the replica seconds late.
    """
    head = b""
    stream: trio.SocketStream | None = None
    with trio.move_on_after(PROBE_CONNECT_TIMEOUT_S):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
    if stream is None:
        return False
    with trio.move_on_after(PROBE_TIMEOUT_S):
        async with stream:
            try:
                await stream.send_all(HEALTH_REQUEST)
                while b"\r\n" not in head and len(head) < 256:
                    chunk = await stream.receive_some(256)
                    if not chunk:
                        break
                    head += chunk
            except (OSError, trio.BrokenResourceError):
                return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
