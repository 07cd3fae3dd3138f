"""The gateway benchmark's view of faasd: how it is started (daemon, bare watchdog, hello world, relay), the few
management calls it makes, and how it finds the replicas in the daemon's process tree (bench/gateway.py)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _harness as h  # the bench directory is not a package: imported by path, stdlib only

BODY = b"0123456789" * 10  # 100 bytes, printable so logs and echoes stay readable
FUNCTION = "echo"
HELLO_BODY = b"Hello, world!"
RELAY_SCRIPT = Path(__file__).resolve().parent / "_relay.py"
LEAN_RELAY_SCRIPT = Path(__file__).resolve().parent / "_lean_relay.py"

# --------------------------------------------------------------------------------------------- how faasd runs


@dataclass(frozen=True)
class Faasd:
    """How to run faasd: ``python3 dist/faasd.pyz`` (the default) or ``python -m faasd`` from a source tree."""

    python: str
    prefix: tuple[str, ...]
    env_extra: tuple[tuple[str, str], ...]
    pyz: Path | None  # the zipapp, put on the hello world's sys.path for its vendored hypercorn
    label: str

    @classmethod
    def zipapp(cls, python: str, pyz: Path) -> Faasd:
        return cls(python, (python, str(pyz)), (), pyz, f"{python} {pyz}")

    @classmethod
    def source(cls, python: str, repo: Path) -> Faasd:
        return cls(
            python, (python, "-m", "faasd"), (("PYTHONPATH", str(repo)),), None, f"PYTHONPATH={repo} {python} -m faasd"
        )

    def env(self, **config: str | int | float) -> dict[str, str]:
        return h.clean_env(**dict(self.env_extra), **config)

    def daemon(
        self,
        tmp: Path,
        password: str,
        sandbox: str = "",
        provider: tuple[str, ...] = ("--provider", "local"),
        pool: int | None = None,
    ) -> h.Target:
        """``faasd up`` on 127.0.0.1, a free port and a fresh state dir; ready when ``GET /healthz`` is 200.

        The environment is the clean one plus FAASD_PASSWORD: the daemon's own environment is what its local
        replicas may inherit, and its size changes the cost of every ``cat`` they fork (see _harness.clean_env).
        ``sandbox``: ``--sandbox`` for the local backend (empty: the daemon's default, ``auto``).
        ``provider``: the backend's flags (``--provider marathon --marathon-url ...``).
        ``pool``: ``--pool-size`` (None: the daemon's default). The invoke blocks use 0: a pooled replica's
        command line does not say ``watchdog`` (``_pooled``), so :func:`find_replica` would not see it.
        """
        port = h.free_port()
        state = tmp / "state"
        argv = [*self.prefix, "up", "--bind", h.LOCALHOST, "--port", str(port), "--state-dir", str(state)]
        argv += [*provider, *(["--sandbox", sandbox] if sandbox else [])]
        argv += ["--pool-size", str(pool)] if pool is not None else []
        probe = h.Probe("GET", "/healthz", content_type=None, expect_status=200)
        env = self.env(FAASD_PASSWORD=password)
        return h.Target("faasd up", argv, env, port, probe, log_path=tmp / "daemon.log", cwd=tmp)

    def watchdog(self, tmp: Path) -> h.Target:
        """A bare ``faasd watchdog`` (fork mode, ``cat``), as the local backend would start one, minus the daemon
        and the sandbox: ``python3 -S`` (``faasd.runtime.self_command``), so the interpreter's ``site`` (with
        whatever ``.pth`` files this machine's Python carries) is not counted in the floor."""
        port = h.free_port()
        env = self.env(fprocess="cat", port=port, bind=h.LOCALHOST, metrics_port=0, suppress_lock="true")
        probe = h.Probe("POST", "/", BODY, "text/plain", expect_status=200, expect_body=BODY)
        argv = [self.prefix[0], "-S", *self.prefix[1:], "watchdog"]
        return h.Target("faasd watchdog", argv, env, port, probe, log_path=tmp / "wd.log", cwd=tmp)

    def hello(self, tmp: Path, script: Path) -> h.Target:
        """The hypercorn-trio hello world, same interpreter (and hypercorn/trio) as the daemon."""
        port = h.free_port()
        argv = [self.python, str(script), str(port), *([str(self.pyz)] if self.pyz else [])]
        probe = h.Probe("GET", "/", content_type=None, expect_status=200, expect_body=HELLO_BODY)
        return h.Target("hello world", argv, self.env(), port, probe, log_path=tmp / "hello.log", cwd=tmp)

    def relay(self, tmp: Path, replica_port: int, headers: tuple[tuple[str, str], ...]) -> h.Target:
        """bench/_relay.py in front of the replica, same interpreter as the daemon; ready when a call echoes."""
        return self._relay("bare relay", RELAY_SCRIPT, [], tmp, replica_port, headers)

    def lean_relay(self, tmp: Path, replica_port: int, headers: tuple[tuple[str, str], ...]) -> h.Target:
        """bench/_lean_relay.py in front of the replica: faasd's parser on the watchdog's loop, imported from
        the faasd being measured (the zipapp, or the source tree on ``PYTHONPATH``)."""
        return self._relay("lean relay", LEAN_RELAY_SCRIPT, [str(self.pyz or "")], tmp, replica_port, headers)

    def _relay(
        self,
        name: str,
        script: Path,
        extra: list[str],
        tmp: Path,
        replica_port: int,
        headers: tuple[tuple[str, str], ...],
    ) -> h.Target:
        port = h.free_port()
        argv = [self.python, str(script), str(port), str(replica_port), *extra]
        env = self.env(**({"RELAY_HEADER": f"{headers[0][0]}: {headers[0][1]}"} if headers else {}))
        probe = h.Probe("POST", f"/function/{FUNCTION}", BODY, "text/plain", expect_status=200, expect_body=BODY)
        log = tmp / f"{name.replace(' ', '-')}.log"
        return h.Target(name, argv, env, port, probe, log_path=log, cwd=tmp)


# --------------------------------------------------------------------------------------------- management API


class Api:
    """The few management calls the benchmark needs, over :class:`_harness.Probe` (one connection per call)."""

    def __init__(self, port: int, password: str) -> None:
        self.port = port
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        self.auth = (("Authorization", f"Basic {token}"),)

    def call(self, method: str, path: str, document: object = None, timeout: float = 30.0) -> tuple[int, bytes]:
        body = json.dumps(document).encode() if document is not None else b""
        content_type = "application/json" if document is not None else None
        probe = h.Probe(method, path, body, content_type, headers=self.auth)
        answer = probe.once(self.port, timeout)
        if answer is None:
            raise h.BenchError(f"{method} {path}: no answer from the daemon within {timeout:g} s")
        return answer

    def expect(self, method: str, path: str, document: object, ok: tuple[int, ...] = (200, 202)) -> None:
        status, body = self.call(method, path, document)
        if status not in ok:
            raise h.BenchError(f"{method} {path}: HTTP {status}: {body[:200].decode(errors='replace').strip()}")

    def deploy(self, name: str, labels: dict[str, str] | None = None) -> None:
        document: dict[str, object] = {"service": name, "envProcess": "cat"}
        if labels:
            document["labels"] = labels
        self.expect("POST", "/system/functions", document)

    def remove(self, name: str) -> None:
        self.expect("DELETE", "/system/functions", {"functionName": name})

    def scale(self, name: str, replicas: int) -> None:
        self.expect("POST", f"/system/scale-function/{name}", {"serviceName": name, "replicas": replicas})

    def available(self, name: str) -> int | None:
        """``availableReplicas`` of a function (None when the status cannot be read)."""
        status, body = self.call("GET", f"/system/function/{name}", timeout=10.0)
        if status != 200:
            return None
        try:
            return int(json.loads(body).get("availableReplicas", 0))
        except (ValueError, AttributeError, TypeError):
            return None

    def invoke(self, name: str, timeout: float) -> tuple[int, bytes] | None:
        """``POST /function/<name>`` with the 100-byte body (no auth: the invoke path is public)."""
        return h.Probe("POST", f"/function/{name}", BODY, "text/plain").once(self.port, timeout)


def poll(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.01) -> float:
    """Call ``check`` until it is true; seconds it took. Bounded: raises BenchError after ``timeout`` s."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while not check():
        if time.perf_counter() >= deadline:
            raise h.BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.perf_counter() - t0


def first_200(api: Api, name: str, timeout: float, seen: dict[str, int]) -> float:
    """Invoke ``name`` until it answers 200; ``perf_counter()`` of that answer (a wrong body is counted in ``seen``).

    Non-200 answers (and no answer at all) are counted in ``seen``: a gateway that publishes a replica before it
    is ready, or answers 404 just after a 202, shows up there even when the timing looks fine.
    """
    deadline = time.perf_counter() + timeout
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise h.BenchError(f"{name}: no 200 within {timeout:g} s (answers seen: {seen or 'none'})")
        answer = api.invoke(name, min(remaining, 30.0))
        if answer is not None and answer[0] == 200:
            if answer[1] != BODY:
                seen["200 with a wrong body"] = seen.get("200 with a wrong body", 0) + 1
            return time.perf_counter()
        key = f"HTTP {answer[0]}" if answer else "no answer"
        seen[key] = seen.get(key, 0) + 1
        time.sleep(0.002)


# --------------------------------------------------------------------------------------------- the daemon's tree


@dataclass(frozen=True)
class Replica:
    """One replica of the daemon's local backend: the process to account CPU to and the port it serves on."""

    pid: int
    port: int


def is_watchdog(pid: int) -> bool:
    """A ``faasd watchdog`` process: ``watchdog`` as a word of its command line (a wrapper shell counts too)."""
    return any(part == "watchdog" or part.endswith(" watchdog") for part in h.cmdline(pid))


def watchdogs(root: int, *, assigned_pooled: bool = False) -> list[int]:
    """The replicas below ``root``: live ``faasd watchdog`` processes whose parent is not one.

    A fork-mode watchdog's child has the watchdog's command line between its fork and its exec of ``cat``; on a
    busy machine that window is long enough to be seen, and it must not count as a second replica -- nor when it
    has ended by the time its parent is read (``_ppid`` 0: a round once failed on such a child as "the replicas
    changed").

    ``assigned_pooled``: also the pooled replicas given a function, in the same read of the process table. A
    pooled replica's command line says ``_pooled``, not ``watchdog``, before and after its assignment; what
    changes when it is given its function is its uid (the function's own, in the sandbox's ``bwrap`` and ``uid``
    modes, which are the modes that pool). An idle one still runs as the daemon, and so do its wrappers
    (``setsid``, ``bwrap``): only the replica itself is listed.
    """
    own = _uid(root) if assigned_pooled else None

    def is_replica(pid: int) -> bool:
        if is_watchdog(pid):
            return True
        return assigned_pooled and "_pooled" in h.cmdline(pid) and _uid(pid) not in (own, None)

    found = {pid for pid in h.descendants(root) if pid != root and is_replica(pid) and h.alive(pid)}
    parents = {pid: _ppid(pid) for pid in found}
    return sorted(pid for pid, parent in parents.items() if parent and parent not in found)


def _uid(pid: int) -> int | None:
    """Real uid of a live process (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


CALL_TOKEN_HEADER = "X-Faasd-Call-Token"
"""A local replica answers only calls carrying its daemon's call token (faasd/calltoken.py), which the daemon
keeps in ``<state dir>/call-token``: the direct loads send it, as the gateway does."""


def call_token_headers(state_dir: Path) -> tuple[tuple[str, str], ...]:
    """The call token header for direct calls to a replica of the daemon with this state dir."""
    try:
        token = (state_dir / "call-token").read_text().strip()
    except OSError as exc:
        raise h.BenchError(f"cannot read the daemon's call token: {exc}") from None
    return ((CALL_TOKEN_HEADER, token),)


def find_replica(daemon_pid: int, timeout: float = 10.0, headers: tuple[tuple[str, str], ...] = ()) -> Replica:
    """The one replica below the daemon and its invoke port, found from ``/proc`` (no log format, no ``ss``).

    Candidates are the daemon's descendants whose command line runs ``watchdog``; their listening TCP sockets
    (inherited ``listen_fd`` sockets included) are read from ``/proc/<pid>/fd`` and ``/proc/<pid>/net/tcp``. The
    invoke port is the one answering ``GET /_/health`` with ``200 OK`` and echoing a POST (a metrics port does
    neither). CPU is accounted to the topmost holder of that port, so a wrapper and its watchdog count once.
    """
    health = h.Probe("GET", "/_/health", content_type=None)
    echo = h.Probe("POST", "/", BODY, "text/plain", headers=headers)
    found: list[Replica] = []
    seen: list[str] = []

    def look() -> bool:
        found.clear()
        holders: dict[int, list[int]] = {}
        pids = watchdogs(daemon_pid)
        for pid in pids:
            for port in h.listening_ports(pid):
                holders.setdefault(port, []).append(pid)
        seen[:] = [f"pids {pids}, listening ports {sorted(holders)}"]
        for port, owners in holders.items():
            if health.once(port, 2.0) == (200, b"OK") and echo.once(port, 5.0) == (200, BODY):
                parents = {pid: _ppid(pid) for pid in owners}
                top = [pid for pid in owners if parents[pid] not in owners] or owners
                found.append(Replica(min(top), port))
        return bool(found)

    try:
        poll("the replica's port", look, timeout, interval=0.05)
    except h.BenchError as exc:
        raise h.BenchError(f"{exc} (daemon's watchdog descendants: {seen[0] if seen else 'none'})") from None
    if len(found) != 1:
        raise h.BenchError(f"expected one replica of {FUNCTION!r}, found {len(found)}: {found}")
    return found[0]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return 0
    return int(raw[raw.rfind(b")") + 2 :].split()[1])


def startup_ms_logged(log: Path) -> float | None:
    """``startup_ms`` of the daemon's ``ready`` log line: its own view, from ``run()`` to serving."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"logger=faasd\.daemon event=ready .*?\bstartup_ms=(\d+(?:\.\d+)?)", text)
    return float(match.group(1)) if match else None
