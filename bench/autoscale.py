"""Autoscaler benchmark: how fast ``faasd up`` follows a load step, and what a call to a function at zero costs.

Run ``python3 bench/autoscale.py`` (see bench/README.md). One daemon on the local backend, one fork-mode
function (``fprocess=cat``, ``com.openfaas.scale.type=rps`` at the default target, scale to zero after
``--zero-after``), and an **open-loop** load generator (requests are sent on a fixed schedule whatever the
answers' latency, and each latency is counted from its scheduled time, so a slow scale-up shows as latency and
not as a politely slower client):

1. **step**: ``1x -> 2x -> 4x -> idle``, where 1x is a rate one replica carries (85 % of its per-replica
   target). A watcher polls ``GET /system/function/<name>`` every 50 ms; for each step it reports the time
   from the step to the scale order (``replicas`` rises), to capacity serving (``availableReplicas`` reaches
   ``ceil(rate / per-replica target)``), the p99 during the step and the failed calls; for idle, the time to
   zero replicas.
2. **baseline**: the same rates against a second function pinned at 4 replicas (``min = max = 4``, autoscaling
   off) in the same daemon: the p99 an already scaled function gives, so the ratio isolates the scaling.
3. **cold**: single calls to the function at zero (scaled to 0 by the API between them) alternating with bare
   ``faasd watchdog`` exec -> first 200 (the floor under any local cold start), then a burst of 50 concurrent
   calls at zero: failures, p50/p99, and the replicas it caused (queued calls must not inflate the scale-up).

Targets (issue 8): scale order <= 4 s and capacity serving <= 6 s after a 2x step; 0 failed calls through
0 -> N; local cold start p50 <= 150 ms. Figures drift on small shared VMs; the baselines are same-run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import secrets
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gateway_daemon as gd  # how faasd runs (Faasd), the management API (Api), helpers
import _harness as h  # the bench directory is not a package: imported by path, stdlib only
import gateway as g  # which faasd to run (choose_faasd), its defaults, stopping stray watchdogs

FUNCTION = "step"
PINNED_FUNCTION = "pinned"
PER_REPLICA_RPS = 50.0 * 0.9  # the rps type's default target times the default target-proportion
ONE_X = 0.85 * PER_REPLICA_RPS
STEPS = (1, 2, 4)
PINNED_REPLICAS = 4
WATCH_INTERVAL_S = 0.05
BURST = 50
TARGET_ORDER_S = 4.0
TARGET_SERVING_S = 6.0
TARGET_COLD_P50_MS = 150.0
TARGETS_TEXT = (
    f"targets: scale order <= {TARGET_ORDER_S:g} s and capacity serving <= {TARGET_SERVING_S:g} s after a 2x "
    f"step; 0 failed calls through 0 -> N; local cold start p50 <= {TARGET_COLD_P50_MS:g} ms"
)


# --------------------------------------------------------------------------------------------- open-loop load


@dataclass(frozen=True)
class Call:
    """One call of the open-loop load: when it was due (s from the run's start), its latency from then, status."""

    due_s: float
    latency_ms: float
    status: int  # 0: no answer (connection error or timeout)


class OpenLoad:
    """Calls ``POST /function/<name>`` at a fixed rate per phase, from a thread pool of keep-alive connections.

    The schedule is fixed up front; a call is sent at its due time by whichever worker is free, and its latency
    counts from the due time (no coordinated omission). Bounded: the pool has ``workers`` threads and each call
    times out after ``timeout`` s.
    """

    def __init__(self, port: int, name: str, *, workers: int = 96, timeout: float = 30.0) -> None:
        self.port, self.path, self.timeout = port, f"/function/{name}", timeout
        self.workers = workers
        self._local = threading.local()
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(h.LOCALHOST, self.port, timeout=self.timeout)
        return conn

    def _call(self, t0: float, due: float) -> None:
        status = 0
        for attempt in range(2):  # a keep-alive connection the server closed is retried once on a new one
            conn = self._connection()
            try:
                conn.request("POST", self.path, gd.BODY, {"Content-Type": "text/plain"})
                response = conn.getresponse()
                body = response.read()
                status = response.status
                if status == 200 and body != gd.BODY:
                    status = 299  # a 200 with a wrong body counts as a failed call
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    status = 0
        latency = (time.perf_counter() - (t0 + due)) * 1000.0
        with self._lock:
            self.calls.append(Call(due, latency, status))

    def run(self, phases: list[tuple[float, float]], t0: float) -> None:
        """Send ``rate`` calls/s for ``seconds`` for each ``(rate, seconds)``, starting at ``t0``; wait for all."""
        futures = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="load") as pool:
            start = 0.0
            for rate, seconds in phases:
                if rate > 0:
                    for i in range(int(rate * seconds)):
                        due = start + i / rate
                        delay = t0 + due - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                        futures.append(pool.submit(self._call, t0, due))
                start += seconds
            delay = t0 + start - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        for future in futures:  # A call that raised was never recorded: that is a harness bug, said aloud.
            future.result()


class Watcher:
    """Polls the function's ``replicas`` / ``availableReplicas`` every 50 ms on its own thread."""

    def __init__(self, api: gd.Api, name: str, t0: float) -> None:
        self.api, self.name, self.t0 = api, name, t0
        self.samples: list[tuple[float, int, int]] = []  # (s since t0, replicas, available)
        self.missed = 0  # polls the daemon did not answer within 10 s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = self.api.call("GET", f"/system/function/{self.name}", timeout=10.0)
            except h.BenchError:  # No answer in time: a missing sample, not the end of the watch.
                self.missed += 1
                continue
            if status == 200:
                doc = json.loads(body)
                now = time.perf_counter() - self.t0
                self.samples.append((now, int(doc.get("replicas", 0)), int(doc.get("availableReplicas", 0))))
            self._stop.wait(WATCH_INTERVAL_S)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15.0)

    def first(self, after: float, check) -> float | None:  # type: ignore[no-untyped-def]
        """Seconds from ``after`` to the first sample at or after it for which ``check(replicas, available)``."""
        for at, replicas, available in self.samples:
            if at >= after and check(replicas, available):
                return at - after
        return None

    def at(self, when: float) -> tuple[int, int]:
        """``(replicas, available)`` of the last sample before ``when``."""
        last = (0, 0)
        for at, replicas, available in self.samples:
            if at > when:
                break
            last = (replicas, available)
        return last


# --------------------------------------------------------------------------------------------- results


@dataclass
class StepResult:
    label: str
    rate: float
    want: int
    order_s: float | None = None
    serving_s: float | None = None
    replicas_end: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    calls: int = 0
    failed: int = 0
    pinned_p99_ms: float | None = None


@dataclass
class Results:
    steps: list[StepResult] = field(default_factory=list)
    to_zero_s: float | None = None
    cold_ms: list[float] = field(default_factory=list)
    cold_failed: int = 0
    watchdog_ms: list[float] = field(default_factory=list)
    burst_ms: list[float] = field(default_factory=list)
    burst_failed: int = 0
    burst_replicas: int | None = None
    errors: list[str] = field(default_factory=list)


def _latencies(calls: list[Call], start: float, end: float) -> list[float]:
    return [c.latency_ms for c in calls if start <= c.due_s < end]


def _failed(calls: list[Call], start: float, end: float) -> int:
    return sum(1 for c in calls if start <= c.due_s < end and c.status != 200)


# --------------------------------------------------------------------------------------------- the blocks


def step_block(api: gd.Api, port: int, args: argparse.Namespace, out: Results) -> None:
    """1x -> 2x -> 4x -> idle against the autoscaled function, with the watcher on."""
    phases = [(ONE_X * k, float(args.phase)) for k in STEPS]
    load = OpenLoad(port, FUNCTION)
    t0 = time.perf_counter() + 0.2
    with Watcher(api, FUNCTION, t0) as watcher:
        load.run(phases, t0)
        idle_from = len(STEPS) * args.phase
        deadline = time.perf_counter() + args.zero_after + 30.0
        while watcher.at(time.perf_counter() - t0)[0] != 0 and time.perf_counter() < deadline:
            time.sleep(0.2)
    if watcher.missed:
        print(f"warning: {watcher.missed} polls unanswered within 10 s: gaps in the timeline", file=sys.stderr)
    for index, k in enumerate(STEPS):
        start, end = index * args.phase, (index + 1) * args.phase
        rate = ONE_X * k
        step = StepResult(f"{k}x ({rate:.0f}/s)", rate, math.ceil(rate / PER_REPLICA_RPS))
        if index:
            before = watcher.at(start)[0]
            step.order_s = watcher.first(start, lambda r, a, b=before: r > b)
        step.serving_s = watcher.first(start, lambda r, a, w=step.want: a >= w)
        step.replicas_end = watcher.at(end)[0]
        latencies = _latencies(load.calls, start, end)
        step.calls, step.failed = len(latencies), _failed(load.calls, start, end)
        step.p50_ms, step.p99_ms = h.percentile(latencies, 50), h.percentile(latencies, 99)
        out.steps.append(step)
    out.to_zero_s = watcher.first(idle_from, lambda r, a: r == 0 and a == 0)


def pinned_block(api: gd.Api, port: int, args: argparse.Namespace, out: Results) -> None:
    """The same rates against a function already at 4 replicas: the p99 without any scaling."""
    seconds = max(3.0, args.phase / 3)
    load = OpenLoad(port, PINNED_FUNCTION)
    load.run([(ONE_X * k, seconds) for k in STEPS], time.perf_counter() + 0.2)
    for index, step in enumerate(out.steps):
        step.pinned_p99_ms = h.percentile(_latencies(load.calls, index * seconds, (index + 1) * seconds), 99)
        failed = _failed(load.calls, index * seconds, (index + 1) * seconds)
        if failed:
            out.errors.append(f"the pinned function failed {failed} calls at {step.label}")


def wait_zero(api: gd.Api, name: str, timeout: float = 20.0) -> None:
    gd.poll(f"{name} at zero replicas", lambda: api.available(name) == 0, timeout, interval=0.05)


def cold_block(api: gd.Api, faasd: gd.Faasd, args: argparse.Namespace, tmp: Path, out: Results) -> None:
    """Single calls at zero alternating with bare watchdog starts, then a burst of 50 concurrent calls at zero."""
    for i in range(args.cold):
        for job in ("invoke", "watchdog") if i % 2 == 0 else ("watchdog", "invoke"):
            if job == "watchdog":
                out.watchdog_ms.append(g.bare_watchdog_ms(faasd, tmp, args.ready_timeout))
                continue
            api.scale(FUNCTION, 0)
            wait_zero(api, FUNCTION)
            t0 = time.perf_counter()
            answer = api.invoke(FUNCTION, 30.0)
            if answer is None or answer[0] != 200 or answer[1] != gd.BODY:
                out.cold_failed += 1
            else:
                out.cold_ms.append((time.perf_counter() - t0) * 1000.0)
    api.scale(FUNCTION, 0)
    wait_zero(api, FUNCTION)
    load = OpenLoad(api.port, FUNCTION, workers=BURST)
    barrier = threading.Barrier(BURST)

    def one(_: int) -> None:
        barrier.wait(10.0)
        load._call(time.perf_counter(), 0.0)

    with ThreadPoolExecutor(BURST) as pool:
        list(pool.map(one, range(BURST)))
    out.burst_ms = [c.latency_ms for c in load.calls]
    out.burst_failed = sum(1 for c in load.calls if c.status != 200)
    time.sleep(3.0)  # two autoscaler ticks: a scale-up inflated by the held calls would show by now
    status, body = api.call("GET", f"/system/function/{FUNCTION}")
    out.burst_replicas = int(json.loads(body).get("replicas", -1)) if status == 200 else None


# --------------------------------------------------------------------------------------------- report


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(out: Results, args: argparse.Namespace, meta: dict) -> str:
    lines = [
        f"faasd autoscale benchmark -- {meta['faasd']}",
        f"machine: {meta['machine']}",
        f"function: fprocess=cat, scale.type=rps, {PER_REPLICA_RPS:g} calls/s per replica (target 50 x 0.9), "
        f"1x = {ONE_X:g} calls/s, {args.phase:g} s per step, open loop, 100-byte POST through the gateway",
        "",
    ]
    rows = []
    for s in out.steps:
        rows.append(
            [
                s.label,
                str(s.want),
                fmt_s(s.order_s),
                fmt_s(s.serving_s),
                str(s.replicas_end),
                h.fmt_ms(s.p50_ms),
                h.fmt_ms(s.p99_ms),
                h.fmt_ms(s.pinned_p99_ms),
                h.fmt_ratio([r]) if (r := h.ratio(s.p99_ms, s.pinned_p99_ms)) is not None else "-",
                f"{s.failed}/{s.calls}",
            ]
        )
    headers = ["step", "want", "order s", "serving s", "replicas", "p50 ms", "p99 ms", "pinned p99", "p99 ratio"]
    lines.append(h.render_table([*headers, "failed"], rows, right=range(1, 10)))
    lines.append(f"idle -> zero replicas: {fmt_s(out.to_zero_s)} s (scale.zero-duration {args.zero_after:g} s)")
    lines.append("")
    cold50, cold99 = h.percentile(out.cold_ms, 50), h.percentile(out.cold_ms, 99)
    wd50 = h.percentile(out.watchdog_ms, 50)
    lines.append(
        f"cold start (call at zero -> 200), n={len(out.cold_ms)}: p50 {h.fmt_ms(cold50, 1)} ms, "
        f"p99 {h.fmt_ms(cold99, 1)} ms, failed {out.cold_failed}; baseline bare watchdog exec -> first 200 "
        f"p50 {h.fmt_ms(wd50, 1)} ms (ratio {h.fmt_ratio([r]) if (r := h.ratio(cold50, wd50)) else '-'})"
    )
    lines.append(
        f"burst of {BURST} concurrent calls at zero: failed {out.burst_failed}, p50 "
        f"{h.fmt_ms(h.percentile(out.burst_ms, 50), 1)} ms, p99 {h.fmt_ms(h.percentile(out.burst_ms, 99), 1)} ms, "
        f"replicas 3 s later: {out.burst_replicas}"
    )
    two = next((s for s in out.steps if s.label.startswith("2x")), None)
    failed = sum(s.failed for s in out.steps) + out.cold_failed + out.burst_failed
    lines += [
        "",
        TARGETS_TEXT,
        f"  scale order after 2x: {fmt_s(two.order_s if two else None)} s -- "
        f"{verdict(None if two is None or two.order_s is None else two.order_s <= TARGET_ORDER_S)}",
        f"  capacity serving after 2x: {fmt_s(two.serving_s if two else None)} s -- "
        f"{verdict(None if two is None or two.serving_s is None else two.serving_s <= TARGET_SERVING_S)}",
        f"  failed calls: {failed} -- {verdict(failed == 0)}",
        f"  cold start p50: {h.fmt_ms(cold50, 1)} ms -- {verdict(None if cold50 is None else cold50 <= 150.0)}",
    ]
    if out.errors:
        lines += ["", "errors:", *(f"  {e}" for e in out.errors)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Autoscaler benchmark: load steps, scale to zero, cold starts (see bench/README.md).",
        epilog=TARGETS_TEXT,
    )
    parser.add_argument("--faasd", type=Path, default=g.DEFAULT_FAASD, help="faasd zipapp (default: %(default)s)")
    parser.add_argument("--faasd-source", type=Path, nargs="?", const=g.REPO, help="run from this source tree")
    parser.add_argument("--python", default=sys.executable, help="interpreter for faasd")
    parser.add_argument("--phase", type=float, default=20.0, help="seconds per load step (default 20)")
    parser.add_argument("--zero-after", type=float, default=10.0, help="scale.zero-duration in s (default 10)")
    parser.add_argument("--cold", type=int, default=10, help="single cold calls (default 10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 s steps, 4 cold calls")
    parser.add_argument("--ready-timeout", type=float, default=15.0, help="seconds a server may take to answer")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.phase, args.cold = 8.0, 4
    if args.phase < 3 or args.cold < 1 or args.zero_after < 1:
        parser.error("--phase must be >= 3, --cold >= 1, --zero-after >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    faasd = g.choose_faasd(args)
    if isinstance(faasd, str):
        print(faasd, file=sys.stderr)
        return 2
    meta = {"machine": h.machine_info(), "faasd": faasd.label, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    h.become_subreaper()
    previous = signal.signal(signal.SIGTERM, g._sigterm)
    out = Results()
    daemon: h.Running | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="faasd-bench-as-") as tmp:
            password = secrets.token_hex(12)
            daemon = h.start(faasd.daemon(Path(tmp), password), ready_timeout=args.ready_timeout)
            api = gd.Api(daemon.target.port, password)
            api.deploy(
                FUNCTION,
                {
                    "com.openfaas.scale.type": "rps",
                    "com.openfaas.scale.max": "10",
                    "com.openfaas.scale.zero": "true",
                    "com.openfaas.scale.zero-duration": f"{args.zero_after:g}s",
                },
            )
            pinned = str(PINNED_REPLICAS)
            api.deploy(PINNED_FUNCTION, {"com.openfaas.scale.min": pinned, "com.openfaas.scale.max": pinned})
            gd.first_200(api, FUNCTION, 20.0, {})
            gd.poll("the pinned replicas", lambda: api.available(PINNED_FUNCTION) == PINNED_REPLICAS, 30.0, 0.05)
            try:
                step_block(api, daemon.target.port, args, out)
                pinned_block(api, daemon.target.port, args, out)
                cold_block(api, faasd, args, Path(tmp), out)
            except h.BenchError as exc:
                out.errors.append(g._with_log(str(exc), Path(tmp) / "daemon.log"))
            finally:
                h.stop_leader_first(daemon.proc, grace=g.STOP_GRACE_S)
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):
            meta["final_leftovers"] = g.kill_stray_watchdogs()
    print(report(out, args, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": asdict(out)}, indent=2, default=str) + "\n")
    return 1 if out.errors else 0


if __name__ == "__main__":
    sys.exit(main())
