"""Gateway benchmark: what ``faasd up`` adds on the invoke hot path, and how fast it starts things.

Run ``python3 bench/gateway.py`` (see bench/README.md). Everything is measured against a baseline taken in the
same run, rounds interleaved (the order of blocks and of loads rotates each round), medians over rounds:

1. one fork-mode replica (``fprocess=cat``) loaded with a 100-byte POST straight on its own port and through
   ``/function/echo`` (same replica, same round) at c1 and c16: the latency the gateway adds;
   The floor under that latency, same replica, same round: ``bench/_relay.py``, a bare Python relay in front of
   it at c1 (what any Python hop costs: two more loopback sends and wake-ups, no gateway work);
2. proxied throughput at c16 to a cheap upstream (the replica's ``/_/health``, answered without forking) vs a
   hypercorn-trio hello world run by the same interpreter: the cost of the proxy itself;
3. ``faasd up`` -> ``/healthz`` 200 with a fresh state dir (baseline: the hello world's exec -> first 200);
4. cold start: deploy -> first 200 of a new function, 0 -> 1 by the scale API -> first 200, and an invoke of a
   function at zero (the gateway scales it from zero) -> 200 (baseline: a bare ``faasd watchdog`` exec -> first
   200, the floor under any local cold start);
5. with ``--sandbox`` (off by default): the local backend's sandbox. One daemon per mode (``--sandbox none`` is
   the baseline), all up at once; per round the fork-mode invoke through ``/function/echo`` at c1 and c16 on
   each, the modes alternating load by load, then deploy -> first 200 of new functions, alternating modes.

Only same-run ratios and differences mean anything on the small shared VMs this runs on: absolute numbers drift
5-30 % between rounds and more between machines. Targets (from the issue) are printed with the verdicts.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # the bench directory is not a package: imported by path, stdlib only

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FAASD = REPO / "dist" / "faasd.pyz"

BODY = b"0123456789" * 10  # 100 bytes, printable so logs and echoes stay readable
FUNCTION = "echo"
#: The load block's function stays at exactly one replica: the autoscaler would otherwise add replicas under
#: the c16 load, and the gateway would spread over several what the direct runs put on one.
PINNED = {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"}
HELLO_BODY = b"Hello, world!"
C1, C16 = h.Level(1, 1), h.Level(2, 16)
WARMUP_S = 1

TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_HELLO_RATIO = 0.6
TARGET_UP_MS = 500.0
TARGET_COLD_P50_MS = 150.0
TARGET_UP_RATIO = 1.0  # issue 15: faasd up -> /healthz 200 at most a hypercorn-trio hello world's start
TARGET_COLD_RATIO = 0.25  # issue 15: deploy -> first 200 and a call at zero replicas, / a bare watchdog's start
TARGET_SANDBOX_SLOWER = 0.10  # invoke with the sandbox at most 10 % slower (c1 p50, c16 req/s) than without
TARGET_SANDBOX_COLD_RATIO = 1.2  # deploy -> first 200 p50 with the sandbox / without
#: The gateway hop against OpenFaaS's (issue 15): each a per-round ratio of two runs of the same round.
TARGET_HOP_C16_RATIO = 0.9  # c16 req/s through the gateway / straight to the same replica, at least
TARGET_HOP_CPU_RATIO = 0.5  # daemon CPU per proxied /_/health call / the hello world's CPU per request, at most
TARGET_HOP_P50_RATIO = 0.3  # (gateway p50 - direct p50) / direct p50 at c1, at most
#: The same ratio for bench/_relay.py in front of the replica: no target, the floor the row above is read against.
FLOOR_KEY = "bare relay added p50 / direct p50 at c1"
#: Other processes using more than this much CPU (% of one core) during a measurement make it suspect.
DISTURBED_PCT = 25.0
TARGETS_TEXT = (
    f"targets: gateway adds <= {TARGET_ADDED_P50_MS:g} ms p50 and <= {TARGET_ADDED_P99_MS:g} ms p99 at c1; proxied "
    f"c16 throughput >= {TARGET_HELLO_RATIO:g}x a hypercorn-trio hello world; faasd up -> /healthz 200 <= "
    f"{TARGET_UP_MS:g} ms and <= {TARGET_UP_RATIO:g}x the hello world's start; deploy -> first 200 p50 <= "
    f"{TARGET_COLD_P50_MS:g} ms; deploy -> first 200 and invoke at 0 replicas <= {TARGET_COLD_RATIO:g}x a bare "
    "watchdog's start (p50s, same run)"
)

BLOCKS = ("load", "start", "cold", "sandbox")
SANDBOX_BASELINE = "none"
DIRECT, GATEWAY, HELLO, RELAY = "direct", "gateway", "hello", "relay"
RELAY_SCRIPT = Path(__file__).resolve().parent / "_relay.py"


@dataclass(frozen=True)
class LoadSpec:
    """One wrk run of a round: which server it hits, with which request, at which concurrency."""

    key: str
    server: str  # DIRECT (the replica's own port), GATEWAY (the daemon), HELLO or RELAY (bench/_relay.py)
    load: h.Load
    level: h.Level


POST_DIRECT = h.Load("POST", "/", BODY, "text/plain")
POST_GATEWAY = h.Load("POST", f"/function/{FUNCTION}", BODY, "text/plain")
HEALTH_DIRECT = h.Load("GET", "/_/health", b"", None)
HEALTH_GATEWAY = h.Load("GET", f"/function/{FUNCTION}/_/health", b"", None)
HELLO_GET = h.Load("GET", "/", b"", None)
LOADS = (
    LoadSpec("post direct c1", DIRECT, POST_DIRECT, C1),
    LoadSpec("post gateway c1", GATEWAY, POST_GATEWAY, C1),
    LoadSpec("post relay c1", RELAY, POST_GATEWAY, C1),
    LoadSpec("post direct c16", DIRECT, POST_DIRECT, C16),
    LoadSpec("post gateway c16", GATEWAY, POST_GATEWAY, C16),
    LoadSpec("health gateway c16", GATEWAY, HEALTH_GATEWAY, C16),
    LoadSpec("health direct c16", DIRECT, HEALTH_DIRECT, C16),
    LoadSpec("hello c16", HELLO, HELLO_GET, C16),
)
WARMUPS = (
    LoadSpec("warm-up gateway", GATEWAY, POST_GATEWAY, C16),
    LoadSpec("warm-up direct", DIRECT, POST_DIRECT, C16),
    LoadSpec("warm-up gateway health", GATEWAY, HEALTH_GATEWAY, C16),
    LoadSpec("warm-up hello", HELLO, HELLO_GET, C16),
    LoadSpec("warm-up relay", RELAY, POST_GATEWAY, C1),
)

# A raw ASGI hello world on hypercorn's trio worker (``hypercorn.trio.serve``, what ``-k trio`` runs), configured
# like the daemon's gateway (keep-alive 75 s, backlog 1024, no Server header, no access log), so the comparison
# isolates what faasd does per request. With a zipapp path as argv[2] it imports the hypercorn and trio vendored
# in it, wherever the build put them, so both sides run the very same library versions.
HELLO_APP = r"""
import sys, zipfile

port = int(sys.argv[1])
if len(sys.argv) > 2:
    pyz = sys.argv[2]
    sys.path.insert(0, pyz)
    with zipfile.ZipFile(pyz) as archive:
        for name in archive.namelist():
            if name.endswith("hypercorn/__init__.py"):
                prefix = name[: -len("hypercorn/__init__.py")].rstrip("/")
                if prefix:
                    sys.path.insert(0, pyz + "/" + prefix)
                break

import hypercorn
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

BODY = b"Hello, world!"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


config = Config()
config.bind = [f"127.0.0.1:{port}"]
config.accesslog = None
config.errorlog = None
config.keep_alive_timeout = 75.0
config.backlog = 1024
config.include_server_header = False
version = getattr(hypercorn, "__version__", None)
if version is None:
    from importlib.metadata import PackageNotFoundError, version as _version

    try:
        version = _version("hypercorn")
    except PackageNotFoundError:
        version = "?"
print(f"hello-world: hypercorn {version} ({hypercorn.__file__}), trio {trio.__version__}", flush=True)
trio.run(serve, app, config)
"""


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
        port = h.free_port()
        argv = [self.python, str(RELAY_SCRIPT), str(port), str(replica_port)]
        env = self.env(**({"RELAY_HEADER": f"{headers[0][0]}: {headers[0][1]}"} if headers else {}))
        probe = h.Probe("POST", f"/function/{FUNCTION}", BODY, "text/plain", expect_status=200, expect_body=BODY)
        return h.Target("bare relay", argv, env, port, probe, log_path=tmp / "relay.log", cwd=tmp)


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


def watchdogs(root: int) -> list[int]:
    """The replicas below ``root``: live ``faasd watchdog`` processes whose parent is not one.

    A fork-mode watchdog's child has the watchdog's command line between its fork and its exec of ``cat``; on a
    busy machine that window is long enough to be seen, and it must not count as a second replica -- nor when it
    has ended by the time its parent is read (``_ppid`` 0: a round once failed on such a child as "the replicas
    changed").
    """
    found = {pid for pid in h.descendants(root) if pid != root and is_watchdog(pid) and h.alive(pid)}
    parents = {pid: _ppid(pid) for pid in found}
    return sorted(pid for pid, parent in parents.items() if parent and parent not in found)


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


STOP_GRACE_S = 15.0


def stop_daemon(running: h.Running, block: LoadBlock | StartBlock | ColdBlock) -> None:
    """SIGTERM the daemon alone (it must stop its replicas), then record how long it took and what it left."""
    report = h.stop_leader_first(running.proc, grace=STOP_GRACE_S)
    block.stop_ms.append(None if report.exit_s is None else report.exit_s * 1000.0)
    if report.exit_s is None:
        block.leftovers.append(f"the daemon itself (pid {running.proc.pid}): no exit within {STOP_GRACE_S:g} s")
    block.leftovers += [f"pid {pid} ({state}) {cmd}" for pid, state, cmd in report.left]


# --------------------------------------------------------------------------------------------- measuring


@dataclass
class LoadRun:
    """One wrk run, with the CPU each party spent on it (ms per request)."""

    wrk: h.WrkResult
    raw: str
    daemon_cpu: float | None = None  # the daemon process alone, not its replicas
    replica_cpu: float | None = None  # the replica's tree: watchdog + its cat children
    hello_cpu: float | None = None
    relay_cpu: float | None = None
    others_pct: float | None = None  # CPU of processes outside the benchmark meanwhile, % of one core


@dataclass
class LoadBlock:
    order: list[str] = field(default_factory=list)
    loads: dict[str, LoadRun] = field(default_factory=dict)
    replica: Replica | None = None
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    stop_ms: list[float | None] = field(default_factory=list)  # SIGTERM -> the daemon's exit


@dataclass
class StartBlock:
    daemon_ms: list[float] = field(default_factory=list)
    logged_ms: list[float | None] = field(default_factory=list)
    hello_ms: list[float] = field(default_factory=list)
    others_pct: float | None = None
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    stop_ms: list[float | None] = field(default_factory=list)


@dataclass
class ColdBlock:
    deploy_ms: list[float] = field(default_factory=list)  # deploy POST sent -> first 200 of the function
    deploy_api_ms: list[float] = field(default_factory=list)  # deploy POST sent -> its 202
    watchdog_ms: list[float] = field(default_factory=list)  # bare faasd watchdog exec -> first 200
    scale_ms: list[float] = field(default_factory=list)  # scale POST (0 -> 1) sent -> first 200
    wake_ms: list[float] = field(default_factory=list)  # invoke at 0 replicas (the gateway wakes it) -> 200
    scale_down_ms: list[float] = field(default_factory=list)  # scale POST (1 -> 0) sent -> availableReplicas 0
    seen: dict[str, int] = field(default_factory=dict)  # non-200 answers before a first 200
    others_pct: float | None = None
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    stop_ms: list[float | None] = field(default_factory=list)


@dataclass
class SandboxBlock:
    """Per sandbox mode: invoke loads through the gateway and cold deploys, on a daemon of that mode."""

    order: list[str] = field(default_factory=list)
    loads: dict[str, dict[str, LoadRun]] = field(default_factory=dict)  # mode -> level label -> run
    deploy_ms: dict[str, list[float]] = field(default_factory=dict)  # mode -> deploy POST -> first 200
    seen: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    stop_ms: list[float | None] = field(default_factory=list)


@dataclass
class Round:
    order: list[str]
    load: LoadBlock | None = None
    start: StartBlock | None = None
    cold: ColdBlock | None = None
    sandbox: SandboxBlock | None = None


def measure_load(
    spec: LoadSpec, ports: dict[str, int], pids: dict[str, int], wrk: str, duration: int, tmp: Path
) -> LoadRun:
    """One wrk run with the CPU of the daemon (alone), the replica (tree) and the hello world (alone) around it."""
    script = spec.load.write_script(tmp, f"{spec.server}-{spec.load.method.lower()}.lua")
    url = f"http://{h.LOCALHOST}:{ports[spec.server]}/"
    others = h.OthersMeter()
    before = _cpu(pids)
    others.start()
    result, raw = h.run_wrk(wrk, url, spec.level, duration, script)
    others_pct = others.stop()
    after = _cpu(pids)

    def per_req(key: str) -> float | None:
        if before.get(key) is None or after.get(key) is None or not result.requests:
            return None
        return (after[key] - before[key]) * 1000.0 / result.requests  # type: ignore[operator]

    run = LoadRun(result, raw, per_req("daemon"), per_req("replica"), per_req("hello"), per_req("relay"), others_pct)
    result.cpu_ms_per_req = {
        GATEWAY: run.daemon_cpu,
        DIRECT: run.replica_cpu,
        HELLO: run.hello_cpu,
        RELAY: run.relay_cpu,
    }[spec.server]
    return run


def _cpu(pids: dict[str, int]) -> dict[str, float | None]:
    return {
        "daemon": h.process_cpu_seconds(pids["daemon"]),
        "replica": h.tree_cpu_seconds(pids["replica"]),
        "hello": h.process_cpu_seconds(pids["hello"]),
        "relay": h.process_cpu_seconds(pids["relay"]),
    }


def load_block(
    index: int, faasd: Faasd, wrk: str, args: argparse.Namespace, tmp: Path, hello_script: Path
) -> LoadBlock:
    """A fresh daemon with one ``echo`` replica and a hello world; every load of :data:`LOADS`, order rotated."""
    out = LoadBlock()
    shift = index % len(LOADS)
    specs = LOADS[shift:] + LOADS[:shift]
    out.order = [s.key for s in specs]
    password = secrets.token_hex(12)
    daemon: h.Running | None = None
    hello: h.Running | None = None
    relay: h.Running | None = None
    try:
        daemon = h.start(faasd.daemon(tmp, password, pool=0), ready_timeout=args.ready_timeout)
        api = Api(daemon.target.port, password)
        api.deploy(FUNCTION, PINNED)
        first_200(api, FUNCTION, args.cold_timeout, {})
        token = call_token_headers(tmp / "state")
        out.replica = replica = find_replica(daemon.proc.pid, headers=token)
        specs = [replace(s, load=replace(s.load, headers=token)) if s.server == DIRECT else s for s in specs]
        warmups = [replace(s, load=replace(s.load, headers=token)) if s.server == DIRECT else s for s in WARMUPS]
        replica_set = set(watchdogs(daemon.proc.pid))
        hello = h.start(faasd.hello(tmp, hello_script), ready_timeout=args.ready_timeout)
        if hello.echo_ok is False:
            raise h.BenchError("the hello world did not answer 'Hello, world!'")
        relay = h.start(faasd.relay(tmp, replica.port, token), ready_timeout=args.ready_timeout)
        if relay.echo_ok is False:
            raise h.BenchError("the bare relay did not echo the request's body")
        ports = {GATEWAY: daemon.target.port, DIRECT: replica.port, HELLO: hello.target.port, RELAY: relay.target.port}
        pids = {"daemon": daemon.proc.pid, "replica": replica.pid, "hello": hello.proc.pid, "relay": relay.proc.pid}
        for spec in warmups:
            measure_load(spec, ports, pids, wrk, WARMUP_S, tmp)  # discarded
        for spec in specs:
            out.loads[spec.key] = measure_load(spec, ports, pids, wrk, args.duration, tmp)
            for name, running in (("daemon", daemon), ("hello world", hello), ("bare relay", relay)):
                if running.proc.poll() is not None:
                    raise h.BenchError(f"the {name} exited (status {running.proc.returncode}) during {spec.key}")
            if not h.alive(replica.pid):
                raise h.BenchError(f"the replica (pid {replica.pid}) exited during {spec.key}")
            if (now := set(watchdogs(daemon.proc.pid))) != replica_set:
                raise h.BenchError(
                    f"the replicas changed during {spec.key}: pids {sorted(replica_set)} -> {sorted(now)}"
                )
    except h.BenchError as exc:
        out.error = _with_log(str(exc), tmp / "daemon.log")
    finally:
        for running in (hello, relay):
            if running is not None:
                running.stop()
        if daemon is not None:
            stop_daemon(daemon, out)
    return out


def start_block(count: int, faasd: Faasd, args: argparse.Namespace, tmp_root: Path, hello_script: Path) -> StartBlock:
    """``count`` fresh ``faasd up`` (fresh state dir each) and as many hello-world starts, alternating."""
    out = StartBlock()
    others = h.OthersMeter()
    others.start()
    try:
        for i in range(count):
            for job in ("daemon", "hello") if i % 2 == 0 else ("hello", "daemon"):
                tmp = Path(tempfile.mkdtemp(prefix=f"start-{job}-", dir=tmp_root))
                if job == "daemon":
                    target = faasd.daemon(tmp, secrets.token_hex(12), pool=args.pool_size)
                    running = h.start(target, ready_timeout=args.ready_timeout)
                    out.daemon_ms.append(running.startup_s * 1000.0)
                    stop_daemon(running, out)
                    out.logged_ms.append(startup_ms_logged(tmp / "daemon.log"))
                else:
                    running = h.start(faasd.hello(tmp, hello_script), ready_timeout=args.ready_timeout)
                    out.hello_ms.append(running.startup_s * 1000.0)
                    running.stop()
    except h.BenchError as exc:
        out.error = str(exc)
    out.others_pct = others.stop()
    return out


def bare_watchdog_ms(faasd: Faasd, tmp: Path, ready_timeout: float) -> float:
    """A bare ``faasd watchdog`` (fork mode, ``cat``) exec -> first 200, in ms: the floor under any local cold
    start; the process is stopped again."""
    running = h.start(faasd.watchdog(Path(tempfile.mkdtemp(prefix="wd-", dir=tmp))), ready_timeout=ready_timeout)
    running.stop()
    return running.startup_s * 1000.0


def cold_block(
    round_no: int, deploys: int, cycles: int, faasd: Faasd, args: argparse.Namespace, tmp: Path
) -> ColdBlock:
    """Deploys of new functions (each removed after its first 200), bare watchdog starts alternating with them,
    then ``cycles`` cycles on one function of: scale to 0, then back to 1 by the scale API, and scale to 0, then
    an invoke alone (the gateway scales it from zero); one fresh daemon for all of it."""
    out = ColdBlock()
    password = secrets.token_hex(12)
    daemon: h.Running | None = None
    others = h.OthersMeter()
    others.start()
    try:
        daemon = h.start(faasd.daemon(tmp, password, pool=args.pool_size), ready_timeout=args.ready_timeout)
        api = Api(daemon.target.port, password)
        pid = daemon.proc.pid

        def no_replicas() -> bool:
            return not watchdogs(pid)

        for i in range(deploys):
            for job in ("deploy", "watchdog") if i % 2 == 0 else ("watchdog", "deploy"):
                if job == "watchdog":
                    out.watchdog_ms.append(bare_watchdog_ms(faasd, tmp, args.ready_timeout))
                    continue
                name = f"cold-r{round_no}-{i}"
                poll("the previous function's replicas to exit", no_replicas, 10.0)
                t0 = time.perf_counter()
                api.deploy(name)
                t_api = time.perf_counter()
                t1 = first_200(api, name, args.cold_timeout, out.seen)
                out.deploy_api_ms.append((t_api - t0) * 1000.0)
                out.deploy_ms.append((t1 - t0) * 1000.0)
                api.remove(name)
        if cycles:
            name = f"scale-r{round_no}"
            poll("the previous function's replicas to exit", no_replicas, 10.0)
            api.deploy(name)
            first_200(api, name, args.cold_timeout, {})
            for j in range(cycles):
                for how in ("scale", "wake") if j % 2 == 0 else ("wake", "scale"):
                    t0 = time.perf_counter()
                    api.scale(name, 0)
                    poll(f"{name} availableReplicas 0", lambda: api.available(name) == 0, 15.0)
                    out.scale_down_ms.append((time.perf_counter() - t0) * 1000.0)
                    poll(f"{name}'s replica to exit", no_replicas, 10.0)
                    t0 = time.perf_counter()
                    if how == "scale":
                        api.scale(name, 1)
                    t1 = first_200(api, name, args.cold_timeout, out.seen)
                    (out.scale_ms if how == "scale" else out.wake_ms).append((t1 - t0) * 1000.0)
            api.remove(name)
    except h.BenchError as exc:
        out.error = _with_log(str(exc), tmp / "daemon.log")
    finally:
        if daemon is not None:
            stop_daemon(daemon, out)
        out.others_pct = others.stop()
    return out


def sandbox_block(index: int, faasd: Faasd, wrk: str, args: argparse.Namespace, tmp: Path) -> SandboxBlock:
    """One daemon per ``--sandbox`` mode, all up at once, each with one pinned ``echo``; then per load level the
    modes one after the other (their order rotated each round), then cold deploys alternating between modes."""
    modes = args.sandbox
    shift = index % len(modes)
    order = modes[shift:] + modes[:shift]
    out = SandboxBlock(order=order, loads={m: {} for m in modes}, deploy_ms={m: [] for m in modes})
    password = secrets.token_hex(12)
    daemons: dict[str, h.Running] = {}
    try:
        for mode in order:
            mode_tmp = Path(tempfile.mkdtemp(prefix=f"sandbox-{mode}-", dir=tmp))
            daemons[mode] = h.start(faasd.daemon(mode_tmp, password, mode, pool=0), ready_timeout=args.ready_timeout)
            _check_sandbox(mode, mode_tmp / "daemon.log")
            api = Api(daemons[mode].target.port, password)
            api.deploy(FUNCTION, PINNED)
            first_200(api, FUNCTION, args.cold_timeout, {})
        script = POST_GATEWAY.write_script(tmp, "sandbox-post.lua")
        for mode in order:  # Warm-up, discarded.
            h.run_wrk(wrk, f"http://{h.LOCALHOST}:{daemons[mode].target.port}/", C16, WARMUP_S, script)
        for level in (C1, C16) if index % 2 == 0 else (C16, C1):
            for mode in order:
                url = f"http://{h.LOCALHOST}:{daemons[mode].target.port}/"
                result, raw = h.run_wrk(wrk, url, level, args.duration, script)
                out.loads[mode][level.label] = LoadRun(result, raw)
        for i in range(args.sandbox_deploys):
            for mode in order if i % 2 == 0 else list(reversed(order)):
                api = Api(daemons[mode].target.port, password)
                name = f"cold-s{index + 1}-{i}"
                t0 = time.perf_counter()
                api.deploy(name)
                out.deploy_ms[mode].append((first_200(api, name, args.cold_timeout, out.seen) - t0) * 1000.0)
                api.remove(name)
        for mode, running in daemons.items():
            if running.proc.poll() is not None:
                raise h.BenchError(f"the {mode} daemon exited (status {running.proc.returncode})")
    except h.BenchError as exc:
        out.error = str(exc)
    finally:
        for running in daemons.values():
            stop_daemon(running, out)
    return out


def _check_sandbox(mode: str, log: Path) -> None:
    """The daemon runs the mode asked for (an explicit mode that cannot work stops it at start)."""
    text = log.read_text(errors="replace")
    if not re.search(rf"event=sandbox mode={re.escape(mode)}\b", text):
        raise h.BenchError(f"the daemon started with --sandbox {mode} does not report that mode\n{h.log_tail(log)}")


def _with_log(message: str, log: Path) -> str:
    return f"{message}\n{h.log_tail(log)}" if log.exists() else message


def run_rounds(faasd: Faasd, wrk: str, args: argparse.Namespace, tmp_root: Path) -> list[Round]:
    """Interleaved rounds: the block order rotates by one each round (and the load order inside the load block),
    so no measurement is always first (cold caches) or always last (a warmed-up, possibly throttled VM)."""
    hello_script = tmp_root / "hello_world.py"
    hello_script.write_text(HELLO_APP)
    per_round = {
        "start": math.ceil(args.starts / args.rounds),
        "deploys": math.ceil(args.deploys / args.rounds),
        "cycles": math.ceil(args.scale_cycles / args.rounds),
    }
    rounds = []
    blocks = tuple(block for block in BLOCKS if block in args.blocks)
    for index in range(args.rounds):
        shift = index % len(blocks)
        order = list(blocks[shift:] + blocks[:shift])
        rnd = Round(order)
        print(f"round {index + 1}/{args.rounds}: {' -> '.join(order)}", file=sys.stderr, flush=True)
        for block in order:
            started = time.monotonic()
            tmp = Path(tempfile.mkdtemp(prefix=f"r{index + 1}-{block}-", dir=tmp_root))
            if block == "load":
                rnd.load = result = load_block(index, faasd, wrk, args, tmp, hello_script)
                note = ", ".join(f"{k} {r.wrk.rps:,.0f}/s" for k, r in result.loads.items())
            elif block == "start":
                rnd.start = result = start_block(per_round["start"], faasd, args, tmp, hello_script)
                note = f"faasd up -> healthz {h.fmt_ms(h.median(result.daemon_ms), 0)} ms"
            elif block == "sandbox":
                rnd.sandbox = result = sandbox_block(index, faasd, wrk, args, tmp)
                note = ", ".join(
                    f"{mode}: c1 p50 {h.fmt_ms(runs['c1'].wrk.p50_ms) if 'c1' in runs else '-'} ms, "
                    f"deploy p50 {h.fmt_ms(h.median(result.deploy_ms[mode]), 0)} ms"
                    for mode, runs in result.loads.items()
                )
            else:
                rnd.cold = result = cold_block(index + 1, per_round["deploys"], per_round["cycles"], faasd, args, tmp)
                note = (
                    f"deploy -> 200 p50 {h.fmt_ms(h.median(result.deploy_ms), 0)} ms, "
                    f"0->1 p50 {h.fmt_ms(h.median(result.scale_ms), 0)} ms, "
                    f"wake p50 {h.fmt_ms(h.median(result.wake_ms), 0)} ms"
                )
            if result.error:
                note = f"FAILED: {result.error.splitlines()[0]} ({note})"
            print(f"  {block}: {note} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        rounds.append(rnd)
    return rounds


# --------------------------------------------------------------------------------------------- reporting


def series(rounds: list[Round], key: str, attr: str) -> list[float | None]:
    """One number per round for a load (None where that round failed before it)."""
    out: list[float | None] = []
    for rnd in rounds:
        run = rnd.load.loads.get(key) if rnd.load else None
        if run is None:
            out.append(None)
        elif hasattr(run.wrk, attr):
            out.append(getattr(run.wrk, attr))
        else:
            out.append(getattr(run, attr))
    return out


def pooled(rounds: list[Round], block: str, attr: str) -> list[float]:
    """Every sample of a start-up / cold-start list, all rounds pooled."""
    values: list[float] = []
    for rnd in rounds:
        part = getattr(rnd, block)
        if part is not None:
            values += [v for v in getattr(part, attr) if v is not None]
    return values


def summarize(rounds: list[Round]) -> dict[str, object]:
    """The numbers the report prints (and the JSON file keeps): medians over rounds, per-round differences and
    ratios, pooled start-up and cold-start percentiles."""
    loads = {}
    for spec in LOADS:
        loads[spec.key] = {
            "rps": series(rounds, spec.key, "rps"),
            "p50_ms": series(rounds, spec.key, "p50_ms"),
            "p99_ms": series(rounds, spec.key, "p99_ms"),
            "errors": sum(int(e or 0) for e in series(rounds, spec.key, "errors")),
            "daemon_cpu_ms_per_req": h.median(series(rounds, spec.key, "daemon_cpu")),
            "replica_cpu_ms_per_req": h.median(series(rounds, spec.key, "replica_cpu")),
            "hello_cpu_ms_per_req": h.median(series(rounds, spec.key, "hello_cpu")),
            "relay_cpu_ms_per_req": h.median(series(rounds, spec.key, "relay_cpu")),
            "others_pct": series(rounds, spec.key, "others_pct"),
        }
    added = {}
    for c in (1, 16):
        gw, direct = f"post gateway c{c}", f"post direct c{c}"
        added[f"c{c}"] = {
            "p50_ms": h.paired_differences(series(rounds, gw, "p50_ms"), series(rounds, direct, "p50_ms")),
            "p99_ms": h.paired_differences(series(rounds, gw, "p99_ms"), series(rounds, direct, "p99_ms")),
            "rps_ratio": h.paired_ratios(series(rounds, gw, "rps"), series(rounds, direct, "rps")),
        }
    direct_p50 = series(rounds, "post direct c1", "p50_ms")

    def added_to_direct(key: str) -> list[float | None]:
        return [
            None if g is None or d is None else g - d
            for g, d in zip(series(rounds, key, "p50_ms"), direct_p50, strict=True)
        ]

    added_p50, relay_added_p50 = added_to_direct("post gateway c1"), added_to_direct("post relay c1")
    added["relay c1"] = {"p50_ms": [v for v in relay_added_p50 if v is not None]}
    hop = {
        "c16 gateway / direct req/s": h.paired_ratios(
            series(rounds, "post gateway c16", "rps"), series(rounds, "post direct c16", "rps")
        ),
        "gateway CPU / hello world CPU per request": h.paired_ratios(
            series(rounds, "health gateway c16", "daemon_cpu"), series(rounds, "hello c16", "hello_cpu")
        ),
        "added p50 / direct p50 at c1": h.paired_ratios(added_p50, direct_p50),
        FLOOR_KEY: h.paired_ratios(relay_added_p50, direct_p50),
        "gateway-added / relay-added p50 at c1": h.paired_ratios(added_p50, relay_added_p50),
    }
    hello_rps = series(rounds, "hello c16", "rps")
    ratios = {
        "gateway health / hello c16": h.paired_ratios(series(rounds, "health gateway c16", "rps"), hello_rps),
        "direct health / hello c16": h.paired_ratios(series(rounds, "health direct c16", "rps"), hello_rps),
    }
    samples = {
        "up_ms": pooled(rounds, "start", "daemon_ms"),
        "up_logged_ms": pooled(rounds, "start", "logged_ms"),
        "hello_start_ms": pooled(rounds, "start", "hello_ms"),
        "deploy_ms": pooled(rounds, "cold", "deploy_ms"),
        "deploy_api_ms": pooled(rounds, "cold", "deploy_api_ms"),
        "watchdog_start_ms": pooled(rounds, "cold", "watchdog_ms"),
        "scale_ms": pooled(rounds, "cold", "scale_ms"),
        "wake_ms": pooled(rounds, "cold", "wake_ms"),
        "scale_down_ms": pooled(rounds, "cold", "scale_down_ms"),
        "stop_ms": [v for block in ("load", "start", "cold") for v in pooled(rounds, block, "stop_ms")],
    }
    stats = {
        key: {"n": len(v), "p50": h.percentile(v, 50), "p99": h.percentile(v, 99), "min": min(v, default=None),
              "max": max(v, default=None)}
        for key, v in samples.items()
    }  # fmt: skip

    def p50_ratio(a: str, b: str) -> float | None:
        return h.ratio(stats[a]["p50"], stats[b]["p50"])

    ratios["up / hello start p50"] = p50_ratio("up_ms", "hello_start_ms")
    ratios["deploy / bare watchdog p50"] = p50_ratio("deploy_ms", "watchdog_start_ms")
    ratios["wake / bare watchdog p50"] = p50_ratio("wake_ms", "watchdog_start_ms")
    ratios["scale / bare watchdog p50"] = p50_ratio("scale_ms", "watchdog_start_ms")
    seen: dict[str, int] = {}
    for rnd in rounds:
        for answer, count in (rnd.cold.seen if rnd.cold else {}).items():
            seen[answer] = seen.get(answer, 0) + count
    return {
        "loads": loads,
        "added": added,
        "ratios": ratios,
        "hop": hop,
        "samples": samples,
        "stats": stats,
        "seen": seen,
        "sandbox": summarize_sandbox(rounds),
    }


def summarize_sandbox(rounds: list[Round]) -> dict[str, object]:
    """Per mode: per-round invoke numbers and pooled cold deploys; per mode but the baseline: paired ratios."""
    blocks = [r.sandbox for r in rounds if r.sandbox is not None]
    if not blocks:
        return {}
    modes = sorted(blocks[0].loads, key=lambda m: (m != SANDBOX_BASELINE, m))

    def per_round(mode: str, level: str, attr: str) -> list[float | None]:
        return [getattr(b.loads[mode][level].wrk, attr) if level in b.loads.get(mode, {}) else None for b in blocks]

    out: dict[str, object] = {"modes": modes}
    for mode in modes:
        deploys = [v for b in blocks for v in b.deploy_ms.get(mode, [])]
        data: dict[str, object] = {
            level: {attr: per_round(mode, level, attr) for attr in ("rps", "p50_ms", "p99_ms")}
            for level in ("c1", "c16")
        }
        data["deploy_ms"] = {"n": len(deploys), "p50": h.percentile(deploys, 50), "p99": h.percentile(deploys, 99)}
        if mode != SANDBOX_BASELINE and SANDBOX_BASELINE in modes:
            data["vs_none"] = {
                "c1_p50_ratio": h.paired_ratios(
                    per_round(mode, "c1", "p50_ms"), per_round(SANDBOX_BASELINE, "c1", "p50_ms")
                ),
                "c1_rps_ratio": h.paired_ratios(per_round(mode, "c1", "rps"), per_round(SANDBOX_BASELINE, "c1", "rps")),
                "c16_rps_ratio": h.paired_ratios(
                    per_round(mode, "c16", "rps"), per_round(SANDBOX_BASELINE, "c16", "rps")
                ),
                "c16_p99_ratio": h.paired_ratios(
                    per_round(mode, "c16", "p99_ms"), per_round(SANDBOX_BASELINE, "c16", "p99_ms")
                ),
                "deploy_p50_ratio": h.ratio(
                    h.percentile([v for b in blocks for v in b.deploy_ms.get(mode, [])], 50),
                    h.percentile([v for b in blocks for v in b.deploy_ms.get(SANDBOX_BASELINE, [])], 50),
                ),
            }
        out[mode] = data
    return out


def hop_report(hop: dict[str, list[float]]) -> list[str]:
    """The gateway hop's rows of issue 15 (the whole stack against OpenFaaS's): same-run ratios and targets."""
    rows = (
        ("c16 gateway / direct req/s", ">=", TARGET_HOP_C16_RATIO),
        ("gateway CPU / hello world CPU per request", "<=", TARGET_HOP_CPU_RATIO),
        ("added p50 / direct p50 at c1", "<=", TARGET_HOP_P50_RATIO),
    )
    lines = ["", "the gateway hop (same-run per-round ratios, median [min-max]; target; verdict on the median):"]
    for key, sense, target in rows:
        values = hop.get(key, [])
        mid = h.median(values)
        ok = None if mid is None else (mid >= target if sense == ">=" else mid <= target)
        shown = h.fmt_range(values, lambda v: f"{v:.2f}x")
        lines.append(f"  {key:<42} {shown:>24}  target {sense} {target:g}x -> {verdict(ok)}")
    for key, what in (
        (FLOOR_KEY, "the floor: any Python hop adds this much"),
        ("gateway-added / relay-added p50 at c1", "faasd's gateway against that floor"),
    ):
        shown = h.fmt_range(hop.get(key, []), lambda v: f"{v:.2f}x")
        lines.append(f"  {key:<42} {shown:>24}  ({what})")
    return lines


def verdict(ok: bool | None) -> str:
    return "no data" if ok is None else ("met" if ok else "NOT met")


def report(rounds: list[Round], summary: dict, args: argparse.Namespace, meta: dict) -> str:
    """The human-readable report (stdout)."""
    machine = meta["machine"]
    lines = [
        "",
        f"gateway benchmark: faasd up --provider local, one fork-mode replica (fprocess=cat), {meta['wrk']}",
        f"{args.rounds} round(s) x {args.duration} s per load, block and load order rotated each round; "
        f"machine: {machine['cpus']} CPU {machine['cpu_model']}, kernel {machine['kernel']}",
        f"faasd: {meta['faasd']}; hello world: {meta.get('hello') or '?'}",
        "",
        "1. invoke path: 100-byte POST (text/plain, keep-alive), the same replica straight on its port and through "
        f"/function/{FUNCTION}",
    ]
    loads = summary["loads"]
    rows = []
    for c in (1, 16):
        for path in ("direct", "gateway"):
            key = f"post {path} c{c}"
            data = loads[key]
            rows.append(
                [
                    "replica direct" if path == "direct" else "through gateway",
                    str(c),
                    h.fmt_range(data["rps"]),
                    h.fmt_ms(h.median(data["p50_ms"])),
                    h.fmt_ms(h.median(data["p99_ms"])),
                    str(data["errors"]),
                    h.fmt_ms(data["daemon_cpu_ms_per_req"]) if path == "gateway" else "-",
                    h.fmt_ms(data["replica_cpu_ms_per_req"]),
                    _others(data["others_pct"]),
                ]
            )
    headers = ["path", "c", "req/s median [min-max]", "p50 ms", "p99 ms", "errors", "daemon CPU ms/req",
               "replica CPU ms/req", "others %CPU"]  # fmt: skip
    lines += [h.render_table(headers, rows, right=range(1, 9)), ""]
    added = summary["added"]
    lines.append("added by the gateway (median of per-round differences gateway - direct [min..max]):")
    for c in (1, 16):
        a = added[f"c{c}"]
        lines.append(
            f"  c{c}: p50 {h.fmt_delta(a['p50_ms'])}, p99 {h.fmt_delta(a['p99_ms'])}; "
            f"req/s gateway / direct {h.fmt_ratio(a['rps_ratio'])}"
        )
    relay = loads["post relay c1"]
    lines.append(
        "  c1, a bare Python relay (bench/_relay.py) instead of the gateway: p50 "
        f"{h.fmt_delta(added['relay c1']['p50_ms'])}"
        f" ({h.fmt_ms(h.median(relay['p50_ms']))} ms); its CPU {h.fmt_ms(relay['relay_cpu_ms_per_req'])} ms/req"
    )
    lines.append("")

    lines.append("2. proxied throughput at c16, GET with a cheap upstream (the replica's /_/health, no fork)")
    rows = []
    for key, label, cpu_attr in (
        ("hello c16", "hypercorn-trio hello world (baseline)", "hello_cpu_ms_per_req"),
        ("health gateway c16", f"gateway -> /function/{FUNCTION}/_/health", "daemon_cpu_ms_per_req"),
        ("health direct c16", "replica /_/health direct (context)", "replica_cpu_ms_per_req"),
    ):
        data = loads[key]
        rows.append(
            [
                label,
                h.fmt_range(data["rps"]),
                h.fmt_ms(h.median(data["p50_ms"])),
                h.fmt_ms(h.median(data["p99_ms"])),
                str(data["errors"]),
                h.fmt_ms(data[cpu_attr], 3),
                _others(data["others_pct"]),
            ]
        )
    headers = ["server", "req/s median [min-max]", "p50 ms", "p99 ms", "errors", "server CPU ms/req", "others %CPU"]
    lines += [h.render_table(headers, rows, right=range(1, 7)), ""]
    ratios = summary["ratios"]
    lines.append(f"  gateway / hello world: {h.fmt_ratio(ratios['gateway health / hello c16'])} (per-round ratios)")
    lines.append(f"  replica direct / hello world: {h.fmt_ratio(ratios['direct health / hello c16'])}")
    lines.append("  server CPU = the daemon process alone (not its replicas) / the hello world / the replica's tree")
    lines.append("")

    stats = summary["stats"]

    def stat_row(label: str, key: str) -> list[str]:
        s = stats[key]
        return [label, str(s["n"]), *(h.fmt_ms(s[k], 1) for k in ("p50", "p99", "min", "max"))]

    lines.append("3. start-up: exec -> first 200 (fresh state dir each; ms, all rounds pooled)")
    rows = [
        stat_row("faasd up -> GET /healthz 200", "up_ms"),
        stat_row("  startup_ms in its 'ready' log line", "up_logged_ms"),
        stat_row("hello world -> GET / 200 (baseline)", "hello_start_ms"),
        stat_row("faasd stop: SIGTERM -> exit (every block)", "stop_ms"),
    ]
    headers = ["what", "n", "p50", "p99", "min", "max"]
    lines += [h.render_table(headers, rows, right=range(1, 6))]
    lines.append(f"  faasd up / hello world, p50s (same run): {_fmt_x(ratios['up / hello start p50'])}")
    lines += [f"  others %CPU during these blocks: {_others([r.start.others_pct for r in rounds if r.start])}", ""]

    lines.append("4. cold start (ms, all rounds pooled; p99 is nearest-rank: the max below 100 samples)")
    rows = [
        stat_row("deploy new function -> first 200", "deploy_ms"),
        stat_row("  deploy POST -> 202", "deploy_api_ms"),
        stat_row("bare faasd watchdog exec -> first 200 (floor)", "watchdog_start_ms"),
        stat_row("scale 0 -> 1 -> first 200", "scale_ms"),
        stat_row("invoke at 0 replicas -> 200 (gateway wakes it)", "wake_ms"),
        stat_row("  scale 1 -> 0 -> availableReplicas 0", "scale_down_ms"),
    ]
    lines += [h.render_table(headers, rows, right=range(1, 6))]
    lines.append(f"  others %CPU during these blocks: {_others([r.cold.others_pct for r in rounds if r.cold])}")
    if summary["seen"]:
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(summary["seen"].items()))
        lines.append(f"  answers before a first 200: {seen}")
    deploy_p50, floor_p50 = stats["deploy_ms"]["p50"], stats["watchdog_start_ms"]["p50"]
    if deploy_p50 is not None and floor_p50 is not None:
        lines.append(f"  deploy -> 200 p50 minus the bare watchdog's start-up p50: {deploy_p50 - floor_p50:+.1f} ms")
    for what in ("deploy", "wake", "scale"):
        lines.append(f"  {what} / bare watchdog, p50s (same run): {_fmt_x(ratios[f'{what} / bare watchdog p50'])}")
    lines.append("")

    if summary.get("sandbox"):
        lines += sandbox_report(summary["sandbox"], rounds, args)

    lines.append(TARGETS_TEXT)
    c1 = added["c1"]
    p50_add, p99_add = h.median(c1["p50_ms"]), h.median(c1["p99_ms"])
    hello_ratio = h.median(ratios["gateway health / hello c16"])
    up_p50, cold_p50 = stats["up_ms"]["p50"], stats["deploy_ms"]["p50"]
    checks = [
        ("gateway adds at c1, p50", p50_add, " ms", p50_add is not None and p50_add <= TARGET_ADDED_P50_MS),
        ("gateway adds at c1, p99", p99_add, " ms", p99_add is not None and p99_add <= TARGET_ADDED_P99_MS),
        ("proxied c16 / hello world", hello_ratio, "x", hello_ratio is not None and hello_ratio >= TARGET_HELLO_RATIO),
        ("faasd up -> /healthz 200, p50", up_p50, " ms", up_p50 is not None and up_p50 <= TARGET_UP_MS),
        ("deploy -> first 200, p50", cold_p50, " ms", cold_p50 is not None and cold_p50 <= TARGET_COLD_P50_MS),
    ]
    for label, key, limit in (
        ("faasd up / hello world start", "up / hello start p50", TARGET_UP_RATIO),
        ("deploy -> 200 / bare watchdog", "deploy / bare watchdog p50", TARGET_COLD_RATIO),
        ("invoke at 0 / bare watchdog", "wake / bare watchdog p50", TARGET_COLD_RATIO),
    ):
        value = ratios[key]
        checks.append((label, value, "x", value is not None and value <= limit))
    for label, value, unit, ok in checks:
        shown = "-" if value is None else (f"{value:+.2f}{unit}" if "adds" in label else f"{value:.2f}{unit}")
        lines.append(f"  {label:<32} {shown:>10} -> {verdict(None if value is None else ok)}")

    lines += hop_report(summary["hop"])

    leftovers = [(i + 1, b, item) for i, r in enumerate(rounds) for b in BLOCKS for item in _block(r, b, "leftovers")]
    stops = sum(1 for r in rounds for b in BLOCKS if getattr(r, b) is not None)
    lines.append("")
    if leftovers:
        lines.append("processes the daemon left running after SIGTERM (killed by the benchmark):")
        lines += [f"  round {rnd}, {block}: {item}" for rnd, block, item in leftovers]
    else:
        lines.append(f"after every daemon's SIGTERM ({stops} blocks): no replica or other child left running")
    if meta.get("final_leftovers"):
        lines.append(f"warning: faasd watchdog processes still present at the end: {meta['final_leftovers']}")
    disturbed = _disturbed(rounds)
    if disturbed:
        lines.append("")
        lines.append(
            f"warning: other processes used more than {DISTURBED_PCT:g} % of a core during these measurements; "
            "their numbers are suspect (rerun on a quiet machine):"
        )
        lines += [f"  {item}" for item in disturbed]
    failures = [(i + 1, b, err) for i, r in enumerate(rounds) for b in BLOCKS if (err := _block(r, b, "error"))]
    if failures:
        lines.append("")
        lines.append("failures:")
        lines += [f"  round {rnd}, {block}: {error}" for rnd, block, error in failures]
    return "\n".join(lines)


def sandbox_report(data: dict, rounds: list[Round], args: argparse.Namespace) -> list[str]:
    """Section 5: the sandbox's cost, each mode against ``none`` measured in the same rounds."""
    modes = data["modes"]
    lines = [
        "5. the sandbox's cost: fork-mode invoke through /function/echo (100-byte POST) and deploy -> first 200, "
        f"one daemon per --sandbox mode, modes alternating (order per round: "
        f"{'; '.join(' '.join(r.sandbox.order) for r in rounds if r.sandbox)})"
    ]
    rows = []
    for mode in modes:
        for level in ("c1", "c16"):
            numbers = data[mode][level]
            errors = sum(
                r.sandbox.loads[mode][level].wrk.errors
                for r in rounds
                if r.sandbox and level in r.sandbox.loads.get(mode, {})
            )
            rows.append(
                [
                    mode,
                    level[1:],
                    h.fmt_range(numbers["rps"]),
                    h.fmt_ms(h.median(numbers["p50_ms"])),
                    h.fmt_ms(h.median(numbers["p99_ms"])),
                    str(errors),
                ]
            )
    headers = ["sandbox", "c", "req/s median [min-max]", "p50 ms", "p99 ms", "errors"]
    lines += [h.render_table(headers, rows, right=range(1, 6))]
    rows = []
    for mode in modes:
        deploys = data[mode]["deploy_ms"]
        rows.append([mode, str(deploys["n"]), h.fmt_ms(deploys["p50"], 1), h.fmt_ms(deploys["p99"], 1)])
    lines += ["", h.render_table(["sandbox", "deploys", "deploy -> 200 p50 ms", "p99 ms"], rows, right=range(1, 4))]
    checks = []
    for mode in modes:
        versus = data[mode].get("vs_none")
        if not versus:
            continue
        c1_p50 = h.median(versus["c1_p50_ratio"])
        c16_rps = h.median(versus["c16_rps_ratio"])
        cold = versus["deploy_p50_ratio"]
        lines.append(
            f"  {mode} / none (per-round ratios): c1 p50 {h.fmt_ratio(versus['c1_p50_ratio'])}, c1 req/s "
            f"{h.fmt_ratio(versus['c1_rps_ratio'])}, c16 req/s {h.fmt_ratio(versus['c16_rps_ratio'])}, c16 p99 "
            f"{h.fmt_ratio(versus['c16_p99_ratio'])}; deploy -> 200 p50 {'-' if cold is None else f'{cold:.2f}x'}"
        )
        slower = 1.0 + TARGET_SANDBOX_SLOWER
        checks += [
            (f"{mode}: c1 p50 / none", c1_p50, c1_p50 is not None and c1_p50 <= slower),
            (f"{mode}: c16 req/s / none", c16_rps, c16_rps is not None and c16_rps >= 1.0 / slower),
            (f"{mode}: deploy -> 200 p50 / none", cold, cold is not None and cold <= TARGET_SANDBOX_COLD_RATIO),
        ]
    lines.append(
        f"  targets: invoke at most {TARGET_SANDBOX_SLOWER:.0%} slower (c1 p50 <= {1 + TARGET_SANDBOX_SLOWER:.2f}x, "
        f"c16 req/s >= {1 / (1 + TARGET_SANDBOX_SLOWER):.2f}x), cold start <= {TARGET_SANDBOX_COLD_RATIO:g}x"
    )
    for label, value, ok in checks:
        shown = "-" if value is None else f"{value:.3f}x"
        lines.append(f"  {label:<32} {shown:>10} -> {verdict(None if value is None else ok)}")
    return [*lines, ""]


def _fmt_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _others(values: list[float | None]) -> str:
    """Max over rounds of the CPU other processes used (% of one core): one busy round is enough to doubt."""
    present = [v for v in values if v is not None]
    return f"{max(present):.0f}" if present else "-"


def _disturbed(rounds: list[Round]) -> list[str]:
    """Measurements during which other processes used more than :data:`DISTURBED_PCT` % of a core."""
    out = []
    for index, rnd in enumerate(rounds, 1):
        for key, run in rnd.load.loads.items() if rnd.load else ():
            if run.others_pct is not None and run.others_pct > DISTURBED_PCT:
                out.append(f"round {index}, {key}: others {run.others_pct:.0f} %CPU")
        for block in ("start", "cold"):
            part = getattr(rnd, block)
            if part is not None and part.others_pct is not None and part.others_pct > DISTURBED_PCT:
                out.append(f"round {index}, {block} block: others {part.others_pct:.0f} %CPU")
    return out


def _block(rnd: Round, block: str, attr: str) -> object:
    part = getattr(rnd, block)
    return getattr(part, attr) if part is not None else ([] if attr == "leftovers" else None)


def to_json(rounds: list[Round], summary: dict, meta: dict) -> dict:
    """Every raw number (each round, each load with wrk's own output, every start-up sample) plus the summary."""
    return {"meta": meta, "rounds": [asdict(r) for r in rounds], "summary": summary}


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Gateway benchmark: faasd up's invoke path, start-up and cold starts (see bench/README.md).",
        epilog=TARGETS_TEXT,
    )
    parser.add_argument("--faasd", type=Path, default=DEFAULT_FAASD, help="faasd zipapp (default: %(default)s)")
    parser.add_argument(
        "--faasd-source",
        type=Path,
        nargs="?",
        const=REPO,
        help="run faasd from this source tree instead (python -m faasd; default: this repository)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for faasd and the hello world")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per load (default 5)")
    parser.add_argument("--starts", type=int, default=9, help="faasd up starts, all rounds together (default 9)")
    parser.add_argument("--deploys", type=int, default=12, help="cold deploys, all rounds together (default 12)")
    parser.add_argument("--scale-cycles", type=int, default=9, help="0 -> 1 scale cycles, all rounds (default 9)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s per load, 5 starts")
    parser.add_argument("--ready-timeout", type=float, default=15.0, help="seconds a server may take to answer")
    parser.add_argument("--cold-timeout", type=float, default=20.0, help="seconds a function may take to answer 200")
    parser.add_argument("--json", type=Path, help="also write every raw number to this file")
    parser.add_argument(
        "--sandbox",
        nargs="?",
        const="none,bwrap",
        default="",
        metavar="MODES",
        help="also measure the local backend's sandbox: these modes (default none,bwrap; none is the baseline)",
    )
    parser.add_argument("--sandbox-deploys", type=int, default=6, help="cold deploys per mode per round (default 6)")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="the cold and start blocks' daemon's --pool-size (default: the daemon's own; the invoke blocks use 0)",
    )
    parser.add_argument(
        "--blocks",
        default=",".join(BLOCKS),
        help="which blocks to run, of load,start,cold,sandbox (default: all; sandbox needs --sandbox)",
    )
    args = parser.parse_args(argv)
    args.sandbox = [mode for mode in args.sandbox.split(",") if mode]
    args.blocks = {block for block in args.blocks.split(",") if block}
    if not args.sandbox:
        args.blocks.discard("sandbox")
    if not args.blocks or args.blocks - set(BLOCKS):
        parser.error(f"--blocks: choose from {','.join(BLOCKS)}")
    if args.sandbox and SANDBOX_BASELINE not in args.sandbox:
        args.sandbox.insert(0, SANDBOX_BASELINE)
    if args.quick:
        args.rounds, args.duration, args.starts, args.deploys, args.scale_cycles = 1, 2, 5, 10, 5
    if min(args.rounds, args.duration, args.starts, args.deploys) < 1 or args.scale_cycles < 0:
        parser.error("--rounds, --duration, --starts and --deploys must be >= 1, --scale-cycles >= 0")
    return args


def _sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C so every ``finally`` stops its server."""
    raise KeyboardInterrupt


def choose_faasd(args: argparse.Namespace) -> Faasd | str:
    """The faasd to run, or why none can be run."""
    if args.faasd_source is not None:
        repo = args.faasd_source.resolve()
        if not (repo / "faasd" / "__main__.py").exists():
            return f"{repo} has no faasd/__main__.py"
        check = [args.python, "-c", "import faasd.daemon"]
        proc = subprocess.run(check, capture_output=True, text=True, timeout=60, env=h.clean_env(PYTHONPATH=repo))
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return f"{args.python} cannot import faasd.daemon from {repo}: {last} (pass --python of a dev venv?)"
        return Faasd.source(args.python, repo)
    if not args.faasd.exists():
        return (
            f"{args.faasd} not found: build it (python3 scripts/build_zipapp.py), point --faasd at it, "
            "or run from source with --faasd-source [REPO] --python VENV_PYTHON"
        )
    return Faasd.zipapp(args.python, args.faasd.resolve())


def hello_versions(tmp_root: Path) -> str | None:
    """The hello world's own line naming its hypercorn and trio (from any of its logs)."""
    for log in sorted(tmp_root.rglob("hello.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("hello-world: "):
                return line.removeprefix("hello-world: ")
    return None


def kill_stray_watchdogs() -> list[str]:
    """Last line of defence: any ``faasd watchdog`` still among our descendants (orphans are reparented to us, a
    subreaper) is listed for the report and killed, so a benchmark run never leaves replicas behind."""
    stray = [pid for pid in h.descendants(os.getpid()) if pid != os.getpid() and is_watchdog(pid)]
    found = [f"{pid} {' '.join(h.cmdline(pid))}" for pid in stray if h.alive(pid)]
    for pid in stray:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = h.find_wrk()
    if wrk is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    faasd = choose_faasd(args)
    if isinstance(faasd, str):
        print(faasd, file=sys.stderr)
        return 2
    meta: dict[str, object] = {
        "machine": h.machine_info(),
        "wrk": h.wrk_version(wrk).split(" Copyright")[0],
        "faasd": faasd.label,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": WARMUP_S,
        "body_bytes": len(BODY),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    h.become_subreaper()
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="faasd-bench-gw-") as tmp:
            rounds = run_rounds(faasd, wrk, args, Path(tmp))
            meta["hello"] = hello_versions(Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        meta["final_leftovers"] = kill_stray_watchdogs()
    summary = summarize(rounds)
    print(report(rounds, summary, args, meta))
    if args.json:
        args.json.write_text(json.dumps(to_json(rounds, summary, meta), indent=2, default=str) + "\n")
        print(f"\nraw numbers: {args.json}")
    failed = any(_block(r, b, "error") for r in rounds for b in BLOCKS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
