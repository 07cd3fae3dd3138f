"""What the Swarm backend reads from dockerd: a function's service and tasks, and where each task answers.

Blocking functions taking the docker SDK client first, run in worker threads by the discovery
(:mod:`.discovery`). A read returns a :class:`Snapshot` that :meth:`.views.Views.apply` brings the
view of a function in line with. Where a task answers depends on the route: ``127.0.0.1`` and the
watchdog's host-mode published port (``host-port``), or its address on the functions network and
port 8080 (``overlay-dns``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

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

LOCALHOST = "127.0.0.1"

LIVE_STATES = frozenset({"starting", "running"})
PENDING_STATES = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of a function from Docker (made in a worker thread)."""

    service: dict[str, Any] | None
    tasks: list[dict[str, Any]]
    addresses: dict[str, tuple[str, int]]


def read_function(
    api: docker.APIClient,
    *,
    name: str,
    known: Mapping[str, tuple[str, int]],
    route: str,
    network: str,
    rule: FunctionRule,
) -> Snapshot:
    try:
        service = api.inspect_service(name)
    except docker.errors.NotFound:
        return Snapshot(None, [], {})
    if (service.get("Spec") or {}).get("Name") != name or rule.name(service) is None:
        return Snapshot(None, [], {})
    tasks = api.tasks(filters={"service": service["ID"], "desired-state": "running"})
    return Snapshot(service, tasks, addresses(api, tasks, known, route, network))


def read_all(
    api: docker.APIClient, *, known: Mapping[str, tuple[str, int]], route: str, network: str, rule: FunctionRule
) -> tuple[FunctionRule, dict[str, Snapshot]]:
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
        result[service["Spec"]["Name"]] = Snapshot(service, tasks, addresses(api, tasks, known, route, network))
    return rule, result


def addresses(
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
        address = overlay_address(task, network) if route == "overlay-dns" else published_port(api, task)
        if address is not None:
            result[task_id] = address
    return result


def overlay_address(task: Mapping[str, Any], network: str) -> tuple[str, int] | None:
    for attachment in task.get("NetworksAttachments") or []:
        spec = (attachment.get("Network") or {}).get("Spec") or {}
        if spec.get("Name") == network or (attachment.get("Network") or {}).get("ID") == network:
            for address in attachment.get("Addresses") or []:
                return str(address).split("/", 1)[0], WATCHDOG_PORT
    return None


def published_port(api: docker.APIClient, task: Mapping[str, Any]) -> tuple[str, int] | None:
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
