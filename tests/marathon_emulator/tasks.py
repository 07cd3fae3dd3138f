"""Tasks: the record of one running instance of an app, its JSON, and the environment it runs with.

Task JSON follows `task.raml
<https://github.com/mesosphere/marathon/blob/master/docs/docs/rest-api/public/api/v2/types/task.raml>`_
and the example ``app_tasks.json``: ``id`` (``<app path, / as _>.instance-<uuid>._app.1``), ``appId``,
``host`` (the one agent's address: ``127.0.0.1``, or ``--agent-host``), ``ports`` (the host ports, in
port order), ``servicePorts``, ``slaveId``, ``state`` (a Mesos task state), ``stagedAt``, ``startedAt``
(once running), ``version``, ``ipAddresses``, ``healthCheckResults`` (only for apps with health checks,
one entry per check that has reported), ``role``.

The environment is the one documented in `Task Environment Variables
<https://mesosphere.github.io/marathon/docs/task-environment-vars.html>`_: the app's ``env``, ``PORT0``...
``PORT<n>``, ``PORT``, ``PORTS``, ``PORT_<NAME>`` for named ports, ``HOST``, ``MARATHON_APP_ID``,
``MARATHON_APP_VERSION``, ``MARATHON_APP_DOCKER_IMAGE``, ``MARATHON_APP_RESOURCE_CPUS``/``MEM``/``DISK``/
``GPUS``, ``MARATHON_APP_LABELS`` and ``MARATHON_APP_LABEL_<NAME>``, ``MESOS_TASK_ID``, ``MESOS_SANDBOX``.
Besides those a task gets only ``PATH`` (the emulator's), ``HOME`` and ``TMPDIR`` (its sandbox): it does
not inherit the emulator's environment, as a Mesos task does not inherit Marathon's.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from tests.marathon_emulator.appdef import is_bridge, service_ports
from tests.marathon_emulator.pathid import instance_id
from tests.marathon_emulator.processes import TaskProcess

__all__ = ["AGENT_ID", "HOST", "TERMINAL", "Task", "task_env"]

HOST = "127.0.0.1"
"""The agent's address unless the emulator is given another (``--agent-host``: any loopback address,
so that a client which dials 127.0.0.1 instead of a task's ``host`` is caught)."""
AGENT_ID = "emulated-agent-S0"
"""The id of the one Mesos agent the emulator stands for (``slaveId`` of every task)."""
TERMINAL = frozenset({"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_GONE", "TASK_DROPPED"})
_LABEL_MAX = 512


@dataclass(eq=False)
class Task:
    """One instance of an app: from staging until its process ended and it was removed."""

    app_id: str
    app: dict[str, Any]
    """The app definition the task was launched with."""
    ports: list[int]
    staged_at: str
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "TASK_STAGING"
    started_at: str | None = None
    process: TaskProcess | None = None
    sandbox: Path | None = None
    health: list[dict[str, Any] | None] = field(default_factory=list)
    kill_requested: trio.Event = field(default_factory=trio.Event)
    kill_reason: str = ""
    wipe_backoff: bool = False
    host: str = HOST
    """The agent's address: where the task's ports listen (its ``$HOST``)."""
    """Killed on request (API, scaling, upgrade): its end does not delay the next launch."""

    def __post_init__(self) -> None:
        if not self.health:
            self.health = [None] * len(self.app.get("healthChecks", []))

    @property
    def instance_id(self) -> str:
        return instance_id(self.app_id, self.uuid)

    @property
    def id(self) -> str:
        return f"{self.instance_id}._app.1"

    @property
    def version(self) -> str:
        return str(self.app["version"])

    @property
    def config_version(self) -> str:
        return str(self.app["versionInfo"]["lastConfigChangeAt"])

    @property
    def killing(self) -> bool:
        return self.kill_requested.is_set()

    @property
    def running(self) -> bool:
        return self.state == "TASK_RUNNING"

    @property
    def healthy(self) -> bool:
        """Running, and every health check of its app has reported alive (no checks: running is enough)."""
        if not self.running:
            return False
        return all(result is not None and result["alive"] for result in self.health)

    @property
    def unhealthy(self) -> bool:
        return any(result is not None and not result["alive"] for result in self.health)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "appId": self.app_id,
            "host": self.host,
            "state": self.state,
            "ports": list(self.ports),
            "servicePorts": service_ports(self.app),
            "slaveId": AGENT_ID,
            "stagedAt": self.staged_at,
            "version": self.version,
            "ipAddresses": [{"ipAddress": self.host, "protocol": "IPv4"}],
            "localVolumes": [],
            "role": "*",
        }
        if self.started_at is not None:
            body["startedAt"] = self.started_at
        if self.app.get("healthChecks"):
            body["healthCheckResults"] = [result for result in self.health if result is not None]
        return body

    def status_event_fields(self, message: str = "") -> dict[str, Any]:
        """The fields of a ``status_update_event`` for this task's current state."""
        return {
            "slaveId": AGENT_ID,
            "taskId": self.id,
            "taskStatus": self.state,
            "message": message,
            "appId": self.app_id,
            "host": self.host,
            "ports": list(self.ports),
            "ipAddresses": [{"ipAddress": self.host, "protocol": "IPv4"}],
            "version": self.version,
        }

    def to_state(self) -> dict[str, Any]:
        """What survives an emulator restart (see :mod:`.store`)."""
        return {
            "appId": self.app_id,
            "app": self.app,
            "ports": self.ports,
            "stagedAt": self.staged_at,
            "startedAt": self.started_at,
            "uuid": self.uuid,
            "state": self.state,
            "pid": self.process.pid if self.process else None,
            "startTicks": self.process.start_ticks if self.process else None,
            "sandbox": str(self.sandbox) if self.sandbox else None,
            "host": self.host,
        }


def _label_env_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]+", "_", name).upper()


def task_env(task: Task, path: str) -> dict[str, str]:
    """The documented environment of ``task`` (see the module docstring). Marathon's own variables are
    set after the app's ``env``, so an app cannot redefine ``PORT0`` or ``MESOS_TASK_ID``."""
    app = task.app
    env: dict[str, str] = {"PATH": path}
    if task.sandbox is not None:
        env.update(HOME=str(task.sandbox), TMPDIR=str(task.sandbox), MESOS_SANDBOX=str(task.sandbox))
    env.update({key: value for key, value in app.get("env", {}).items() if isinstance(value, str)})
    named = app["container"]["portMappings"] if is_bridge(app) else app.get("portDefinitions", [])
    for index, port in enumerate(task.ports):
        env[f"PORT{index}"] = str(port)
        if index < len(named):
            if named[index].get("name"):
                env[f"PORT_{named[index]['name'].upper()}"] = str(port)
            requested = named[index].get("servicePort" if is_bridge(app) else "port", 0)
            if requested:
                env[f"PORT_{requested}"] = str(port)
    if task.ports:
        env["PORT"] = str(task.ports[0])
    env["PORTS"] = ",".join(str(port) for port in task.ports)
    env["HOST"] = task.host
    env["MESOS_TASK_ID"] = task.id
    env["MARATHON_APP_ID"] = task.app_id
    env["MARATHON_APP_VERSION"] = task.version
    docker = (app.get("container") or {}).get("docker")
    if docker is not None:
        env["MARATHON_APP_DOCKER_IMAGE"] = docker["image"]
    env["MARATHON_APP_RESOURCE_CPUS"] = str(app["cpus"])
    env["MARATHON_APP_RESOURCE_MEM"] = str(app["mem"])
    env["MARATHON_APP_RESOURCE_DISK"] = str(app["disk"])
    env["MARATHON_APP_RESOURCE_GPUS"] = str(app["gpus"])
    labels = {k: v for k, v in app.get("labels", {}).items() if len(k) <= _LABEL_MAX and len(v) <= _LABEL_MAX}
    env["MARATHON_APP_LABELS"] = " ".join(_label_env_name(key) for key in labels)
    for key, value in labels.items():
        env[f"MARATHON_APP_LABEL_{_label_env_name(key)}"] = value
    return env
