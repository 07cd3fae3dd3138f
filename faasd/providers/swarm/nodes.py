"""The swarm's nodes, as the Swarm backend needs them: where a task's published port answers.

In the ``host-port`` route each task publishes the watchdog port in host mode on *its* node, so a
task is called at its node's address: the node's ``Status.Addr`` from the Swarm API (the address it
advertised when it joined; a manager that reports ``0.0.0.0`` there is taken at its
``ManagerStatus.Addr``). A task on the engine's own node -- the one the daemon talks to, normally
the one it runs on -- is called at 127.0.0.1 as before, so a single-node swarm needs nothing from
the network.

A node that is not ``ready`` (its dockerd stopped, its machine gone: the manager marks it ``down``
after missing its heartbeats) has its tasks unpublished (:mod:`.liveness` does it sooner, by probing
them), and those of a node whose engine refuses an image are named in the function's status
(:func:`rejection`).

Blocking: :func:`read_nodes` takes the docker SDK client (worker threads, as :mod:`.tasks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker

__all__ = ["LOCALHOST", "Node", "Nodes", "node_of", "read_nodes", "rejection"]

LOCALHOST = "127.0.0.1"
_UNSPECIFIED = frozenset({"", "0.0.0.0", "::"})
MISSING_IMAGE = ("No such image", "pull access denied", "manifest unknown")
"""How a node's engine says a task's image is not there (nor in a registry it may pull from)."""


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the swarm, as the manager reports it."""

    id: str
    hostname: str
    address: str
    """Where its host-mode published ports answer (``Status.Addr``)."""
    ready: bool
    """``Status.State`` is ``ready``: its engine talks to the managers."""
    active: bool = True
    """``Spec.Availability`` is ``active``: Swarm may place new tasks there (not ``pause`` or ``drain``)."""
    updated: str = ""
    """``UpdatedAt``: changes whenever the node's state does (down and back, drained and made active)."""


@dataclass(frozen=True, slots=True)
class Nodes:
    """Every node by ID, and which one is the engine's own (its tasks answer on 127.0.0.1)."""

    own: str = ""
    by_id: Mapping[str, Node] = field(default_factory=dict)

    def host(self, node_id: str) -> str:
        """The address a task on ``node_id`` is called at: 127.0.0.1 on the own node, else the node's
        address; "" for a node the swarm does not list (removed meanwhile) or that has none: such a task
        is not called at all -- 127.0.0.1 and its port could be anything on this node."""
        if not node_id or node_id == self.own:
            return LOCALHOST
        node = self.by_id.get(node_id)
        return node.address if node is not None else ""

    def name(self, node_id: str) -> str:
        """The node's hostname for messages (its short ID when unknown)."""
        node = self.by_id.get(node_id)
        return node.hostname if node is not None and node.hostname else node_id[:12] or "?"

    def down(self) -> frozenset[str]:
        """IDs of the nodes that are not ready."""
        return frozenset(node.id for node in self.by_id.values() if not node.ready)

    def eligible(self) -> frozenset[str]:
        """IDs of the nodes new tasks may go to (ready and active)."""
        return frozenset(node.id for node in self.by_id.values() if node.ready and node.active)

    def eligible_key(self) -> frozenset[tuple[str, str]]:
        """The eligible nodes and when each last changed: differs after any node came back."""
        return frozenset((node.id, node.updated) for node in self.by_id.values() if node.ready and node.active)

    def knows(self, node_id: str) -> bool:
        return not node_id or node_id == self.own or node_id in self.by_id


def node_address(node: Mapping[str, Any]) -> str:
    """``Status.Addr``, or the manager's advertised address when that is unspecified. Pure."""
    address = str((node.get("Status") or {}).get("Addr") or "")
    if address in _UNSPECIFIED:
        manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
        address = manager.rsplit(":", 1)[0] if manager else ""
    return "" if address in _UNSPECIFIED else address


def parse_nodes(own: str, nodes: list[dict[str, Any]]) -> Nodes:
    """:class:`Nodes` from ``GET /nodes``. Pure."""
    by_id = {}
    for node in nodes:
        node_id = str(node.get("ID") or "")
        if not node_id:
            continue
        by_id[node_id] = Node(
            id=node_id,
            hostname=str((node.get("Description") or {}).get("Hostname") or ""),
            address=node_address(node),
            ready=(node.get("Status") or {}).get("State") == "ready",
            active=(node.get("Spec") or {}).get("Availability", "active") == "active",
            updated=str(node.get("UpdatedAt") or ""),
        )
    return Nodes(own=own, by_id=by_id)


def read_nodes(api: docker.APIClient) -> Nodes:
    """Every node and the engine's own node ID. Blocking: two API calls."""
    own = str(((api.info() or {}).get("Swarm") or {}).get("NodeID") or "")
    return parse_nodes(own, api.nodes())


def node_of(task: Mapping[str, Any]) -> str:
    return str(task.get("NodeID") or "")


def rejection(task: Mapping[str, Any], nodes: Nodes) -> str:
    """Why a task that ended before running could not start on its node, naming the node, or "": a
    missing image is the usual one on a swarm of several nodes without a registry. Pure."""
    status = task.get("Status") or {}
    if status.get("State") not in {"rejected", "failed"}:
        return ""
    error = str(status.get("Err") or "")
    if not any(sign in error for sign in MISSING_IMAGE):
        return ""
    node = nodes.name(node_of(task))
    return (
        f"replica {str(task.get('ID', ''))[:12]} cannot start on node {node}: {error}; the function's image must be "
        "on every node that may run it: give the daemon that node's engine (swarm_engines) so deploys copy it "
        "there, load it there yourself (docker save | docker load), or use a registry (swarm_pull = true)"
    )
