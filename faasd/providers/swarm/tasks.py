"""What the Swarm backend reads from dockerd: a function's service and tasks, and where each task answers.

Blocking functions taking the docker SDK client first, run in worker threads by the discovery
(:mod:`.discovery`). A read returns a :class:`Snapshot` that :meth:`.views.Views.apply` brings the
view of a function in line with. Where a task answers depends on the route: its node's address
(127.0.0.1 on the engine's own node, :mod:`.nodes`) and the watchdog's host-mode published port
(``host-port``), or its address on the functions network and port 8080 (``overlay-dns``). A task on
another node whose engine is among ``swarm_engines`` (:class:`.engines.Engines`) has its port read from
that engine as soon as its container runs, not after Swarm's first health check reports it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests

from faasd.providers.swarm.nodes import LOCALHOST, Nodes, node_of, read_nodes, rejection
from faasd.providers.swarm.placement import network_ids
from faasd.providers.swarm.spec import WATCHDOG_PORT, FunctionRule

__all__ = [
    "LIVE_STATES",
    "PENDING_STATES",
    "Snapshot",
    "addresses",
    "read_all",
    "read_function",
]

NodeEngine = Callable[[str], "docker.APIClient | None"]
"""Node ID -> a client of that node's engine, when the daemon has one (blocking)."""

LIVE_STATES = frozenset({"starting", "running"})
PENDING_STATES = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of a function from Docker (made in a worker thread)."""

    service: dict[str, Any] | None
    tasks: list[dict[str, Any]]
    addresses: dict[str, tuple[str, int]]
    rejections: dict[str, str] = dataclasses.field(default_factory=dict)
    """Task ID -> why it could not start on its node (:func:`.nodes.rejection`), for tasks that ended so."""
    nodes: Nodes | None = None
    """The nodes as read with it (None: not read again)."""


def read_function(
    api: docker.APIClient,
    *,
    name: str,
    known: Mapping[str, tuple[str, int]],
    route: str,
    network: str,
    rule: FunctionRule,
    nodes: Nodes,
    engines: NodeEngine | None = None,
) -> Snapshot:
    """One function's service and tasks; the nodes are read again when a task runs on one not known."""
    try:
        service = api.inspect_service(name)
    except docker.errors.NotFound:
        return Snapshot(None, [], {})
    if (service.get("Spec") or {}).get("Name") != name or rule.name(service) is None:
        return Snapshot(None, [], {})
    tasks = api.tasks(filters={"service": service["ID"], "desired-state": "running"})
    ended: list[dict[str, Any]] = []
    replicas = int((((service.get("Spec") or {}).get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0))
    if sum(1 for task in tasks if (task.get("Status") or {}).get("State") in LIVE_STATES) < replicas:
        # Short of replicas: a task that could not start (an image missing on its node) is replaced
        # at once, so its reason is on the tasks Swarm already shut down.
        ended = api.tasks(filters={"service": service["ID"], "desired-state": "shutdown"})
    fresh = None
    if not all(nodes.knows(node_of(task)) for task in (*tasks, *ended)):
        nodes = fresh = read_nodes(api)
    return Snapshot(
        service,
        tasks,
        addresses(api, tasks, known, route, network, nodes, engines),
        rejections((*tasks, *ended), nodes),
        fresh,
    )


def read_all(
    api: docker.APIClient,
    *,
    known: Mapping[str, tuple[str, int]],
    route: str,
    network: str,
    rule: FunctionRule,
    engines: NodeEngine | None = None,
) -> tuple[FunctionRule, Nodes, dict[str, Snapshot]]:
    """Every function and its tasks, and the nodes; with the rule brought up to date (the network may
    have been made again, with a new ID, by hand)."""
    rule = dataclasses.replace(rule, networks=network_ids(api, network))
    nodes = read_nodes(api)
    services = {service["ID"]: service for service in api.services() if rule.name(service) is not None}
    by_service: dict[str, list[dict[str, Any]]] = {service_id: [] for service_id in services}
    for task in api.tasks(filters={"desired-state": "running"}):
        if task.get("ServiceID") in by_service:
            by_service[task["ServiceID"]].append(task)
    result = {}
    for service_id, service in services.items():
        tasks = by_service[service_id]
        result[service["Spec"]["Name"]] = Snapshot(
            service, tasks, addresses(api, tasks, known, route, network, nodes, engines), rejections(tasks, nodes)
        )
    return rule, nodes, result


def addresses(
    api: docker.APIClient,
    tasks: Sequence[dict[str, Any]],
    known: Mapping[str, tuple[str, int]],
    route: str,
    network: str,
    nodes: Nodes,
    engines: NodeEngine | None = None,
) -> dict[str, tuple[str, int]]:
    """Where each live task answers: its node's address and its host-mode port, or its overlay address."""
    result: dict[str, tuple[str, int]] = {}
    for task in tasks:
        status = task.get("Status") or {}
        if status.get("State") not in LIVE_STATES:
            continue
        task_id = task["ID"]
        if task_id in known:
            result[task_id] = known[task_id]
            continue
        if route == "overlay-dns":
            address = overlay_address(task, network)
        else:
            node = node_of(task)
            host = nodes.host(node)
            local = not node or node == nodes.own
            engine = None if local or engines is None else functools.partial(engines, node)
            address = published_port(api, task, host, local=local, engine=engine) if host else None
        if address is not None:
            result[task_id] = address
    return result


def rejections(tasks: Sequence[dict[str, Any]], nodes: Nodes) -> dict[str, str]:
    """Task ID -> why it could not start on its node, for the tasks that ended so (missing image)."""
    found = {}
    for task in tasks:
        reason = rejection(task, nodes)
        if reason:
            found[task["ID"]] = reason
    return found


def overlay_address(task: Mapping[str, Any], network: str) -> tuple[str, int] | None:
    for attachment in task.get("NetworksAttachments") or []:
        spec = (attachment.get("Network") or {}).get("Spec") or {}
        if spec.get("Name") == network or (attachment.get("Network") or {}).get("ID") == network:
            for address in attachment.get("Addresses") or []:
                return str(address).split("/", 1)[0], WATCHDOG_PORT
    return None


def published_port(
    api: docker.APIClient,
    task: Mapping[str, Any],
    host: str = LOCALHOST,
    *,
    local: bool = True,
    engine: Callable[[], docker.APIClient | None] | None = None,
) -> tuple[str, int] | None:
    """The host-mode port of the watchdog on ``host`` (the task's node): from the task once Swarm
    reports it (after the first health check), else from the container, which has it from its start:
    on the engine's own node (``local``) through ``api``, on another node through its own engine, which
    ``engine()`` gives when the daemon has it (another node's containers are not on the manager's
    engine; asked only when the task does not say the port, as finding it may ask every engine)."""
    status = task.get("Status") or {}
    for port in (status.get("PortStatus") or {}).get("Ports") or []:
        if port.get("TargetPort") == WATCHDOG_PORT and port.get("PublishedPort"):
            return host, int(port["PublishedPort"])
    container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
    if not container_id:
        return None
    reader = api if local else (engine() if engine is not None else None)
    if reader is None:
        return None
    try:
        container = reader.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        if local:
            raise
        return None  # That node's engine is unreachable: Swarm's report of the port will do.
    bindings = ((container.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{WATCHDOG_PORT}/tcp") or []
    for binding in bindings:
        if binding.get("HostPort"):
            return host, int(binding["HostPort"])
    return None
