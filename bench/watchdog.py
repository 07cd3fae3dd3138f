"""Fork-mode watchdog benchmark: faasd's watchdog vs the OpenFaaS Go watchdog(s), same run, same load.

Run ``python3 bench/watchdog.py`` (see bench/README.md). Each round starts every target fresh with the same clean
environment and ``fprocess=cat``, warms it up, then loads it with wrk (100-byte POST, keep-alive) at c = 1, 16
and 64; rounds rotate the target order, and the report gives medians over rounds plus ratios taken per round
(faasd ÷ peer, and ÷ the machine's raw spawn rate measured in the same round). Only same-run ratios mean
anything on these shared VMs: absolute numbers drift 5-30 % between rounds and more between machines.

Targets (from the issue): c16 throughput >= 1.2x classic-watchdog (>= 1.0x at least); c1 p50 <= classic's.
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
DEFAULT_PEER = REPO.parent / "shared" / "peers" / "classic-watchdog"
FAASD = "faasd"
SPAWN = "raw spawn"

BODY = b"0123456789" * 10  # 100 bytes, printable so logs and echoes stay readable
LOAD = h.Load(method="POST", path="/", body=BODY, content_type="text/plain")
PROBE = h.Probe(method="POST", path="/", body=BODY, content_type="text/plain", expect_status=200, expect_body=BODY)
LEVELS = (h.Level(1, 1), h.Level(2, 16), h.Level(2, 64))
WARMUP = h.Level(2, 16)
WARMUP_S = 1
CPU_LEVEL = 16  # the concurrency whose CPU/request the summary reports
TARGETS_TEXT = "targets: c16 throughput >= 1.2x classic-watchdog (>= 1.0x at least); c1 p50 <= classic's"

#: Builds a fresh Target (new ports, own tmp dir) for one round.
TargetFactory = Callable[[Path], h.Target]


# --------------------------------------------------------------------------------------------- targets


def faasd_target(python: str, pyz: Path) -> TargetFactory:
    """faasd's watchdog in fork mode on 127.0.0.1, metrics on a free port (never 8081, which the Go peers need)."""

    def build(tmp: Path) -> h.Target:
        port = h.free_port()
        metrics = h.free_port(avoid=[port])
        env = h.clean_env(fprocess="cat", port=port, bind=h.LOCALHOST, metrics_port=metrics, lock_file=tmp / ".lock")
        return h.Target(FAASD, [python, str(pyz), "watchdog"], env, port, PROBE, log_path=tmp / "log", cwd=tmp)

    return build


def peer_target(name: str, binary: Path) -> TargetFactory:
    """An OpenFaaS Go watchdog: own TMPDIR (its lock file), no health-check delay, and it always takes :8081."""

    def build(tmp: Path) -> h.Target:
        port = h.free_port()
        env = h.clean_env(fprocess="cat", port=port, healthcheck_interval=0, TMPDIR=tmp)
        return h.Target(
            name, [str(binary)], env, port, PROBE, fixed_ports=(h.GO_METRICS_PORT,), log_path=tmp / "log", cwd=tmp
        )

    return build


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
            cpu0 = running.cpu_seconds()
            result, raw = h.run_wrk(wrk, target.url, level, args.duration, script)
            cpu1 = running.cpu_seconds()
            if result.requests:
                result.cpu_ms_per_req = (cpu1 - cpu0) * 1000.0 / result.requests
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


def run_rounds(factories: dict[str, TargetFactory], wrk: str, args: argparse.Namespace, tmp_root: Path) -> Run:
    """Interleaved rounds: the order (spawn baseline included) rotates by one each round, so no target is
    always first (cold caches) or always last (a warmed-up, possibly throttled VM)."""
    names = list(factories)
    run = Run(names)
    script = LOAD.write_script(tmp_root)
    jobs = [SPAWN, *names]
    spawn_env = h.clean_env()
    for index in range(args.rounds):
        shift = index % len(jobs)
        order = jobs[shift:] + jobs[:shift]
        run.orders.append(order)
        results: dict[str, TargetRound] = {}
        spawn: SpawnRound | None = None
        print(f"round {index + 1}/{args.rounds}: {' -> '.join(order)}", file=sys.stderr, flush=True)
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
                tmp = Path(tempfile.mkdtemp(prefix=f"r{index + 1}-{job}-", dir=tmp_root))
                results[job] = result = measure_target(factories[job], wrk, script, tmp, args)
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


def summarize(run: Run, peers: list[str]) -> dict[str, object]:
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
            }
        startups = [r[name].startup_ms if name in r else None for r in run.rounds]
        summary["targets"][name] = {
            "loads": per_conc,
            "startup_ms_median": h.median(startups),
            "startup_ms_range": h.spread(startups),
        }
    spawn2 = spawn_series(run, "rate2")
    ratios: dict[str, list[float]] = {}
    if FAASD in run.names:
        for peer in peers:
            for c in (1, 16, 64):
                ratios[f"{FAASD}/{peer} rps c{c}"] = h.paired_ratios(
                    series(run, FAASD, c, "rps"), series(run, peer, c, "rps")
                )
            ratios[f"{FAASD}/{peer} p50 c1"] = h.paired_ratios(
                series(run, FAASD, 1, "p50_ms"), series(run, peer, 1, "p50_ms")
            )
    for name in run.names:
        ratios[f"{name}/raw spawn rps c16"] = h.paired_ratios(series(run, name, 16, "rps"), spawn2)
    summary["ratios"] = ratios
    summary["spawn"] = {
        "two_threads_per_s": spawn2,
        "one_thread_ms_each": spawn_series(run, "ms1"),
    }
    return summary


def report(run: Run, peers: list[str], summary: dict[str, object], args: argparse.Namespace, meta: dict) -> str:
    """The human-readable report (stdout)."""
    lines = [
        "",
        f"fork-mode watchdog benchmark: fprocess=cat, {len(BODY)}-byte POST (text/plain), HTTP/1.1 keep-alive, wrk",
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
                ]
            )
    headers = ["target", "c", "req/s median [min-max]", "p50 ms", "p99 ms", "errors", "CPU ms/req"]
    lines += [h.render_table(headers, rows, right=(1, 2, 3, 4, 5, 6)), ""]

    spawn2 = spawn_series(run, "rate2")
    spawn1 = spawn_series(run, "ms1")
    lines.append("baselines (same env, every round):")
    lines.append(f"  raw spawn, subprocess.run(['cat']) x 2 threads: {h.fmt_range(spawn2)} spawns/s")
    lines.append(f"  one spawn, 1 thread:                            {h.fmt_range(spawn1, h.fmt_ms)} ms")
    lines.append("")
    lines.append("start-up, exec -> first 200 (ms, median [min-max]):")
    for name in run.names:
        startups = [r[name].startup_ms if name in r else None for r in run.rounds]
        lines.append(f"  {name:<20} {h.fmt_range(startups, lambda v: h.fmt_ms(v, 1))}")
    lines.append("")

    ratios: dict[str, list[float]] = summary["ratios"]  # type: ignore[assignment]
    lines.append("ratios (median of per-round ratios [min-max]):")
    if FAASD in run.names:
        for peer in peers:
            rps = ", ".join(f"c{c} {h.fmt_ratio(ratios[f'{FAASD}/{peer} rps c{c}'])}" for c in (1, 16, 64))
            lines.append(f"  {FAASD} / {peer}: req/s {rps}")
            p50 = h.fmt_ratio(ratios[f"{FAASD}/{peer} p50 c1"])
            lines.append(f"  {FAASD} / {peer}: p50 at c1 {p50} (<= 1 is faster)")
    for name in run.names:
        lines.append(f"  {name} / raw spawn (2 threads) at c16: {h.fmt_ratio(ratios[f'{name}/raw spawn rps c16'])}")
    lines.append("")
    lines.append(TARGETS_TEXT)
    classic = [p for p in peers if "classic" in p]
    if FAASD in run.names and classic:
        peer = classic[0]
        c16 = ratios[f"{FAASD}/{peer} rps c16"]
        p50 = ratios[f"{FAASD}/{peer} p50 c1"]
        if c16:
            mid = h.median(c16) or 0.0
            verdict = "met" if mid >= 1.2 else ("minimum met (>= 1.0x), goal 1.2x not" if mid >= 1.0 else "NOT met")
            lines.append(f"  c16 throughput vs {peer}: {mid:.2f}x -> {verdict}")
        if p50:
            mid = h.median(p50) or 0.0
            lines.append(f"  c1 p50 vs {peer}: {mid:.2f}x -> {'met' if mid <= 1.0 else 'NOT met'}")
    failures = [(i + 1, n, r.error) for i, rr in enumerate(run.rounds) for n, r in rr.items() if r.error]
    warnings = [(i + 1, n) for i, rr in enumerate(run.rounds) for n, r in rr.items() if r.echo_ok is False]
    if warnings:
        lines.append("")
        for rnd, name in warnings:
            lines.append(f"warning: round {rnd}: {name} did not echo the request body (is fprocess really cat?)")
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


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fork-mode watchdog benchmark: faasd vs OpenFaaS Go watchdogs, same run (see bench/README.md).",
        epilog=TARGETS_TEXT,
    )
    parser.add_argument("--faasd", type=Path, default=DEFAULT_FAASD, help="faasd zipapp (default: %(default)s)")
    parser.add_argument("--no-faasd", action="store_true", help="measure only the peers and the baselines")
    parser.add_argument(
        "--peer", type=Path, action="append", default=[], help="a peer watchdog binary (repeatable; label = file name)"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for faasd and the spawn baseline")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per load level (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per load, 1 round")
    parser.add_argument("--ready-timeout", type=float, default=10.0, help="seconds to wait for a target's first 200")
    parser.add_argument("--json", type=Path, help="also write every raw number to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 2, 1
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be >= 1")
    args.spawn_seconds = 1.0 if args.quick else 2.0
    return args


def _sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C so every ``finally`` stops its server."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = h.find_wrk()
    if wrk is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    factories: dict[str, TargetFactory] = {}
    sources: dict[str, str] = {}
    if not args.no_faasd:
        if not args.faasd.exists():
            print(
                f"{args.faasd} not found: build it (python3 scripts/build_zipapp.py), point --faasd at it, "
                "or pass --no-faasd",
                file=sys.stderr,
            )
            return 2
        factories[FAASD] = faasd_target(args.python, args.faasd.resolve())
        sources[FAASD] = f"{args.python} {args.faasd.resolve()} watchdog"
    peer_paths = list(args.peer)
    if not peer_paths and DEFAULT_PEER.exists():
        peer_paths = [DEFAULT_PEER]
        print(f"peer: {DEFAULT_PEER} (default; choose others with --peer)", file=sys.stderr)
    elif not peer_paths:
        print(f"no peer: {DEFAULT_PEER} does not exist (use --peer PATH); baselines only", file=sys.stderr)
    peers = []
    for path in peer_paths:
        if not (path.is_file() and os.access(path, os.X_OK)):
            print(f"peer {path} is not an executable file", file=sys.stderr)
            return 2
        name = path.name
        while name in factories:
            name += "'"
        factories[name] = peer_target(name, path.resolve())
        sources[name] = str(path.resolve())
        peers.append(name)
    if not factories:
        print("nothing to measure", file=sys.stderr)
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
        "targets": sources,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    h.become_subreaper()
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="faasd-bench-") as tmp:
            run = run_rounds(factories, wrk, args, Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = summarize(run, peers)
    print(report(run, peers, summary, args, meta))
    if args.json:
        args.json.write_text(json.dumps(to_json(run, summary, meta), indent=2) + "\n")
        print(f"\nraw numbers: {args.json}")
    failed = any(r.error for results in run.rounds for r in results.values()) or any(s is None for s in run.spawns)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
