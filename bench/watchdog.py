"""Watchdog benchmark: faasd's watchdog in each mode vs the OpenFaaS Go watchdogs, same run, same load.

Run ``python3 bench/watchdog.py`` (see bench/README.md). Two suites, each in interleaved rounds; every target starts
fresh each round with the same clean environment, is warmed up, then loaded with wrk (100-byte POST, keep-alive) at
c = 1, 16 and 64; rounds rotate the target order, and the report gives medians over rounds plus ratios taken per
round. Only same-run ratios mean anything on these shared VMs: absolute numbers drift 5-30 % between rounds.

* **fork** (``fprocess=cat``, a process per call): faasd fork mode and streaming mode vs the classic watchdog
  (``--peer``, default ../shared/peers/classic-watchdog) and of-watchdog's streaming mode, and the machine's raw
  spawn rate measured in the same round.
* **warm** (no process start per call): a bare ThreadingHTTPServer echo (bench/_upstream.py, the upstream), faasd's
  ``http`` mode and of-watchdog's ``mode=http`` (``--http-peer``) each starting that same server as fprocess and
  proxying to it, and faasd's ``python`` mode running the same echo as ``handle(req)``.

Targets (from the issues): fork: c16 throughput >= 1.2x classic-watchdog (>= 1.0x at least), c1 p50 <= classic's;
warm: http and python modes >= 1.2x of-watchdog http at c16 (>= 1.0x at least) and >= 0.6x the bare upstream,
per-call overhead <= 1 ms p50 at c1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # the bench directory is not a package: imported by path, stdlib only

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FAASD = REPO / "dist" / "faasd.pyz"
PEERS_DIR = REPO.parent / "shared" / "peers"
DEFAULT_PEER = PEERS_DIR / "classic-watchdog"
DEFAULT_HTTP_PEER = PEERS_DIR / "of-watchdog"
UPSTREAM_SCRIPT = Path(__file__).resolve().parent / "_upstream.py"
FAASD = "faasd"
FAASD_STREAMING = "faasd streaming"
FAASD_COMPARE = "faasd compare"
SPAWN_TARGET = 0.9
"""Fork mode's c16 throughput as a share of the raw spawn rate (issue 15's goal)."""
FAASD_HTTP = "faasd http"
FAASD_PYTHON = "faasd python"
UPSTREAM = "bare upstream"
SPAWN = "raw spawn"
ECHO_HANDLER = "def handle(req):\n    return req\n"

BODY = b"0123456789" * 10  # 100 bytes, printable so logs and echoes stay readable
LOAD = h.Load(method="POST", path="/", body=BODY, content_type="text/plain")
PROBE = h.Probe(method="POST", path="/", body=BODY, content_type="text/plain", expect_status=200, expect_body=BODY)
LEVELS = (h.Level(1, 1), h.Level(2, 16), h.Level(2, 64))
WARMUP = h.Level(2, 16)
WARMUP_S = 1
CPU_LEVEL = 16  # the concurrency whose CPU/request the summary reports
TARGETS_TEXT = (
    "targets: fork: c16 throughput >= 1.2x classic-watchdog (>= 1.0x at least), c1 p50 <= classic's; "
    "fork mode >= 0.9x the raw spawn rate at c16; warm: http and python modes >= 1.2x of-watchdog http at c16 "
    "(>= 1.0x at least) and >= 0.6x the bare upstream, overhead <= 1 ms p50 at c1"
)

#: Builds a fresh Target (new ports, own tmp dir) for one round.
TargetFactory = Callable[[Path], h.Target]


# --------------------------------------------------------------------------------------------- targets


def faasd_target(python: str, pyz: Path, name: str = FAASD, **mode: str | Path) -> TargetFactory:
    """faasd's watchdog on 127.0.0.1 (fork mode running ``cat`` unless ``mode`` says otherwise), metrics on a free
    port (never 8081, which the Go peers need)."""

    def build(tmp: Path) -> h.Target:
        port = h.free_port()
        metrics = h.free_port(avoid=[port])
        config = {"fprocess": "cat", **mode}
        if "upstream_url" in mode:  # http mode: the upstream server on its own free port
            upstream = h.free_port(avoid=[port, metrics])
            config.update(
                fprocess=f"{python} {UPSTREAM_SCRIPT} {upstream}", upstream_url=f"http://127.0.0.1:{upstream}"
            )
        if mode.get("mode") == "python":
            (tmp / "handler.py").write_text(ECHO_HANDLER)
            config.pop("fprocess")
        env = h.clean_env(port=port, bind=h.LOCALHOST, metrics_port=metrics, lock_file=tmp / ".lock", **config)
        # -S as the local backend starts every replica (faasd.runtime.self_command): site-packages is not the
        # watchdog's, and a development venv's editable-install finder alone costs ~24 ms per start.
        argv = [python, "-S", str(pyz), "watchdog"]
        return h.Target(name, argv, env, port, PROBE, log_path=tmp / "log", cwd=tmp)

    return build


def peer_target(name: str, binary: Path, python: str = "", **mode: str) -> TargetFactory:
    """An OpenFaaS Go watchdog: own TMPDIR (its lock file), no health-check delay, and it always takes :8081.
    With ``mode="http"`` it starts bench/_upstream.py (under ``python``) as its fprocess and proxies to it."""

    def build(tmp: Path) -> h.Target:
        port = h.free_port()
        config: dict[str, str | int | Path] = {"fprocess": "cat", **mode}
        if mode.get("mode") == "http":
            upstream = h.free_port(avoid=[port, h.GO_METRICS_PORT])
            config.update(
                fprocess=f"{python} {UPSTREAM_SCRIPT} {upstream}", upstream_url=f"http://127.0.0.1:{upstream}"
            )
        env = h.clean_env(port=port, healthcheck_interval=0, TMPDIR=tmp, **config)
        return h.Target(
            name, [str(binary)], env, port, PROBE, fixed_ports=(h.GO_METRICS_PORT,), log_path=tmp / "log", cwd=tmp
        )

    return build


def upstream_target(python: str) -> TargetFactory:
    """bench/_upstream.py loaded directly: the floor under any http-mode watchdog in front of it."""

    def build(tmp: Path) -> h.Target:
        port = h.free_port()
        argv = [python, str(UPSTREAM_SCRIPT), str(port)]
        return h.Target(UPSTREAM, argv, h.clean_env(), port, PROBE, log_path=tmp / "log", cwd=tmp)

    return build


@dataclass(frozen=True)
class Suite:
    """Targets measured together in interleaved rounds, and the per-round ratios the report prints."""

    name: str
    title: str
    factories: dict[str, TargetFactory]
    pairs: list[tuple[str, str]]  # (ours, theirs): req/s at each level, and p50 at c1
    spawn: bool  # measure the raw spawn rate each round too (the fork suite's baseline)


# --------------------------------------------------------------------------------------------- measuring


@dataclass
class TargetRound:
    """One target in one round."""

    startup_ms: float | None = None
    echo_ok: bool | None = None
    env_vars: int = 0
    env_bytes: int = 0
    loads: dict[int, h.WrkResult] = field(default_factory=dict)
    raw: dict[int, str] = field(default_factory=dict)
    error: str | None = None


@dataclass
class SpawnRound:
    two_threads: h.SpawnResult
    one_thread: h.SpawnResult


@dataclass
class Run:
    names: list[str]
    rounds: list[dict[str, TargetRound]] = field(default_factory=list)
    spawns: list[SpawnRound | None] = field(default_factory=list)
    orders: list[list[str]] = field(default_factory=list)


def measure_target(factory: TargetFactory, wrk: str, script: Path, tmp: Path, args: argparse.Namespace) -> TargetRound:
    """Start, warm up, load at each level (CPU of the process tree around each run), stop — always stop."""
    out = TargetRound()
    try:
        target = factory(tmp)
        out.env_vars, out.env_bytes = h.env_size(target.env)
        running = h.start(target, ready_timeout=args.ready_timeout)
    except h.BenchError as exc:
        out.error = str(exc)
        return out
    try:
        out.startup_ms = running.startup_s * 1000.0
        out.echo_ok = running.echo_ok
        h.run_wrk(wrk, target.url, WARMUP, WARMUP_S, script)  # discarded
        for level in LEVELS:
            cpu0, own0 = running.cpu_seconds(), h.process_cpu_seconds(running.proc.pid)
            result, raw = h.run_wrk(wrk, target.url, level, args.duration, script)
            cpu1, own1 = running.cpu_seconds(), h.process_cpu_seconds(running.proc.pid)
            if result.requests:
                result.cpu_ms_per_req = (cpu1 - cpu0) * 1000.0 / result.requests
                if own0 is not None and own1 is not None:
                    result.own_cpu_ms_per_req = (own1 - own0) * 1000.0 / result.requests
            if running.proc.poll() is not None:  # this level's numbers are wrk hammering a closed port: drop them
                status = running.proc.returncode
                raise h.BenchError(f"{target.name} exited (status {status}) during the c{level.connections} load")
            out.loads[level.connections] = result
            out.raw[level.connections] = raw
    except h.BenchError as exc:
        out.error = str(exc) + ("\n" + h.log_tail(target.log_path) if target.log_path else "")
    finally:
        running.stop()
    return out


def run_rounds(suite: Suite, wrk: str, args: argparse.Namespace, tmp_root: Path) -> Run:
    """Interleaved rounds: the order (spawn baseline included) rotates by one each round, so no target is
    always first (cold caches) or always last (a warmed-up, possibly throttled VM)."""
    names = list(suite.factories)
    run = Run(names)
    script = LOAD.write_script(tmp_root)
    jobs = [SPAWN, *names] if suite.spawn else names
    spawn_env = h.clean_env()
    for index in range(args.rounds):
        shift = index % len(jobs)
        order = jobs[shift:] + jobs[:shift]
        run.orders.append(order)
        results: dict[str, TargetRound] = {}
        spawn: SpawnRound | None = None
        print(f"{suite.name} round {index + 1}/{args.rounds}: {' -> '.join(order)}", file=sys.stderr, flush=True)
        for job in order:
            started = time.monotonic()
            if job == SPAWN:
                try:
                    spawn = SpawnRound(
                        h.spawn_rate(args.python, 2, args.spawn_seconds, spawn_env),
                        h.spawn_rate(args.python, 1, args.spawn_seconds, spawn_env),
                    )
                    note = f"{spawn.two_threads.per_second:,.0f}/s (2 threads), {spawn.one_thread.ms_each:.2f} ms each"
                except h.BenchError as exc:
                    note = f"FAILED: {exc}"
            else:
                tmp = Path(tempfile.mkdtemp(prefix=f"r{index + 1}-{job.replace(' ', '-')}-", dir=tmp_root))
                results[job] = result = measure_target(suite.factories[job], wrk, script, tmp, args)
                if result.error:
                    note = "FAILED: " + result.error.splitlines()[0]
                else:
                    note = ", ".join(f"c{c} {r.rps:,.0f}/s" for c, r in result.loads.items())
            print(f"  {job}: {note} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        run.rounds.append(results)
        run.spawns.append(spawn)
    return run


# --------------------------------------------------------------------------------------------- reporting


def series(run: Run, name: str, conc: int, attr: str) -> list[float | None]:
    """One number per round (None where the target failed that round)."""
    values: list[float | None] = []
    for results in run.rounds:
        result = results.get(name)
        load = result.loads.get(conc) if result else None
        values.append(getattr(load, attr) if load else None)
    return values


def spawn_series(run: Run, attr: str) -> list[float | None]:
    out: list[float | None] = []
    for spawn in run.spawns:
        if spawn is None:
            out.append(None)
        elif attr == "rate2":
            out.append(spawn.two_threads.per_second)
        else:
            out.append(spawn.one_thread.ms_each)
    return out


def summarize(run: Run, suite: Suite) -> dict[str, object]:
    """Medians and per-round ratios, the numbers the report prints (and the JSON file keeps)."""
    summary: dict[str, object] = {"targets": {}, "ratios": {}}
    for name in run.names:
        per_conc = {}
        for level in LEVELS:
            c = level.connections
            rps = series(run, name, c, "rps")
            per_conc[str(c)] = {
                "rps_median": h.median(rps),
                "rps_range": h.spread(rps),
                "p50_ms_median": h.median(series(run, name, c, "p50_ms")),
                "p99_ms_median": h.median(series(run, name, c, "p99_ms")),
                "errors_total": sum(int(e or 0) for e in series(run, name, c, "errors")),
                "cpu_ms_per_req_median": h.median(series(run, name, c, "cpu_ms_per_req")),
                "own_cpu_ms_per_req_median": h.median(series(run, name, c, "own_cpu_ms_per_req")),
            }
        startups = [r[name].startup_ms if name in r else None for r in run.rounds]
        summary["targets"][name] = {
            "loads": per_conc,
            "startup_ms_median": h.median(startups),
            "startup_ms_range": h.spread(startups),
        }
    ratios: dict[str, list[float]] = {}
    for ours, theirs in suite.pairs:
        for c in (1, 16, 64):
            ratios[f"{ours}/{theirs} rps c{c}"] = h.paired_ratios(
                series(run, ours, c, "rps"), series(run, theirs, c, "rps")
            )
        ratios[f"{ours}/{theirs} p50 c1"] = h.paired_ratios(
            series(run, ours, 1, "p50_ms"), series(run, theirs, 1, "p50_ms")
        )
        ratios[f"{ours}-{theirs} p50 c1 ms"] = h.paired_differences(
            series(run, ours, 1, "p50_ms"), series(run, theirs, 1, "p50_ms")
        )
        ratios[f"{ours}/{theirs} own cpu c16"] = h.paired_ratios(
            series(run, ours, 16, "own_cpu_ms_per_req"), series(run, theirs, 16, "own_cpu_ms_per_req")
        )
    if suite.spawn:
        spawn2 = spawn_series(run, "rate2")
        for name in run.names:
            ratios[f"{name}/raw spawn rps c16"] = h.paired_ratios(series(run, name, 16, "rps"), spawn2)
        summary["spawn"] = {"two_threads_per_s": spawn2, "one_thread_ms_each": spawn_series(run, "ms1")}
    summary["ratios"] = ratios
    return summary


def _goal(mid: float, goal: float, minimum: float) -> str:
    if mid >= goal:
        return "met"
    return f"minimum met (>= {minimum:g}x), goal {goal:g}x not" if mid >= minimum else "NOT met"


def verdicts(suite: Suite, ratios: dict[str, list[float]]) -> list[str]:
    """One line per target of the issue that this suite's targets can answer."""
    lines = []
    for ours, theirs in suite.pairs:
        c16 = h.median(ratios[f"{ours}/{theirs} rps c16"])
        if c16 is None:
            continue
        if suite.name == "fork" and theirs == FAASD_COMPARE:
            lines.append(f"  c16 throughput {ours} / {theirs} (two builds, same rounds): {c16:.2f}x")
        elif suite.name == "fork" and ours == FAASD and "classic" in theirs:
            lines.append(f"  c16 throughput {ours} / {theirs}: {c16:.2f}x -> {_goal(c16, 1.2, 1.0)}")
            p50 = h.median(ratios[f"{ours}/{theirs} p50 c1"])
            if p50 is not None:
                lines.append(f"  c1 p50 {ours} / {theirs}: {p50:.2f}x -> {'met' if p50 <= 1.0 else 'NOT met'}")
        elif suite.name == "warm" and theirs == UPSTREAM:
            lines.append(f"  c16 throughput {ours} / {theirs}: {c16:.2f}x -> {'met' if c16 >= 0.6 else 'NOT met'}")
            added = h.median(ratios[f"{ours}-{theirs} p50 c1 ms"])
            if added is not None:
                verdict = "met" if added <= 1.0 else "NOT met"
                lines.append(f"  c1 p50 added by {ours} over {theirs}: {added:+.2f} ms -> {verdict}")
        elif suite.name == "warm":
            lines.append(f"  c16 throughput {ours} / {theirs}: {c16:.2f}x -> {_goal(c16, 1.2, 1.0)}")
    spawn = h.median(ratios.get(f"{FAASD}/raw spawn rps c16", []))
    if suite.spawn and spawn is not None:
        verdict = "met" if spawn >= SPAWN_TARGET else "NOT met"
        goal = f"goal >= {SPAWN_TARGET:g}x"
        lines.append(f"  c16 throughput {FAASD} / raw spawn rate: {spawn:.2f}x ({goal}) -> {verdict}")
    return lines


def report(run: Run, suite: Suite, summary: dict[str, object], args: argparse.Namespace, meta: dict) -> str:
    """The human-readable report of one suite (stdout)."""
    lines = [
        "",
        f"{suite.title}, {len(BODY)}-byte POST (text/plain), HTTP/1.1 keep-alive, wrk",
        f"{args.rounds} round(s) x {args.duration} s per load, order rotated each round; "
        f"machine: {meta['machine']['cpus']} CPU {meta['machine']['cpu_model']}, kernel {meta['machine']['kernel']}",
    ]
    envs = []
    for name in run.names:
        sizes = {(r[name].env_vars, r[name].env_bytes) for r in run.rounds if name in r}
        envs += [f"{name} {v} vars/{b} B" for v, b in sorted(sizes)[:1]]
    lines += [f"environment (PATH={h.CLEAN_PATH} + config only): {', '.join(envs)}", ""]
    rows = []
    for name in run.names:
        for level in LEVELS:
            c = level.connections
            rows.append(
                [
                    name,
                    f"{c}",
                    h.fmt_range(series(run, name, c, "rps")),
                    h.fmt_ms(h.median(series(run, name, c, "p50_ms"))),
                    h.fmt_ms(h.median(series(run, name, c, "p99_ms"))),
                    str(sum(int(e or 0) for e in series(run, name, c, "errors"))),
                    h.fmt_ms(h.median(series(run, name, c, "cpu_ms_per_req"))),
                    h.fmt_ms(h.median(series(run, name, c, "own_cpu_ms_per_req")), 3),
                ]
            )
    headers = ["target", "c", "req/s median [min-max]", "p50 ms", "p99 ms", "errors", "CPU ms/req", "own CPU ms/req"]
    lines += [h.render_table(headers, rows, right=(1, 2, 3, 4, 5, 6, 7)), ""]

    if suite.spawn:
        lines.append("baselines (same env, every round):")
        lines.append(
            f"  raw spawn, subprocess.run(['cat']) x 2 threads: {h.fmt_range(spawn_series(run, 'rate2'))} spawns/s"
        )
        lines.append(
            f"  one spawn, 1 thread:                            {h.fmt_range(spawn_series(run, 'ms1'), h.fmt_ms)} ms"
        )
        lines.append("")
    lines.append("start-up, exec -> first 200 (ms, median [min-max]):")
    for name in run.names:
        startups = [r[name].startup_ms if name in r else None for r in run.rounds]
        lines.append(f"  {name:<22} {h.fmt_range(startups, lambda v: h.fmt_ms(v, 1))}")
    lines.append("")

    ratios: dict[str, list[float]] = summary["ratios"]  # type: ignore[assignment]
    lines.append("ratios (median of per-round ratios [min-max]):")
    for ours, theirs in suite.pairs:
        rps = ", ".join(f"c{c} {h.fmt_ratio(ratios[f'{ours}/{theirs} rps c{c}'])}" for c in (1, 16, 64))
        lines.append(f"  {ours} / {theirs}: req/s {rps}")
        p50 = h.fmt_ratio(ratios[f"{ours}/{theirs} p50 c1"])
        added = h.fmt_delta(ratios[f"{ours}-{theirs} p50 c1 ms"])
        lines.append(f"  {ours} / {theirs}: p50 at c1 {p50} (<= 1 is faster), difference {added}")
        own = h.fmt_ratio(ratios[f"{ours}/{theirs} own cpu c16"])
        lines.append(f"  {ours} / {theirs}: own CPU per request at c16 {own} (children excluded)")
    if suite.spawn:
        for name in run.names:
            lines.append(f"  {name} / raw spawn (2 threads) at c16: {h.fmt_ratio(ratios[f'{name}/raw spawn rps c16'])}")
    lines += ["", "targets:", *verdicts(suite, ratios)]
    failures = [(i + 1, n, r.error) for i, rr in enumerate(run.rounds) for n, r in rr.items() if r.error]
    warnings = [(i + 1, n) for i, rr in enumerate(run.rounds) for n, r in rr.items() if r.echo_ok is False]
    if warnings:
        lines.append("")
        for rnd, name in warnings:
            lines.append(f"warning: round {rnd}: {name} did not echo the request body")
    if failures:
        lines.append("")
        lines.append("failures:")
        for rnd, name, error in failures:
            lines.append(f"  round {rnd}, {name}: {error}")
    return "\n".join(lines)


def to_json(run: Run, summary: dict, meta: dict) -> dict:
    """Every raw number (per round, per target, per load, including wrk's own output) plus the summary."""
    rounds = []
    for index, results in enumerate(run.rounds):
        spawn = run.spawns[index]
        rounds.append(
            {
                "round": index + 1,
                "order": run.orders[index],
                "spawn": None
                if spawn is None
                else {
                    "two_threads": {**vars(spawn.two_threads), "per_second": spawn.two_threads.per_second},
                    "one_thread": {**vars(spawn.one_thread), "ms_each": spawn.one_thread.ms_each},
                },
                "targets": {
                    name: {
                        "startup_ms": r.startup_ms,
                        "echo_ok": r.echo_ok,
                        "env_vars": r.env_vars,
                        "env_bytes": r.env_bytes,
                        "error": r.error,
                        "loads": {str(c): {**res.as_dict(), "wrk_output": r.raw.get(c)} for c, res in r.loads.items()},
                    }
                    for name, r in results.items()
                },
            }
        )
    return {"meta": meta, "rounds": rounds, "summary": summary}


# --------------------------------------------------------------------------------------------- start-up suite

STARTUP_TARGET = 4.0
"""Issue 15: faasd's watchdog exec -> first 200 at most 4x the Go classic watchdog's (fork mode, ``cat``)."""


@dataclass
class StartupRun:
    """``--starts`` exec -> first 200 per target, interleaved (index i of every target is one sweep)."""

    names: list[str]
    ms: dict[str, list[float | None]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def startup_factories(args: argparse.Namespace, pyz: Path, fork_peers: list[Path], http_peers: list[Path]) -> dict:
    """Every target whose start-up the suite times: faasd in each mode, the Go peers."""
    factories: dict[str, TargetFactory] = {}
    if not args.no_faasd:
        factories[FAASD] = faasd_target(args.python, pyz)
        factories[FAASD_STREAMING] = faasd_target(args.python, pyz, FAASD_STREAMING, mode="streaming")
        factories[FAASD_HTTP] = faasd_target(args.python, pyz, FAASD_HTTP, mode="http", upstream_url="")
        factories[FAASD_PYTHON] = faasd_target(args.python, pyz, FAASD_PYTHON, mode="python")
    for path in fork_peers:
        factories[path.name] = peer_target(path.name, path)
    for path in http_peers:
        factories[f"{path.name} streaming"] = peer_target(f"{path.name} streaming", path, mode="streaming")
        factories[f"{path.name} http"] = peer_target(f"{path.name} http", path, args.python, mode="http")
    return factories


def run_startups(factories: dict[str, TargetFactory], args: argparse.Namespace, tmp_root: Path) -> StartupRun:
    """``args.starts`` sweeps over every target, the order rotating each sweep; each start is stopped at once."""
    names = list(factories)
    run = StartupRun(names, {name: [] for name in names})
    for index in range(args.starts):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            tmp = Path(tempfile.mkdtemp(prefix=f"s{index + 1}-{name.replace(' ', '-')}-", dir=tmp_root))
            try:
                running = h.start(factories[name](tmp), ready_timeout=args.ready_timeout)
            except h.BenchError as exc:
                run.errors.append(f"start {index + 1}, {name}: {exc}")
                run.ms[name].append(None)
                continue
            running.stop()
            run.ms[name].append(running.startup_s * 1000.0)
        print(f"startup sweep {index + 1}/{args.starts}", file=sys.stderr, flush=True)
    return run


def startup_report(run: StartupRun, peer: str | None) -> tuple[str, dict[str, object]]:
    """The start-up table, faasd / the classic watchdog per sweep, and the target."""
    rows = []
    summary: dict[str, object] = {"ms": run.ms, "ratios": {}}
    for name in run.names:
        values = run.ms[name]
        rows.append(
            [
                name,
                h.fmt_ms(h.median(values), 1),
                h.fmt_ms(h.percentile(values, 90), 1),
                h.fmt_ms(h.spread(values)[0] if h.spread(values) else None, 1),
                str(sum(v is not None for v in values)),
            ]
        )
    lines = [
        "",
        f"start-up: exec -> first 200 of a 100-byte POST (polled every 3 ms), {len(run.ms[run.names[0]])} sweeps",
        "",
        h.render_table(["target", "p50 ms", "p90 ms", "min ms", "n"], rows, right=(1, 2, 3, 4)),
        "",
    ]
    ratios: dict[str, list[float]] = {}
    if peer is not None and peer in run.ms:
        lines.append("ratios (median of per-sweep ratios [min-max]):")
        for name in run.names:
            if name.startswith(FAASD):
                ratios[f"{name}/{peer}"] = h.paired_ratios(run.ms[name], run.ms[peer])
                lines.append(f"  {name} / {peer}: {h.fmt_ratio(ratios[f'{name}/{peer}'])}")
        fork = h.median(ratios.get(f"{FAASD}/{peer}", []))
        if fork is not None:
            verdict = "met" if fork <= STARTUP_TARGET else "NOT met"
            lines += ["", f"target: {FAASD} / {peer} <= {STARTUP_TARGET:g}x: {fork:.2f}x -> {verdict}"]
    summary["ratios"] = ratios
    if run.errors:
        lines += ["", "failures:", *(f"  {error}" for error in run.errors)]
    return "\n".join(lines), summary


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Watchdog benchmark: faasd's modes vs OpenFaaS Go watchdogs, same run (see bench/README.md).",
        epilog=TARGETS_TEXT,
    )
    parser.add_argument("--faasd", type=Path, default=DEFAULT_FAASD, help="faasd zipapp (default: %(default)s)")
    parser.add_argument("--no-faasd", action="store_true", help="measure only the peers and the baselines")
    parser.add_argument(
        "--compare",
        type=Path,
        help=f"fork suite: also run this other faasd zipapp as '{FAASD_COMPARE}' in the same rounds (A/B)",
    )
    parser.add_argument(
        "--suite",
        choices=("fork", "warm", "startup", "all"),
        default="all",
        help="fork, warm, startup or all (default: %(default)s)",
    )
    parser.add_argument(
        "--peer",
        type=Path,
        action="append",
        default=[],
        help="a fork-per-call peer watchdog binary (repeatable; label = file name; default classic-watchdog)",
    )
    parser.add_argument(
        "--http-peer",
        type=Path,
        action="append",
        default=[],
        help="a peer run in mode=http (and mode=streaming in the fork suite) in front of the same upstream "
        "(repeatable; default of-watchdog)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for faasd, the upstream and spawns")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per load level (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per load, 1 round")
    parser.add_argument("--starts", type=int, default=10, help="start-up suite: starts per target (default 10)")
    parser.add_argument("--ready-timeout", type=float, default=10.0, help="seconds to wait for a target's first 200")
    parser.add_argument("--json", type=Path, help="also write every raw number to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 2, 1
    if args.quick:
        args.starts = min(args.starts, 4)
    if args.rounds < 1 or args.duration < 1 or args.starts < 1:
        parser.error("--rounds, --duration and --starts must be >= 1")
    args.spawn_seconds = 1.0 if args.quick else 2.0
    return args


def _sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C so every ``finally`` stops its server."""
    raise KeyboardInterrupt


def _binaries(given: list[Path], default: Path, what: str) -> list[Path] | str:
    """The peer binaries to run (the default one when none is given and it exists), or why they cannot run."""
    paths = list(given)
    if not paths and default.exists():
        paths = [default]
        print(f"{what}: {default} (default)", file=sys.stderr)
    elif not paths:
        print(f"no {what}: {default} does not exist", file=sys.stderr)
    for path in paths:
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{what} {path} is not an executable file"
    return [p.resolve() for p in paths]


def _peers(args: argparse.Namespace) -> tuple[list[Path], list[Path]] | str:
    """(fork peers, http peers) to run, or why one cannot run."""
    if not hasattr(args, "peers"):
        fork_peers = _binaries(args.peer, DEFAULT_PEER, "fork peer")
        http_peers = _binaries(args.http_peer, DEFAULT_HTTP_PEER, "http peer")
        if isinstance(fork_peers, str) or isinstance(http_peers, str):
            args.peers = fork_peers if isinstance(fork_peers, str) else str(http_peers)
        else:
            args.peers = (fork_peers, http_peers)
    return args.peers


def build_suites(args: argparse.Namespace) -> list[Suite] | str:
    """The suites ``--suite`` asks for, with every target that can run here, or why none can."""
    pyz = args.faasd.resolve()
    if not args.no_faasd and not pyz.exists():
        return f"{pyz} not found: build it (python3 scripts/build_zipapp.py), point --faasd at it, or pass --no-faasd"
    if args.compare is not None and not args.compare.exists():
        return f"--compare {args.compare} not found"
    peers = _peers(args)
    if isinstance(peers, str):
        return peers
    fork_peers, http_peers = peers
    suites = []
    if args.suite in ("fork", "all"):
        factories: dict[str, TargetFactory] = {}
        pairs: list[tuple[str, str]] = []
        if not args.no_faasd:
            factories[FAASD] = faasd_target(args.python, pyz)
            factories[FAASD_STREAMING] = faasd_target(args.python, pyz, FAASD_STREAMING, mode="streaming")
            if args.compare is not None:
                factories[FAASD_COMPARE] = faasd_target(args.python, args.compare.resolve(), FAASD_COMPARE)
                pairs.append((FAASD, FAASD_COMPARE))
        for path in fork_peers:
            factories[path.name] = peer_target(path.name, path)
            pairs += [(FAASD, path.name)] if not args.no_faasd else []
        for path in http_peers:
            name = f"{path.name} streaming"
            factories[name] = peer_target(name, path, mode="streaming")
            pairs += [(FAASD_STREAMING, name)] if not args.no_faasd else []
        suites.append(Suite("fork", "fork per call: fprocess=cat", factories, pairs, spawn=True))
    if args.suite in ("warm", "all"):
        factories = {UPSTREAM: upstream_target(args.python)}
        pairs = []
        if not args.no_faasd:
            factories[FAASD_HTTP] = faasd_target(args.python, pyz, FAASD_HTTP, mode="http", upstream_url="")
            factories[FAASD_PYTHON] = faasd_target(args.python, pyz, FAASD_PYTHON, mode="python")
        for path in http_peers:
            name = f"{path.name} http"
            factories[name] = peer_target(name, path, args.python, mode="http")
            pairs += [(FAASD_HTTP, name), (FAASD_PYTHON, name)] if not args.no_faasd else []
        if not args.no_faasd:
            pairs += [(FAASD_HTTP, UPSTREAM), (FAASD_PYTHON, UPSTREAM)]
        title = "warm: a ThreadingHTTPServer echo (bench/_upstream.py) direct, behind http mode; python mode echo"
        suites.append(Suite("warm", title, factories, pairs, spawn=False))
    return suites


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = h.find_wrk()
    if wrk is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    suites = build_suites(args)
    if isinstance(suites, str):
        print(suites, file=sys.stderr)
        return 2
    meta = {
        "machine": h.machine_info(),
        "wrk": h.wrk_version(wrk),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": WARMUP_S,
        "levels": [vars(level) for level in LEVELS],
        "body_bytes": len(BODY),
        "spawn_seconds": args.spawn_seconds,
        "faasd": None if args.no_faasd else f"{args.python} {args.faasd.resolve()} watchdog",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    h.become_subreaper()
    previous = signal.signal(signal.SIGTERM, _sigterm)
    results: dict[str, tuple[Suite, Run]] = {}
    startups: StartupRun | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="faasd-bench-") as tmp:
            if args.suite in ("startup", "all"):
                fork_peers, http_peers = _peers(args)  # type: ignore[misc]  # checked by build_suites
                factories = startup_factories(args, args.faasd.resolve(), fork_peers, http_peers)
                startups = run_startups(factories, args, Path(tmp))
            for suite in suites:
                results[suite.name] = (suite, run_rounds(suite, wrk, args, Path(tmp)))
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    document: dict[str, object] = {}
    failed = False
    if startups is not None:
        fork_peers = _peers(args)[0]  # type: ignore[index]
        text, startup_summary = startup_report(startups, fork_peers[0].name if fork_peers else None)
        print(text)
        document["startup"] = {"meta": meta, "summary": startup_summary}
        failed = bool(startups.errors)
    for name, (suite, run) in results.items():
        summary = summarize(run, suite)
        print(report(run, suite, summary, args, meta))
        document[name] = to_json(run, summary, meta)
        failed = failed or any(r.error for rr in run.rounds for r in rr.values())
        failed = failed or (suite.spawn and any(s is None for s in run.spawns))
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nraw numbers: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
