"""App definitions: the documented validation rules, the canonical form Marathon answers with, updates.

Pure: no I/O, no clock (versions are given by the caller).

A body is read in three steps, as Marathon 1.5+ does:

1. :func:`shapes.read <tests.marathon_emulator.shapes.read>` -- types, bounds, enums, required fields
   (422 "Invalid JSON");
2. :func:`check_deprecated_forms` and :func:`normalize` -- the deprecated forms (``ports``,
   ``container.docker.network`` + ``container.docker.portMappings``, ``uris``) are checked against their
   replacements and rewritten into the current ones, and documented defaults are filled in;
3. :func:`validate` -- the rules of `Application basics
   <https://mesosphere.github.io/marathon/docs/application-basics.html>`_, `Ports
   <https://mesosphere.github.io/marathon/docs/ports.html>`_, `Networking
   <https://mesosphere.github.io/marathon/docs/networking.html>`_ and `Health checks
   <https://mesosphere.github.io/marathon/docs/health-checks.html>`_ (422 "Object is not valid").

**Answered in the current form.** Whatever form was submitted, the app is answered with ``networks``
(``[{"mode": "container/bridge"}]`` for ``BRIDGE``, ``[{"mode": "host"}]`` when none was given),
``container.portMappings`` and ``portDefinitions``, as Marathon >= 1.5 does; never diff a submitted
definition against a ``GET``. Empty ``args``, ``constraints``, ``dependencies``, ``env``, ``fetch``,
``healthChecks``, ``readinessChecks`` and ``secrets`` are left out of answers (``omitEmpty`` in
app.raml). Service ports left 0 are given one from 10000-20000 (``local_port_min``/``max``), unique
among apps and kept across updates.

**Emulator limits** (refused with 422 and a message that says so, never silently accepted): container
networks (``networks`` mode ``container``, ``docker.network`` ``USER``/``NONE``, ``ipAddress``), since
tasks here have no address of their own.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from tests.marathon_emulator.pathid import canonical, path_errors

__all__ = [
    "SERVICE_PORT_MAX",
    "SERVICE_PORT_MIN",
    "AppInvalid",
    "ceil_fraction",
    "check_deprecated_forms",
    "config_of",
    "host_port_requests",
    "is_bridge",
    "merge_update",
    "normalize",
    "port_count",
    "public_json",
    "service_ports",
    "validate",
]

SERVICE_PORT_MIN = 10000
SERVICE_PORT_MAX = 20000
"""Marathon's ``local_port_min``/``local_port_max`` defaults: where service ports left 0 are taken from."""

MARATHON_HEALTH = ("HTTP", "HTTPS", "TCP")
MESOS_HEALTH = ("MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP", "COMMAND")
_CONSTRAINT_OPERATORS = ("UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS")
_BAD_OPERATOR = "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS"
_NO_CONTAINER_NETWORKS = (
    "container networks are not emulated (tasks have no address of their own): "
    "use BRIDGE (networks mode container/bridge) or host networking"
)

_DEFAULTS: dict[str, Any] = {
    "instances": 1,
    "cpus": 1.0,
    "mem": 128.0,
    "disk": 0.0,
    "gpus": 0,
    "executor": "",
    "backoffSeconds": 1,
    "backoffFactor": 1.15,
    "maxLaunchDelaySeconds": 300,
    "requirePorts": False,
    "killSelection": "YOUNGEST_FIRST",
    "labels": {},
    "env": {},
    "constraints": [],
    "dependencies": [],
    "healthChecks": [],
    "readinessChecks": [],
    "fetch": [],
    "secrets": {},
}
_OMIT_EMPTY = ("args", "constraints", "dependencies", "env", "fetch", "healthChecks", "readinessChecks", "secrets")
_HEALTH_DEFAULTS = {
    "gracePeriodSeconds": 300,
    "intervalSeconds": 60,
    "timeoutSeconds": 20,
    "maxConsecutiveFailures": 3,
    "delaySeconds": 15,
}
_NOT_CONFIG = ("instances", "version", "versionInfo")
"""Fields whose change is a scaling or bookkeeping, not a new configuration (no restart of tasks)."""


class AppInvalid(Exception):
    """The definition breaks a documented rule: 422 ``{"message": "Object is not valid", "details": ...}``."""

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        grouped: dict[str, list[str]] = {}
        for path, message in errors:
            grouped.setdefault(path, []).append(message)
        super().__init__("; ".join(f"{path}: {', '.join(msgs)}" for path, msgs in grouped.items()))
        self.details = [{"path": path, "errors": messages} for path, messages in grouped.items()]


# -- deprecated forms ---------------------------------------------------------------------------------


def check_deprecated_forms(fields: dict[str, Any]) -> None:
    """The rules that compare a deprecated field with its replacement, checked before rewriting.

    Raises:
        AppInvalid: both forms were given and disagree.
    """
    errors = []
    docker = (fields.get("container") or {}).get("docker") or {}
    if docker.get("network") is not None and fields.get("networks"):
        errors.append(("/", "must not specify both container.docker.network and networks"))
    if fields.get("ipAddress") is not None and fields.get("networks"):
        errors.append(("/", "must not specify both networks and ipAddress"))
    ports = fields.get("ports")
    if ports is not None:
        fixed = [port for port in ports if port != 0]
        if len(set(fixed)) != len(fixed):
            errors.append(("/", "ports must be unique"))
        definitions = fields.get("portDefinitions")
        if definitions is not None and [d.get("port", 0) for d in definitions] != ports:
            errors.append(("/", "cannot specify both ports and port definitions"))
    if fields.get("uris") and fields.get("fetch"):
        errors.append(("/uris", "may not be set in conjunction with fetch"))
    if errors:
        raise AppInvalid(errors)


# -- canonical form -----------------------------------------------------------------------------------


def _network_mode(fields: dict[str, Any]) -> list[dict[str, Any]]:
    docker = (fields.get("container") or {}).get("docker") or {}
    legacy = docker.get("network")
    if legacy == "BRIDGE":
        return [{"mode": "container/bridge"}]
    if legacy == "HOST":
        return [{"mode": "host"}]
    if legacy in ("USER", "NONE"):
        return [{"mode": "container"}]
    if fields.get("ipAddress") is not None:
        return [{"mode": "container"}]
    networks = fields.get("networks")
    if not networks:
        return [{"mode": "host"}]
    return [{"mode": network.get("mode", "container"), **_without(network, "mode")} for network in networks]


def _without(mapping: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in names}


def is_bridge(app: dict[str, Any]) -> bool:
    """True for an app on BRIDGE networking (ports are port mappings), False for host networking."""
    return any(network.get("mode") == "container/bridge" for network in app.get("networks", []))


def _port_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    result = {
        "containerPort": mapping.get("containerPort", 0),
        "hostPort": mapping.get("hostPort", 0),
        "protocol": mapping.get("protocol", "tcp"),
        "servicePort": mapping.get("servicePort", 0),
    }
    for optional in ("name", "labels", "networkNames"):
        if optional in mapping:
            result[optional] = mapping[optional]
    return result


def _port_definition(definition: dict[str, Any]) -> dict[str, Any]:
    result = {"port": definition.get("port", 0), "protocol": definition.get("protocol", "tcp")}
    for optional in ("name", "labels"):
        if optional in definition:
            result[optional] = definition[optional]
    return result


def _health_check(check: dict[str, Any]) -> dict[str, Any]:
    protocol = check.get("protocol", "HTTP")
    if check.get("command") is not None:
        protocol = "COMMAND"
    result = {**_HEALTH_DEFAULTS, **check, "protocol": protocol}
    if protocol != "COMMAND" and "port" not in check and "portIndex" not in check:
        result["portIndex"] = 0
    if protocol in ("HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"):
        result.setdefault("path", "/")
    else:
        result.pop("path", None)
    if protocol in ("HTTP", "HTTPS"):
        result.setdefault("ignoreHttp1xx", False)
    return result


def normalize(fields: dict[str, Any], *, allocate: Callable[[int], int]) -> dict[str, Any]:
    """The canonical app for the shape-checked ``fields``: current networking form, documented defaults.

    Args:
        fields: the known fields of the body (after :func:`shapes.read`), with ``id`` set.
        allocate: ``allocate(index)`` -> a service port for the ``index``-th port whose service port is 0.
    """
    app = copy.deepcopy(_without(fields, "ports", "uris", "version", "versionInfo", "ipAddress"))
    app["id"] = canonical(fields["id"])
    for name, default in _DEFAULTS.items():
        app.setdefault(name, copy.deepcopy(default))
    app.setdefault("upgradeStrategy", {})
    app["upgradeStrategy"] = {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0, **app["upgradeStrategy"]}
    app.setdefault("unreachableStrategy", {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0})
    if fields.get("uris"):
        app["fetch"] = [{"uri": uri} for uri in fields["uris"]]
    app["fetch"] = [{"extract": True, "executable": False, "cache": False, **artifact} for artifact in app["fetch"]]
    app["networks"] = _network_mode(fields)
    container = app.get("container")
    if container is not None:
        container.setdefault("type", "DOCKER")
        docker = container.get("docker")
        mappings = container.get("portMappings")
        if docker is not None:
            legacy_mappings = docker.pop("portMappings", None)
            docker.pop("network", None)
            if mappings is None:
                mappings = legacy_mappings
            docker.setdefault("forcePullImage", False)
            docker.setdefault("privileged", False)
            docker.setdefault("parameters", [])
        container.setdefault("volumes", [])
        if is_bridge(app):
            mappings = [{"containerPort": 0, "hostPort": 0}] if mappings is None else mappings
            container["portMappings"] = [_port_mapping(mapping) for mapping in mappings]
        elif mappings:
            container["portMappings"] = [_port_mapping(mapping) for mapping in mappings]  # refused by validate()
        else:
            container.pop("portMappings", None)
    if is_bridge(app):
        app["portDefinitions"] = [_port_definition(d) for d in fields.get("portDefinitions") or []]
    else:
        definitions = fields.get("portDefinitions")
        if definitions is None:
            ports = fields.get("ports")
            definitions = [{"port": port} for port in ports] if ports is not None else [{"port": 0}]
        app["portDefinitions"] = [_port_definition(d) for d in definitions]
    app["healthChecks"] = [_health_check(check) for check in app["healthChecks"]]
    _assign_service_ports(app, allocate)
    return app


def _assign_service_ports(app: dict[str, Any], allocate: Callable[[int], int]) -> None:
    if is_bridge(app):
        for index, mapping in enumerate(app.get("container", {}).get("portMappings", [])):
            if mapping["servicePort"] == 0:
                mapping["servicePort"] = allocate(index)
    else:
        for index, definition in enumerate(app["portDefinitions"]):
            if definition["port"] == 0:
                definition["port"] = allocate(index)


def service_ports(app: dict[str, Any]) -> list[int]:
    """The app's service ports, one per port mapping (BRIDGE) or port definition (host)."""
    if is_bridge(app):
        return [mapping["servicePort"] for mapping in app.get("container", {}).get("portMappings", [])]
    return [definition["port"] for definition in app.get("portDefinitions", [])]


def port_count(app: dict[str, Any]) -> int:
    """How many host ports each task gets (``PORT0``...)."""
    return len(service_ports(app))


def host_port_requests(app: dict[str, Any]) -> list[int]:
    """Per task port: the host port that must be used, or 0 for "any free port".

    BRIDGE: a port mapping's non-zero ``hostPort``. Host networking: the service ports themselves when
    ``requirePorts`` is true, else any (documented in Ports, "requirePorts").
    """
    if is_bridge(app):
        return [mapping["hostPort"] for mapping in app.get("container", {}).get("portMappings", [])]
    if app.get("requirePorts"):
        return [definition["port"] for definition in app["portDefinitions"]]
    return [0] * len(app["portDefinitions"])


# -- semantic rules -----------------------------------------------------------------------------------


def validate(app: dict[str, Any], raw: dict[str, Any]) -> None:
    """Check the canonical ``app`` (``raw``: the fields as submitted) against the documented rules.

    Raises:
        AppInvalid: with every violation found, by path.
    """
    errors: list[tuple[str, str]] = [("/id", message) for message in path_errors(raw["id"])]
    errors += _command_rules(app)
    errors += _network_rules(app, raw)
    errors += _health_rules(app, raw)
    errors += _constraint_rules(app)
    if app.get("secrets") or any(isinstance(value, dict) for value in app.get("env", {}).values()):
        errors.append(("/secrets", "Feature secrets is not enabled. Enable with --enable_features secrets."))
    if app.get("gpus", 0) > 0 and (app.get("container") or {}).get("type") == "DOCKER":
        errors.append(("/", "GPU resources only work with the Mesos containerizer"))
    if raw.get("acceptedResourceRoles") == []:
        errors.append(("/acceptedResourceRoles", "must not be empty"))
    if errors:
        raise AppInvalid(errors)


def _command_rules(app: dict[str, Any]) -> list[tuple[str, str]]:
    cmd, args = bool(app.get("cmd")), bool(app.get("args"))
    container = app.get("container")
    has_container = container is not None and (container.get("docker") is not None or container["type"] == "MESOS")
    errors = []
    if not ((cmd != args) or (not (cmd and args) and has_container)):
        errors.append(("/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."))
    if "cmd" in app and len(app["cmd"]) <= 1:
        errors.append(("/", "must not be an empty string"))
    return errors


def _network_rules(app: dict[str, Any], raw: dict[str, Any]) -> list[tuple[str, str]]:
    errors = []
    networks = app["networks"]
    if len(networks) != 1 or networks[0].get("mode") not in ("host", "container/bridge"):
        errors.append(("/networks", _NO_CONTAINER_NETWORKS))
    host = networks[0].get("mode") == "host"
    mappings = (app.get("container") or {}).get("portMappings") or []
    if host and mappings:
        errors.append(("/", "portMappings are not allowed with host-networking"))
    if not host and raw.get("portDefinitions"):
        errors.append(("/", "portDefinitions are only allowed with host-networking"))
    if is_bridge(app) and (app.get("container") or {}).get("docker") is None:
        errors.append(("/networks", "BRIDGE networking needs a container"))
    for path, ports in (("/portDefinitions", app["portDefinitions"]), ("/container/portMappings", mappings)):
        names = [port["name"] for port in ports if "name" in port]
        if len(set(names)) != len(names):
            errors.append((path, "Port names must be unique."))
    requested = [d["port"] for d in (raw.get("portDefinitions") or []) if d.get("port", 0) != 0]
    if len(set(requested)) != len(requested):
        errors.append(("/portDefinitions", "Ports must be unique."))
    return errors


def _health_rules(app: dict[str, Any], raw: dict[str, Any]) -> list[tuple[str, str]]:
    errors = []
    count = port_count(app)
    mesos_checks = 0
    for index, check in enumerate(raw.get("healthChecks") or []):
        protocol = app["healthChecks"][index]["protocol"]
        if protocol in MESOS_HEALTH and protocol != "COMMAND":
            mesos_checks += 1
        if protocol in MARATHON_HEALTH and check.get("command") is None:
            port_index = check.get("portIndex")
            fine = 0 <= port_index < count if port_index is not None else ("port" in check or count == 1)
            if not fine:
                errors.append(
                    (
                        f"/healthChecks({index})",
                        "Health check port indices must address an element of the ports array or container "
                        "port mappings.",
                    )
                )
    if mesos_checks > 1:
        errors.append(("/", "AppDefinition can contain at most one Mesos health check"))
    return errors


def _constraint_rules(app: dict[str, Any]) -> list[tuple[str, str]]:
    errors = []
    for index, constraint in enumerate(app.get("constraints", [])):
        path = f"/constraints({index})"
        field, operator = constraint[0], constraint[1].upper()
        value = constraint[2] if len(constraint) == 3 else None
        if not field:
            errors.append((path, "illegal constraint specification"))
        elif operator not in _CONSTRAINT_OPERATORS:
            errors.append((path, _BAD_OPERATOR))
        elif operator == "UNIQUE" and value:
            errors.append((path, "UNIQUE does not accept a value"))
        elif operator in ("LIKE", "UNLIKE") and not _is_regex(value):
            errors.append((path, "LIKE and UNLIKE require a non-empty, regular expression value"))
        elif operator == "MAX_PER" and not (value or "").isdigit():
            errors.append((path, "MAX_PER requires an integer value"))
    return errors


def _is_regex(value: str | None) -> bool:
    if not value:
        return False
    try:
        re.compile(value)
    except re.error:
        return False
    return True


# -- updates and answers ------------------------------------------------------------------------------


def merge_update(existing: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The fields of a partial update applied to an existing canonical app: every field the update
    names replaces the existing one whole (``container``, ``healthChecks``...), the others are kept.

    When the update switches networking form (``container.docker.network``, ``ports``) or mode, the
    existing fields of the other form are dropped, so the merged app is in one form.
    """
    merged = {**_without(existing, "version", "versionInfo"), **update}
    legacy_network = ((update.get("container") or {}).get("docker") or {}).get("network")
    if legacy_network is not None and "networks" not in update:
        merged.pop("networks", None)
    gives_ports = "ports" in update or "portDefinitions" in update
    if "ports" in update and "portDefinitions" not in update:
        merged.pop("portDefinitions", None)
    if not gives_ports and is_bridge({"networks": _network_mode(merged)}) != is_bridge(existing):
        merged.pop("portDefinitions", None)
    return merged


def config_of(app: dict[str, Any]) -> dict[str, Any]:
    """The part of an app whose change restarts its tasks (everything but scaling and bookkeeping)."""
    return _without(app, *_NOT_CONFIG)


def public_json(app: dict[str, Any]) -> dict[str, Any]:
    """The app as Marathon answers it: empty ``omitEmpty`` collections left out."""
    return {key: value for key, value in app.items() if not (key in _OMIT_EMPTY and not value)}


def ceil_fraction(count: int, fraction: float) -> int:
    """``ceil(count * fraction)`` without float noise (``3 * 0.7`` must give 3, ``10 * 0.3`` 3)."""
    return math.ceil(round(count * fraction, 9))
