"""Wire types shared by the gateway, the store and every provider, with their OpenFaaS JSON forms.

Pure: no I/O, no trio. ``FunctionSpec`` is what should run (the OpenFaaS ``FunctionDeployment``);
``FunctionStatus`` is what runs (``FunctionStatus``: the spec plus observed fields). The JSON names are
OpenFaaS's, exactly (``envProcess``, ``availableReplicas``, ...), mapped in one ``to_json``/``from_json``
pair per type; ``tests/unit/test_provider_types.py`` pins the serialised forms. Optional fields are
left out of the JSON when empty, as the Go ``omitempty`` does, so clients treat a missing number as 0.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from faasd.errors import InvalidRequest
from faasd.namespace import DEFAULT_NAMESPACE, check_namespace

__all__ = [
    "FUNCTION_STATES",
    "MAX_ENV_VARS_BYTES",
    "MAX_ENV_VAR_BYTES",
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "Endpoint",
    "FunctionSpec",
    "FunctionState",
    "FunctionStatus",
    "LogMessage",
    "LogRequest",
    "Resources",
    "validate_env_vars",
    "validate_function_name",
    "validate_name",
]

NAME_PATTERN = re.compile(r"[-a-zA-Z_0-9.]+")
"""Function and secret names: the OpenFaaS character class (``NameExpression`` in faas-provider). A function
name deployed from now on has no dot (:func:`validate_function_name`)."""

MAX_NAME_LENGTH = 63
"""Longest name accepted: a DNS label, so the same name works as a Swarm service or Marathon app id."""

ZERO_TIME = "0001-01-01T00:00:00Z"
"""What OpenFaaS reports as ``createdAt`` when unknown (a Go zero time)."""

LABEL_SCALE_MIN = "com.openfaas.scale.min"

MAX_ENV_VAR_BYTES = 64 * 1024
"""Longest ``NAME=VALUE`` of one ``envVars`` entry, in UTF-8 bytes. Linux refuses to exec with a single
environment string over 128 KiB (``MAX_ARG_STRLEN``); half of it leaves room and is plenty for settings."""

MAX_ENV_VARS_BYTES = 256 * 1024
"""Most bytes all ``envVars`` entries may take together. The whole environment and argv of a process
share ``ARG_MAX`` (a quarter of the stack limit: 2 MiB by default); the watchdog adds its own."""

FunctionState = Literal["deployed", "restoring", "failed"]
"""faasd's view of a function, beside the OpenFaaS replica counts (``faasd.state`` in the JSON):
``deployed`` -- applied to the backend (its replicas may still be starting: see ``availableReplicas``);
``restoring`` -- stored, being applied again after a daemon start (calls are held meanwhile);
``failed`` -- it cannot run as it is (``faasd.reason`` says why); a new deploy or update retries."""

FUNCTION_STATES: tuple[FunctionState, ...] = ("deployed", "restoring", "failed")


def validate_name(name: object, field_name: str = "service") -> str:
    """Return ``name`` if it is a valid function/secret name.

    Raises:
        InvalidRequest: naming ``field_name``.
    """
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{field_name} is required and must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"{field_name} {name[:80]!r} is longer than {MAX_NAME_LENGTH} characters")
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise InvalidRequest(f"{field_name} {name!r} may only contain letters, digits, '-', '_' and '.'")
    return name


def validate_function_name(name: object, field_name: str = "service") -> str:
    """Return ``name`` if a function may be deployed under it: a valid name without a dot.

    Why no dot: in ``/function/<name>.<namespace>`` the part after the last dot is the namespace, as
    OpenFaaS's gateway reads it (see :mod:`faasd.namespace`), so ``a.b`` could never be called by its
    name. Checked where a function is deployed (the API's FunctionDeployment, stack files, ``faasd new``),
    not by :class:`FunctionSpec` itself: a Swarm service adopted under such a name is still listed and
    can be removed (it is called as ``/function/a.b.openfaas-fn``), and a row an older faasd stored
    loads as a ``failed`` function that says why.

    Raises:
        InvalidRequest: naming ``field_name``.
    """
    validate_name(name, field_name)
    assert isinstance(name, str)  # validate_name checked it.
    if "." in name:
        raise InvalidRequest(
            f"{field_name} {name!r} may not contain '.': in /function/NAME.NAMESPACE the part after the "
            f"last dot is the namespace ({DEFAULT_NAMESPACE}); use '-' or '_'"
        )
    return name


def _string_map(value: object, field_name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{field_name} must be an object of string values")
    for key, item in value.items():
        if not isinstance(item, str):
            kind = type(item).__name__
            raise InvalidRequest(f"{field_name}: the value of {_shown(key)} must be a string, not {kind}")
    return dict(value)


def _shown(text: object, limit: int = 60) -> str:
    """``text`` for a one-line error message: its repr, cut to ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _encodable(text: str) -> bool:
    """True when ``text`` can be passed to the OS: valid UTF-8 once encoded (no lone surrogate, which
    JSON's ``\\ud800`` escapes can produce) and no NUL (C strings end there)."""
    if "\0" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_env_vars(env_vars: Mapping[str, str], field_name: str = "envVars") -> None:
    """Check that ``env_vars`` can be a process environment, on any backend.

    Why here: a variable ``execve`` cannot take was accepted, stored, and then made every replica
    start fail -- before this check, with an exception that stopped the daemon at each restart.

    Raises:
        InvalidRequest: naming the first bad key (empty, with ``=`` or NUL, not valid UTF-8), a bad
            value (NUL, not valid UTF-8, not a string), an entry over ``MAX_ENV_VAR_BYTES`` or all
            of them over ``MAX_ENV_VARS_BYTES``.
    """
    total = 0
    for key, value in env_vars.items():
        if not isinstance(key, str) or not key:
            raise InvalidRequest(f"{field_name}: an empty variable name is not allowed")
        if "=" in key or not _encodable(key):
            raise InvalidRequest(
                f"{field_name}: the name {_shown(key)} cannot be an environment variable (no '=', no NUL, valid UTF-8)"
            )
        if not isinstance(value, str):
            kind = type(value).__name__
            raise InvalidRequest(f"{field_name}: the value of {_shown(key)} must be a string, not {kind}")
        if not _encodable(value):
            raise InvalidRequest(f"{field_name}: the value of {_shown(key)} contains NUL or is not valid UTF-8")
        size = len(key.encode()) + 1 + len(value.encode())
        if size > MAX_ENV_VAR_BYTES:
            raise InvalidRequest(
                f"{field_name}: {_shown(key)} is {size} bytes long (name=value); the limit is {MAX_ENV_VAR_BYTES}"
            )
        total += size
    if total > MAX_ENV_VARS_BYTES:
        raise InvalidRequest(f"{field_name}: {total} bytes in all; the limit is {MAX_ENV_VARS_BYTES}")


def _string_list(value: object, field_name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{field_name} must be a list of strings")
    return list(value)


def _optional_str(value: object, field_name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field_name} must be a string")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """OpenFaaS ``limits``/``requests``: Docker-style memory (``128M``) and CPU (``0.5`` or nano-CPUs)."""

    memory: str = ""
    cpu: str = ""

    @classmethod
    def from_json(cls, value: object, field_name: str) -> Resources | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidRequest(f'{field_name} must be an object like {{"memory": "128M", "cpu": "0.5"}}')
        memory = _optional_str(value.get("memory"), f"{field_name}.memory")
        cpu = _optional_str(value.get("cpu"), f"{field_name}.cpu")
        return cls(memory=memory, cpu=cpu)

    def to_json(self) -> dict[str, str]:
        result = {}
        if self.memory:
            result["memory"] = self.memory
        if self.cpu:
            result["cpu"] = self.cpu
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSpec:
    """A function as it should run: the OpenFaaS FunctionDeployment, plus faasd's handler archive."""

    name: str
    image: str = ""
    env_process: str = ""
    env_vars: Mapping[str, str] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    limits: Resources | None = None
    requests: Resources | None = None
    read_only_root_filesystem: bool = False
    handler_archive: bytes = b""
    """A .tar.gz of the function's directory (``faasd deploy --handler DIR``), unpacked into its
    working directory by the local backend. JSON field ``handlerArchive`` (base64); faasd's own."""

    def __post_init__(self) -> None:
        validate_name(self.name)
        validate_env_vars(self.env_vars)
        if not _encodable(self.env_process):
            raise InvalidRequest("envProcess contains NUL or is not valid UTF-8")
        for secret in self.secrets:
            validate_name(secret, "secret")

    @property
    def min_replicas(self) -> int:
        """Replicas to start with: label ``com.openfaas.scale.min`` (default 1), as faas-swarm did."""
        raw = self.labels.get(LABEL_SCALE_MIN)
        if raw is None:
            return 1
        try:
            return max(0, int(raw))
        except ValueError:
            return 1

    def with_image(self, image: str) -> FunctionSpec:
        return replace(self, image=image)

    @classmethod
    def from_json(cls, document: object) -> FunctionSpec:
        """Validate an OpenFaaS FunctionDeployment document.

        Raises:
            InvalidRequest: naming the first bad or missing field.
        """
        if not isinstance(document, Mapping):
            raise InvalidRequest("the body must be a JSON object (a FunctionDeployment)")
        name = validate_function_name(document.get("service"), "service")
        check_namespace(document.get("namespace"))  # Not kept: every function is in the one namespace.
        archive_text = _optional_str(document.get("handlerArchive"), "handlerArchive")
        try:
            archive = base64.b64decode(archive_text, validate=True) if archive_text else b""
        except (binascii.Error, ValueError):
            raise InvalidRequest("handlerArchive must be base64") from None
        read_only = document.get("readOnlyRootFilesystem", False)
        if not isinstance(read_only, bool):
            raise InvalidRequest("readOnlyRootFilesystem must be true or false")
        return cls(
            name=name,
            image=_optional_str(document.get("image"), "image"),
            env_process=_optional_str(document.get("envProcess"), "envProcess"),
            env_vars=_string_map(document.get("envVars"), "envVars"),
            constraints=tuple(_string_list(document.get("constraints"), "constraints")),
            secrets=tuple(_string_list(document.get("secrets"), "secrets")),
            labels=_string_map(document.get("labels"), "labels"),
            annotations=_string_map(document.get("annotations"), "annotations"),
            limits=Resources.from_json(document.get("limits"), "limits"),
            requests=Resources.from_json(document.get("requests"), "requests"),
            read_only_root_filesystem=read_only,
            handler_archive=archive,
        )

    def to_json(self, *, include_archive: bool = True) -> dict[str, Any]:
        """The FunctionDeployment document (empty optional fields left out)."""
        document: dict[str, Any] = {"service": self.name, "image": self.image}
        _put(document, "envProcess", self.env_process)
        _put(document, "envVars", dict(self.env_vars))
        _put(document, "constraints", list(self.constraints))
        _put(document, "secrets", list(self.secrets))
        _put(document, "labels", dict(self.labels))
        _put(document, "annotations", dict(self.annotations))
        if self.limits is not None:
            _put(document, "limits", self.limits.to_json())
        if self.requests is not None:
            _put(document, "requests", self.requests.to_json())
        _put(document, "readOnlyRootFilesystem", self.read_only_root_filesystem)
        if include_archive and self.handler_archive:
            document["handlerArchive"] = base64.b64encode(self.handler_archive).decode("ascii")
        return document


def _put(document: dict[str, Any], key: str, value: object) -> None:
    if value:
        document[key] = value


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionStatus:
    """A function as it runs: its spec plus what the backend observes."""

    spec: FunctionSpec
    # -- observed -------------------------------------------------------------------------------
    replicas: int = 0
    """Desired replicas (what the backend is asked to run)."""
    available_replicas: int = 0
    """Replicas that are ready (their watchdog's health check passes)."""
    invocation_count: float = 0.0
    created_at: datetime | None = None
    state: FunctionState = "deployed"
    """faasd's own (see :data:`FunctionState`)."""
    reason: str = ""
    """Why the function is ``failed`` (one line); empty otherwise."""

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self) -> dict[str, Any]:
        """The OpenFaaS FunctionStatus document (``namespace`` always ``openfaas-fn``, faasd's one), plus
        faasd's ``faasd`` object (``state``, and ``reason`` when failed): OpenFaaS clients ignore fields
        they do not know."""
        spec = self.spec.to_json(include_archive=False)
        del spec["service"]
        document = {"name": self.spec.name, "namespace": DEFAULT_NAMESPACE, **spec}
        document["invocationCount"] = self.invocation_count
        document["replicas"] = self.replicas
        document["availableReplicas"] = self.available_replicas
        document["createdAt"] = (
            self.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if self.created_at else ZERO_TIME
        )
        document["faasd"] = {"state": self.state, **({"reason": self.reason} if self.reason else {})}
        return document


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one ready replica answers: an address the daemon can reach (127.0.0.1; on Swarm, another
    node's address for a task there, and from a daemon in a container the task's address on the
    functions network)."""

    host: str
    port: int
    replica: str
    """Backend-specific replica id (local process id, Swarm task id, Marathon task id)."""
    call_token: bool = True
    """The replica was given the daemon's call token and refuses calls without it. False for one that was
    not (a Swarm service made by hand): the gateway then sends no token, which such a replica could
    use to call every other function past the gateway."""
    token_line: bytes = field(default=b"", repr=False)
    """The header line carrying this replica's own token, sent instead of the daemon's: a backend that
    gives each function a token of its own (Marathon: :func:`faasd.calltoken.header_line`). Empty: the
    daemon's token, when ``call_token``."""

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRequest:
    """OpenFaaS log query (``GET /system/logs``)."""

    name: str
    instance: str = ""
    tail: int = 0
    """Last N lines only; <= 0 means all kept lines."""
    follow: bool = False
    since: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.since.tzinfo is None:
            raise InvalidRequest("since must carry a time zone (e.g. 2026-01-02T15:04:05Z)")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogMessage:
    """One log line of a function replica (NDJSON item of ``/system/logs``)."""

    name: str
    instance: str
    timestamp: datetime
    text: str
    namespace: str = DEFAULT_NAMESPACE

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "instance": self.instance,
            "timestamp": self.timestamp.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "text": self.text,
        }
