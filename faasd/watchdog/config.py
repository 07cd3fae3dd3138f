"""The watchdog's settings, read from environment variables as the OpenFaaS classic watchdog does.

Pure: :meth:`WatchdogConfig.from_env` takes the environment as an argument, so tests pass a dict and
the defaults and error messages are checked without starting anything. Every malformed value raises
:class:`ConfigError` naming the variable; ``main`` prints it as one line and exits 2.
The variables are documented in ``docs/watchdog.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from faasd.http1 import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES
from faasd.units import parse_bool, parse_duration, parse_size
from faasd.watchdog.privileges import RunAs, parse_run_as

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:  # Type checkers see dataclasses; the watchdog's start does not import them.
    from dataclasses import dataclass as record
    from typing import Literal, TypeVar

    Mode = Literal["fork", "streaming", "http", "python"]
    T = TypeVar("T")
else:
    from faasd.record import record

__all__ = ["MODES", "ConfigError", "WatchdogConfig"]

MODES: tuple[str, ...] = ("fork", "streaming", "http", "python")

DEFAULT_WORKERS = max(2, min(os.cpu_count() or 2, 8))
"""python mode: one worker per core (2 to 8): calls beyond that wait for a free worker."""

DEFAULT_TIMEOUT_S = 30.0
"""read/write timeout default, as the OpenFaaS classic watchdog."""

DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
"""Largest function output kept in memory before the call is killed and answered 502."""

TOKEN_VARIABLE = "call_token"
"""The environment variable that may hold the call token itself (see ``call_token_env``)."""
HIDDEN = "..."
"""Shown in place of a token's value in an error."""


class ConfigError(ValueError):
    """An environment variable has a value the watchdog cannot use."""

    def __init__(self, name: str, value: str | None, reason: str) -> None:
        shown = "<unset>" if value is None else repr(value)
        super().__init__(f"invalid {name}={shown}: {reason}")
        self.name = name


_SHELL_QUOTING = frozenset("'\"\\")
_SHELL_BLANKS = str.maketrans("\t\r\n", "   ")


def split_command(text: str) -> list[str]:
    """``text`` split into words as ``shlex.split`` does (POSIX rules, no comments).

    Why not always ``shlex``: it imports ``re`` and compiles a pattern, about 2 ms of the watchdog's
    exec -> first 200, for an ``fprocess`` that is nearly always plain words (``cat``, ``python3
    index.py``). Without a quote or a backslash, shlex's POSIX splitting is exactly a split on its four
    blanks (space, tab, CR, LF); anything else goes to shlex itself.

    Raises:
        ValueError: unbalanced quotes or a trailing backslash (shlex's own message).
    """
    if _SHELL_QUOTING.isdisjoint(text):
        return [word for word in text.translate(_SHELL_BLANKS).split(" ") if word]
    import shlex

    return shlex.split(text)


@record(frozen=True, slots=True, kw_only=True)
class WatchdogConfig:
    """Validated watchdog settings; units are in the field names."""

    argv: tuple[str, ...]
    """``fprocess`` split as a POSIX shell would (:func:`split_command`); ``argv[0]`` as written (empty in
    python mode without one)."""
    executable: str
    """``argv[0]`` resolved on PATH once at start-up (spawning by absolute path skips the search)."""
    mode: Mode = "fork"
    upstream_host: str = ""
    upstream_port: int = 0
    """http mode: where the function's own server listens (``upstream_url``)."""
    handler: str = "handler.py"
    """python mode: the file defining ``handle``."""
    workers: int = 2
    """python mode: pre-started worker processes."""
    max_memory_bytes: int = 0
    """python mode: a worker over this resident size is replaced (0: no limit)."""
    start_timeout_s: float = 30.0
    """warm modes: how long the function's server or workers may take to be ready."""
    port: int = 8080
    bind: str = "0.0.0.0"
    listen_fd: int | None = None
    """An inherited, already listening TCP socket to serve on instead of binding ``port``: env
    ``listen_fd=N``, or systemd socket activation (``LISTEN_FDS``/``LISTEN_PID`` -> fd 3)."""
    metrics_port: int = 8081
    read_timeout_s: float = DEFAULT_TIMEOUT_S
    write_timeout_s: float = DEFAULT_TIMEOUT_S
    exec_timeout_s: float = 0.0
    max_inflight: int = 0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    content_type: str | None = None
    combine_output: bool = True
    cgi_headers: bool = True
    marshal_request: bool = False
    write_debug: bool = False
    suppress_lock: bool = False
    lock_file: str = "/tmp/.lock"
    healthcheck_interval_s: float = 0.0
    call_token_fd: int | None = None
    """An inherited fd to read the call token from at start (then closed): calls without it get 403
    (:mod:`faasd.calltoken`; the local backend passes it so)."""
    call_token_file: str = ""
    """A file to read the call token from at start (a Docker secret on Swarm)."""
    call_token_env: bool = False
    """The call token is the environment variable ``call_token`` (Marathon, which has no secrets: each
    function has a token of its own). Taken out of the environment the function sees."""
    parent_pid: int | None = None
    """Shut down (as on SIGTERM) when this process ends: the local backend sets it so replicas never
    outlive a daemon that crashed."""
    run_as: RunAs | None = None
    """Serve as this user (``run_as=UID[:GID]|NAME[:GROUP]|root``): a watchdog started as root reads
    its call token and unpacks its handler archive, then drops to it before any function code runs
    (:mod:`faasd.watchdog.privileges`). None: stay as started."""
    log_level: str = "info"

    @property
    def call_limit_s(self) -> float:
        """How long one call may run: ``exec_timeout``, or ``write_timeout`` when that is 0 (unbounded
        calls would outlive their clients and pile up)."""
        return self.exec_timeout_s or self.write_timeout_s

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WatchdogConfig:
        """Build the config from ``env`` (normally ``os.environ``).

        Raises:
            ConfigError: a variable is missing or malformed; the message names it.
        """
        reader = _EnvReader(env)
        mode = _mode(env.get("mode", "fork").strip() or "fork")
        fprocess = env.get("fprocess") or env.get("function_process")
        argv: tuple[str, ...] = ()
        executable = ""
        if fprocess and fprocess.strip():
            try:
                argv = tuple(split_command(fprocess))
            except ValueError as exc:
                raise ConfigError("fprocess", fprocess, f"cannot split: {exc}") from None
            found = _which(argv[0], env.get("PATH", os.defpath))
            if found is None:
                raise ConfigError("fprocess", fprocess, f"{argv[0]!r} not found on PATH or not executable")
            executable = found
        elif mode != "python":
            purpose = "the command to run for each request" if mode in ("fork", "streaming") else "the server to start"
            raise ConfigError("fprocess", fprocess, f"required: {purpose}")
        upstream_url = env.get("upstream_url") or env.get("http_upstream_url") or ""
        upstream = _parse_upstream(upstream_url) if mode == "http" else ("", 0)
        handler = env.get("handler") or "handler.py"
        if mode == "python" and not os.path.isfile(handler):
            raise ConfigError("handler", handler, "no such file (mode=python runs handle() from this Python file)")
        tmpdir = env.get("TMPDIR") or "/tmp"
        log_level = env.get("log_level", "info").strip().lower() or "info"
        if log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", log_level, "use debug, info, warning or error")
        port = reader.get("port", _parse_port, 8080)
        metrics_port = reader.get("metrics_port", _parse_port_or_zero, 8081)
        if metrics_port and metrics_port == port:
            raise ConfigError("metrics_port", str(metrics_port), "must differ from port")
        listen_fd = reader.get("listen_fd", _non_negative_int, None)
        bind = env.get("bind", "0.0.0.0").strip() or "0.0.0.0"
        own_ports = {metrics_port} - {0} | ({port} if listen_fd is None else set())
        if upstream[1] in own_ports and _reaches(upstream[0], bind):
            # Its readiness probe would reach the watchdog's own listener, and every call would come back to it.
            raise ConfigError(
                "upstream_url", upstream_url, "is the watchdog's own address: the server needs a port of its own"
            )
        socket_activated = env.get("LISTEN_PID") == str(os.getpid())
        if listen_fd is None and socket_activated and reader.get("LISTEN_FDS", _non_negative_int, 0) >= 1:
            listen_fd = 3  # SD_LISTEN_FDS_START
        call_token_fd = reader.get("call_token_fd", _non_negative_int, None)
        call_token_file = env.get("call_token_file", "").strip()
        if call_token_fd is not None and call_token_file:
            raise ConfigError("call_token_file", call_token_file, "set call_token_fd or call_token_file, not both")
        call_token_env = bool(env.get(TOKEN_VARIABLE, "").strip())
        if call_token_env and (call_token_fd is not None or call_token_file):
            source = "call_token_fd" if call_token_fd is not None else "call_token_file"
            raise ConfigError(TOKEN_VARIABLE, HIDDEN, f"set {source} or call_token, not both")
        if call_token_fd is not None and call_token_fd in (0, 1, 2, listen_fd):
            raise ConfigError("call_token_fd", str(call_token_fd), "must be an fd of its own (not 0-2 or listen_fd)")
        return cls(
            argv=argv,
            listen_fd=listen_fd,
            executable=executable,
            mode=mode,
            upstream_host=upstream[0],
            upstream_port=upstream[1],
            handler=handler,
            workers=reader.get("workers", _positive_int, DEFAULT_WORKERS),
            max_memory_bytes=reader.get("max_memory", _non_negative_size, 0),
            start_timeout_s=reader.get("start_timeout", _positive_duration, 30.0),
            port=port,
            bind=bind,
            metrics_port=metrics_port,
            read_timeout_s=reader.get("read_timeout", _positive_duration, DEFAULT_TIMEOUT_S),
            write_timeout_s=reader.get("write_timeout", _positive_duration, DEFAULT_TIMEOUT_S),
            exec_timeout_s=reader.get("exec_timeout", parse_duration, 0.0),
            max_inflight=reader.get("max_inflight", _non_negative_int, 0),
            max_body_bytes=reader.get("max_body_bytes", _positive_size, DEFAULT_MAX_BODY_BYTES),
            max_output_bytes=reader.get("max_output_bytes", _positive_size, DEFAULT_MAX_OUTPUT_BYTES),
            max_header_bytes=reader.get("max_header_bytes", _positive_size, DEFAULT_MAX_HEADER_BYTES),
            content_type=env.get("content_type") or None,
            combine_output=reader.get("combine_output", parse_bool, True),
            cgi_headers=reader.get("cgi_headers", parse_bool, True),
            marshal_request=reader.get("marshal_request", parse_bool, False),
            write_debug=reader.get("write_debug", parse_bool, False),
            suppress_lock=reader.get("suppress_lock", parse_bool, False),
            lock_file=env.get("lock_file") or os.path.join(tmpdir, ".lock"),
            healthcheck_interval_s=reader.get("healthcheck_interval", parse_duration, 0.0),
            call_token_fd=call_token_fd,
            call_token_file=call_token_file,
            call_token_env=call_token_env,
            parent_pid=reader.get("parent_pid", _non_negative_int, None),
            run_as=reader.get("run_as", parse_run_as, None),
            log_level=log_level,
        )


class _EnvReader:
    """Reads one variable with a parser, turning its ValueError into a ConfigError naming it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(name, raw, str(exc)) from None


def _parse_port(text: str) -> int:
    port = _non_negative_int(text)
    if not 1 <= port <= 65535:
        raise ValueError("must be a port number 1-65535")
    return port


def _parse_port_or_zero(text: str) -> int:
    port = _non_negative_int(text)
    if port > 65535:
        raise ValueError("must be a port number 1-65535, or 0 to disable")
    return port


def _non_negative_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError("not a whole number") from None
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise ValueError("must be at least 1")
    return value


def _non_negative_size(text: str) -> int:
    return parse_size(text)


_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})
"""Names of this host an ``upstream_url`` may use; ``0.0.0.0`` and ``::`` as a bind address mean every address."""


def _reaches(host: str, bind: str) -> bool:
    """Whether a connection to ``host`` reaches a listener bound to ``bind`` on this host."""
    return host == bind or (host in _LOCAL_HOSTS and bind in _LOCAL_HOSTS)


def _parse_upstream(url: str) -> tuple[str, int]:
    """(host, port) of an http-mode ``upstream_url`` such as ``http://127.0.0.1:5000``."""
    if not url:
        raise ConfigError("upstream_url", None, "required in mode=http: where the function's server listens")
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError("upstream_url", url, "use http://host:port")
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError("upstream_url", url, "invalid port") from None
    return parts.hostname, port


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _positive_size(text: str) -> int:
    value = parse_size(text)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _mode(text: str) -> Mode:
    """``text`` as a :data:`Mode`.

    Raises:
        ConfigError: not one of :data:`MODES`.
    """
    if text == "fork":
        return "fork"
    if text == "streaming":
        return "streaming"
    if text == "http":
        return "http"
    if text == "python":
        return "python"
    raise ConfigError("mode", text, f"unknown mode; use one of {', '.join(MODES)}")


def _which(command: str, path: str) -> str | None:
    """``shutil.which`` for one command on POSIX: the first executable file named ``command`` on ``path``
    (``command`` itself when it has a slash). Its own few lines because importing shutil costs the watchdog's
    start bz2, lzma and fnmatch."""
    if os.sep in command:
        return command if _executable(command) else None
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or os.curdir, command)
        if _executable(candidate):
            return candidate
    return None


def _executable(path: str) -> bool:
    return os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path)
