"""The JSON reading layer: an app definition's shape (types, bounds, patterns, enums, required fields).

Marathon 1.5+ reads a request body with JSON readers generated from its RAML types
(`docs/docs/rest-api/public/api/v2/types/
<https://github.com/mesosphere/marathon/tree/master/docs/docs/rest-api/public/api/v2/types>`_): ``app.raml``,
``appContainer.raml``, ``healthCheck.raml``, ``network.raml``, ``numberTypes.raml``, ``stringTypes.raml``...
A body of the wrong shape never reaches the semantic validator (:mod:`.appdef`); it is answered
**422** ``{"message": "Invalid JSON", "details": [{"path": "/id", "errors": ["error.expected.jsstring"]}]}``
(the example of the ``jsonValidator`` trait in ``traits.raml``), one entry per offending path, with the
reader's error keys:

==============================  ===================================================
``error.path.missing``          a required field is absent
``error.expected.js<type>``     wrong JSON type (``jsstring``, ``jsnumber``, ``jsboolean``, ``jsarray``, ``jsobject``)
``error.expected.int``          a number where an integer (int32) is needed
``error.min`` / ``error.max``   a number out of its documented bounds
``error.minLength``             a string or list shorter than documented
``error.maxLength``             a list longer than documented
``error.pattern``               a string not matching its documented pattern
``error.unknown.enum.literal``  not one of an enum's values (matched case-insensitively)
==============================  ===================================================

Paths are written as Marathon writes them: ``/container/portMappings(0)/hostPort``. ``null`` for an
optional field means "not given"; fields the types do not know are dropped (the readers ignore them).

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.marathon_emulator.pathid import matches_raml_pattern

__all__ = ["APP", "APP_UPDATE", "ShapeErrors", "read"]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

Errors = list[tuple[str, str]]


class ShapeErrors(Exception):
    """The body does not have the documented shape: ``details`` as Marathon lists them."""

    def __init__(self, errors: Errors) -> None:
        super().__init__(f"{len(errors)} JSON shape errors")
        grouped: dict[str, list[str]] = {}
        for path, message in errors:
            grouped.setdefault(path, [])
            if message not in grouped[path]:
                grouped[path].append(message)
        self.details = [{"path": path, "errors": messages} for path, messages in grouped.items()]


class Shape:
    """Reads one JSON value: returns the value to keep, appending ``(path, error key)`` on failure."""

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Shape):
    min_length: int = 0
    max_length: int | None = None
    pattern: Callable[[str], bool] | None = None

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, str):
            errors.append((path, "error.expected.jsstring"))
        elif len(value) < self.min_length:
            errors.append((path, "error.minLength"))
        elif self.max_length is not None and len(value) > self.max_length:
            errors.append((path, "error.maxLength"))
        elif self.pattern is not None and not self.pattern(value):
            errors.append((path, "error.pattern"))
        return value


@dataclass(frozen=True)
class Num(Shape):
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append((path, "error.expected.jsnumber"))
            return value
        if self.integer:
            if isinstance(value, float):
                if not value.is_integer():
                    errors.append((path, "error.expected.int"))
                    return value
                value = int(value)
            if not INT32_MIN <= value <= INT32_MAX:
                errors.append((path, "error.expected.int"))
                return value
        if self.minimum is not None and value < self.minimum:
            errors.append((path, "error.min"))
        elif self.maximum is not None and value > self.maximum:
            errors.append((path, "error.max"))
        return value


def Int(minimum: int | None = None, maximum: int | None = None) -> Num:
    return Num(minimum, maximum, integer=True)


@dataclass(frozen=True)
class Bool(Shape):
    def read(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, bool):
            errors.append((path, "error.expected.jsboolean"))
        return value


@dataclass(frozen=True)
class Enum(Shape):
    """A string enum; matched without regard to case and answered in the documented spelling."""

    values: tuple[str, ...]

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        if isinstance(value, str):
            for known in self.values:
                if known.lower() == value.lower():
                    return known
        errors.append((path, "error.unknown.enum.literal"))
        return value


@dataclass(frozen=True)
class ListOf(Shape):
    item: Shape
    min_items: int = 0
    max_items: int | None = None

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, list):
            errors.append((path, "error.expected.jsarray"))
            return value
        if len(value) < self.min_items:
            errors.append((path, "error.minLength"))
        if self.max_items is not None and len(value) > self.max_items:
            errors.append((path, "error.maxLength"))
        return [self.item.read(item, f"{path}({index})", errors) for index, item in enumerate(value)]


@dataclass(frozen=True)
class MapOf(Shape):
    """A JSON object with arbitrary keys, every value of one shape (labels, env)."""

    value: Shape

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, dict):
            errors.append((path, "error.expected.jsobject"))
            return value
        return {key: self.value.read(item, f"{path}/{key}", errors) for key, item in value.items()}


@dataclass(frozen=True)
class Obj(Shape):
    """A JSON object with known fields; ``required`` names the ones that must be present."""

    fields: Mapping[str, Shape]
    required: frozenset[str] = field(default_factory=frozenset)

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        if not isinstance(value, dict):
            errors.append((path, "error.expected.jsobject"))
            return value
        kept: dict[str, Any] = {}
        for name, shape in self.fields.items():
            item = value.get(name)
            if item is None:
                if name in self.required:
                    errors.append((f"{path}/{name}", "error.path.missing" if name not in value else _null(shape)))
                continue
            kept[name] = shape.read(item, f"{path}/{name}", errors)
        return kept


@dataclass(frozen=True)
class Anything(Shape):
    """A value the emulator keeps as given without interpreting it (a field it does not emulate)."""

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        return value


@dataclass(frozen=True)
class StrOrSecret(Shape):
    """An environment variable's value: a string, or ``{"secret": "<name>"}``."""

    def read(self, value: Any, path: str, errors: Errors) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("secret"), str):
            return {"secret": value["secret"]}
        errors.append((path, "error.expected.jsstring"))
        return value


def _null(shape: Shape) -> str:
    """The error key for a ``null`` where a required value of ``shape`` belongs."""
    kinds = {Str: "jsstring", Num: "jsnumber", Bool: "jsboolean", ListOf: "jsarray", Obj: "jsobject", MapOf: "jsobject"}
    return f"error.expected.{kinds.get(type(shape), 'jsstring')}"


_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NETWORK_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9_]*[a-z0-9])?")
_EXECUTOR_RE = re.compile(r"(//cmd)|(/?[^/]+(/[^/]+)*)|")

PATH_ID = Str(min_length=1, pattern=matches_raml_pattern)
LEGACY_NAME = Str(min_length=1, pattern=lambda s: _NAME_RE.fullmatch(s) is not None)
ANY_PORT = Int(0, 65535)
LABELS = MapOf(Str())
PROTOCOL = Enum(("tcp", "udp", "udp,tcp"))

PORT_MAPPING = Obj(
    {
        "containerPort": ANY_PORT,
        "hostPort": ANY_PORT,
        "labels": LABELS,
        "name": LEGACY_NAME,
        "protocol": PROTOCOL,
        "servicePort": ANY_PORT,
        "networkNames": ListOf(Str(1, 63, pattern=lambda s: _NAME_RE.fullmatch(s) is not None)),
    }
)
DOCKER = Obj(
    {
        "credential": Anything(),
        "pullConfig": Anything(),
        "forcePullImage": Bool(),
        "image": Str(min_length=1),
        "network": Enum(("BRIDGE", "HOST", "NONE", "USER")),
        "parameters": ListOf(Obj({"key": Str(min_length=1), "value": Str()}, frozenset({"key", "value"}))),
        "portMappings": ListOf(PORT_MAPPING),
        "privileged": Bool(),
    },
    frozenset({"image"}),
)
CONTAINER = Obj(
    {
        "type": Enum(("MESOS", "DOCKER")),
        "docker": DOCKER,
        "linuxInfo": Anything(),
        "volumes": ListOf(Anything()),
        "portMappings": ListOf(PORT_MAPPING),
    }
)
HEALTH_CHECK = Obj(
    {
        "command": Obj({"value": Str()}),
        "gracePeriodSeconds": Int(0),
        "ignoreHttp1xx": Bool(),
        "intervalSeconds": Int(0),
        "maxConsecutiveFailures": Int(0),
        "path": Str(),
        "port": ANY_PORT,
        "portIndex": ANY_PORT,
        "protocol": Enum(("HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_TCP", "MESOS_HTTP", "MESOS_HTTPS")),
        "ipProtocol": Enum(("IPv4", "IPv6")),
        "timeoutSeconds": Int(),
        "delaySeconds": Int(0),
    }
)
NETWORK = Obj(
    {
        "name": Str(1, 63, pattern=lambda s: _NETWORK_NAME_RE.fullmatch(s) is not None),
        "mode": Enum(("container", "container/bridge", "host")),
        "labels": LABELS,
    }
)
PORT_DEFINITION = Obj({"port": ANY_PORT, "labels": LABELS, "name": LEGACY_NAME, "protocol": PROTOCOL})
ARTIFACT = Obj(
    {"uri": Str(1, 1024), "executable": Bool(), "extract": Bool(), "cache": Bool(), "destPath": Str()},
    frozenset({"uri"}),
)
READINESS_CHECK = Obj(
    {
        "name": Str(),
        "protocol": Enum(("HTTP", "HTTPS")),
        "path": Str(),
        "portName": Str(),
        "intervalSeconds": Int(0),
        "timeoutSeconds": Int(0),
        "httpStatusCodesForReady": ListOf(Int(100, 999)),
        "preserveLastResponse": Bool(),
    }
)
UPGRADE_STRATEGY = Obj({"maximumOverCapacity": Num(0.0, 1.0), "minimumHealthCapacity": Num(0.0, 1.0)})

_APP_FIELDS: dict[str, Shape] = {
    "id": PATH_ID,
    "acceptedResourceRoles": ListOf(Str()),
    "args": ListOf(Str()),
    "backoffFactor": Num(1.0),
    "backoffSeconds": Int(0),
    "cmd": Str(min_length=1),
    "constraints": ListOf(ListOf(Str(), 2, 3)),
    "container": CONTAINER,
    "cpus": Num(0.001),
    "dependencies": ListOf(PATH_ID),
    "disk": Num(0.0),
    "env": MapOf(StrOrSecret()),
    "executor": Str(pattern=lambda s: _EXECUTOR_RE.fullmatch(s) is not None),
    "executorResources": Anything(),
    "fetch": ListOf(ARTIFACT),
    "healthChecks": ListOf(HEALTH_CHECK),
    "check": Anything(),
    "instances": Int(0),
    "labels": LABELS,
    "maxLaunchDelaySeconds": Int(0),
    "mem": Num(0.0),
    "gpus": Int(0),
    "ipAddress": Anything(),
    "networks": ListOf(NETWORK),
    "ports": ListOf(ANY_PORT),
    "portDefinitions": ListOf(PORT_DEFINITION),
    "readinessChecks": ListOf(READINESS_CHECK),
    "residency": Anything(),
    "resourceLimits": Anything(),
    "requirePorts": Bool(),
    "secrets": MapOf(Anything()),
    "taskKillGracePeriodSeconds": Int(0),
    "upgradeStrategy": UPGRADE_STRATEGY,
    "uris": ListOf(Str(1, 1024)),
    "user": Str(),
    "version": Str(),
    "versionInfo": Anything(),
    "killSelection": Enum(("YOUNGEST_FIRST", "OLDEST_FIRST")),
    "unreachableStrategy": Anything(),
    "tty": Bool(),
    "role": Str(min_length=1),
}

APP = Obj(_APP_FIELDS, frozenset({"id"}))
"""``App`` of app.raml: the body of ``POST /v2/apps`` and of a full ``PUT``."""

APP_UPDATE = Obj(_APP_FIELDS)
"""``AppUpdate``: the same fields, all optional (a partial ``PUT``/``PATCH``)."""


def read(shape: Obj, body: Any) -> dict[str, Any]:
    """Read ``body`` (parsed JSON) as ``shape``; returns the known fields.

    Raises:
        ShapeErrors: the body does not have the shape (422 "Invalid JSON" with these details).
    """
    errors: Errors = []
    value = shape.read(body, "", errors)
    if errors or not isinstance(value, dict):
        raise ShapeErrors(errors)
    return value
