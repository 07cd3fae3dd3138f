"""The emulator's state -- apps, their tasks, running deployments -- and the changes the API makes to it.

Every method here runs synchronously in the server's trio thread and does no I/O: it validates a change,
updates the state, opens a :class:`~.deployments.Deployment`, publishes the events and wakes the
scheduler (:mod:`.scheduler`), which then starts and kills real processes until the deployment's target
is reached.

What Marathon keeps in ZooKeeper is what :meth:`ClusterState.to_state` returns and a restarted emulator
reads back (:mod:`.store`): app definitions with their versions, running deployments, and the tasks
(with their process ids, so that tasks that outlived the emulator are adopted, see :mod:`.processes`).

Locking (`Application Deployments <https://mesosphere.github.io/marathon/docs/deployments.html>`_): a
change to an app that a running deployment affects is refused with 409 and the deployment ids, unless
``force=true``, which cancels those deployments (``deployment_failed``) -- ``DELETE /v2/apps/{id}``
forces by default, as in Marathon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.marathon_emulator import appdef, shapes
from tests.marathon_emulator.appdef import (
    SERVICE_PORT_MAX,
    SERVICE_PORT_MIN,
    config_of,
    public_json,
    service_ports,
)
from tests.marathon_emulator.clock import iso_now, new_version
from tests.marathon_emulator.deployments import Deployment, Kind
from tests.marathon_emulator.errors import ApiError, app_not_found, locked
from tests.marathon_emulator.events import EventBus
from tests.marathon_emulator.pathid import canonical
from tests.marathon_emulator.tasks import AGENT_ID, Task

__all__ = ["AppRecord", "ClusterState"]

log = logging.getLogger(__name__)

MAX_VERSIONS = 50
"""Versions of an app definition kept for ``/versions`` (Marathon's ``zk_max_versions`` default)."""


@dataclass(eq=False)
class AppRecord:
    """One app id: its definition (None once deleted, while its tasks are being stopped) and tasks."""

    app_id: str
    app: dict[str, Any] | None
    tasks: dict[str, Task] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    last_failure: dict[str, Any] | None = None
    backoff_s: float = 0.0
    launch_after: float = 0.0
    """trio time before which no task may be launched (the launch backoff)."""

    def remember(self, app: dict[str, Any]) -> None:
        self.versions.insert(0, app)
        del self.versions[MAX_VERSIONS:]


@dataclass(frozen=True)
class Caller:
    """Who made an API request, for ``api_post_event``."""

    ip: str
    uri: str


class ClusterState:
    """Apps, deployments and the API's changes to them (see the module docstring)."""

    def __init__(self, bus: EventBus, wake: Callable[[], None] = lambda: None) -> None:
        self.bus = bus
        self.apps: dict[str, AppRecord] = {}
        self.deployments: dict[str, Deployment] = {}
        self.wake = wake
        self.dirty = True

    def __repr__(self) -> str:
        return f"<ClusterState apps={len(self.apps)} deployments={len(self.deployments)}>"

    # -- reading -------------------------------------------------------------------------------------

    def record(self, app_id: str) -> AppRecord:
        """The record of a live (not deleted) app.

        Raises:
            ApiError: 404, no such app.
        """
        record = self.apps.get(app_id)
        if record is None or record.app is None:
            raise app_not_found(app_id)
        return record

    def live_apps(self) -> list[AppRecord]:
        return [record for _, record in sorted(self.apps.items()) if record.app is not None]

    def deployments_of(self, app_id: str) -> list[Deployment]:
        return [deployment for deployment in self.deployments.values() if deployment.app_id == app_id]

    def app_info(self, record: AppRecord, embed: set[str]) -> dict[str, Any]:
        """AppInfo: the app plus counts and deployments, and what ``embed`` names (``tasks``,
        ``lastTaskFailure``, ``readiness``, ``taskStats``)."""
        assert record.app is not None
        tasks = list(record.tasks.values())
        checked = bool(record.app.get("healthChecks"))
        counts = {
            "tasksStaged": sum(task.state in ("TASK_STAGING", "TASK_STARTING") for task in tasks),
            "tasksRunning": sum(task.running for task in tasks),
            "tasksHealthy": sum(checked and task.healthy for task in tasks),
            "tasksUnhealthy": sum(checked and task.unhealthy for task in tasks),
        }
        body = {**public_json(record.app), **counts}
        body["deployments"] = [{"id": deployment.id} for deployment in self.deployments_of(record.app_id)]
        if "tasks" in embed:
            body["tasks"] = [task.to_json() for task in tasks]
        if "lastTaskFailure" in embed and record.last_failure is not None:
            body["lastTaskFailure"] = record.last_failure
        if "readiness" in embed:
            body["readinessCheckResults"] = []
        if "taskStats" in embed:
            summary = {"counts": {"staged": counts["tasksStaged"], "running": counts["tasksRunning"]}}
            summary["counts"].update(healthy=counts["tasksHealthy"], unhealthy=counts["tasksUnhealthy"])
            body["taskStats"] = {"totalSummary": {"stats": summary}} if tasks else {}
        return body

    def find_task(self, task_id: str) -> tuple[AppRecord, Task] | None:
        for record in self.apps.values():
            for task in record.tasks.values():
                if task.id == task_id or task.instance_id == task_id:
                    return record, task
        return None

    # -- changes -------------------------------------------------------------------------------------

    def _allocator(self, app_id: str, previous: dict[str, Any] | None) -> Callable[[int], int]:
        taken = {
            port
            for other, record in self.apps.items()
            if record.app is not None and other != app_id
            for port in service_ports(record.app)
        }
        old = service_ports(previous) if previous is not None else []

        def allocate(index: int) -> int:
            if index < len(old) and old[index] and old[index] not in taken:
                taken.add(old[index])
                return old[index]
            for port in range(SERVICE_PORT_MIN, SERVICE_PORT_MAX + 1):
                if port not in taken:
                    taken.add(port)
                    return port
            raise ApiError(422, "no service port left in 10000-20000 (local_port_min..local_port_max)")

        return allocate

    def _canonical(self, fields: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        appdef.check_deprecated_forms(fields)
        app = appdef.normalize(fields, allocate=self._allocator(canonical(fields["id"]), previous))
        appdef.validate(app, fields)
        return app

    def _take_lock(self, app_id: str, force: bool) -> None:
        running = self.deployments_of(app_id)
        if running and not force:
            raise locked([deployment.id for deployment in running])
        for deployment in running:
            self._end(deployment, success=False, reason="superseded by a forced change")

    def _end(self, deployment: Deployment, *, success: bool, reason: str = "") -> None:
        self.deployments.pop(deployment.id, None)
        if success:
            self.bus.publish("deployment_success", id=deployment.id, plan=deployment.plan_json())
        else:
            self.bus.publish("deployment_failed", id=deployment.id, plan=deployment.plan_json(), reason=reason)
        self.dirty = True

    def finish(self, deployment: Deployment) -> None:
        """The scheduler reached the deployment's target."""
        self._end(deployment, success=True)

    def _deploy(self, app_id: str, kind: Kind, version: str, original: Any, target: Any) -> Deployment:
        deployment = Deployment(app_id, kind, version, original, target)
        self.deployments[deployment.id] = deployment
        self.bus.publish("group_change_success", groupId="/", version=version)
        steps = deployment.steps
        current = steps[deployment.current_step - 1] if steps else {"actions": []}
        self.bus.publish("deployment_info", plan=deployment.plan_json(), currentStep=current)
        self.dirty = True
        self.wake()
        return deployment

    def _install(self, app_id: str, app: dict[str, Any]) -> AppRecord:
        record = self.apps.get(app_id)
        if record is None:
            record = self.apps[app_id] = AppRecord(app_id, None)
        previous = record.app
        if previous is None:
            for task in record.tasks.values():  # Tasks of a deleted app still stopping: not this app's.
                self.request_kill(task, "app deleted", on_request=True)
        record.app = app
        record.remember(app)
        if previous is None or config_of(previous) != config_of(app):
            record.backoff_s, record.launch_after = float(app["backoffSeconds"]), 0.0
        return record

    def create(self, body: Any, *, force: bool, caller: Caller) -> tuple[dict[str, Any], Deployment]:
        """``POST /v2/apps``: the AppInfo of the new app (counts 0) and its deployment.

        Raises:
            ShapeErrors, AppInvalid: the body breaks the documented shape or rules (422).
            ApiError: 409, the app exists or is locked.
        """
        fields = shapes.read(shapes.APP, body)
        app = self._canonical(fields, None)
        app_id = app["id"]
        if app_id in self.apps and self.apps[app_id].app is not None:
            raise ApiError(409, f"An app with id [{app_id}] already exists.")
        self._take_lock(app_id, force)
        version = new_version()
        app.update(version=version, versionInfo={"lastScalingAt": version, "lastConfigChangeAt": version})
        self._install(app_id, app)
        self.bus.publish("api_post_event", clientIp=caller.ip, uri=caller.uri, appDefinition=public_json(app))
        deployment = self._deploy(app_id, "start", version, None, app)
        info = {**public_json(app), "tasksStaged": 0, "tasksRunning": 0, "tasksHealthy": 0, "tasksUnhealthy": 0}
        info["deployments"] = [{"id": deployment.id}]
        return info, deployment

    def update(
        self, app_id: str, body: Any, *, partial: bool, force: bool, allow_create: bool, caller: Caller
    ) -> tuple[bool, Deployment]:
        """``PUT``/``PATCH /v2/apps/{id}``: (created, deployment). A partial update keeps the fields the
        body does not name; the body's ``id`` is ignored (the path names the app).

        Raises:
            ShapeErrors, AppInvalid: 422. ApiError: 404 (PATCH of an unknown app), 409 (locked).
        """
        record = self.apps.get(app_id)
        existing = record.app if record is not None else None
        if existing is None and not allow_create:
            raise app_not_found(app_id)
        if existing is not None and partial:
            update = shapes.read(shapes.APP_UPDATE, body)
            update.pop("id", None)
            fields = appdef.merge_update(existing, update)
        else:
            if isinstance(body, dict):
                body = {**body, "id": app_id}
            fields = shapes.read(shapes.APP, body)
        fields["id"] = app_id
        app = self._canonical(fields, existing)
        self._take_lock(app_id, force)
        version = new_version()
        if existing is None:
            kind: Kind = "start"
            info = {"lastScalingAt": version, "lastConfigChangeAt": version}
        elif config_of(existing) != config_of(app):
            kind, info = "restart", {"lastScalingAt": version, "lastConfigChangeAt": version}
        elif existing["instances"] != app["instances"]:
            kind = "scale"
            info = {"lastScalingAt": version, "lastConfigChangeAt": existing["versionInfo"]["lastConfigChangeAt"]}
        else:
            kind, info = "none", dict(existing["versionInfo"])
        app.update(version=version, versionInfo=info)
        self._install(app_id, app)
        self.bus.publish("api_post_event", clientIp=caller.ip, uri=caller.uri, appDefinition=public_json(app))
        return existing is None, self._deploy(app_id, kind, version, existing, app)

    def delete(self, app_id: str, *, force: bool, caller: Caller) -> Deployment:
        """``DELETE /v2/apps/{id}``: the app is gone at once; its tasks are stopped by the deployment."""
        record = self.record(app_id)
        self._take_lock(app_id, force)
        original = record.app
        assert original is not None
        record.app = None
        self.bus.publish("api_post_event", clientIp=caller.ip, uri=caller.uri, appDefinition=public_json(original))
        return self._deploy(app_id, "stop", new_version(), original, None)

    def restart(self, app_id: str, *, force: bool) -> Deployment:
        """``POST /v2/apps/{id}/restart``: every task replaced by a new one (same definition)."""
        record = self.record(app_id)
        assert record.app is not None
        self._take_lock(app_id, force)
        version = new_version()
        original = record.app
        app = {**original, "version": version}
        app["versionInfo"] = {**original["versionInfo"], "lastConfigChangeAt": version}
        self._install(app_id, app)
        return self._deploy(app_id, "restart", version, original, app)

    def kill_tasks(self, app_id: str, tasks: list[Task], *, scale: bool, force: bool) -> Deployment | None:
        """Kill ``tasks`` of the app (``DELETE /v2/apps/{id}/tasks[/{taskId}]``). Without ``scale`` they are
        replaced as any killed task; with it the app is scaled down by their number (a deployment)."""
        record = self.record(app_id)
        assert record.app is not None
        deployment = None
        if scale:
            self._take_lock(app_id, force)
            version = new_version()
            original = record.app
            app = {**original, "version": version, "instances": max(0, original["instances"] - len(tasks))}
            app["versionInfo"] = {**original["versionInfo"], "lastScalingAt": version}
            self._install(app_id, app)
            deployment = self._deploy(app_id, "scale", version, original, app)
        for task in tasks:
            self.request_kill(task, "killed through the API", on_request=True)
        return deployment

    def request_kill(self, task: Task, reason: str, *, on_request: bool) -> None:
        """Ask the scheduler to kill ``task`` (idempotent). ``on_request``: no launch backoff follows."""
        if not task.killing:
            task.kill_reason = reason
            task.wipe_backoff = on_request
            task.kill_requested.set()
            self.wake()

    def cancel(self, deployment_id: str, *, force: bool) -> Deployment | None:
        """``DELETE /v2/deployments/{id}``: cancel it; without ``force``, start the rollback deployment
        (returned) that restores each app as it was before.

        Raises:
            ApiError: 404, no such running deployment.
        """
        deployment = self.deployments.get(deployment_id)
        if deployment is None:
            raise ApiError(404, f"DeploymentPlan {deployment_id} does not exist")
        self._end(deployment, success=False, reason="cancelled")
        if force:
            return None
        version = new_version()
        app_id, original = deployment.app_id, deployment.original
        record = self.apps.get(app_id)
        current = record.app if record is not None else None
        if original is None:
            if record is not None:
                record.app = None
            return self._deploy(app_id, "stop", version, current, None)
        app = {**original, "version": version}
        if current is not None and config_of(current) == config_of(original):
            kind: Kind = "scale"
            app["versionInfo"] = {**current["versionInfo"], "lastScalingAt": version}
        else:
            kind = "restart" if current is not None else "start"
            app["versionInfo"] = {"lastScalingAt": version, "lastConfigChangeAt": version}
        self._install(app_id, app)
        return self._deploy(app_id, kind, version, current, app)

    # -- task bookkeeping (called by the scheduler) --------------------------------------------------

    def task_failed(self, record: AppRecord, task: Task, message: str) -> None:
        """Remember the failure (``lastTaskFailure``)."""
        record.last_failure = {
            "appId": record.app_id,
            "host": task.host,
            "message": message,
            "state": task.state,
            "taskId": task.id,
            "timestamp": iso_now(),
            "version": task.version,
            "slaveId": AGENT_ID,
        }
        self.dirty = True

    # -- persistence ---------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """What survives a restart (see :mod:`.store`)."""
        return {
            "apps": [
                {
                    "id": record.app_id,
                    "app": record.app,
                    "versions": record.versions,
                    "lastTaskFailure": record.last_failure,
                }
                for record in self.apps.values()
            ],
            "deployments": [deployment.to_state() for deployment in self.deployments.values()],
        }

    def load(self, state: dict[str, Any]) -> None:
        """Read back :meth:`to_state`'s output (tasks are adopted by the scheduler)."""
        for item in state.get("apps", []):
            record = AppRecord(item["id"], item["app"], versions=item.get("versions", []))
            record.last_failure = item.get("lastTaskFailure")
            if record.app is not None:
                record.backoff_s = float(record.app["backoffSeconds"])
            self.apps[record.app_id] = record
        for item in state.get("deployments", []):
            deployment = Deployment.from_state(item)
            self.deployments[deployment.id] = deployment
