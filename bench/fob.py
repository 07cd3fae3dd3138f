"""Flock-of-Birds benchmark: ``/api/call`` against ``/function/fob-<id>``, and ``/api/gen`` against a deploy.

Run ``python3 bench/fob.py`` (see bench/README.md). One ``faasd up`` (local backend, fresh state dir, clean
environment, the default sandbox; or ``--marathon URL``: the Marathon backend) per round; everything is
compared with a baseline measured in the same round, and the report gives medians of per-round ratios:

1. **call**: the seed's helloworld uploaded with ``POST /api/gen``, then wrk ``GET /api/call/<id>`` and
   ``GET /function/fob-<id>`` -- the very same function and replicas, the snippet's own route against the
   plain invoke route -- at c1 and c16, in an order that rotates each round. Target: ``/api/call`` keeps
   >= 0.9x the throughput of ``/function/fob-<id>`` at c1 and at c16.
2. **gen**: ``POST /api/gen`` of the helloworld -> the first ``{"result": 42}`` of ``GET /api/call/<id>``,
   alternating with a plain python-mode deploy (``POST /system/functions`` with ``mode=python`` and a
   ``handler.py`` answering 42) -> the first 200 of ``/function/<name>``; each deleted before the next.
   Target: gen p50 <= 1.2x deploy p50.

Only same-run ratios mean anything on the small shared VMs this runs on. Traffic goes to 127.0.0.1 only;
every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import secrets
import signal
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # the bench directory is not a package: imported by path, stdlib only
from _gateway_daemon import Api, Faasd, poll
from _gateway_report import verdict
from gateway import DEFAULT_FAASD, REPO, choose_faasd, kill_stray_watchdogs

HELLO = (REPO / "sample-functions" / "snippets" / "helloworld.py").read_bytes()
HANDLER = b"def handle(req):\n    return '42'\n"
"""The deploy baseline's handler.py: python mode, one import, an answer -- what a snippet's driver does."""
C1, C16 = h.Level(1, 1), h.Level(2, 16)
LEVELS = {"c1": C1, "c16": C16}
ROUTES = ("api", "function")
WARMUP_S = 2
TARGET_CALL_RATIO = 0.9
TARGET_GEN_RATIO = 1.2
DISTURBED_PCT = 25.0
TARGETS_TEXT = (
    f"targets: /api/call >= {TARGET_CALL_RATIO:g}x the req/s of /function/fob-<id> at c1 and c16; "
    f"/api/gen -> first result p50 <= {TARGET_GEN_RATIO:g}x python-mode deploy -> first 200 p50"
)


@dataclass
class CallRun:
    wrk: h.WrkResult
    raw: str
    replicas_before: int | None
    replicas_after: int | None
    daemon_cpu_ms: float | None
    others_pct: float | None


@dataclass
class Round:
    order: list[str] = field(default_factory=list)
    calls: dict[str, CallRun] = field(default_factory=dict)  # "api c1", "function c16", ...
    gen_ms: list[float] = field(default_factory=list)
    deploy_ms: list[float] = field(default_factory=list)
    gen_answer_ms: list[float] = field(default_factory=list)  # POST /api/gen -> its 200 (the rest is the call)
    others_pct: float | None = None  # during the gen block
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- HTTP


def post(
    port: int, path: str, body: bytes, content_type: str, auth: tuple[tuple[str, str], ...] = ()
) -> tuple[int, bytes]:
    answer = h.Probe("POST", path, body, content_type, headers=auth).once(port, 60.0)
    if answer is None:
        raise h.BenchError(f"POST {path}: no answer")
    return answer


def gen(port: int) -> str:
    status, body = post(port, "/api/gen", HELLO, "text/x-python")
    if status != 200:
        raise h.BenchError(f"POST /api/gen: HTTP {status}: {body[:300]!r}")
    return str(json.loads(body)["id"])


def first_result(port: int, path: str, expect: bytes, timeout: float) -> None:
    """GET ``path`` until it answers 200 with ``expect``; bounded by ``timeout``."""
    probe = h.Probe("GET", path, content_type=None)
    deadline = time.perf_counter() + timeout
    while True:
        answer = probe.once(port, max(0.1, deadline - time.perf_counter()))
        if answer is not None and answer[0] == 200 and answer[1] == expect:
            return
        if time.perf_counter() >= deadline:
            raise h.BenchError(f"GET {path}: no 200 {expect!r} within {timeout:g} s (last: {answer!r})")
        time.sleep(0.002)


def handler_archive() -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        member = tarfile.TarInfo("handler.py")
        member.size = len(HANDLER)
        tar.addfile(member, io.BytesIO(HANDLER))
    return base64.b64encode(gzip.compress(raw.getvalue(), mtime=0)).decode()


# --------------------------------------------------------------------------------------------- blocks


def call_block(
    rnd: Round, index: int, port: int, api: Api, daemon_pid: int, wrk: str, args: argparse.Namespace, tmp: Path
) -> None:
    snippet = gen(port)
    function = f"fob-{snippet}"
    paths = {"api": f"/api/call/{snippet}", "function": f"/function/{function}"}
    for path in paths.values():
        first_result(port, path, b'{"result": 42}\n', args.ready_timeout)
    keys = [f"{route} {level}" for level in LEVELS for route in ROUTES]
    shift = index % len(keys)
    rnd.order = keys[shift:] + keys[:shift]
    for route, path in paths.items():  # Warm-up: lets the autoscaler settle on its replica count for c16.
        script = h.Load("GET", path, b"", None).write_script(tmp, f"warm-{route}.lua")
        h.run_wrk(wrk, f"http://{h.LOCALHOST}:{port}/", C16, WARMUP_S, script)
    for key in rnd.order:
        route, level = key.split()
        script = h.Load("GET", paths[route], b"", None).write_script(tmp, f"{route}.lua")
        before = api.available(function)
        cpu_before = h.process_cpu_seconds(daemon_pid)
        others = h.OthersMeter()
        others.start()
        result, raw = h.run_wrk(wrk, f"http://{h.LOCALHOST}:{port}/", LEVELS[level], args.duration, script)
        others_pct = others.stop()
        cpu_after = h.process_cpu_seconds(daemon_pid)
        cpu = (
            (cpu_after - cpu_before) * 1000.0 / result.requests
            if cpu_before and cpu_after and result.requests
            else None
        )
        rnd.calls[key] = CallRun(result, raw, before, api.available(function), cpu, others_pct)
    api.expect("DELETE", f"/api/gen/{snippet}", None, ok=(200,))


def gen_block(rnd: Round, index: int, port: int, api: Api, args: argparse.Namespace) -> None:
    """``--gens`` pairs, alternating which goes first each pair."""
    archive = handler_archive()
    others = h.OthersMeter()
    others.start()
    for number in range(args.gens):
        for kind in ("gen", "deploy") if (index + number) % 2 == 0 else ("deploy", "gen"):
            if kind == "gen":
                started = time.perf_counter()
                snippet = gen(port)
                answered = time.perf_counter()
                first_result(port, f"/api/call/{snippet}", b'{"result": 42}\n', args.ready_timeout)
                rnd.gen_ms.append((time.perf_counter() - started) * 1000.0)
                rnd.gen_answer_ms.append((answered - started) * 1000.0)
                api.expect("DELETE", f"/api/gen/{snippet}", None, ok=(200,))
            else:
                name = f"py-{index}-{number}"
                document = {"service": name, "envVars": {"mode": "python"}, "handlerArchive": archive}
                started = time.perf_counter()
                api.expect("POST", "/system/functions", document, ok=(202,))
                first_result(port, f"/function/{name}", b"42", args.ready_timeout)
                rnd.deploy_ms.append((time.perf_counter() - started) * 1000.0)
                api.remove(name)
            poll("the last function's replica to exit", lambda: not functions_running(api), 30.0, 0.05)
    rnd.others_pct = others.stop()


def functions_running(api: Api) -> bool:
    status, body = api.call("GET", "/system/functions")
    return status != 200 or bool(json.loads(body))


def run_round(index: int, faasd: Faasd, wrk: str, args: argparse.Namespace, tmp_root: Path) -> Round:
    rnd = Round()
    tmp = tmp_root / f"round{index}"
    tmp.mkdir()
    password = secrets.token_hex(12)
    provider: tuple[str, ...] = ("--provider", "local")
    if args.marathon:
        uri = args.watchdog_uri or (faasd.pyz.resolve().as_uri() if faasd.pyz else "")
        provider = ("--provider", "marathon", "--marathon-url", args.marathon, "--marathon-watchdog-uri", uri)
    target = faasd.daemon(tmp, password, args.sandbox, provider)
    daemon: h.Running | None = None
    try:
        daemon = h.start(target, ready_timeout=args.ready_timeout)
        api = Api(target.port, password)
        blocks = ("call", "gen") if index % 2 == 0 else ("gen", "call")
        for block in blocks:
            if block == "call":
                call_block(rnd, index, target.port, api, daemon.proc.pid, wrk, args, tmp)
            else:
                gen_block(rnd, index, target.port, api, args)
    except h.BenchError as exc:
        rnd.error = f"{exc}\n{h.log_tail(target.log_path) if target.log_path else ''}"
    finally:
        if daemon is not None:
            report = h.stop_leader_first(daemon.proc, grace=15.0)
            rnd.leftovers = [f"pid {pid} ({state}) {cmd}" for pid, state, cmd in report.left]
    return rnd


# --------------------------------------------------------------------------------------------- report


def summarize(rounds: list[Round]) -> dict:
    done = [r for r in rounds if r.error is None]
    summary: dict = {"calls": {}, "ratios": {}, "gen": {}}
    for key in (f"{route} {level}" for level in LEVELS for route in ROUTES):
        runs = [r.calls[key] for r in done if key in r.calls]
        summary["calls"][key] = {
            "rps": [run.wrk.rps for run in runs],
            "p50_ms": [run.wrk.p50_ms for run in runs],
            "p99_ms": [run.wrk.p99_ms for run in runs],
            "errors": sum(run.wrk.errors for run in runs),
            "daemon_cpu_ms": [run.daemon_cpu_ms for run in runs],
            "replicas": sorted({n for run in runs for n in (run.replicas_before, run.replicas_after) if n is not None}),
            "others_pct": [run.others_pct for run in runs],
        }
    for level in LEVELS:
        api, fn = summary["calls"][f"api {level}"], summary["calls"][f"function {level}"]
        summary["ratios"][level] = {
            "rps": h.paired_ratios(api["rps"], fn["rps"]),
            "p50_added_ms": h.paired_differences(api["p50_ms"], fn["p50_ms"]),
        }
    gens = [ms for r in done for ms in r.gen_ms]
    deploys = [ms for r in done for ms in r.deploy_ms]
    summary["gen"] = {
        "gen_ms": gens,
        "deploy_ms": deploys,
        "gen_answer_ms": [ms for r in done for ms in r.gen_answer_ms],
        "ratio_p50": h.ratio(h.median(gens), h.median(deploys)),
        "round_ratios": h.paired_ratios([h.median(r.gen_ms) for r in done], [h.median(r.deploy_ms) for r in done]),
    }
    return summary


def report(rounds: list[Round], summary: dict, args: argparse.Namespace, meta: dict) -> str:
    lines = [
        "",
        f"faasd Flock-of-Birds benchmark -- {meta['machine']}",
        f"faasd: {meta['faasd']}; backend: {'marathon at ' + args.marathon if args.marathon else 'local'}; "
        f"sandbox: {args.sandbox or 'default (auto)'}; wrk: {meta['wrk']}",
        f"{args.rounds} round(s), {args.duration} s per load, {args.gens} gen/deploy pairs per round",
        "",
        "1. GET /api/call/<id> vs GET /function/fob-<id>: the seed's helloworld, same function and replicas "
        f"(order per round: {'; '.join(' / '.join(r.order) for r in rounds if r.order)})",
    ]
    rows = []
    for key, data in summary["calls"].items():
        route, level = key.split()
        shown = "/api/call/<id>" if route == "api" else "/function/fob-<id>"
        rows.append(
            [
                shown,
                level[1:],
                h.fmt_range(data["rps"]),
                h.fmt_ms(h.median(data["p50_ms"])),
                h.fmt_ms(h.median(data["p99_ms"])),
                h.fmt_ms(h.median(data["daemon_cpu_ms"]), 3),
                ",".join(map(str, data["replicas"])) or "-",
                str(data["errors"]),
            ]
        )
    headers = ["route", "c", "req/s median [min-max]", "p50 ms", "p99 ms", "daemon CPU ms/req", "replicas", "errors"]
    lines.append(h.render_table(headers, rows, right=range(1, 8)))
    for level, ratios in summary["ratios"].items():
        lines.append(
            f"  /api/call / /function at {level} (per-round): req/s {h.fmt_ratio(ratios['rps'])}, "
            f"p50 {h.fmt_delta(ratios['p50_added_ms'])}"
        )
    data = summary["gen"]
    lines += [
        "",
        '2. POST /api/gen -> first {"result": 42} vs python-mode deploy -> first 200 (each removed before the next)',
    ]
    gen_rows = []
    for label, values in (
        ("/api/gen -> first result", data["gen_ms"]),
        ("  of which /api/gen -> its 200", data["gen_answer_ms"]),
        ("deploy -> first 200", data["deploy_ms"]),
    ):
        gen_rows.append(
            [
                label,
                str(len(values)),
                h.fmt_ms(h.percentile(values, 50), 1),
                h.fmt_ms(min(values) if values else None, 1),
                h.fmt_ms(max(values) if values else None, 1),
            ]
        )
    lines.append(h.render_table(["", "n", "p50 ms", "min ms", "max ms"], gen_rows, right=range(1, 5)))
    ratio = "-" if data["ratio_p50"] is None else f"{data['ratio_p50']:.2f}x"
    lines.append(f"  /api/gen / deploy p50: {ratio}; per round {h.fmt_ratio(data['round_ratios'])}")
    lines += ["", TARGETS_TEXT]
    c1, c16 = (h.median(summary["ratios"][level]["rps"]) for level in ("c1", "c16"))
    checks = [
        ("/api/call / /function req/s at c1", c1, c1 is not None and c1 >= TARGET_CALL_RATIO),
        ("/api/call / /function req/s at c16", c16, c16 is not None and c16 >= TARGET_CALL_RATIO),
        (
            "/api/gen / deploy p50",
            data["ratio_p50"],
            data["ratio_p50"] is not None and data["ratio_p50"] <= TARGET_GEN_RATIO,
        ),
    ]
    for label, value, ok in checks:
        shown = "-" if value is None else f"{value:.3f}x"
        lines.append(f"  {label:<36} {shown:>8} -> {verdict(None if value is None else ok)}")
    busy = [
        f"round {i + 1}, {key}: others {run.others_pct:.0f} %CPU"
        for i, r in enumerate(rounds)
        for key, run in r.calls.items()
        if run.others_pct is not None and run.others_pct > DISTURBED_PCT
    ] + [
        f"round {i + 1}, gen block: others {r.others_pct:.0f} %CPU"
        for i, r in enumerate(rounds)
        if r.others_pct is not None and r.others_pct > DISTURBED_PCT
    ]
    if busy:
        lines += ["", f"warning: other processes used more than {DISTURBED_PCT:g} % of a core meanwhile:"]
        lines += [f"  {item}" for item in busy]
    changed = [
        f"round {i + 1}, {key}: {run.replicas_before} -> {run.replicas_after} replicas"
        for i, r in enumerate(rounds)
        for key, run in r.calls.items()
        if run.replicas_before != run.replicas_after
    ]
    if changed:
        lines += ["", "warning: the autoscaler changed the replicas during a load (that load is suspect):"]
        lines += [f"  {item}" for item in changed]
    leftovers = [f"round {i + 1}: {item}" for i, r in enumerate(rounds) for item in r.leftovers]
    lines.append("")
    lines.append("processes the daemon left running: " + ("; ".join(leftovers) if leftovers else "none"))
    failures = [f"round {i + 1}: {r.error}" for i, r in enumerate(rounds) if r.error]
    if failures:
        lines += ["", "failures:", *failures]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Flock-of-Birds benchmark: /api/call vs /function, /api/gen vs deploy (bench/README.md).",
        epilog=TARGETS_TEXT,
    )
    parser.add_argument("--faasd", type=Path, default=DEFAULT_FAASD, help="faasd zipapp (default: %(default)s)")
    parser.add_argument("--faasd-source", type=Path, nargs="?", const=REPO, help="run faasd from this source tree")
    parser.add_argument("--python", default=sys.executable, help="interpreter for faasd")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with a fresh daemon (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--gens", type=int, default=4, help="gen/deploy pairs per round (default 4)")
    parser.add_argument("--sandbox", default="", help="faasd up --sandbox MODE (default: the daemon's, auto)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s per load, 2 pairs")
    parser.add_argument("--ready-timeout", type=float, default=30.0, help="seconds a daemon or function may take")
    parser.add_argument("--json", type=Path, help="also write every raw number to this file")
    parser.add_argument("--marathon", metavar="URL", help="on the Marathon backend at URL (e.g. the test emulator)")
    parser.add_argument("--watchdog-uri", help="with --marathon: marathon_watchdog_uri (default: the zipapp, file://)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.gens = 1, 2, 2
    if min(args.rounds, args.duration, args.gens) < 1:
        parser.error("--rounds, --duration and --gens must be >= 1")
    return args


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    h.become_subreaper()
    previous = signal.signal(signal.SIGTERM, _sigterm)
    rounds: list[Round] = []
    try:
        with tempfile.TemporaryDirectory(prefix="faasd-bench-fob-") as tmp:
            for index in range(args.rounds):
                rounds.append(run_round(index, faasd, wrk, args, Path(tmp)))
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        meta["final_leftovers"] = kill_stray_watchdogs()
    summary = summarize(rounds)
    print(report(rounds, summary, args, meta))
    if args.json:
        document = {"meta": meta, "rounds": [asdict(r) for r in rounds], "summary": summary}
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"\nraw numbers: {args.json}")
    return 1 if any(r.error for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
