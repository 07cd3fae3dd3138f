"""What an app tells faasd: its function's spec, status, and ready endpoints. Pure (no I/O, no trio).

**Ready** (:func:`read_app`): a task that is ``TASK_RUNNING`` with the watchdog's host port, that no
health check reports failing, and that either passes every health check of its app (``healthCheckResults``,
filled by Mesos's ``MESOS_HTTP`` check on ``/_/health``) or -- before Marathon has a result, or for an app
made by hand without checks -- answered faasd's own probe of ``/_/health``
(:mod:`faasd.providers.common.probe`, run by discovery), as every backend's replicas do. Marathon's word
comes at its check interval (1 s); the probe's as soon as the watchdog listens. A replica is called at the
task's ``host`` (the agent) and host port: the port mapped to container port 8080 on ``BRIDGE``, else the
first port.

**Call token**: a replica is sent the token in its app's environment (``call_token``, which faasd sets
per function); an app without one gets none -- it checks nothing, and must not learn a token.

**Failed, with the reason**: an app that should run replicas and has none ready is ``failed`` when
Marathon saw a task fail since the app was last changed or scaled (``lastTaskFailure``: its state
and Mesos's message), or a running task fails its health check (the check's cause). The first ready
replica clears it.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from faasd.calltoken import TokenError, check_token, header_line
from faasd.errors import InvalidRequest
from faasd.providers.marathon.appdef import (
    CALL_TOKEN_ENV,
    LABEL_FUNCTION,
    WATCHDOG_PORT,
    function_name,
    parse_time,
    spec_from_app,
)
from faasd.providers.types import Endpoint, FunctionSpec, FunctionStatus

__all__ = ["AppState", "Replica", "read_app", "replicas"]

RUNNING = "TASK_RUNNING"


@dataclass(frozen=True, slots=True, kw_only=True)
class AppState:
    """One function as Marathon has it."""

    name: str
    app_id: str
    spec: FunctionSpec
    instances: int
    version: str
    endpoints: tuple[Endpoint, ...]
    created_at: datetime | None
    failure: str = ""
    """Why no replica is ready (see the module docstring); empty when fine."""
    deployments: tuple[str, ...] = ()
    tasks: int = 0

    @property
    def moving(self) -> bool:
        """Marathon is still changing it: a deployment runs, or fewer replicas are ready than wanted."""
        return bool(self.deployments) or len(self.endpoints) != self.instances or self.tasks != self.instances

    def status(self) -> FunctionStatus:
        return FunctionStatus(
            spec=self.spec,
            replicas=self.instances,
            available_replicas=len(self.endpoints),
            created_at=self.created_at,
            state="failed" if self.failure else "deployed",
            reason=self.failure,
        )


def read_app(app: Mapping[str, Any], group: str, probed: Container[str] = frozenset()) -> AppState | None:
    """The function ``app`` is, or None: an app directly in ``group`` labelled ``com.openfaas.function``.

    ``probed``: ids of tasks whose watchdog answered faasd's own probe (see the module docstring).
    """
    identifier = str(app.get("id", ""))
    name = function_name(group, identifier)
    if name is None or LABEL_FUNCTION not in (app.get("labels") or {}):
        return None
    failure = ""
    try:
        spec = spec_from_app(app, name)
    except InvalidRequest as exc:
        spec = FunctionSpec(name=name)
        failure = f"the app cannot be read as a function: {exc.message}"
    instances = app.get("instances")
    instances = instances if isinstance(instances, int) and instances >= 0 else 0
    tasks = [task for task in app.get("tasks") or [] if isinstance(task, Mapping)]
    endpoints = _endpoints(app, probed)
    if not failure and instances and not endpoints:
        failure = _failure(app, tasks)
    version_info = app.get("versionInfo") or {}
    created_at = parse_time(version_info.get("lastConfigChangeAt")) or parse_time(app.get("version"))
    deployments = tuple(
        str(item.get("id")) for item in app.get("deployments") or [] if isinstance(item, Mapping) and item.get("id")
    )
    return AppState(
        name=name,
        app_id=identifier,
        spec=spec,
        instances=instances,
        version=str(app.get("version", "")),
        endpoints=endpoints,
        created_at=created_at,
        failure=failure,
        deployments=deployments,
        tasks=len(tasks),
    )


def _port_index(app: Mapping[str, Any]) -> int:
    mappings = (app.get("container") or {}).get("portMappings") or []
    for index, mapping in enumerate(mappings):
        if isinstance(mapping, Mapping) and mapping.get("containerPort") == WATCHDOG_PORT:
            return index
    return 0


def _token_line(app: Mapping[str, Any]) -> bytes:
    value = (app.get("env") or {}).get(CALL_TOKEN_ENV)
    if not isinstance(value, str):
        return b""
    try:
        return header_line(check_token(value.encode()))
    except TokenError:
        return b""


@dataclass(frozen=True, slots=True)
class Replica:
    """A task that runs and has the watchdog's host port: a replica, ready or not yet."""

    endpoint: Endpoint
    marathon_healthy: bool | None
    """Marathon's word: True when every health check passes, False when one fails, None when it has
    none yet (no check has reported) or the app has no checks."""


def replicas(app: Mapping[str, Any]) -> list[Replica]:
    """The app's running tasks that have the watchdog's port, sorted by task id."""
    index = _port_index(app)
    checks = app.get("healthChecks") or []
    token_line = _token_line(app)
    found = []
    for task in app.get("tasks") or []:
        if not isinstance(task, Mapping):
            continue
        ports = task.get("ports") or []
        host = task.get("host")
        if task.get("state") != RUNNING or index >= len(ports) or not isinstance(host, str) or not host:
            continue
        port = ports[index]
        if not isinstance(port, int) or not 0 < port < 65536:
            continue
        healthy: bool | None = None
        results = [r for r in task.get("healthCheckResults") or [] if isinstance(r, Mapping)]
        if any(result.get("alive") is False for result in results):
            healthy = False
        elif checks and len(results) >= len(checks) and all(result.get("alive") is True for result in results):
            healthy = True
        endpoint = Endpoint(host, port, str(task.get("id", "")), call_token=bool(token_line), token_line=token_line)
        found.append(Replica(endpoint, healthy))
    return sorted(found, key=lambda replica: replica.endpoint.replica)


def _endpoints(app: Mapping[str, Any], probed: Container[str]) -> tuple[Endpoint, ...]:
    return tuple(
        replica.endpoint
        for replica in replicas(app)
        if replica.marathon_healthy or (replica.marathon_healthy is None and replica.endpoint.replica in probed)
    )


def _failure(app: Mapping[str, Any], tasks: list[Mapping[str, Any]]) -> str:
    last = app.get("lastTaskFailure")
    version_info = app.get("versionInfo") or {}
    moments = [parse_time(version_info.get(key)) for key in ("lastConfigChangeAt", "lastScalingAt")]
    changed = max((moment for moment in moments if moment is not None), default=None)
    if isinstance(last, Mapping):
        when = parse_time(last.get("timestamp"))
        if changed is None or (when is not None and when >= changed):
            state = str(last.get("state", "")).removeprefix("TASK_").lower() or "failed"
            message = " ".join(str(last.get("message", "")).split())[:300]
            return f"a replica {state}: {message}" if message else f"a replica {state}"
    for task in tasks:
        for result in task.get("healthCheckResults") or []:
            if isinstance(result, Mapping) and result.get("alive") is False:
                cause = " ".join(str(result.get("lastFailureCause", "")).split())[:300]
                return f"a replica fails its health check: {cause}" if cause else "a replica fails its health check"
    return ""
