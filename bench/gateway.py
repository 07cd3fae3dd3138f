"""Gateway benchmark: what ``faasd up`` adds on the invoke hot path, and how fast it starts things.

Run ``python3 bench/gateway.py`` (see bench/README.md). Everything is measured against a baseline taken in the
same run, rounds interleaved (the order of blocks and of loads rotates each round), medians over rounds:

1. one fork-mode replica (``fprocess=cat``) loaded with a 100-byte POST straight on its own port and through
   ``/function/echo`` (same replica, same round) at c1 and c16: the latency the gateway adds;
   The floor under that latency, same replica, same round: ``bench/_relay.py``, a bare Python relay in front of
   it at c1 (what any Python hop costs: two more loopback sends and wake-ups, no gateway work), and
   ``bench/_lean_relay.py``, faasd's own parser and per-call header work on the watchdog's loop (what a gateway on
   that loop might add: docs/gateway.md, option 3);
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
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # the bench directory is not a package: imported by path, stdlib only
from _gateway_daemon import (
    BODY,
    FUNCTION,
    Api,
    Faasd,
    call_token_headers,
    find_replica,
    first_200,
    is_watchdog,
    poll,
    startup_ms_logged,
    watchdogs,
)
from _gateway_report import (
    BLOCKS,
    SANDBOX_BASELINE,
    TARGETS_TEXT,
    ColdBlock,
    LoadBlock,
    LoadRun,
    Round,
    SandboxBlock,
    StartBlock,
    block_part,
    report,
    summarize,
    to_json,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FAASD = REPO / "dist" / "faasd.pyz"

#: After the cold block's first deploy, how long the daemon is left alone before the cold starts measured against
#: the bare watchdog: what a daemon loads after its first answer (the management API, the backend) and its replica
#: pool are ready by then, as on any daemon that has been up for a second.
SETTLE_S = 1.0
#: How long the cold block's function stays at zero before each timed scale or wake: a function scaled to zero has
#: been idle, and the replica pool has refilled meanwhile (a refill in the idle CPU class takes 0.1-0.2 s after
#: the take on the project's VMs). Cold starts coming faster than that are the burst row's.
COLD_REST_S = 0.5
#: Invokes at zero per round timed back to back (no rest: faster than the pool refills), reported on their own row.
BURST_WAKES = 4
#: The load block's function stays at exactly one replica: the autoscaler would otherwise add replicas under
#: the c16 load, and the gateway would spread over several what the direct runs put on one.
PINNED = {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"}
C1, C16 = h.Level(1, 1), h.Level(2, 16)
WARMUP_S = 1

DIRECT, GATEWAY, HELLO, RELAY, LEAN = "direct", "gateway", "hello", "relay", "lean"


@dataclass(frozen=True)
class LoadSpec:
    """One wrk run of a round: which server it hits, with which request, at which concurrency."""

    key: str
    server: str  # DIRECT (the replica's own port), GATEWAY (the daemon), HELLO, RELAY or LEAN (bench/_*relay.py)
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
    LoadSpec("post lean c1", LEAN, POST_GATEWAY, C1),
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
    LoadSpec("warm-up lean", LEAN, POST_GATEWAY, C1),
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


STOP_GRACE_S = 15.0


def stop_daemon(running: h.Running, block: LoadBlock | StartBlock | ColdBlock) -> None:
    """SIGTERM the daemon alone (it must stop its replicas), then record how long it took and what it left."""
    report = h.stop_leader_first(running.proc, grace=STOP_GRACE_S)
    block.stop_ms.append(None if report.exit_s is None else report.exit_s * 1000.0)
    if report.exit_s is None:
        block.leftovers.append(f"the daemon itself (pid {running.proc.pid}): no exit within {STOP_GRACE_S:g} s")
    block.leftovers += [f"pid {pid} ({state}) {cmd}" for pid, state, cmd in report.left]


# --------------------------------------------------------------------------------------------- measuring


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

    run = LoadRun(
        result,
        raw,
        daemon_cpu=per_req("daemon"),
        replica_cpu=per_req("replica"),
        hello_cpu=per_req("hello"),
        relay_cpu=per_req("relay"),
        lean_cpu=per_req("lean"),
        others_pct=others_pct,
    )
    result.cpu_ms_per_req = {
        GATEWAY: run.daemon_cpu,
        DIRECT: run.replica_cpu,
        HELLO: run.hello_cpu,
        RELAY: run.relay_cpu,
        LEAN: run.lean_cpu,
    }[spec.server]
    return run


def _cpu(pids: dict[str, int]) -> dict[str, float | None]:
    return {
        "daemon": h.process_cpu_seconds(pids["daemon"]),
        "replica": h.tree_cpu_seconds(pids["replica"]),
        "hello": h.process_cpu_seconds(pids["hello"]),
        "relay": h.process_cpu_seconds(pids["relay"]),
        "lean": h.process_cpu_seconds(pids["lean"]),
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
    lean: h.Running | None = None
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
        lean = h.start(faasd.lean_relay(tmp, replica.port, token), ready_timeout=args.ready_timeout)
        if lean.echo_ok is False:
            raise h.BenchError("the lean relay did not echo the request's body")
        ports = {GATEWAY: daemon.target.port, DIRECT: replica.port, HELLO: hello.target.port}
        ports |= {RELAY: relay.target.port, LEAN: lean.target.port}
        pids = {"daemon": daemon.proc.pid, "replica": replica.pid, "hello": hello.proc.pid}
        pids |= {"relay": relay.proc.pid, "lean": lean.proc.pid}
        for spec in warmups:
            measure_load(spec, ports, pids, wrk, WARMUP_S, tmp)  # discarded
        for spec in specs:
            out.loads[spec.key] = measure_load(spec, ports, pids, wrk, args.duration, tmp)
            servers = (("daemon", daemon), ("hello world", hello), ("bare relay", relay), ("lean relay", lean))
            for name, running in servers:
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
        for running in (hello, relay, lean):
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
    an invoke alone (the gateway scales it from zero), each after :data:`COLD_REST_S` at zero; then
    :data:`BURST_WAKES` invokes at zero back to back (``burst_ms``); one fresh daemon for all of it. Before all
    of that, one deploy right after the daemon's start (``first_deploy_ms``), then :data:`SETTLE_S` of rest."""
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
            return not watchdogs(pid, assigned_pooled=True)

        # A deploy right after the daemon answered /healthz waits for what it loads after its first answer (the
        # management API, the backend, the replica pool): the start-up's cost, reported on its own row. The
        # cold starts measured below are a running daemon's.
        name = f"first-r{round_no}"
        t0 = time.perf_counter()
        api.deploy(name)
        out.first_deploy_ms.append((first_200(api, name, args.cold_timeout, out.seen) - t0) * 1000.0)
        api.remove(name)
        time.sleep(SETTLE_S)

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
            plan = [how for j in range(cycles) for how in (("scale", "wake") if j % 2 == 0 else ("wake", "scale"))]
            plan += ["burst"] * BURST_WAKES
            for how in plan:
                t0 = time.perf_counter()
                api.scale(name, 0)
                poll(f"{name} availableReplicas 0", lambda: api.available(name) == 0, 15.0)
                out.scale_down_ms.append((time.perf_counter() - t0) * 1000.0)
                poll(f"{name}'s replica to exit", no_replicas, 10.0)
                if how != "burst":
                    time.sleep(COLD_REST_S)
                t0 = time.perf_counter()
                if how == "scale":
                    api.scale(name, 1)
                t1 = first_200(api, name, args.cold_timeout, out.seen)
                {"scale": out.scale_ms, "wake": out.wake_ms, "burst": out.burst_ms}[how].append((t1 - t0) * 1000.0)
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
    summary = summarize(rounds, [spec.key for spec in LOADS])
    print(report(rounds, summary, args, meta))
    if args.json:
        args.json.write_text(json.dumps(to_json(rounds, summary, meta), indent=2, default=str) + "\n")
        print(f"\nraw numbers: {args.json}")
    failed = any(block_part(r, b, "error") for r in rounds for b in BLOCKS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
