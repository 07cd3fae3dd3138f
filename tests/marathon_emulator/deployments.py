"""Deployment plans: what ``/v2/deployments`` lists and what locks an app.

From `Application Deployments <https://mesosphere.github.io/marathon/docs/deployments.html>`_,
deployments.raml and the example ``deployments.json``: every change of an app (create, update, scale,
restart, delete) is a deployment with an id and a version; it is listed in ``GET /v2/deployments`` with
``affectedApps``, ``steps`` (each a list of actions ``{"action", "app"}``), ``currentActions``,
``currentStep`` and ``totalSteps`` until it finishes, then it is gone (and ``deployment_success`` is
published). While it runs, the apps it affects are locked: another change is refused with 409 unless
forced, which cancels it (``deployment_failed``).

The actions used here: ``StartApplication`` then ``ScaleApplication`` (a new app), ``ScaleApplication``
(only ``instances`` changed), ``RestartApplication`` (the configuration changed, or ``/restart``),
``StopApplication`` (delete). A change that changes nothing is a deployment without steps, finished at
once.

A deployment here is declarative: it records each affected app's definition before (``original``, for
the rollback of ``DELETE /v2/deployments/{id}``) and after (``target``); the scheduler
(:mod:`.scheduler`) drives the tasks and tells when the target is reached.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Deployment", "Kind"]

Kind = Literal["start", "scale", "restart", "stop", "none"]
_ACTIONS: dict[str, list[str]] = {
    "start": ["StartApplication", "ScaleApplication"],
    "scale": ["ScaleApplication"],
    "restart": ["RestartApplication"],
    "stop": ["StopApplication"],
    "none": [],
}


@dataclass(eq=False)
class Deployment:
    """One running deployment plan (for one app: the emulator has no group or bulk changes)."""

    app_id: str
    kind: Kind
    version: str
    original: dict[str, Any] | None
    target: dict[str, Any] | None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __repr__(self) -> str:
        return f"<Deployment {self.id} {self.kind} {self.app_id}>"

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [{"actions": [{"action": action, "app": self.app_id}]} for action in _ACTIONS[self.kind]]

    @property
    def current_step(self) -> int:
        """1-based; a new app's StartApplication step is done once the app is registered (at once)."""
        return len(self.steps) if self.steps else 0

    def plan_json(self) -> dict[str, Any]:
        """The plan as events carry it: ``id``, ``steps``, ``version``."""
        return {"id": self.id, "steps": self.steps, "version": self.version}

    def to_json(self) -> dict[str, Any]:
        """The entry of ``GET /v2/deployments``."""
        steps = self.steps
        current = steps[self.current_step - 1]["actions"] if steps else []
        return {
            "id": self.id,
            "version": self.version,
            "affectedApps": [self.app_id],
            "affectedPods": [],
            "steps": steps,
            "currentActions": [{**action, "readinessCheckResults": []} for action in current],
            "currentStep": self.current_step,
            "totalSteps": len(steps),
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "appId": self.app_id,
            "kind": self.kind,
            "version": self.version,
            "original": self.original,
            "target": self.target,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Deployment:
        return cls(state["appId"], state["kind"], state["version"], state["original"], state["target"], state["id"])
