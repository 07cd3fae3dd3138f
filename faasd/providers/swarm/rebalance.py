"""Replicas spread again when a node comes back (or joins, or is made active).

Swarm places new tasks by the spread preference (:data:`.spec.SPREAD`) but never moves running ones:
after a node's loss its tasks are rescheduled on the others and stay there when it returns, so the
next loss would take them all at once. At each resync, a function whose replicas all run and are
ready, two or more, with none on an eligible node (ready and active) while another node runs two or
more of them, gets a rolling restart (``docker service update --force``: the task template's
``ForceUpdate`` counter). Its update config replaces one task at a time, the new one started and
healthy before the old one stops (``start-first``), and the spread preference places each new task on
the emptiest node: calls keep being answered, and the replicas end up spread.

Once per function and state of the nodes (:meth:`.nodes.Nodes.eligible_key`: the eligible nodes and
when each last changed): a function whose constraints keep it off a node is restarted at most once
each time a node comes back, not at every resync -- the price of not re-implementing Swarm's
constraint matching here.

Blocking: :func:`force_update` takes the docker SDK client (a worker thread, as :mod:`.services`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import docker
import docker.errors

from faasd.providers.swarm.services import retry_out_of_sequence, write_spec
from faasd.providers.swarm.spec import FunctionRule
from faasd.providers.swarm.views import View

__all__ = ["force_update", "to_rebalance"]


def to_rebalance(views: Iterable[View], eligible: frozenset[str]) -> list[str]:
    """Functions settled (every replica wanted runs and is ready, two or more) with no replica on an
    eligible node while some node runs two or more. Pure."""
    if len(eligible) < 2:
        return []
    names = []
    for view in views:
        tasks = list(view.tasks.values())
        if view.replicas < 2 or len(tasks) != view.replicas or not all(task.ready for task in tasks):
            continue
        placed = Counter(task.node for task in tasks)
        if any(placed[node] == 0 for node in eligible) and max(placed.values()) >= 2:
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
