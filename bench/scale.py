"""Many-functions benchmark: what thousands of deployed functions cost one ``faasd up``.

Run ``python3 bench/scale.py`` (see bench/README.md). For each count N (``--counts``, default 1,000 and
10,000) two daemons run side by side on the local backend with the default sandbox, each with a fresh state dir:

* **one**: only the hot function ``echo`` (``fprocess=cat``, pinned at one replica: ``min = max = 1``);
* **many**: the same ``echo`` plus N-1 functions deployed at zero replicas (label ``com.openfaas.scale.min=0``:
  a function starts at its minimum, so no replica is ever started for them; the benchmark checks that the
  daemon has exactly one replica). They cost only their records: what the daemon keeps per function.

Measured, always against the other daemon in the same run:

1. **deploy rate**: the N-1 deploys through ``POST /system/functions`` from ``--deploy-clients`` keep-alive
   connections (functions/s); bounded by ``--deploy-timeout`` (a rate too slow to finish is reported as such);
2. **memory**: the daemon's RSS before any deploy and with N functions; KiB per function;
3. **autoscaler tick**: ``faasd_autoscaler_tick_seconds`` (a histogram on ``/metrics``) read before and after a
   ``--tick-window`` of idle seconds: the mean tick and a bound on its p99 (the bucket it falls in), against its
   period (target: under 10 % at 10,000 functions); and the daemon's own CPU while idle meanwhile;
4. **invoke**: wrk on ``POST /function/echo`` (100 bytes) at c1 and c16, ``--rounds`` rounds, the daemons
   alternating (the order rotates each round). The daemon not being measured is paused (SIGSTOP, its replica
   keeps running) so its ticks do not steal the CPU of the one measured; ratios many / one per round (target:
   within 1.1x: c1 p50 and c16 p99 <= 1.1x, c16 req/s >= 1/1.1x). Before the listings, which cost many far
   more CPU than one;
5. **listing**: ``GET /system/functions`` (``--list-requests`` per daemon, alternating), p50/p99 ms and its size;
   ``GET /metrics`` likewise (``--scrapes``);
6. **restart** (unless ``--no-restart``): the many daemon stopped (SIGTERM -> exit) and started again on its
   state dir: ``faasd up`` -> ``/healthz`` 200, -> the hot function's first 200, -> every function restored (its
   ``functions restored`` log line), bounded by ``--restart-timeout``.

Only same-run ratios mean anything on the small shared VMs this runs on. Traffic goes to 127.0.0.1 only; every
loop is bounded in count and time; every daemon started is stopped (and its leftovers killed) at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gateway_daemon as gd  # how faasd runs (Faasd), the management API (Api), helpers
import _harness as h  # the bench directory is not a package: imported by path, stdlib only
import gateway as g  # which faasd to run (choose_faasd), its defaults, stopping stray watchdogs
from _gateway_report import verdict

HOT = gd.FUNCTION
ZERO = {"com.openfaas.scale.min": "0"}
C1, C16 = h.Level(1, 1), h.Level(2, 16)
LEVELS = {"c1": C1, "c16": C16}
DAEMONS = ("one", "many")
TARGET_TICK_SHARE = 0.10
TARGET_INVOKE_RATIO = 1.1
TARGET_AT = 10_000
DISTURBED_PCT = 25.0
TARGETS_TEXT = (
    f"targets: autoscaler tick < {TARGET_TICK_SHARE:.0%} of its period at {TARGET_AT:,} functions; invoke of the hot "
    f"function with the others deployed within {TARGET_INVOKE_RATIO:g}x of a daemon with one function "
    f"(c1 p50, c16 p99 <= {TARGET_INVOKE_RATIO:g}x; c16 req/s >= {1 / TARGET_INVOKE_RATIO:.2f}x)"
)
TICK_METRIC = "faasd_autoscaler_tick_seconds"


# --------------------------------------------------------------------------------------------- the daemons


@dataclass
class Daemon:
    label: str
    target: h.Target
    running: h.Running
    api: gd.Api
    password: str
    state: Path

    @property
    def pid(self) -> int:
        return self.running.proc.pid

    @property
    def port(self) -> int:
        return self.target.port


def start_daemon(faasd: gd.Faasd, tmp: Path, label: str, args: argparse.Namespace) -> Daemon:
    tmp.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    target = faasd.daemon(tmp, password, args.sandbox, pool=0)  # Replicas found by their command line (gd.watchdogs).
    running = h.start(target, ready_timeout=args.ready_timeout)
    return Daemon(label, target, running, gd.Api(target.port, password), password, tmp / "state")


def restart_daemon(faasd: gd.Faasd, daemon: Daemon, args: argparse.Namespace, timeout: float) -> Daemon:
    """The same daemon again on its state dir and port; ready at its first ``/healthz`` 200."""
    target = faasd.daemon(daemon.state.parent, daemon.password, args.sandbox, pool=0)
    target.port = daemon.port
    target.argv[target.argv.index("--port") + 1] = str(daemon.port)
    target.log_path = daemon.state.parent / "daemon-restart.log"  # its own: the first one logged a restore too
    running = h.start(target, ready_timeout=timeout)
    return Daemon(daemon.label, target, running, daemon.api, daemon.password, daemon.state)


def stop(daemon: Daemon | None, leftovers: list[str]) -> float | None:
    """SIGCONT (it may be paused), SIGTERM the daemon alone; seconds to its exit; what it left is killed and listed."""
    if daemon is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.pid, signal.SIGCONT)
    report = h.stop_leader_first(daemon.running.proc, grace=g.STOP_GRACE_S * 4)
    leftovers += [f"{daemon.label}: pid {pid} ({state}) {cmd}" for pid, state, cmd in report.left]
    return report.exit_s


@contextlib.contextmanager
def paused(daemon: Daemon):
    """SIGSTOP ``daemon`` (its replica keeps running) for the duration; SIGCONT however it ends."""
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGCONT)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# --------------------------------------------------------------------------------------------- deploying


@dataclass
class DeployRun:
    wanted: int
    deployed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    timed_out: bool = False

    @property
    def rate(self) -> float | None:
        return self.deployed / self.seconds if self.seconds > 0 else None


def deploy_many(daemon: Daemon, names: list[str], clients: int, timeout: float) -> DeployRun:
    """Deploy ``names`` at zero replicas from ``clients`` keep-alive connections; stops at ``timeout`` s."""
    run = DeployRun(len(names))
    auth = dict(daemon.api.auth)
    lock = threading.Lock()
    cursor = iter(names)
    deadline = time.perf_counter() + timeout

    def work() -> None:
        conn = http.client.HTTPConnection(h.LOCALHOST, daemon.port, timeout=60)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    name = next(cursor, None)
                if name is None:
                    return
                body = json.dumps({"service": name, "envProcess": "cat", "labels": ZERO})
                conn.request("POST", "/system/functions", body, {"Content-Type": "application/json", **auth})
                answer = conn.getresponse()
                text = answer.read()
                with lock:
                    if answer.status == 202:
                        run.deployed += 1
                    elif len(run.errors) < 5:
                        run.errors.append(f"{name}: HTTP {answer.status} {text[:120]!r}")
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                run.errors.append(f"connection: {exc!r}")
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=work, name=f"deploy-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 120)
    run.seconds = time.perf_counter() - started
    run.timed_out = run.deployed < run.wanted and time.perf_counter() >= deadline
    return run


def deploy_hot(daemon: Daemon, timeout: float) -> None:
    daemon.api.deploy(HOT, labels=g.PINNED)
    gd.first_200(daemon.api, HOT, timeout, {})


# --------------------------------------------------------------------------------------------- observing


def timed_get(port: int, path: str, auth: tuple[tuple[str, str], ...] = ()) -> tuple[float, int, bytes]:
    """One GET on a new connection (answers of megabytes: http.client, not the harness's 1 MiB probe); ms."""
    conn = http.client.HTTPConnection(h.LOCALHOST, port, timeout=120)
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers=dict(auth))
        answer = conn.getresponse()
        body = answer.read()
        elapsed = (time.perf_counter() - started) * 1000.0
    except (OSError, http.client.HTTPException) as exc:
        raise h.BenchError(f"GET {path}: {exc!r}") from exc
    finally:
        conn.close()
    return elapsed, answer.status, body


@dataclass
class Ticks:
    count: float
    total_s: float
    buckets: dict[float, float]
    functions: float | None


def read_ticks(port: int) -> Ticks:
    _, status, body = timed_get(port, "/metrics")
    if status != 200:
        raise h.BenchError(f"GET /metrics: HTTP {status}")
    text = body.decode()
    if f"{TICK_METRIC}_count" not in text:
        raise h.BenchError(f"/metrics has no {TICK_METRIC}: this faasd does not report its autoscaler's tick")

    def value(pattern: str) -> float | None:
        match = re.search(pattern, text, re.M)
        return float(match.group(1)) if match else None

    buckets = {
        float("inf") if le == "+Inf" else float(le): float(count)
        for le, count in re.findall(rf'^{TICK_METRIC}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.M)
    }
    return Ticks(
        count=value(rf"^{TICK_METRIC}_count (\S+)$") or 0.0,
        total_s=value(rf"^{TICK_METRIC}_sum (\S+)$") or 0.0,
        buckets=buckets,
        functions=value(r"^faasd_autoscaler_tick_functions (\S+)$"),
    )


@dataclass
class TickWindow:
    ticks: int
    mean_ms: float | None
    p99_le_ms: float | None  # the upper bound of the bucket holding the p99 tick
    functions: float | None
    idle_cpu_pct: float | None  # the daemon's own CPU meanwhile, % of one core


def tick_window(daemons: list[Daemon], seconds: float) -> dict[str, TickWindow]:
    """Idle for ``seconds``; each daemon's ticks meanwhile (from its histogram) and its own CPU."""
    before = {d.label: (read_ticks(d.port), h.process_cpu_seconds(d.pid), time.monotonic()) for d in daemons}
    time.sleep(seconds)
    # The CPU first: a /metrics scrape of 10,000 functions costs the daemon a good part of a second itself.
    cpu_after = {d.label: (h.process_cpu_seconds(d.pid), time.monotonic()) for d in daemons}
    out = {}
    for d in daemons:
        after, (cpu1, t1) = read_ticks(d.port), cpu_after[d.label]
        start, cpu0, t0 = before[d.label]
        count = after.count - start.count
        p99 = None
        if count > 0:
            for le in sorted(after.buckets):
                if after.buckets[le] - start.buckets.get(le, 0.0) >= 0.99 * count:
                    p99 = le * 1000.0
                    break
        cpu = (cpu1 - cpu0) * 100.0 / (t1 - t0) if cpu0 is not None and cpu1 is not None else None
        out[d.label] = TickWindow(
            ticks=int(count),
            mean_ms=(after.total_s - start.total_s) * 1000.0 / count if count else None,
            p99_le_ms=p99,
            functions=after.functions,
            idle_cpu_pct=cpu,
        )
    return out


def list_times(daemons: list[Daemon], requests: int, path: str, expect: dict[str, int] | None) -> dict:
    """GET ``path`` ``requests`` times per daemon, alternating; ms per request and the answer's size."""
    out: dict[str, dict] = {d.label: {"ms": [], "bytes": 0} for d in daemons}
    for _ in range(requests):
        for d in daemons:
            auth = d.api.auth if path.startswith("/system/") else ()
            ms, status, body = timed_get(d.port, path, auth)
            if status != 200:
                raise h.BenchError(f"{d.label}: GET {path}: HTTP {status}")
            if expect is not None and len(json.loads(body)) != expect[d.label]:
                raise h.BenchError(f"{d.label}: GET {path} lists {len(json.loads(body))}, not {expect[d.label]}")
            out[d.label]["ms"].append(ms)
            out[d.label]["bytes"] = len(body)
    return out


# --------------------------------------------------------------------------------------------- invoking


@dataclass
class InvokeRun:
    wrk: h.WrkResult
    daemon_cpu_ms: float | None  # the daemon's own CPU per request (not its replica's)
    others_pct: float | None


def invoke_rounds(
    daemons: dict[str, Daemon], wrk: str, args: argparse.Namespace, tmp: Path
) -> tuple[list[dict[str, dict[str, InvokeRun]]], list[list[str]]]:
    script = h.Load("POST", f"/function/{HOT}", gd.BODY, "text/plain").write_script(tmp, "invoke.lua")
    rounds: list[dict[str, dict[str, InvokeRun]]] = []
    orders: list[list[str]] = []
    for index in range(args.rounds):
        order = list(DAEMONS[index % 2 :] + DAEMONS[: index % 2])
        orders.append(order)
        runs: dict[str, dict[str, InvokeRun]] = {}
        for label in order:
            daemon = daemons[label]
            other = daemons["many" if label == "one" else "one"]
            url = f"http://{h.LOCALHOST}:{daemon.port}/"
            with paused(other):
                time.sleep(0.5)
                h.run_wrk(wrk, url, C16, g.WARMUP_S, script)  # warm-up, discarded
                runs[label] = {}
                for level_name, level in LEVELS.items():
                    cpu0 = h.process_cpu_seconds(daemon.pid)
                    others = h.OthersMeter()
                    others.start()
                    result, _raw = h.run_wrk(wrk, url, level, args.duration, script)
                    others_pct = others.stop()
                    cpu1 = h.process_cpu_seconds(daemon.pid)
                    cpu = (cpu1 - cpu0) * 1000.0 / result.requests if cpu0 and cpu1 and result.requests else None
                    runs[label][level_name] = InvokeRun(result, cpu, others_pct)
            time.sleep(1.0)  # the paused daemon catches up (its missed ticks) before the next load
        rounds.append(runs)
    return rounds, orders


# --------------------------------------------------------------------------------------------- one count


@dataclass
class CountRun:
    count: int
    deploy: DeployRun | None = None
    rss_kib: dict[str, dict[str, int | None]] = field(default_factory=dict)  # label -> {"empty", "loaded"}
    fds: dict[str, int | None] = field(default_factory=dict)
    db_bytes: int | None = None
    replicas: dict[str, int] = field(default_factory=dict)
    ticks: dict[str, TickWindow] = field(default_factory=dict)
    lists: dict = field(default_factory=dict)
    scrapes: dict = field(default_factory=dict)
    invoke: list[dict[str, dict[str, InvokeRun]]] = field(default_factory=list)
    orders: list[list[str]] = field(default_factory=list)
    stop_s: float | None = None
    restart: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)


def restored_ms(log: Path) -> float | None:
    match = re.search(r"event=\"functions restored\" .*?\brestore_ms=(\d+)", log.read_text(errors="replace"))
    return float(match.group(1)) if match else None


def run_count(count: int, faasd: gd.Faasd, wrk: str, args: argparse.Namespace, tmp_root: Path) -> CountRun:
    run = CountRun(count)
    tmp = tmp_root / f"n{count}"
    daemons: dict[str, Daemon] = {}
    try:
        for label in DAEMONS:
            daemons[label] = start_daemon(faasd, tmp / label, label, args)
        time.sleep(2.0)
        for label, daemon in daemons.items():
            run.rss_kib[label] = {"empty": rss_kib(daemon.pid)}
            deploy_hot(daemon, args.ready_timeout)
        names = [f"z{i:05d}" for i in range(1, count)]
        run.deploy = deploy_many(daemons["many"], names, args.deploy_clients, args.deploy_timeout)
        if run.deploy.errors:
            raise h.BenchError(f"deploys failed: {'; '.join(run.deploy.errors)}")
        expected = {"one": 1, "many": 1 + run.deploy.deployed}
        time.sleep(3.0)  # settle: the deploys' garbage collected, the replica steady
        for label, daemon in daemons.items():
            run.replicas[label] = len(gd.watchdogs(daemon.pid))
            run.rss_kib[label]["loaded"] = rss_kib(daemon.pid)
            run.fds[label] = open_fds(daemon.pid)
        with contextlib.suppress(OSError):
            run.db_bytes = (daemons["many"].state / "faasd.db").stat().st_size
        if run.replicas != {"one": 1, "many": 1}:
            raise h.BenchError(f"expected one replica per daemon (the hot function's), found {run.replicas}")
        run.ticks = tick_window(list(daemons.values()), args.tick_window)
        # The invoke before the listings: those cost many far more CPU than one, and a process that just used
        # more CPU than its share is scheduled less for a while on a busy machine (that biased the ratios).
        run.invoke, run.orders = invoke_rounds(daemons, wrk, args, tmp)
        run.lists = list_times(list(daemons.values()), args.list_requests, "/system/functions", expected)
        run.scrapes = list_times(list(daemons.values()), args.scrapes, "/metrics", None)
        run.stop_s = None
        if args.restart:
            stop(daemons.pop("one"), run.leftovers)
            many = daemons.pop("many")
            run.stop_s = stop(many, run.leftovers)
            started = time.perf_counter()
            daemons["many"] = again = restart_daemon(faasd, many, args, args.restart_timeout)
            run.restart["up_s"] = again.running.startup_s
            run.restart["hot_200_s"] = gd.first_200(again.api, HOT, args.restart_timeout, {}) - started
            deadline = started + args.restart_timeout
            while (ms := restored_ms(again.target.log_path)) is None and time.perf_counter() < deadline:
                time.sleep(0.2)
            run.restart["restored_s"] = time.perf_counter() - started if ms is not None else None
            run.restart["restore_ms_logged"] = ms
            run.restart["rss_kib"] = rss_kib(again.pid)
            run.restart["replicas"] = len(gd.watchdogs(again.pid))
    except (h.BenchError, ValueError, OSError) as exc:  # ValueError: an answer that is not the JSON expected
        logs = [f"{d.label}:\n{h.log_tail(d.target.log_path)}" for d in daemons.values() if d.target.log_path]
        run.error = f"{exc!r}\n" + "\n".join(logs)
    finally:
        for label in list(daemons):
            stopped = stop(daemons.pop(label), run.leftovers)
            if label == "many" and run.stop_s is None:
                run.stop_s = stopped
    return run


# --------------------------------------------------------------------------------------------- report


def summarize(run: CountRun) -> dict:
    out: dict = {"count": run.count}
    if run.deploy:
        out["deploy_per_s"] = run.deploy.rate
    rss = run.rss_kib
    if rss.get("many", {}).get("loaded") and rss["many"].get("empty"):
        out["kib_per_function"] = (rss["many"]["loaded"] - rss["many"]["empty"]) / run.count
    many_tick = run.ticks.get("many")
    if many_tick and many_tick.mean_ms is not None:
        out["tick_share"] = many_tick.mean_ms / 1000.0  # of the 1 s period
    ratios: dict[str, list[float]] = {"c1 p50": [], "c1 p99": [], "c1 req/s": [], "c16 p99": [], "c16 req/s": []}
    for rnd in run.invoke:
        for key in ratios:
            level, what = key.split()
            many, one = rnd["many"][level].wrk, rnd["one"][level].wrk
            attr = {"p50": "p50_ms", "p99": "p99_ms", "req/s": "rps"}[what]
            value = h.ratio(getattr(many, attr), getattr(one, attr))
            if value is not None:
                ratios[key].append(value)
    out["invoke_ratios"] = ratios
    return out


def report(runs: list[CountRun], args: argparse.Namespace, meta: dict) -> str:
    lines = [
        "",
        f"faasd many-functions benchmark -- {meta['machine']}",
        f"faasd: {meta['faasd']}; sandbox: {args.sandbox or 'default'}; wrk: {meta['wrk']}",
        f"counts {', '.join(f'{n:,}' for n in args.counts)}; {args.rounds} invoke round(s) x {args.duration} s; "
        f"{args.deploy_clients} deploy clients",
    ]
    for run in runs:
        summary = summarize(run)
        lines += [
            "",
            f"== {run.count:,} functions (one hot + {run.count - 1:,} at zero) vs a daemon with only the hot one",
        ]
        if run.deploy:
            d = run.deploy
            rate = "-" if d.rate is None else f"{d.rate:,.0f}"
            note = f" (stopped by --deploy-timeout after {d.deployed:,} of {d.wanted:,})" if d.timed_out else ""
            lines.append(f"  deploy: {d.deployed:,} functions in {d.seconds:.1f} s = {rate} functions/s{note}")
        for label in DAEMONS:
            rss = run.rss_kib.get(label, {})
            empty, loaded = rss.get("empty"), rss.get("loaded")
            lines.append(
                f"  {label:>4}: RSS empty {fmt_mib(empty)}, loaded {fmt_mib(loaded)}; "
                f"open fds {run.fds.get(label, '-')}; replicas {run.replicas.get(label, '-')}"
            )
        if "kib_per_function" in summary:
            lines.append(
                f"  memory per function: {summary['kib_per_function']:.1f} KiB "
                f"(many: loaded - empty, / {run.count:,}); faasd.db {fmt_mib(run.db_bytes and run.db_bytes // 1024)}"
            )
        if run.ticks:
            rows = []
            for label in DAEMONS:
                t = run.ticks.get(label)
                if t is None:
                    continue
                rows.append(
                    [
                        label,
                        str(t.ticks),
                        "-" if t.functions is None else f"{t.functions:,.0f}",
                        h.fmt_ms(t.mean_ms, 3),
                        "-" if t.p99_le_ms is None else f"<= {t.p99_le_ms:g}",
                        h.fmt_ms(t.idle_cpu_pct, 1),
                    ]
                )
            lines += [
                f"  autoscaler ticks over {args.tick_window:g} idle s:",
                indent(
                    h.render_table(
                        ["daemon", "ticks", "functions", "mean ms", "p99 ms", "idle CPU %"], rows, range(1, 6)
                    )
                ),
            ]
        for title, data in (("GET /system/functions", run.lists), ("GET /metrics", run.scrapes)):
            if not data:
                continue
            rows = [
                [
                    label,
                    str(len(data[label]["ms"])),
                    h.fmt_ms(h.percentile(data[label]["ms"], 50), 1),
                    h.fmt_ms(h.percentile(data[label]["ms"], 99), 1),
                    f"{data[label]['bytes']:,}",
                ]
                for label in DAEMONS
                if label in data
            ]
            lines += [
                f"  {title}:",
                indent(h.render_table(["daemon", "n", "p50 ms", "p99 ms", "bytes"], rows, range(1, 5))),
            ]
        if run.invoke:
            rows = []
            for label in DAEMONS:
                for level in LEVELS:
                    results = [rnd[label][level] for rnd in run.invoke]
                    rows.append(
                        [
                            label,
                            level[1:],
                            h.fmt_range([r.wrk.rps for r in results]),
                            h.fmt_ms(h.median([r.wrk.p50_ms for r in results])),
                            h.fmt_ms(h.median([r.wrk.p99_ms for r in results])),
                            h.fmt_ms(h.median([r.daemon_cpu_ms for r in results]), 3),
                            str(sum(r.wrk.errors for r in results)),
                        ]
                    )
            lines += [
                f"  invoke POST /function/{HOT} (order per round: {'; '.join(' '.join(o) for o in run.orders)}):",
                indent(
                    h.render_table(
                        ["daemon", "c", "req/s median [min-max]", "p50 ms", "p99 ms", "daemon CPU ms/req", "errors"],
                        rows,
                        range(1, 7),
                    )
                ),
                "  many / one (per-round ratios): "
                + ", ".join(f"{key} {h.fmt_ratio(values)}" for key, values in summary["invoke_ratios"].items()),
            ]
            busy = [
                f"round {i + 1} {label} {level}: others {r.others_pct:.0f} %CPU"
                for i, rnd in enumerate(run.invoke)
                for label, levels in rnd.items()
                for level, r in levels.items()
                if r.others_pct is not None and r.others_pct > DISTURBED_PCT
            ]
            if busy:
                lines.append(
                    f"  warning: other processes used > {DISTURBED_PCT:g} % of a core during: {'; '.join(busy)}"
                )
        if run.stop_s is not None:
            lines.append(f"  many: SIGTERM -> exit {run.stop_s:.2f} s")
        if run.restart:
            r = run.restart
            restored = "-" if r.get("restored_s") is None else f"{r['restored_s']:.1f} s"
            lines.append(
                f"  restart: faasd up -> /healthz 200 {r.get('up_s', 0):.2f} s; -> {HOT} answers "
                f"{r.get('hot_200_s', 0):.2f} s; -> every function restored {restored} "
                f"(logged restore_ms {r.get('restore_ms_logged')}); RSS {fmt_mib(r.get('rss_kib'))}; "
                f"replicas {r.get('replicas')}"
            )
        if run.leftovers:
            lines.append(f"  processes the daemons left running (killed): {'; '.join(run.leftovers)}")
        if run.error:
            lines.append(f"  FAILED: {run.error}")
    lines += ["", TARGETS_TEXT]
    for run in runs:
        s = summarize(run)
        share = s.get("tick_share")
        checks = []
        if run.count >= TARGET_AT or run.count == max(args.counts):
            checks.append(("tick / period", share, share is not None and share < TARGET_TICK_SHARE, "%"))
        for key, bad in (("c1 p50", "above"), ("c16 p99", "above"), ("c16 req/s", "below")):
            value = h.median(s["invoke_ratios"][key])
            ok = value is not None and (
                value <= TARGET_INVOKE_RATIO if bad == "above" else value >= 1 / TARGET_INVOKE_RATIO
            )
            checks.append((f"invoke many/one {key}", value, ok, "x"))
        for label, value, ok, unit in checks:
            shown = "-" if value is None else (f"{value:.1%}" if unit == "%" else f"{value:.3f}x")
            lines.append(f"  {run.count:>6,}: {label:<26} {shown:>8} -> {verdict(None if value is None else ok)}")
    return "\n".join(lines)


def fmt_mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Many-functions benchmark: one daemon with N functions at zero vs one with one (bench/README.md).",
        epilog=TARGETS_TEXT,
    )
    parser.add_argument("--faasd", type=Path, default=g.DEFAULT_FAASD, help="faasd zipapp (default: %(default)s)")
    parser.add_argument("--faasd-source", type=Path, nargs="?", const=g.REPO, help="run faasd from this source tree")
    parser.add_argument("--python", default=sys.executable, help="interpreter for faasd")
    parser.add_argument("--counts", default="1000,10000", help="function counts, comma-separated (default 1000,10000)")
    parser.add_argument("--rounds", type=int, default=2, help="invoke rounds per count (default 2)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--deploy-clients", type=int, default=4, help="concurrent deploy connections (default 4)")
    parser.add_argument("--deploy-timeout", type=float, default=600.0, help="bound on deploying one count (600 s)")
    parser.add_argument("--tick-window", type=float, default=10.0, help="idle seconds to watch the ticks (10)")
    parser.add_argument("--list-requests", type=int, default=10, help="GET /system/functions per daemon (10)")
    parser.add_argument("--scrapes", type=int, default=5, help="GET /metrics per daemon (5)")
    parser.add_argument("--no-restart", dest="restart", action="store_false", help="skip the restart block")
    parser.add_argument("--restart-timeout", type=float, default=300.0, help="bound on a restart (300 s)")
    parser.add_argument("--sandbox", default="", help="faasd up --sandbox MODE (default: the daemon's own)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 functions, 1 round, 2 s per load")
    parser.add_argument("--ready-timeout", type=float, default=30.0, help="seconds a daemon or function may take")
    parser.add_argument("--json", type=Path, help="also write every raw number to this file")
    args = parser.parse_args(argv)
    try:
        args.counts = [int(n) for n in args.counts.split(",") if n.strip()]
    except ValueError:
        parser.error("--counts: whole numbers, comma-separated")
    if args.quick:
        args.counts, args.rounds, args.duration, args.tick_window, args.list_requests = [200], 1, 2, 5.0, 5
    if not args.counts or min(args.counts) < 2:
        parser.error("--counts: each count must be at least 2 (the hot function and one more)")
    if min(args.rounds, args.duration, args.deploy_clients, args.list_requests, args.scrapes) < 1:
        parser.error("--rounds, --duration, --deploy-clients, --list-requests and --scrapes must be >= 1")
    return args


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = h.find_wrk()
    if wrk is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    faasd = g.choose_faasd(args)
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
    runs: list[CountRun] = []
    try:
        with tempfile.TemporaryDirectory(prefix="faasd-bench-scale-") as tmp:
            for count in args.counts:
                runs.append(run_count(count, faasd, wrk, args, Path(tmp)))
                print(report(runs[-1:], args, meta), file=sys.stderr)  # each count as it ends; all of them below
    except KeyboardInterrupt:
        print("\ninterrupted; every daemon was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        meta["final_leftovers"] = g.kill_stray_watchdogs()
    print(report(runs, args, meta))
    if args.json:
        document = {"meta": meta, "runs": [asdict(r) for r in runs], "summary": [summarize(r) for r in runs]}
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"\nraw numbers: {args.json}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
