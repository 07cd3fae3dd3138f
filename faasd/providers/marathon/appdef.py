"""FunctionSpec <-> Marathon app definition: the pure half of the Marathon backend.

No I/O, no httpx, no trio: plain dicts in Marathon's v2 JSON shapes (the RAML types under
``docs/docs/rest-api/public/api/v2/types/`` in https://github.com/mesosphere/marathon), so the mapping is
tested without a Marathon.

**One app per function**, id ``/<group>/<name>`` (:func:`app_id`). Marathon ids hold lowercase letters,
digits and ``-`` only (``PathId``: dot-separated labels, none starting or ending with ``-``), so a
function name with an uppercase letter or ``_`` is refused with a 400 saying so (never silently
changed: the name is the function's address in ``/function/NAME``, and a mapped id would be one more
thing to explain in Marathon's UI). ``restart``, ``tasks`` and ``versions`` cannot end an app id.

**What runs** (:func:`app_definition`):

* a spec with ``image``: a Docker container on ``BRIDGE`` networking with one port mapping, container
  port 8080 (the watchdog's) to a host port Marathon picks; the image's entrypoint is the watchdog;
* a spec without ``image`` (a plain command, or a handler archive such as a code snippet): a command
  task. The Mesos fetcher downloads faasd's zipapp into the sandbox (``marathon_watchdog_uri``) and
  ``cmd`` starts :mod:`faasd.watchdog.marathon`, which unpacks the handler archive (carried in the
  app's ``env``, base64 in chunks: :data:`ARCHIVE_ENV_PREFIX`) and becomes the watchdog on ``$PORT0``.

Both have a ``MESOS_HTTP`` health check on the watchdog's ``/_/health`` (:data:`HEALTH_CHECK`), and
the environment ``fprocess`` (``envProcess``), the spec's ``envVars``, and ``call_token``: the token the
replica requires on every call, one per function (:func:`function_token`; see docs/marathon.md).

**Labels carry faasd's metadata**: ``com.openfaas.function=<name>`` marks a function (apps made by hand
with it are adopted), annotations become ``com.openfaas.annotations.<key>``, and ``faasd.spec`` keeps
what Marathon cannot give back as written (``limits``/``requests`` as ``128M``, constraint strings),
used only while the app still has exactly those values.

**Not supported, refused with a 400 that says why**: secrets (open-source Marathon has no secret store,
and an app definition is readable by anyone who can read Marathon's API), ``readOnlyRootFilesystem``
without an image, a handler archive with an image, constraints not in Marathon's ``field:OPERATOR:value``
form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faasd.errors import InvalidRequest
from faasd.providers.common.speclabel import LABEL_SPEC, read_hint, write_hint
from faasd.providers.types import FunctionSpec, Resources
from faasd.units import parse_size

__all__ = [
    "ANNOTATION_PREFIX",
    "ARCHIVE_ENV_PREFIX",
    "CALL_TOKEN_ENV",
    "CONSTRAINT_OPERATORS",
    "HEALTH_CHECK",
    "LABEL_FUNCTION",
    "LABEL_SPEC",
    "MAX_ARCHIVE_CHARS",
    "RESERVED_LABEL_PREFIX",
    "TASK_ROLE",
    "WATCHDOG_FILE",
    "WATCHDOG_PORT",
    "AppSettings",
    "app_definition",
    "app_id",
    "check_group",
    "check_spec",
    "function_name",
    "function_token",
    "parse_time",
    "spec_from_app",
]

LABEL_FUNCTION = "com.openfaas.function"
ANNOTATION_PREFIX = "com.openfaas.annotations."
RESERVED_LABEL_PREFIX = "faasd."
"""Labels faasd keeps for itself: refused in a request, left out of the labels reported."""

WATCHDOG_PORT = 8080
HEALTH_PATH = "/_/health"
CALL_TOKEN_ENV = "call_token"
"""The replica's call token, read (and hidden from the function) by faasd's watchdog."""
ARCHIVE_ENV_PREFIX = "FAASD_HANDLER_ARCHIVE_"
"""``FAASD_HANDLER_ARCHIVE_0``, ``_1``...: the handler archive, base64, in pieces."""
ARCHIVE_CHUNK_CHARS = 60_000
"""One piece: under Linux's 128 KiB limit on one environment string (``MAX_ARG_STRLEN``)."""
MAX_ARCHIVE_CHARS = 512 * 1024
"""The most base64 a handler archive may take in an app definition (384 KiB compressed): Marathon keeps
app definitions in ZooKeeper, whose nodes hold 1 MiB by default (``--zk_max_node_size``)."""
TASK_ROLE = "_marathon-task"
WATCHDOG_FILE = "faasd.pyz"
TASK_COMMAND = f"exec python3 {WATCHDOG_FILE} {TASK_ROLE}"
"""``cmd`` of a command task (run by ``/bin/sh -c`` in the sandbox, where the fetcher put the zipapp)."""

DEFAULT_CPUS = 0.1
DEFAULT_MEM_MIB = 128.0
MIN_CPUS = 0.001

HEALTH_CHECK: dict[str, Any] = {
    "protocol": "MESOS_HTTP",
    "path": HEALTH_PATH,
    "portIndex": 0,
    "gracePeriodSeconds": 60,
    "intervalSeconds": 1,
    "timeoutSeconds": 2,
    "maxConsecutiveFailures": 3,
    "delaySeconds": 0,
}
"""Run by Mesos on the agent (``MESOS_HTTP``: no load on Marathon). A replica is ready once it passes;
failures in the first minute (a python-mode function installing its requirements) only count after a
first success; then three failures in a row (about 3 s) and Marathon replaces the task."""
UPGRADE_STRATEGY = {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}
"""Rolling updates start every new task first and stop old ones once new ones are healthy."""
DRAIN_S = 1
"""``healthcheck_interval``: a stopping watchdog keeps serving this long, so the gateway drops it from
its endpoints (on Marathon's TASK_KILLING event) before its listener closes."""
KILL_GRACE_S = 15
"""``taskKillGracePeriodSeconds``: SIGTERM, then SIGKILL after this (drain plus calls finishing)."""

CONSTRAINT_OPERATORS = ("UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS")
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_SEGMENT = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAME = re.compile(_LABEL)
_RESERVED_LAST = ("restart", "tasks", "versions")
_CPU = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(m?)")
_TOKEN_CONTEXT = b"faasd marathon call token\0"


@dataclass(frozen=True, slots=True, kw_only=True)
class AppSettings:
    """What the provider adds to every app definition."""

    group: str
    """The group's path, ``/faasd`` (:func:`check_group`)."""
    watchdog_uri: str = ""
    """Where Mesos agents download faasd's zipapp for command tasks; empty: specs need an image."""
    force_pull: bool = False


# -- ids --------------------------------------------------------------------------------------------


def check_group(group: str) -> str:
    """The group's absolute path (``faasd`` -> ``/faasd``, ``team/fn`` -> ``/team/fn``).

    Raises:
        InvalidRequest: a segment Marathon's ids cannot hold.
    """
    segments = [segment for segment in group.strip().strip("/").split("/")]
    if not group.strip().strip("/"):
        raise InvalidRequest("marathon_group must name a group, e.g. faasd")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise InvalidRequest(
                f"marathon_group {group!r}: {segment!r} is not a Marathon id segment "
                "(lowercase letters, digits and '-', dot-separated, not starting or ending with '-')"
            )
    return "/" + "/".join(segments)


def app_id(group: str, name: str) -> str:
    """``/<group>/<name>``, the app of function ``name``.

    Raises:
        InvalidRequest: a name Marathon's ids cannot hold (the message says what to use).
    """
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"function name {name!r} cannot be a Marathon app id: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (Marathon ids have no uppercase letters or '_')"
        )
    if name in _RESERVED_LAST:
        raise InvalidRequest(f"function name {name!r} cannot be a Marathon app id: Marathon reserves it")
    return f"{group}/{name}"


def function_name(group: str, identifier: object) -> str | None:
    """The function an app id names: its last segment when the app sits directly in ``group``."""
    if not isinstance(identifier, str) or not identifier.startswith(group + "/"):
        return None
    rest = identifier[len(group) + 1 :]
    return rest if _NAME.fullmatch(rest) else None


def function_token(secret: bytes, identifier: str) -> str:
    """The call token of one app: an HMAC of its id keyed by the daemon's call token.

    Why one per function: the token sits in the app definition (Marathon has no secrets) and in the
    container's environment, so every function could read its own; with one token for all, any function
    could call every other replica directly, past the gateway.
    """
    digest = hmac.new(secret, _TOKEN_CONTEXT + identifier.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


# -- units ------------------------------------------------------------------------------------------


def _cpus(text: str, field_name: str) -> float:
    """CPUs from the OpenFaaS forms: ``0.5`` and ``2`` CPUs, ``500m`` millicores, an integer of 1000 or
    more nano-CPUs (faas-swarm's form)."""
    match = _CPU.fullmatch(text.strip())
    if match is None:
        raise InvalidRequest(f"{field_name} {text!r} is not a CPU amount (use 0.5, 500m or 500000000)")
    number, milli = match.groups()
    if milli:
        value = float(number) / 1000
    elif "." not in number and int(number) >= 1000:
        value = int(number) / 1e9
    else:
        value = float(number)
    if not MIN_CPUS <= value < math.inf:
        raise InvalidRequest(f"{field_name} {text!r}: Marathon needs at least {MIN_CPUS} CPU")
    return value


def _mem_mib(text: str, field_name: str) -> float:
    try:
        size = parse_size(text)
    except ValueError:
        raise InvalidRequest(f"{field_name} {text!r} is not a memory size (use 128M, 1G or bytes)") from None
    if size < 1024 * 1024:
        raise InvalidRequest(f"{field_name} {text!r}: Marathon needs at least 1 MiB")
    return size / (1024 * 1024)


def _resources(spec: FunctionSpec) -> tuple[float, float]:
    """(cpus, mem MiB): Marathon reserves one amount of each, also the container's limit. Memory comes
    from ``limits`` (the limit is what kills), else ``requests``; CPU from ``requests`` (what is
    reserved), else ``limits``."""
    limits = spec.limits or Resources()
    requests = spec.requests or Resources()
    cpus = DEFAULT_CPUS
    if requests.cpu or limits.cpu:
        field_name = "requests.cpu" if requests.cpu else "limits.cpu"
        cpus = _cpus(requests.cpu or limits.cpu, field_name)
    mem = DEFAULT_MEM_MIB
    if limits.memory or requests.memory:
        field_name = "limits.memory" if limits.memory else "requests.memory"
        mem = _mem_mib(limits.memory or requests.memory, field_name)
    # Both kinds are checked, used or not: a malformed value is an error wherever it is.
    for resources, kind in ((limits, "limits"), (requests, "requests")):
        if resources.cpu:
            _cpus(resources.cpu, f"{kind}.cpu")
        if resources.memory:
            _mem_mib(resources.memory, f"{kind}.memory")
    return round(cpus, 6), round(mem, 3)


def _constraint(text: str) -> list[str]:
    """``field:OPERATOR[:value]`` (the form of Marathon's UI and the DC/OS CLI) as Marathon's list."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or parts[1] not in CONSTRAINT_OPERATORS:
        raise InvalidRequest(
            f"constraint {text!r}: on Marathon write field:OPERATOR or field:OPERATOR:value, e.g. "
            f"hostname:UNIQUE or rack:LIKE:rack-[1-3] (operators: {', '.join(CONSTRAINT_OPERATORS)})"
        )
    return parts


# -- spec -> app ------------------------------------------------------------------------------------


def check_spec(spec: FunctionSpec, settings: AppSettings) -> None:
    """Refuse what the Marathon backend cannot run, before anything is sent (see the module docstring).

    Raises:
        InvalidRequest: naming the field and what to do instead.
    """
    app_id(settings.group, spec.name)
    if spec.secrets:
        raise InvalidRequest(
            f"secrets ({', '.join(spec.secrets)}) are not supported by the marathon backend: open-source "
            "Marathon has no secret store and anyone who can read its API reads an app's environment"
        )
    for key in spec.labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise InvalidRequest(f"label {key!r}: labels starting with {RESERVED_LABEL_PREFIX!r} are reserved")
        if key == LABEL_FUNCTION:
            raise InvalidRequest(f"label {key!r} is set by faasd (the function's name)")
        if key.startswith(ANNOTATION_PREFIX) and key[len(ANNOTATION_PREFIX) :] in spec.annotations:
            raise InvalidRequest(f"label {key!r} clashes with annotation {key[len(ANNOTATION_PREFIX) :]!r}")
    for key in spec.env_vars:
        if key == CALL_TOKEN_ENV or key.startswith(ARCHIVE_ENV_PREFIX):
            raise InvalidRequest(f"envVars: {key!r} is set by faasd on Marathon")
    _resources(spec)
    for constraint in spec.constraints:
        _constraint(constraint)
    if spec.image:
        if spec.handler_archive:
            raise InvalidRequest(
                "handlerArchive with an image: on Marathon the image's entrypoint runs, so build the "
                "code into the image ('faasd build DIR'), or deploy without an image"
            )
        return
    if not settings.watchdog_uri:
        raise InvalidRequest(
            "on Marathon a function without an image needs marathon_watchdog_uri (a URL of faasd.pyz "
            "the Mesos agents can download); or give it an image"
        )
    if spec.read_only_root_filesystem:
        raise InvalidRequest("readOnlyRootFilesystem needs an image on Marathon (a command task has no root fs)")
    if spec.handler_archive and len(_archive_text(spec.handler_archive)) > MAX_ARCHIVE_CHARS:
        raise InvalidRequest(
            f"handlerArchive is {len(spec.handler_archive)} bytes: on Marathon it travels in the app "
            f"definition, which holds at most {MAX_ARCHIVE_CHARS * 3 // 4 // 1024} KiB of it; build an "
            "image instead ('faasd build DIR')"
        )


def _archive_text(archive: bytes) -> str:
    return base64.b64encode(archive).decode("ascii")


def app_definition(
    spec: FunctionSpec, replicas: int, settings: AppSettings, *, call_token: str | None = None
) -> dict[str, Any]:
    """The app (``POST /v2/apps``, or ``PUT /v2/apps/{id}?partialUpdate=false``) running ``spec``.

    Args:
        replicas: ``instances``.
        call_token: the token replicas require (:func:`function_token`); None: they check nothing.

    Raises:
        InvalidRequest: see :func:`check_spec`.
    """
    check_spec(spec, settings)
    identifier = app_id(settings.group, spec.name)
    cpus, mem = _resources(spec)
    labels: dict[str, str] = {**spec.labels, LABEL_FUNCTION: spec.name}
    for key, value in spec.annotations.items():
        labels[ANNOTATION_PREFIX + key] = value
    hint: dict[str, Any] = {}
    if spec.limits is not None:
        hint["limits"] = spec.limits.to_json()
    if spec.requests is not None:
        hint["requests"] = spec.requests.to_json()
    if spec.constraints:
        hint["constraints"] = list(spec.constraints)
    if "healthcheck_interval" not in spec.env_vars:
        hint["drain"] = True
    if "fprocess" in spec.env_vars:  # Both are the watchdog's fprocess: remember which was written.
        hint["fprocess"] = {"var": spec.env_vars["fprocess"], "process": spec.env_process}
    if hint:
        labels[LABEL_SPEC] = write_hint(hint)
    env: dict[str, str] = {"healthcheck_interval": f"{DRAIN_S}s", **spec.env_vars}
    if spec.env_process:
        env["fprocess"] = spec.env_process
    if call_token is not None:
        env[CALL_TOKEN_ENV] = call_token
    app: dict[str, Any] = {
        "id": identifier,
        "instances": replicas,
        "cpus": cpus,
        "mem": mem,
        "labels": labels,
        "env": env,
        "healthChecks": [dict(HEALTH_CHECK)],
        "upgradeStrategy": dict(UPGRADE_STRATEGY),
        "taskKillGracePeriodSeconds": KILL_GRACE_S,
        "constraints": [_constraint(text) for text in spec.constraints],
    }
    if spec.image:
        docker: dict[str, Any] = {"image": spec.image, "forcePullImage": settings.force_pull}
        if spec.read_only_root_filesystem:
            docker["parameters"] = [{"key": "read-only", "value": "true"}, {"key": "tmpfs", "value": "/tmp"}]
        app["container"] = {
            "type": "DOCKER",
            "docker": docker,
            "portMappings": [{"containerPort": WATCHDOG_PORT, "hostPort": 0, "protocol": "tcp", "name": "http"}],
        }
        app["networks"] = [{"mode": "container/bridge"}]
        return app
    text = _archive_text(spec.handler_archive) if spec.handler_archive else ""
    for index, start in enumerate(range(0, len(text), ARCHIVE_CHUNK_CHARS)):
        env[f"{ARCHIVE_ENV_PREFIX}{index}"] = text[start : start + ARCHIVE_CHUNK_CHARS]
    app["cmd"] = TASK_COMMAND
    app["fetch"] = [{"uri": settings.watchdog_uri, "destPath": WATCHDOG_FILE, "extract": False, "cache": False}]
    app["portDefinitions"] = [{"port": 0, "protocol": "tcp", "name": "http"}]
    return app


# -- app -> spec ------------------------------------------------------------------------------------


def spec_from_app(app: Mapping[str, Any], name: str) -> FunctionSpec:
    """The FunctionSpec an app runs: faasd's own apps give back exactly what was deployed; an app made
    by hand reports what it has (its image, ``fprocess``, env, labels, resources).

    Raises:
        InvalidRequest: the app cannot be a FunctionSpec (a value no spec can hold).
    """
    all_labels = {str(k): str(v) for k, v in (app.get("labels") or {}).items()}
    hint = read_hint(all_labels.get(LABEL_SPEC))
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    for key, value in all_labels.items():
        if key.startswith(ANNOTATION_PREFIX):
            annotations[key[len(ANNOTATION_PREFIX) :]] = value
        elif key != LABEL_FUNCTION and not key.startswith(RESERVED_LABEL_PREFIX):
            labels[key] = value
    env = {str(k): v for k, v in (app.get("env") or {}).items() if isinstance(v, str)}
    env_process = env.pop("fprocess", "")
    written = hint.get("fprocess")
    if isinstance(written, dict) and env_process == (written.get("process") or written.get("var")):
        env["fprocess"] = str(written.get("var", ""))
        env_process = str(written.get("process", ""))
    env.pop(CALL_TOKEN_ENV, None)
    if hint.get("drain") and env.get("healthcheck_interval") == f"{DRAIN_S}s":
        del env["healthcheck_interval"]
    archive = _archive_from_env(env)
    container = app.get("container") or {}
    docker = container.get("docker") or {}
    image = str(docker.get("image") or "")
    parameters = {(p.get("key"), p.get("value")) for p in docker.get("parameters") or [] if isinstance(p, Mapping)}
    constraints = tuple(":".join(str(part) for part in item) for item in app.get("constraints") or [])
    if hint.get("constraints") is not None and [_constraint(t) for t in hint["constraints"]] == [
        [str(part) for part in item] for item in app.get("constraints") or []
    ]:
        constraints = tuple(hint["constraints"])
    limits, requests = _resources_back(app, hint)
    return FunctionSpec(
        name=name,
        image=image,
        env_process=env_process,
        env_vars=env,
        constraints=constraints,
        labels=labels,
        annotations=annotations,
        limits=limits,
        requests=requests,
        read_only_root_filesystem=("read-only", "true") in parameters,
        handler_archive=archive,
    )


def _archive_from_env(env: dict[str, str]) -> bytes:
    """Take the archive pieces out of ``env`` (all of them, in order) and decode them."""
    pieces: list[str] = []
    while (piece := env.pop(f"{ARCHIVE_ENV_PREFIX}{len(pieces)}", None)) is not None:
        pieces.append(piece)
    for key in [key for key in env if key.startswith(ARCHIVE_ENV_PREFIX)]:
        del env[key]  # A piece out of sequence: not an archive faasd wrote.
    if not pieces:
        return b""
    try:
        return base64.b64decode("".join(pieces), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _resources_back(app: Mapping[str, Any], hint: Mapping[str, Any]) -> tuple[Resources | None, Resources | None]:
    """(limits, requests) as written when the app still reserves what they map to, else from the app."""
    cpus = app.get("cpus")
    mem = app.get("mem")
    try:
        limits = Resources.from_json(hint.get("limits"), "limits")
        requests = Resources.from_json(hint.get("requests"), "requests")
        probe = FunctionSpec(name="x", limits=limits, requests=requests)
        if (limits or requests) and _same(_resources(probe), (cpus, mem)):
            return limits, requests
    except InvalidRequest:
        pass
    if not isinstance(cpus, int | float) or not isinstance(mem, int | float):
        return None, None
    if _same((DEFAULT_CPUS, DEFAULT_MEM_MIB), (cpus, mem)):
        return None, None
    return Resources(memory=f"{mem:g}Mi", cpu=f"{cpus:g}"), None


def _same(mine: tuple[float, float], theirs: tuple[object, object]) -> bool:
    pairs = zip(mine, theirs, strict=True)
    return all(isinstance(b, int | float) and math.isclose(a, float(b), rel_tol=1e-6) for a, b in pairs)


def parse_time(text: object) -> datetime | None:
    """Marathon's ISO 8601 times (``2026-11-24T18:16:37.146Z``)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
