"""Replicas spread again when a node comes back (or joins, or is made active).

Swarm places new tasks by the spread preference (:data:`.spec.SPREAD`) but never moves running ones:
after a node's loss its tasks are rescheduled on the others and stay there when it returns, so the
next loss would take them all at once. When a node becomes eligible -- ready and active, and not so at
the previous read of the nodes -- each function with two or more replicas and none on that node gets a
rolling restart (``docker service update --force``: the task template's ``ForceUpdate`` counter).
Its update config replaces one task at a time, the new one started and healthy before the old one
stops (``start-first``), and the spread preference places each new task on the emptiest node: calls
keep being answered, and the replicas end up spread. A function whose constraints exclude the node
is restarted in place, once per such event: the price of not re-implementing Swarm's constraint
matching here.

Blocking: :func:`force_update` takes the docker SDK client (a worker thread, as :mod:`.services`).
"""

from __future__ import annotations

from collections.abc import Iterable

import docker
import docker.errors

from faasd.providers.swarm.nodes import Nodes
from faasd.providers.swarm.services import retry_out_of_sequence, write_spec
from faasd.providers.swarm.spec import FunctionRule
from faasd.providers.swarm.views import View

__all__ = ["force_update", "newly_eligible", "to_rebalance"]


def newly_eligible(before: Nodes, after: Nodes) -> frozenset[str]:
    """Nodes eligible now that were not at the previous read; none at the first read (a daemon that
    starts restarts nothing). Pure."""
    if not before.by_id:
        return frozenset()
    was = before.eligible()
    return frozenset(node for node in after.eligible() if node not in was)


def to_rebalance(views: Iterable[View], nodes: frozenset[str]) -> list[str]:
    """Functions with two or more replicas wanted and no live task on one of ``nodes``. Pure."""
    if not nodes:
        return []
    names = []
    for view in views:
        if view.replicas < 2:
            continue
        placed = {task.node for task in view.tasks.values()}
        if any(node not in placed for node in nodes):
            names.append(view.name)
    return sorted(names)


def force_update(api: docker.APIClient, *, name: str, rule: FunctionRule) -> None:
    """``docker service update --force NAME``: the same spec, a new ``ForceUpdate`` counter."""

    def change() -> None:
        service = api.inspect_service(name)
        spec = service["Spec"]
        if spec.get("Name") != name or rule.name(service) is None:
            raise docker.errors.NotFound(f"no function {name}")
        template = dict(spec.get("TaskTemplate") or {})
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        write_spec(api, service, {**spec, "TaskTemplate": template})

    retry_out_of_sequence(change)
