"""The gateway benchmark's results: what each block measured, the same-run summaries and ratios, the report
printed against issue 15's targets, and the JSON kept with every raw number (bench/gateway.py)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

import _harness as h  # the bench directory is not a package: imported by path, stdlib only
from _gateway_daemon import FUNCTION, Replica

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
#: The same for bench/_lean_relay.py: what a gateway on the watchdog's loop (docs/gateway.md, option 3) might add.
LEAN_KEY = "lean relay added p50 / direct p50 at c1"
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


@dataclass
class LoadRun:
    """One wrk run, with the CPU each party spent on it (ms per request)."""

    wrk: h.WrkResult
    raw: str
    daemon_cpu: float | None = None  # the daemon process alone, not its replicas
    replica_cpu: float | None = None  # the replica's tree: watchdog + its cat children
    hello_cpu: float | None = None
    relay_cpu: float | None = None
    lean_cpu: float | None = None  # bench/_lean_relay.py, the estimate for a gateway on a lean loop
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
    first_deploy_ms: list[float] = field(default_factory=list)  # the same, right after the daemon's start
    watchdog_ms: list[float] = field(default_factory=list)  # bare faasd watchdog exec -> first 200
    scale_ms: list[float] = field(default_factory=list)  # scale POST (0 -> 1) sent -> first 200
    wake_ms: list[float] = field(default_factory=list)  # invoke at 0 replicas (the gateway wakes it) -> 200
    burst_ms: list[float] = field(default_factory=list)  # the same, back to back (faster than the pool refills)
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


def summarize(rounds: list[Round], load_keys: list[str]) -> dict[str, object]:
    """The numbers the report prints (and the JSON file keeps): medians over rounds, per-round differences and
    ratios, pooled start-up and cold-start percentiles."""
    loads = {}
    for key in load_keys:
        loads[key] = {
            "rps": series(rounds, key, "rps"),
            "p50_ms": series(rounds, key, "p50_ms"),
            "p99_ms": series(rounds, key, "p99_ms"),
            "errors": sum(int(e or 0) for e in series(rounds, key, "errors")),
            "daemon_cpu_ms_per_req": h.median(series(rounds, key, "daemon_cpu")),
            "replica_cpu_ms_per_req": h.median(series(rounds, key, "replica_cpu")),
            "hello_cpu_ms_per_req": h.median(series(rounds, key, "hello_cpu")),
            "relay_cpu_ms_per_req": h.median(series(rounds, key, "relay_cpu")),
            "lean_cpu_ms_per_req": h.median(series(rounds, key, "lean_cpu")),
            "others_pct": series(rounds, key, "others_pct"),
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
    lean_added_p50 = added_to_direct("post lean c1")
    added["lean c1"] = {"p50_ms": [v for v in lean_added_p50 if v is not None]}
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
        LEAN_KEY: h.paired_ratios(lean_added_p50, direct_p50),
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
        "first_deploy_ms": pooled(rounds, "cold", "first_deploy_ms"),
        "watchdog_start_ms": pooled(rounds, "cold", "watchdog_ms"),
        "scale_ms": pooled(rounds, "cold", "scale_ms"),
        "wake_ms": pooled(rounds, "cold", "wake_ms"),
        "burst_ms": pooled(rounds, "cold", "burst_ms"),
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
        (LEAN_KEY, "faasd's parser and header work on the watchdog's loop: option 3's estimate"),
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
    lean = loads["post lean c1"]
    lines.append(
        "  c1, faasd's parser on the watchdog's loop (bench/_lean_relay.py) instead of the gateway: p50 "
        f"{h.fmt_delta(added['lean c1']['p50_ms'])}"
        f" ({h.fmt_ms(h.median(lean['p50_ms']))} ms); its CPU {h.fmt_ms(lean['lean_cpu_ms_per_req'])} ms/req"
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
        stat_row("first deploy right after faasd up -> first 200", "first_deploy_ms"),
        stat_row("bare faasd watchdog exec -> first 200 (floor)", "watchdog_start_ms"),
        stat_row("scale 0 -> 1 -> first 200", "scale_ms"),
        stat_row("invoke at 0 replicas -> 200 (gateway wakes it)", "wake_ms"),
        stat_row("  the same, back to back (a burst)", "burst_ms"),
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

    leftovers = [
        (i + 1, b, item) for i, r in enumerate(rounds) for b in BLOCKS for item in block_part(r, b, "leftovers")
    ]
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
    failures = [(i + 1, b, err) for i, r in enumerate(rounds) for b in BLOCKS if (err := block_part(r, b, "error"))]
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


def block_part(rnd: Round, block: str, attr: str) -> object:
    part = getattr(rnd, block)
    return getattr(part, attr) if part is not None else ([] if attr == "leftovers" else None)


def to_json(rounds: list[Round], summary: dict, meta: dict) -> dict:
    """Every raw number (each round, each load with wrk's own output, every start-up sample) plus the summary."""
    return {"meta": meta, "rounds": [asdict(r) for r in rounds], "summary": summary}
