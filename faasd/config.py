"""The daemon's settings: defaults, a TOML file, ``FAASD_*`` env vars and command-line flags.

Precedence: flags > env > file > defaults. Every key has the same name in all three places
(``state_dir`` in TOML, ``FAASD_STATE_DIR`` in env, ``--state-dir`` as a flag). An unknown key in the
file or a malformed value anywhere is a :class:`ConfigError` naming the key and where it came from.

Pure: the sources are arguments, so tests pass dicts.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from faasd.queue.hosts import LOOPBACK_ONLY, CallbackHosts
from faasd.units import parse_bool, parse_duration, parse_size

__all__ = ["PROVIDERS", "SANDBOXES", "ConfigError", "ConfigKey", "DaemonConfig", "config_keys", "default_state_dir"]

PROVIDERS = ("local", "swarm", "marathon")
SANDBOXES = ("auto", "bwrap", "uid", "none")
"""``sandbox`` values: how the local backend isolates replicas (docs/sandbox.md)."""


class ConfigError(ValueError):
    """A setting has a value faasd cannot use; the message names the key and its source."""


def default_state_dir(env: Mapping[str, str]) -> str:
    """Where state lives: systemd's ``$STATE_DIRECTORY`` (``StateDirectory=faasd`` gives
    ``/var/lib/faasd``), else ``$XDG_STATE_HOME/faasd``, else ``~/.local/state/faasd``."""
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "faasd")


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonConfig:
    """Validated daemon settings; units in the field names. Keys drop the unit suffix
    (``upstream_timeout`` sets ``upstream_timeout_s``)."""

    bind: str = "127.0.0.1"
    port: int = 8080
    state_dir: str = ""
    provider: str = "local"
    sandbox: str = "auto"
    """Local backend: ``bwrap`` (bubblewrap), ``uid`` (a uid per function, root only), ``none`` (unsafe),
    or ``auto``: the first of those this machine supports."""
    pool_size: int = 2
    """Local backend: replicas kept started, sandboxed and imported for cold starts (docs/coldstart.md); 0:
    none."""
    cpu_classes: bool = True
    """Local backend: functions whose calls are CPU-heavy run in the idle CPU class, and pooled replicas
    start in it (docs/sandbox.md, "CPU classes"); where the machine's cgroups allow."""
    log_level: str = "info"
    upstream_timeout_s: float = 60.0
    """Longest a function call may take through the gateway (OpenFaaS's upstream_timeout), unless the
    function sets a longer ``exec_timeout``/``write_timeout`` of its own (:mod:`faasd.timeouts`)."""
    max_upstream_timeout_s: float = 3600.0
    """The most a function's own ``exec_timeout``/``write_timeout`` may raise the gateway's wait to; a
    deploy asking for more is a 400."""
    ready_timeout_s: float = 30.0
    """Longest a call waits for a ready replica (cold start) before 503."""
    shutdown_timeout_s: float = 30.0
    """Longest shutdown waits for calls in flight."""
    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body the gateway accepts (413 above): function calls, and deploys (which carry
    the function's code as ``handlerArchive``)."""
    max_json_bytes: int = 1024 * 1024
    """Largest JSON body parsed in the daemon other than a deploy: an Alexa request (``POST /``), secrets,
    scaling, delete (413 above)."""
    header_timeout_s: float = 10.0
    """A request head (request line and headers) must arrive whole within this of its first byte (a new
    connection: of being accepted); else 408 and the connection is closed."""
    read_timeout_s: float = 10.0
    """Longest pause while a request body arrives; after this long a body must also average 1 KiB/s."""
    keep_alive_timeout_s: float = 75.0
    """How long an idle client connection is kept for its next request."""
    write_timeout_s: float = 30.0
    """Longest a client may take to accept one piece of its answer (up to 64 KiB); else the connection
    is closed (and the call with it)."""
    max_connections: int = 1024
    """Client connections open at once; more get 503. Lowered at start when the open-files limit cannot
    hold them (with a margin for the daemon's own files and its upstream connections)."""
    max_header_bytes: int = 16 * 1024
    """Largest request head (request line and headers); more is answered 431."""
    invoke_edge: bool = True
    """Answer plain function calls on the invoke edge, a lean event loop in a thread of the daemon
    (:mod:`faasd.gateway.edge`); off: the trio server answers every request."""
    docker_host: str = ""
    """dockerd's address for ``provider = swarm`` (``unix:///...``, ``tcp://...``); empty: ``$DOCKER_HOST``,
    else the local socket."""
    swarm_network: str = "functions"
    """The attachable overlay network Swarm functions join (created when missing)."""
    swarm_route: str = "auto"
    """How the daemon reaches Swarm tasks: ``host-port`` (a daemon on the host calls each task's host-mode
    published port on 127.0.0.1, or at its node's address for a task on another node), ``overlay-dns``
    (a daemon in a container or Swarm service on the functions network calls task addresses there), or
    ``auto``: ``overlay-dns`` when the daemon runs in a container attached to that network, else
    ``host-port``."""
    swarm_pull: bool = False
    """Let Swarm pull a function image missing on this engine from its registry (off: such a deploy is a 400)."""
    swarm_engines: tuple[str, ...] = ()
    """Docker engines of the swarm's other nodes (``unix:///...``, ``tcp://host:port``): each deploy copies
    the function's image to those that lack it (``docker save | docker load``), so no registry is needed."""
    marathon_url: str = ""
    """Marathon's base URL for ``provider = marathon`` (``http://marathon.mesos:8080``; DC/OS:
    ``https://<cluster>/service/marathon``)."""
    marathon_group: str = "faasd"
    """The Marathon group holding the functions: function ``NAME`` is app ``/<group>/NAME``."""
    marathon_user: str = ""
    """HTTP basic auth user (Marathon's ``--http_credentials``)."""
    marathon_password: str = field(default="", repr=False)
    marathon_token: str = field(default="", repr=False)
    """A DC/OS token, sent as ``Authorization: token=<TOKEN>`` (instead of basic auth)."""
    marathon_tls_verify: bool = True
    """Verify Marathon's TLS certificate (https URLs)."""
    marathon_ca: str = ""
    """A CA bundle (PEM file) to verify Marathon's certificate with, instead of the system's."""
    marathon_watchdog_uri: str = ""
    """Where Mesos agents download ``faasd.pyz`` to run functions without an image (http(s)://, or
    file:// for a path on every agent); empty: such functions are refused."""
    marathon_force: bool = False
    """Override a Marathon deployment that locks an app (``?force=true``) instead of waiting for it."""
    marathon_deploy_timeout_s: float = 120.0
    """Longest a deploy or update waits for Marathon's deployment (healthy tasks); then it is undone."""
    async_concurrency: int = 4
    """Calls of one function the async queue runs at once (label ``com.openfaas.queue.max_inflight``)."""
    async_queue_size: int = 1000
    """Async calls waiting per function; more get 429."""
    async_queue_total: int = 10_000
    """Async calls waiting in all; more get 503."""
    async_max_stored_bytes: int = 256 * 1024 * 1024
    """Bytes the async queue may hold on disk (bodies, and answers waiting for their callback); 503 above."""
    async_attempts: int = 10
    """Most invocations of one async call (label ``com.openfaas.retry.attempts``); 1: no retry."""
    async_retry_wait_s: float = 1.0
    """Wait before the first retry of an async call or callback (label ``com.openfaas.retry.min_wait``)."""
    async_retry_max_wait_s: float = 60.0
    """Longest wait between two tries (label ``com.openfaas.retry.max_wait``)."""
    async_callback_attempts: int = 10
    """Most tries of one callback."""
    async_callback_timeout_s: float = 10.0
    """Longest one callback attempt may take."""
    async_callback_hosts: CallbackHosts = LOOPBACK_ONLY
    """Where async callbacks may go besides this host's loopback (:mod:`faasd.queue.hosts`)."""
    snippet_timeout_s: float = 10.0
    """Longest one call of a Flock-of-Birds snippet may run (``/api/call``: 408 after it)."""
    max_snippet_bytes: int = 256 * 1024
    """Largest snippet ``POST /api/gen`` accepts (413 above)."""

    def __post_init__(self) -> None:
        if self.async_retry_max_wait_s < self.async_retry_wait_s:
            raise ConfigError(
                f"async_retry_max_wait ({self.async_retry_max_wait_s:g}s) is below async_retry_wait "
                f"({self.async_retry_wait_s:g}s)"
            )

    @classmethod
    def load(
        cls,
        *,
        file: str | None = None,
        env: Mapping[str, str] | None = None,
        flags: Mapping[str, object] | None = None,
    ) -> DaemonConfig:
        """Merge the sources (flags > env > file > defaults) and validate.

        Args:
            file: path of a TOML file, or None.
            env: environment (``FAASD_<KEY>`` variables are read), default ``os.environ``.
            flags: key -> value from the command line (None values are ignored).

        Raises:
            ConfigError: unreadable file, unknown key, or malformed value.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        if file is not None:
            try:
                with open(file, "rb") as handle:
                    document = tomllib.load(handle)
            except OSError as exc:
                raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
            for key, value in document.items():
                if key not in _PARSERS:
                    raise ConfigError(f"unknown key {key!r} in {file}; known keys: {', '.join(sorted(_PARSERS))}")
                values[key] = value
                sources[key] = file
        for key in _PARSERS:
            variable = f"FAASD_{key.upper()}"
            if variable in env and env[variable] != "":
                values[key] = env[variable]
                sources[key] = f"${variable}"
        for key, value in (flags or {}).items():
            if value is not None:
                if key not in _PARSERS:
                    raise ConfigError(f"unknown setting {key!r}")
                values[key] = value
                sources[key] = f"--{key.replace('_', '-')}"
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            field_name, parse = _PARSERS[key]
            try:
                parsed[field_name] = parse(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid {key}={value!r} (from {sources[key]}): {exc}") from None
        if not parsed.get("state_dir"):
            parsed["state_dir"] = default_state_dir(env)
        parsed["state_dir"] = os.path.abspath(os.path.expanduser(parsed["state_dir"]))
        return cls(**parsed)

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _port(value: object) -> int:
    port = int(str(value))
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number 0-65535 (0 picks a free one)")
    return port


@dataclass(frozen=True, slots=True)
class _Choice:
    """A value from a fixed set (``faasd up`` lists them as the flag's choices)."""

    options: tuple[str, ...]

    def __call__(self, value: object) -> str:
        text = str(value).strip().lower()
        if text not in self.options:
            raise ValueError(f"use one of {', '.join(self.options)}")
        return text


def _duration(value: object) -> float:
    return float(value) if isinstance(value, int | float) else parse_duration(str(value))


def _size(value: object) -> int:
    return int(value) if isinstance(value, int) else parse_size(str(value))


@dataclass(frozen=True, slots=True)
class _Positive:
    """``parse``, then refuse 0, negatives and infinity."""

    parse: Callable[[object], Any]

    def __call__(self, value: object) -> Any:
        number = self.parse(value)
        if not 0 < number < math.inf:
            raise ValueError("must be greater than 0 and finite")
        return number


def _count(value: object) -> int:
    return int(str(value))


@dataclass(frozen=True, slots=True)
class _Between:
    """``parse``, then refuse what is outside ``low``..``high``."""

    low: float
    high: float
    parse: Callable[[object], Any]

    def __call__(self, value: object) -> Any:
        number = self.parse(value)
        if not self.low <= number <= self.high:
            raise ValueError(f"must be from {self.low:g} to {self.high:g}")
        return number


def _bool(value: object) -> bool:
    return value if isinstance(value, bool) else parse_bool(str(value))


def _callback_hosts(value: object) -> CallbackHosts:
    if not isinstance(value, str | list):
        raise TypeError("must be a comma-separated string or a list of strings")
    return CallbackHosts.parse(value)


def _engines(value: object) -> tuple[str, ...]:
    """Docker engine addresses, comma-separated or a list: each ``unix://`` or ``tcp://`` (or ``ssh://``)."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise TypeError("must be a comma-separated string or a list of strings")
    addresses = tuple(item for item in items if item)
    for address in addresses:
        if not re.fullmatch(r"(unix|tcp|ssh)://\S+", address):
            raise ValueError(f"{address!r} is not a Docker engine address (unix:///path, tcp://host:port)")
    return addresses


def _url(value: object) -> str:
    text = _text(value).strip()
    if text and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", text):
        raise ValueError("must be an http:// or https:// URL")
    return text.rstrip("/")


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


_METAVARS: dict[Callable[[object], Any], str] = {
    _port: "PORT",
    _duration: "DURATION",
    _size: "SIZE",
    _count: "N",
    _text: "TEXT",
    _url: "URL",
    _callback_hosts: "HOSTS",
    _engines: "ENGINES",
}
"""How ``faasd up --help`` names each kind of value."""


_PARSERS: dict[str, tuple[str, Callable[[object], Any]]] = {
    "bind": ("bind", _text),
    "port": ("port", _port),
    "state_dir": ("state_dir", _text),
    "provider": ("provider", _Choice(PROVIDERS)),
    "sandbox": ("sandbox", _Choice(SANDBOXES)),
    "pool_size": ("pool_size", _Between(0, 64, _count)),
    "cpu_classes": ("cpu_classes", _bool),
    "log_level": ("log_level", _Choice(("debug", "info", "warning", "error"))),
    "upstream_timeout": ("upstream_timeout_s", _Positive(_duration)),
    "max_upstream_timeout": ("max_upstream_timeout_s", _Positive(_duration)),
    "ready_timeout": ("ready_timeout_s", _duration),
    "shutdown_timeout": ("shutdown_timeout_s", _duration),
    "max_body_size": ("max_body_bytes", _size),
    "max_json_size": ("max_json_bytes", _Positive(_size)),
    "header_timeout": ("header_timeout_s", _Positive(_duration)),
    "read_timeout": ("read_timeout_s", _Positive(_duration)),
    "keep_alive_timeout": ("keep_alive_timeout_s", _Positive(_duration)),
    "write_timeout": ("write_timeout_s", _Positive(_duration)),
    "max_connections": ("max_connections", _Positive(_count)),
    "max_header_size": ("max_header_bytes", _Positive(_size)),
    "invoke_edge": ("invoke_edge", _bool),
    "docker_host": ("docker_host", _text),
    "swarm_network": ("swarm_network", _text),
    "swarm_route": ("swarm_route", _Choice(("auto", "host-port", "overlay-dns"))),
    "swarm_pull": ("swarm_pull", _bool),
    "swarm_engines": ("swarm_engines", _engines),
    "marathon_url": ("marathon_url", _url),
    "marathon_group": ("marathon_group", _text),
    "marathon_user": ("marathon_user", _text),
    "marathon_password": ("marathon_password", _text),
    "marathon_token": ("marathon_token", _text),
    "marathon_tls_verify": ("marathon_tls_verify", _bool),
    "marathon_ca": ("marathon_ca", _text),
    "marathon_watchdog_uri": ("marathon_watchdog_uri", _text),
    "marathon_force": ("marathon_force", _bool),
    "marathon_deploy_timeout": ("marathon_deploy_timeout_s", _Positive(_duration)),
    "async_concurrency": ("async_concurrency", _Between(1, 100, _count)),
    "async_queue_size": ("async_queue_size", _Positive(_count)),
    "async_queue_total": ("async_queue_total", _Positive(_count)),
    "async_max_stored_size": ("async_max_stored_bytes", _Positive(_size)),
    "async_attempts": ("async_attempts", _Between(1, 100, _count)),
    "async_retry_wait": ("async_retry_wait_s", _Between(0, 3600, _duration)),
    "async_retry_max_wait": ("async_retry_max_wait_s", _Between(0, 3600, _duration)),
    "async_callback_attempts": ("async_callback_attempts", _Between(1, 100, _count)),
    "async_callback_timeout": ("async_callback_timeout_s", _Positive(_duration)),
    "async_callback_hosts": ("async_callback_hosts", _callback_hosts),
    "snippet_timeout": ("snippet_timeout_s", _Positive(_duration)),
    "max_snippet_size": ("max_snippet_bytes", _Positive(_size)),
}

_HELP: dict[str, str] = {
    "bind": "Address to listen on [default: 127.0.0.1].",
    "port": "Port to listen on [default: 8080; 0 picks a free one].",
    "state_dir": "Where state lives [default: $STATE_DIRECTORY, $XDG_STATE_HOME/faasd, ~/.local/state/faasd].",
    "provider": "Backend [default: local].",
    "sandbox": "How local functions are isolated: bwrap, uid (root), none (unsafe) [default: auto].",
    "pool_size": "Local replicas kept started and sandboxed for cold starts; 0: none [default: 2].",
    "cpu_classes": "Local functions whose calls are CPU-heavy run in the idle CPU class [default: true].",
    "log_level": "[default: info]",
    "upstream_timeout": "Longest wait for a function's answer, unless it sets a longer exec_timeout [default: 60s].",
    "max_upstream_timeout": "Most a function's own exec_timeout/write_timeout may raise that wait to [default: 1h].",
    "ready_timeout": "Longest a call waits for a ready replica (cold start) before 503 [default: 30s].",
    "shutdown_timeout": "Longest shutdown waits for calls in flight [default: 30s].",
    "max_body_size": "Largest request body: a call, or a deploy with its code; 413 above [default: 64MiB].",
    "max_json_size": "Largest other JSON body (secrets, scaling, Alexa); 413 above [default: 1MiB].",
    "header_timeout": "A request head must arrive whole within this; else 408 [default: 10s].",
    "read_timeout": "Longest pause while a request body arrives; else 408 [default: 10s].",
    "keep_alive_timeout": "How long an idle client connection is kept [default: 75s].",
    "write_timeout": "Longest a client may take to accept each piece of its answer [default: 30s].",
    "max_connections": "Client connections open at once; more get 503 [default: 1024].",
    "max_header_size": "Largest request line + headers; 431 above [default: 16KiB].",
    "invoke_edge": "Answer plain function calls on the lean loop of the invoke edge [default: true].",
    "docker_host": "Swarm: dockerd's address [default: $DOCKER_HOST, else the local socket].",
    "swarm_network": "Swarm: the overlay network functions join [default: functions].",
    "swarm_route": "Swarm: how the daemon reaches tasks: overlay-dns in a container on the network, else "
    "host-port [default: auto].",
    "swarm_pull": "Swarm: let Swarm pull function images missing here [default: off].",
    "swarm_engines": (
        "Swarm: Docker engines of the other nodes (comma-separated): deploys copy images to them, and a new"
        " replica's port there is read from them."
    ),
    "marathon_url": "Marathon: its base URL, e.g. http://marathon.mesos:8080 (provider marathon).",
    "marathon_group": "Marathon: the group holding the functions' apps [default: faasd].",
    "marathon_user": "Marathon: HTTP basic auth user.",
    "marathon_password": "Marathon: HTTP basic auth password (prefer the env var or the config file).",
    "marathon_token": "Marathon: DC/OS token, sent as 'Authorization: token=...' (prefer the env var).",
    "marathon_tls_verify": "Marathon: verify its TLS certificate [default: on].",
    "marathon_ca": "Marathon: CA bundle (PEM file) to verify its certificate with [default: the system's].",
    "marathon_watchdog_uri": "Marathon: URL of faasd.pyz for agents, to run functions without an image.",
    "marathon_force": "Marathon: override a deployment that locks an app instead of waiting [default: off].",
    "marathon_deploy_timeout": "Marathon: longest wait for a deploy's healthy tasks; then undone [default: 2m].",
    "async_concurrency": "Async calls of one function run at once (label com.openfaas.queue.max_inflight) "
    "[default: 4].",
    "async_queue_size": "Async calls queued per function; more get 429 [default: 1000].",
    "async_queue_total": "Async calls queued in all; more get 503 [default: 10000].",
    "async_max_stored_size": "Bytes the async queue may keep on disk; more get 503 [default: 256MiB].",
    "async_attempts": "Most invocations of one async call (429/502/503 are retried) [default: 10].",
    "async_retry_wait": "First wait before retrying an async call or callback, doubling [default: 1s].",
    "async_retry_max_wait": "Longest wait between two tries [default: 60s].",
    "async_callback_attempts": "Most tries of one callback [default: 10].",
    "async_callback_timeout": "Longest one callback try may take [default: 10s].",
    "async_callback_hosts": "Where async callbacks may go besides loopback: names, *.domain, addresses, "
    "networks, or * (comma-separated) [default: none].",
    "snippet_timeout": "Longest one call of a code snippet (/api/call) may run; 408 after it [default: 10s].",
    "max_snippet_size": "Largest code snippet POST /api/gen accepts; 413 above [default: 256KiB].",
}
"""One line of ``faasd up --help`` per key (tests/unit/test_config_flags.py checks every key has one)."""


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One setting as the command line shows it: ``faasd up`` makes a flag of every key (faasd/cli/up.py),
    so a key added to the table is a flag at once."""

    name: str
    """As in the TOML file (``upstream_timeout``)."""
    help: str
    choices: tuple[str, ...] = ()
    boolean: bool = False
    metavar: str = "VALUE"
    """What kind of value it takes: DURATION (``10s``, ``1m30s``), SIZE (``64MiB``), N, PORT, TEXT."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return f"FAASD_{self.name.upper()}"


def config_keys() -> tuple[ConfigKey, ...]:
    """Every key of the daemon's configuration, in the table's order."""
    keys = []
    for name, (_, parse) in _PARSERS.items():
        base = parse.parse if isinstance(parse, _Positive | _Between) else parse
        keys.append(
            ConfigKey(
                name,
                _HELP.get(name, ""),
                choices=parse.options if isinstance(parse, _Choice) else (),
                boolean=parse is _bool,
                metavar=_METAVARS.get(base, "VALUE"),
            )
        )
    return tuple(keys)
