"""Where the daemon itself runs, for the Swarm backend: on the host, or in a container of its engine.

It decides two things without any configuration:

* **the route** (``swarm_route = auto``, the default). A daemon on the host calls each task's host-mode
  published port on 127.0.0.1 (``host-port``). A daemon in a container attached to the functions
  network -- the faas seed's ``docker run --network=functions ... gateway``, or a Swarm service on
  that network -- calls task addresses on that network (``overlay-dns``): 127.0.0.1 is the
  container's own loopback there. A container with the host's network (``--network host``) is like
  the host. A container on neither cannot reach any task: it keeps ``host-port`` and says so in a
  warning. ``swarm_route = host-port`` or ``overlay-dns`` overrides the choice.
* **its own service**: a daemon running as a Swarm service on the functions network is attached to
  it like a function would be; that service is never taken for a function (the autoscaler would
  scale the daemon itself).

How the own container is found: candidate IDs come from ``/proc/self/mountinfo`` -- Docker bind-mounts
``<data-root>/containers/<ID>/hostname`` (and ``hosts``, ``resolv.conf``) onto ``/etc`` in every
container, with cgroup v1 or v2 -- then ``/proc/self/cgroup`` (cgroup v1: ``.../docker/<ID>``), then,
only when ``/.dockerenv`` exists, the hostname (a container's default hostname is its short ID). Each
is looked up on the engine and taken only if that container runs and has our hostname: a daemon on
the host (whose mount table lists no such ``/etc`` mounts), or one talking to another engine, finds
none and uses ``host-port``.

Blocking (docker SDK and ``/proc`` reads): :func:`locate` runs in a worker thread.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

__all__ = ["Placement", "choose_route", "container_candidates", "locate", "network_ids"]

ETC_MOUNTS = frozenset({"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"})
_MOUNT_ROOT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)$")
_CGROUP_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
DOCKERENV = "/.dockerenv"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the daemon runs, and what follows from it."""

    route: str
    """``host-port`` or ``overlay-dns``."""
    reason: str
    """Where the daemon runs, in words (logged with the route)."""
    container: str = ""
    """The daemon's own container ID; empty on the host."""
    service: str = ""
    """The Swarm service that container is a task of; empty otherwise."""
    warning: bool = False
    """The route cannot work as things are (a container on neither the functions nor the host network)."""


def container_candidates(mountinfo: str, cgroup: str) -> list[str]:
    """Container IDs this process may run in, most reliable first, without duplicates. Pure.

    Args:
        mountinfo: the text of ``/proc/self/mountinfo``; only mounts onto ``/etc/hostname``,
            ``/etc/hosts`` or ``/etc/resolv.conf`` from a ``containers/<ID>/`` directory count (the
            host's own table lists each container's ``shm`` mount, which must not count).
        cgroup: the text of ``/proc/self/cgroup``.
    """
    found: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in ETC_MOUNTS:
            match = _MOUNT_ROOT.search(fields[3])
            if match and match.group(1) not in found:
                found.append(match.group(1))
    for line in cgroup.splitlines():
        path = line.split(":", 2)[-1]
        for match in _CGROUP_ID.finditer(path):
            if match.group(1) not in found:
                found.append(match.group(1))
    return found


def choose_route(container: Mapping[str, Any] | None, networks: Collection[str], network_name: str) -> Placement:
    """The route for a daemon in ``container`` (None: on the host). Pure.

    Args:
        networks: the functions network's name and ID.
        network_name: its name, for the messages.
    """
    if container is None:
        return Placement("host-port", "on the host")
    short = str(container.get("Id", ""))[:12]
    labels = (container.get("Config") or {}).get("Labels") or {}
    service = str(labels.get("com.docker.swarm.service.id", ""))
    attached: Mapping[str, Any] = (container.get("NetworkSettings") or {}).get("Networks") or {}
    for key, settings in attached.items():
        if key in networks or (settings or {}).get("NetworkID") in networks:
            return Placement(
                "overlay-dns",
                f"in container {short}, attached to network {network_name}",
                container=str(container.get("Id", "")),
                service=service,
            )
    if "host" in attached:
        return Placement(
            "host-port",
            f"in container {short}, on the host's network",
            container=str(container.get("Id", "")),
            service=service,
        )
    return Placement(
        "host-port",
        f"in container {short}, attached neither to network {network_name} nor to the host's network: it reaches "
        f"no task; attach it (docker network connect {network_name} {short}) or set swarm_route",
        container=str(container.get("Id", "")),
        service=service,
        warning=True,
    )


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read(1 << 20)
    except OSError:
        return ""


def network_ids(api: docker.APIClient, name: str) -> frozenset[str]:
    """``name`` and, when a swarm-scoped network of that name exists, its ID (a service names it by
    either). Blocking."""
    ids = {name}
    for network in api.networks(names=[name]):
        if network.get("Name") == name and network.get("Scope") == "swarm":
            ids.add(str(network["Id"]))
    return frozenset(ids)


def locate(
    api: docker.APIClient,
    *,
    networks: Collection[str],
    network_name: str,
    read: Callable[[str], str] = _read_text,
    exists: Callable[[str], bool] = os.path.exists,
    hostname: str | None = None,
) -> Placement:
    """Find the daemon's own container on the engine behind ``api`` and choose the route. Blocking.

    Args:
        read: a file's text, "" when it cannot be read; ``exists``: whether a file exists (tests pass
            their own).
        hostname: this process's hostname; default: :func:`socket.gethostname`.

    Raises:
        docker.errors.APIError, requests exceptions: the engine failed (the caller maps them).
    """
    hostname = socket.gethostname() if hostname is None else hostname
    candidates = container_candidates(read("/proc/self/mountinfo"), read("/proc/self/cgroup"))
    if hostname and hostname not in candidates and exists(DOCKERENV):
        candidates.append(hostname)
    for candidate in candidates:
        try:
            container = api.inspect_container(candidate)
        except docker.errors.APIError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500:
                continue  # No such container (or a hostname that is no container reference at all).
            raise
        if (container.get("Config") or {}).get("Hostname") != hostname:
            continue  # A container of that name or ID prefix, but not this process's.
        if not (container.get("State") or {}).get("Running"):
            continue
        return choose_route(container, networks, network_name)
    return choose_route(None, networks, network_name)
