"""FunctionSpec <-> Docker Swarm service spec, and the other pure parts of the Swarm backend.

No I/O, no docker SDK, no trio: every function here takes and returns plain data (the Docker Engine
API's JSON shapes, as dicts), so the translation is tested without a Docker engine.

**Service layout** (the conventions of OpenFaaS's Swarm provider, https://github.com/openfaas/faas-swarm, plus what a
swarm without a registry or IPVS needs):

* service name = function name; labels ``com.openfaas.function=<name>`` and ``function=true`` on the
  service and on its containers (container events carry them), each annotation as
  ``com.openfaas.annotations.<key>``, the user's labels on the service;
* ``fprocess=<envProcess>`` plus ``envVars`` in the environment; ``Init`` (tini as PID 1: a stop takes
  3.3 s instead of 13.4 s); a short ``StopGracePeriod``;
* ``readOnlyRootFilesystem`` -> ``ReadOnly`` plus a tmpfs on ``/tmp`` (the watchdog's lock file and
  temporary files keep working);
* each secret is a Docker secret mounted at ``/var/openfaas/secrets/<name>``; Swarm secrets are
  immutable, so the Docker secret's name carries a digest of the value (:func:`secret_version`) and a
  changed value is a new Docker secret, picked up by the next deploy/update;
* the daemon's call token (:mod:`faasd.calltoken`) as a Docker secret mounted at
  :data:`CALL_TOKEN_PATH`, named in ``call_token_file``: the watchdog refuses calls without it, so a
  host-mode published port (open on every interface) or the overlay network reaches no function
  except through the gateway; it is not reported back as one of the function's secrets;
* the function's code runs unprivileged (:func:`run_as`): the watchdog starts as root, reads the
  call token -- mounted 0400 and root's, unlike the function's own secrets (0444) -- and unpacks the
  handler archive, then becomes ``run_as`` (``65534:65534``, or the image's own ``USER``, which faasd
  then overrides with root so the watchdog can read the token first) before any function code runs;
  ``run_as`` in ``envVars`` overrides it (``root``: the opt-out, which gives the function the token);
* a handler archive as a Docker config the watchdog unpacks into ``/home/app`` (:mod:`.handler`);
* a HEALTHCHECK testing the watchdog's lock file (``/tmp/.lock``), so Swarm itself knows when a
  replica is up (rolling updates with ``start-first`` wait for it);
* placement: the request's constraints, else ``node.platform.os == linux``;
* ``limits`` -> ``Resources.Limits``, ``requests`` -> ``Resources.Reservations`` (memory in Docker
  units, ``128M``; CPU as a count, ``0.5``, millicores, ``500m``, or nano-CPUs, ``500000000``);
* endpoint mode ``dnsrr`` (no IPVS on these machines, so no VIP), and in ``host-port`` routing the
  watchdog port published in host mode on a port Docker picks;
* rolling updates one task at a time, ``start-first``, rolled back on failure; restarts on any exit.

**Which services are functions** (:class:`FunctionRule`): those labelled as one, and -- the faas
seed's rule -- every other service attached to the functions network, unless labelled
``function=false`` or the daemon's own.

**Round trip.** :func:`spec_from_service` rebuilds the FunctionSpec from a service, for functions
deployed by faasd and for ones made by hand, labelled or not. What Docker cannot give back as it was
written (the image reference before it was resolved to an ID, ``128M`` rather than bytes, whether
the placement was the default) is kept in the ``faasd.spec`` label, and used only while the service
still matches it (a service edited by hand reports what it runs).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faasd.errors import InvalidRequest
from faasd.providers.common.speclabel import LABEL_SPEC, read_hint, write_hint
from faasd.providers.swarm.handler import HandlerConfig, check_archive, mount_archive, take_archive
from faasd.providers.types import FunctionSpec, Resources
from faasd.units import parse_cpus, parse_size

__all__ = [
    "ANNOTATION_PREFIX",
    "CALL_TOKEN_CONFIG",
    "CALL_TOKEN_ENV",
    "CALL_TOKEN_LABEL",
    "CALL_TOKEN_PATH",
    "DEFAULT_PLACEMENT",
    "DEFAULT_RUN_AS",
    "LABEL_FUNCTION",
    "LABEL_MARKER",
    "LABEL_OWNER",
    "LABEL_SECRET",
    "LABEL_SPEC",
    "RESERVED_LABEL_PREFIX",
    "ROUTES",
    "ROUTE_SETTINGS",
    "RUN_AS_ENV",
    "SECRETS_DIR",
    "SECRET_OWNER",
    "WATCHDOG_PORT",
    "FunctionRule",
    "SecretRef",
    "attached_networks",
    "call_token_secret_name",
    "function_name",
    "nano_cpus",
    "parse_docker_time",
    "parse_log_line",
    "run_as",
    "secret_version",
    "service_spec",
    "spec_from_service",
    "takes_call_token",
]

LABEL_FUNCTION = "com.openfaas.function"
LABEL_MARKER = "function"
ANNOTATION_PREFIX = "com.openfaas.annotations."
RESERVED_LABEL_PREFIX = "faasd."
"""Labels faasd keeps for itself: refused in a request, left out of the labels reported."""
LABEL_OWNER = "com.openfaas.owner"
SECRET_OWNER = "faasd"
"""``com.openfaas.owner`` of the Docker secrets faasd creates (faas-swarm used ``openfaas``)."""
LABEL_SECRET = "faasd.secret"
"""On a Docker secret: the faasd secret name it is a version of."""

RUN_AS_ENV = "run_as"
"""The watchdog's variable (:mod:`faasd.watchdog.privileges`): the user its functions run as."""
DEFAULT_RUN_AS = "65534:65534"
"""``nobody:nogroup``, in faasd's base image's /etc/passwd, and unprivileged in any image without it."""
CALL_TOKEN_PATH = "/run/faasd/call-token"
"""Where the call token secret is mounted: apart from ``SECRETS_DIR``, which holds the function's own."""
CALL_TOKEN_ENV = "call_token_file"
CALL_TOKEN_LABEL = "faasd.call-token"
"""On the Docker secret (one per token value) and the Docker config (the swarm's copy of the value)."""
CALL_TOKEN_CONFIG = "faasd-call-token"
"""The Docker config holding the token every daemon on this swarm uses: a daemon started with a new
state dir adopts it, so the functions already running keep answering its gateway."""
SECRETS_DIR = "/var/openfaas/secrets"
WATCHDOG_PORT = 8080
LOCK_FILE = "/tmp/.lock"
DEFAULT_PLACEMENT = "node.platform.os == linux"
SPREAD = {"Spread": {"SpreadDescriptor": "node.id"}}
"""Every function's placement preference: replicas spread evenly over the nodes its constraints allow
(Swarm places each new task on the node with the fewest of the service's tasks), so a node's loss
takes only its share."""
SECRET_NAME_MAX = 64
"""Docker's limit on a secret's name."""

SECONDS_NS = 1_000_000_000
HEALTHCHECK = {
    "Test": ["CMD-SHELL", f"[ -e {LOCK_FILE} ]"],
    "Interval": 2 * SECONDS_NS,
    "Timeout": 2 * SECONDS_NS,
    "Retries": 3,
}
"""Swarm's view of a replica's health: the lock file, which the watchdog writes once it serves and
removes on SIGTERM. The first probe runs one interval after the start (Docker 20.10 has no start
interval), so a task is ``running`` for Swarm ≈ 2 s after its start; faasd publishes it as soon as
its own HTTP probe passes."""
RESTART_POLICY = {"Condition": "any", "Delay": SECONDS_NS, "MaxAttempts": 0}
"""Restart on any exit after 1 s, without a limit: a function whose dependency was down for a while
recovers by itself (faas-swarm gave up after 5 attempts)."""
UPDATE_CONFIG = {"Parallelism": 1, "Order": "start-first", "FailureAction": "rollback", "Delay": 0}
ROLLBACK_CONFIG = {"Parallelism": 1, "Order": "start-first", "FailureAction": "pause", "Delay": 0}

ROUTES = ("host-port", "overlay-dns")
ROUTE_SETTINGS = ("auto", *ROUTES)
"""``swarm_route`` values: ``auto`` picks one of :data:`ROUTES` from where the daemon runs."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A Docker secret to mount as faasd secret ``name``."""

    name: str
    docker_id: str
    docker_name: str


# -- naming -----------------------------------------------------------------------------------------


def secret_version(name: str, value: bytes) -> str:
    """The Docker secret name holding ``value`` for faasd secret ``name``: ``faasd-<name>-<digest>``.

    Swarm secrets cannot change, so each value gets its own name; the digest covers the name too, so
    two long names cut to the same prefix never share a Docker secret.
    """
    digest = hashlib.sha256(name.encode() + b"\0" + value).hexdigest()[:12]
    keep = SECRET_NAME_MAX - len("faasd--") - len(digest)
    return f"faasd-{name[:keep]}-{digest}"


def call_token_secret_name(token: bytes) -> str:
    """The Docker secret holding ``token``: ``faasd-call-token-<digest>`` (secrets cannot change, so a
    new value is a new name; the digest reveals nothing of a 256-bit random value)."""
    return f"{CALL_TOKEN_CONFIG}-{hashlib.sha256(token).hexdigest()[:12]}"


def function_name(service: Mapping[str, Any]) -> str | None:
    """The function a service is by its labels (its name), or None when it is not labelled as one.

    A labelled function is a service labelled ``com.openfaas.function`` or ``function=true``
    (faas-swarm's marker), on the service or on its containers. :class:`FunctionRule` adds the
    seed's rule: services on the functions network.
    """
    spec = service.get("Spec") or {}
    if _labelled(spec, lambda labels: bool(labels.get(LABEL_FUNCTION)) or labels.get(LABEL_MARKER) == "true"):
        name = spec.get("Name")
        return str(name) if name else None
    return None


def _labelled(spec: Mapping[str, Any], test: Callable[[Mapping[str, Any]], bool]) -> bool:
    """``test`` holds for the service's labels or its containers'."""
    container_labels = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    return test(spec.get("Labels") or {}) or test(container_labels)


def attached_networks(service: Mapping[str, Any]) -> set[str]:
    """The networks a service's tasks join, as written in its spec (IDs, or names when created through
    the API with names; the deprecated ``Spec.Networks`` too)."""
    spec = service.get("Spec") or {}
    attachments = [*((spec.get("TaskTemplate") or {}).get("Networks") or []), *(spec.get("Networks") or [])]
    return {str(item["Target"]) for item in attachments if isinstance(item, Mapping) and item.get("Target")}


@dataclass(frozen=True, slots=True)
class FunctionRule:
    """Which Swarm services are functions.

    * a service labelled as one (:func:`function_name`), wherever it runs;
    * any other service attached to the functions network -- the faas seed's rule: ``docker service
      create --network=functions --name catservice IMAGE`` makes a function, no label needed --
      unless it is labelled ``function=false`` (a database or a second gateway on that network);
    * never one of ``exclude``: the daemon's own service, when it runs as one on that network.

    A service that is on the network and runs no watchdog is still a function: it is listed, never
    ready, and its status says why (see ``SwarmProvider``).
    """

    networks: frozenset[str] = frozenset()
    """The functions network's name and ID (a spec names it by either)."""
    exclude: frozenset[str] = frozenset()
    """Service IDs that are never functions."""

    def name(self, service: Mapping[str, Any]) -> str | None:
        """The function ``service`` is, or None."""
        if service.get("ID") in self.exclude:
            return None
        labelled = function_name(service)
        if labelled is not None:
            return labelled
        spec = service.get("Spec") or {}
        if _labelled(spec, lambda labels: labels.get(LABEL_MARKER) == "false"):
            return None
        if self.networks and attached_networks(service) & self.networks:
            name = spec.get("Name")
            return str(name) if name else None
        return None


def takes_call_token(container_spec: Mapping[str, Any] | None) -> bool:
    """True when a task of this container spec is given the call token (faasd mounts it as a secret at
    :data:`CALL_TOKEN_PATH`). The gateway sends the token only to such replicas: a service made by hand
    without it checks nothing, and must not learn a token that opens every other function."""
    for ref in (container_spec or {}).get("Secrets") or []:
        if (ref.get("File") or {}).get("Name") == CALL_TOKEN_PATH:
            return True
    return False


def run_as(spec: FunctionSpec, image_user: str | None) -> tuple[str | None, bool]:
    """(the ``run_as`` faasd gives the watchdog, whether the container must start as root), for ``spec``
    on an image whose ``USER`` is ``image_user`` -- None when the image does not run faasd's watchdog
    or is not known here (pulled at deploy).

    * ``run_as`` in the function's ``envVars`` is the deployer's choice: nothing is added;
    * a faasd-watchdog image with a ``USER`` other than root: its functions run as that user, and the
      container starts as root (``User: 0:0``) so the watchdog can read the call token (0400, root's)
      before it becomes that user -- else the token would have to be readable by the function;
    * otherwise ``65534:65534`` (:data:`DEFAULT_RUN_AS`): harmless for an image that runs another
      watchdog (it ignores the variable).
    """
    if RUN_AS_ENV in spec.env_vars:
        return None, False
    user = (image_user or "").strip()
    if user and user.partition(":")[0] not in ("0", "root"):
        return user, True
    return DEFAULT_RUN_AS, False


# -- units ------------------------------------------------------------------------------------------


def nano_cpus(text: str, field_name: str) -> int:
    """CPU as Docker's NanoCPUs (:func:`faasd.units.parse_cpus`: ``0.5``, ``500m``, ``500000000``).

    Raises:
        InvalidRequest: naming ``field_name``.
    """
    try:
        return parse_cpus(text)
    except ValueError:
        raise InvalidRequest(f"{field_name} {text!r} is not a CPU amount (use 0.5, 500m or 500000000)") from None


def _memory_bytes(text: str, field_name: str) -> int:
    try:
        return parse_size(text)
    except ValueError:
        raise InvalidRequest(f"{field_name} {text!r} is not a memory size (use 128M, 1G or bytes)") from None


def _resources(resources: Resources | None, field_name: str) -> dict[str, int]:
    result: dict[str, int] = {}
    if resources is None:
        return result
    if resources.memory:
        result["MemoryBytes"] = _memory_bytes(resources.memory, f"{field_name}.memory")
    if resources.cpu:
        result["NanoCPUs"] = nano_cpus(resources.cpu, f"{field_name}.cpu")
    return result


def _resources_back(docker: Mapping[str, Any] | None) -> Resources | None:
    """Docker resources as OpenFaaS strings (bytes, CPUs), for services faasd did not write."""
    if not docker:
        return None
    memory = docker.get("MemoryBytes") or 0
    cpu = docker.get("NanoCPUs") or 0
    if not memory and not cpu:
        return None
    return Resources(memory=str(memory) if memory else "", cpu=f"{cpu / SECONDS_NS:g}" if cpu else "")


# -- spec -> service --------------------------------------------------------------------------------


def check_spec(spec: FunctionSpec) -> None:
    """Refuse what the Swarm backend cannot run, before anything is created.

    Raises:
        InvalidRequest: a handler archive too large for a Docker config, a reserved or clashing label,
            bad resources, duplicate secrets.
    """
    check_archive(spec)
    for key in spec.labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise InvalidRequest(f"label {key!r}: labels starting with {RESERVED_LABEL_PREFIX!r} are reserved")
        if key.startswith(ANNOTATION_PREFIX) and key[len(ANNOTATION_PREFIX) :] in spec.annotations:
            raise InvalidRequest(f"label {key!r} clashes with annotation {key[len(ANNOTATION_PREFIX) :]!r}")
    if len(set(spec.secrets)) != len(spec.secrets):
        raise InvalidRequest("secrets must not name the same secret twice")
    _resources(spec.limits, "limits")
    _resources(spec.requests, "requests")


def service_spec(
    spec: FunctionSpec,
    *,
    image: str,
    replicas: int,
    network: str,
    route: str,
    secrets: Sequence[SecretRef],
    stop_grace_s: float,
    extra_labels: Mapping[str, str] | None = None,
    call_token: SecretRef | None = None,
    handler: HandlerConfig | None = None,
    image_user: str | None = None,
) -> dict[str, Any]:
    """The Docker ServiceSpec (``POST /services/create`` body) that runs ``spec``.

    Args:
        image: what the service runs: the image ID the reference resolved to (no registry pull), or
            the reference itself when pulling is allowed.
        replicas: the replicated mode's count.
        network: the overlay network's name or ID.
        route: ``host-port`` publishes the watchdog port in host mode; ``overlay-dns`` publishes nothing.
        secrets: Docker secrets for ``spec.secrets``, same order.
        extra_labels: added to the service's and containers' labels (tests mark what they create).
        call_token: the Docker secret with the daemon's call token; None: replicas check nothing.
        handler: the Docker config holding ``spec.handler_archive`` (required when there is one).
        image_user: the image's ``USER`` when it runs faasd's watchdog, else None (:func:`run_as`).
    """
    check_spec(spec)
    if spec.handler_archive and handler is None:
        raise ValueError(f"{spec.name}: a handler archive needs its Docker config")
    markers = {LABEL_FUNCTION: spec.name, LABEL_MARKER: "true", **(extra_labels or {})}
    labels: dict[str, str] = {**spec.labels, **markers}
    for key, value in spec.annotations.items():
        labels[ANNOTATION_PREFIX + key] = value
    hint: dict[str, Any] = {"image": spec.image, "imageRef": image}
    if spec.limits is not None:
        hint["limits"] = spec.limits.to_json()
    if spec.requests is not None:
        hint["requests"] = spec.requests.to_json()
    if not spec.constraints:
        hint["defaultPlacement"] = True
    user, start_as_root = run_as(spec, image_user)
    if user is not None:
        hint["runAs"] = user  # So it is not reported as one of the deployer's envVars.
    labels[LABEL_SPEC] = write_hint(hint)
    env = dict(spec.env_vars)
    if spec.env_process:
        env["fprocess"] = spec.env_process
    if call_token is not None:
        env[CALL_TOKEN_ENV] = CALL_TOKEN_PATH
    if user is not None:
        env[RUN_AS_ENV] = user
    container: dict[str, Any] = {
        "Image": image,
        "Labels": markers,
        "Env": [f"{key}={value}" for key, value in env.items()],
        "Init": True,
        "StopGracePeriod": int(stop_grace_s * SECONDS_NS),
        "Healthcheck": dict(HEALTHCHECK),
    }
    if start_as_root:
        container["User"] = "0:0"
    if spec.read_only_root_filesystem:
        container["ReadOnly"] = True
        container["Mounts"] = [{"Type": "tmpfs", "Target": "/tmp"}]
    # The function's secrets are for the function (0444); the call token is the watchdog's only (0400,
    # root's: read before it drops to run_as).
    mounts = [(f"{SECRETS_DIR}/{ref.name}", ref, 0o444) for ref in secrets]
    if call_token is not None:
        mounts.append((CALL_TOKEN_PATH, call_token, 0o400))
    if mounts:
        container["Secrets"] = [
            {
                "File": {"Name": path, "UID": "0", "GID": "0", "Mode": mode},
                "SecretID": ref.docker_id,
                "SecretName": ref.docker_name,
            }
            for path, ref, mode in mounts
        ]
    if spec.handler_archive and handler is not None:
        mount_archive(container, handler)
    resources: dict[str, Any] = {}
    if limits := _resources(spec.limits, "limits"):
        resources["Limits"] = limits
    if reservations := _resources(spec.requests, "requests"):
        resources["Reservations"] = reservations
    task_template: dict[str, Any] = {
        "ContainerSpec": container,
        "RestartPolicy": dict(RESTART_POLICY),
        "Placement": {"Constraints": list(spec.constraints) or [DEFAULT_PLACEMENT], "Preferences": [dict(SPREAD)]},
        "Networks": [{"Target": network}],
    }
    if resources:
        task_template["Resources"] = resources
    endpoint: dict[str, Any] = {"Mode": "dnsrr"}
    if route == "host-port":
        endpoint["Ports"] = [{"Protocol": "tcp", "TargetPort": WATCHDOG_PORT, "PublishMode": "host"}]
    return {
        "Name": spec.name,
        "Labels": labels,
        "TaskTemplate": task_template,
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": dict(UPDATE_CONFIG),
        "RollbackConfig": dict(ROLLBACK_CONFIG),
        "EndpointSpec": endpoint,
    }


# -- service -> spec --------------------------------------------------------------------------------


def spec_from_service(service: Mapping[str, Any], archives: Mapping[str, bytes] | None = None) -> FunctionSpec:
    """The FunctionSpec a service runs (see "Round trip" in the module docstring).

    ``archives``: the data of handler archives' Docker configs by config ID (:mod:`.handler`); a
    service whose config is not in it is reported without its archive.

    Raises:
        InvalidRequest: the service's name is not a valid function name.
    """
    raw = service.get("Spec") or {}
    template = raw.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    all_labels: dict[str, str] = dict(raw.get("Labels") or {})
    hint = read_hint(all_labels.get(LABEL_SPEC))
    labels = {}
    annotations = {}
    for key, value in all_labels.items():
        if key.startswith(ANNOTATION_PREFIX):
            annotations[key[len(ANNOTATION_PREFIX) :]] = value
        elif key in (LABEL_FUNCTION, LABEL_MARKER) or key.startswith(RESERVED_LABEL_PREFIX):
            continue
        else:
            labels[key] = value
    env: dict[str, str] = {}
    for item in container.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    env_process = env.pop("fprocess", "")
    if env.get(CALL_TOKEN_ENV) == CALL_TOKEN_PATH:
        del env[CALL_TOKEN_ENV]
    if RUN_AS_ENV in env and hint.get("runAs") == env[RUN_AS_ENV]:
        del env[RUN_AS_ENV]  # faasd's, not the deployer's.
    handler_archive = take_archive(container, env, archives or {})
    image = str(container.get("Image", ""))
    if hint.get("imageRef") == image and isinstance(hint.get("image"), str):
        image = hint["image"]
    constraints = list((template.get("Placement") or {}).get("Constraints") or [])
    if hint.get("defaultPlacement") and constraints == [DEFAULT_PLACEMENT]:
        constraints = []
    docker_resources = template.get("Resources") or {}
    limits = _resources_with_hint(docker_resources.get("Limits"), hint.get("limits"), "limits")
    requests = _resources_with_hint(docker_resources.get("Reservations"), hint.get("requests"), "requests")
    secrets = tuple(
        str((ref.get("File") or {}).get("Name") or ref.get("SecretName", "")).rsplit("/", 1)[-1]
        for ref in container.get("Secrets") or []
        if (ref.get("File") or {}).get("Name") != CALL_TOKEN_PATH
    )
    return FunctionSpec(
        name=str(raw.get("Name", "")),
        image=image,
        env_process=env_process,
        env_vars=env,
        constraints=tuple(constraints),
        secrets=secrets,
        labels=labels,
        annotations=annotations,
        limits=limits,
        requests=requests,
        read_only_root_filesystem=bool(container.get("ReadOnly", False)),
        handler_archive=handler_archive,
    )


def _resources_with_hint(docker: Mapping[str, Any] | None, hint: object, field_name: str) -> Resources | None:
    """The resources as the user wrote them when the service still has exactly those, else as Docker has them."""
    if isinstance(hint, dict):
        try:
            written = Resources.from_json(hint, field_name)
            if _resources(written, field_name) == {k: v for k, v in (docker or {}).items() if v}:
                return written
        except InvalidRequest:
            pass
    return _resources_back(docker)


_DOCKER_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def parse_docker_time(text: str) -> datetime | None:
    """Docker's RFC 3339 time with nanoseconds (``2026-11-24T18:16:37.146145436Z``), to microseconds."""
    match = _DOCKER_TIME.fullmatch(text.strip()) if text else None
    if match is None:
        return None
    base, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    moment = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return moment.replace(microsecond=micros).astimezone(UTC)


_SWARM_DETAIL = "com.docker.swarm."
_TASK_DETAIL = "com.docker.swarm.task.id"


def parse_log_line(line: str) -> tuple[datetime, str, str] | None:
    """One line of ``docker service logs`` with timestamps and details -> (time, task ID, text).

    The form is ``<RFC 3339 time> <k=v,k=v details> <text>``; the details carry
    ``com.docker.swarm.task.id``. None for a line without a time (not one of Docker's).
    """
    stamp, _, rest = line.partition(" ")
    moment = parse_docker_time(stamp)
    if moment is None:
        return None
    details, _, text = rest.partition(" ")
    if not details.startswith(_SWARM_DETAIL):
        return moment, "", rest
    task_id = ""
    for pair in details.split(","):
        key, _, value = pair.partition("=")
        if key == _TASK_DETAIL:
            task_id = value
    return moment, task_id, text
