"""Async invocation benchmark: durable accept at ``/async-function`` vs the sync ``/function``, same run.

Run ``python3 bench/async.py`` (see bench/README.md). One ``faasd up`` on the local backend runs one function,
``echo``: python mode, ``def handle(req): return req``, pinned at one replica (``scale.min = max = 1``, so both
sides of every comparison use the same replica). Two blocks:

1. **accept** (closed loop, wrk ``-t2 -c16``, ``--rounds`` interleaved rounds of ``--duration`` s, the order
   rotating each round): ``POST /function/echo`` (the sync baseline: each answer is the function's) and
   ``POST /async-function/echo`` (each answer is a 202 sent once the call is committed to ``queue.db`` with
   ``synchronous=FULL``). After each async run the benchmark waits for the queue to drain (the workers run
   during the load too: that is what the machine really does) and checks that every call the daemon counted
   as accepted was run: ``faasd_async_calls_total{outcome="done"}`` must catch up with ``outcome="accepted"``.
   Per-round ratio async accept / sync req/s; the target (issue 12) is >= 0.5.
2. **steady** (open loop, ``--rate`` calls/s for ``--steady`` s, latencies counted from each call's due
   time; the default rate is a quarter of the queue's end-to-end throughput measured in block 1, which had no
   callbacks -- a callback about doubles a worker's time per call, so this is a rate the queue sustains on
   this machine; near its capacity the backlog, and so the latency, only grows): sync calls, then
   async calls with an ``X-Callback-Url`` to a receiver in this process on 127.0.0.1; the end-to-end
   latency is due time -> the callback's arrival. Reported with the 202's own latency and the sync
   latency at the same rate.

All traffic goes to 127.0.0.1; every load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import re
import secrets
import signal
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gateway_daemon as gd  # how faasd runs (Faasd), the management API (Api), helpers
import _harness as h  # the bench directory is not a package: imported by path, stdlib only
import autoscale as a  # its open-loop load (OpenLoad) for the sync side of the steady block
import gateway as g  # which faasd to run (choose_faasd), its defaults, stopping stray watchdogs
from _gateway_report import DISTURBED_PCT

FUNCTION = "echo"
HANDLER = b"def handle(req):\n    return req\n"
LEVEL = h.Level(2, 16)
WARMUP_S = 1
DRAIN_TIMEOUT_S = 120.0
CALLBACK_TIMEOUT_S = 60.0
TARGET_ACCEPT_RATIO = 0.5
STEADY_SHARE = 0.25
TARGETS_TEXT = f"target: durable async accept >= {TARGET_ACCEPT_RATIO:g}x the sync /function req/s (c16, same run)"
DAEMON_ENV = {
    # Room for every call a run accepts: the defaults (1000 per function) would turn the load into 429s.
    "FAASD_ASYNC_QUEUE_SIZE": "1000000",
    "FAASD_ASYNC_QUEUE_TOTAL": "1000000",
    "FAASD_ASYNC_MAX_STORED_SIZE": "2g",
}
SYNC = h.Load("POST", f"/function/{FUNCTION}", gd.BODY, "text/plain")
ASYNC = h.Load("POST", f"/async-function/{FUNCTION}", gd.BODY, "text/plain")


# --------------------------------------------------------------------------------------------- the daemon


def deploy_echo(api: gd.Api) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("handler.py")
        info.size, info.mode = len(HANDLER), 0o644
        tar.addfile(info, io.BytesIO(HANDLER))
    document = {
        "service": FUNCTION,
        "envProcess": "",
        "envVars": {"mode": "python", "handler": "handler.py"},
        "handlerArchive": base64.b64encode(raw.getvalue()).decode(),
        "labels": g.PINNED,
    }
    api.expect("POST", "/system/functions", document)


def async_counts(api: gd.Api) -> dict[str, float]:
    """``faasd_async_calls_total`` of ``echo`` by outcome, and the queue depth, from ``GET /metrics``."""
    status, body = api.call("GET", "/metrics", timeout=10.0)
    if status != 200:
        raise h.BenchError(f"GET /metrics: HTTP {status}")
    counts: dict[str, float] = {}
    for line in body.decode().splitlines():
        if m := re.match(rf'faasd_async_calls_total{{function_name="{FUNCTION}",outcome="(\w+)"}} (\S+)', line):
            counts[m.group(1)] = float(m.group(2))
        elif m := re.match(rf'faasd_async_queue_depth{{function_name="{FUNCTION}"}} (\S+)', line):
            counts["depth"] = float(m.group(1))
    return counts


# --------------------------------------------------------------------------------------------- accept block


@dataclass
class AcceptRun:
    kind: str
    wrk: dict[str, object] = field(default_factory=dict)
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    others_pct: float | None = None
    accepted: int = 0
    """Async: calls the daemon counted as accepted during the run."""
    done: int = 0
    """Async: of them, run by the time the queue was empty."""
    drain_s: float | None = None
    """Async: end of the load -> queue empty."""
    queue_rps: float | None = None
    """Async: accepted / (load + drain time): the queue's end-to-end throughput."""
    daemon_cpu_ms: float | None = None
    """CPU of the daemon process alone (not its replicas) per call: for async, over the load and the drain,
    so accepting, storing, invoking and deleting each call."""


def accept_run(
    kind: str, wrk: str, api: gd.Api, daemon_pid: int, port: int, scripts: dict[str, Path], duration: int
) -> AcceptRun:
    url = f"http://{h.LOCALHOST}:{port}"
    run = AcceptRun(kind)
    h.run_wrk(wrk, url, LEVEL, WARMUP_S, scripts[kind])  # warm-up, discarded
    if kind == "async":
        drain(api)
    before = async_counts(api)
    meter = h.OthersMeter()
    meter.start()
    cpu_before = h.process_cpu_seconds(daemon_pid)
    started = time.perf_counter()
    result, raw = h.run_wrk(wrk, url, LEVEL, duration, scripts[kind])
    loaded = time.perf_counter()
    run.others_pct = meter.stop()
    run.wrk = {**result.as_dict(), "raw": raw}
    run.rps, run.p50_ms, run.p99_ms, run.errors = result.rps, result.p50_ms, result.p99_ms, result.errors
    if kind == "async":
        run.drain_s = drain(api)
        after = async_counts(api)
        run.accepted = round(after.get("accepted", 0) - before.get("accepted", 0))
        run.done = round(after.get("done", 0) - before.get("done", 0))
        run.queue_rps = run.accepted / (loaded - started + run.drain_s) if run.accepted else None
    cpu_after = h.process_cpu_seconds(daemon_pid)
    calls = run.accepted if kind == "async" else result.requests
    if cpu_before is not None and cpu_after is not None and calls:
        run.daemon_cpu_ms = (cpu_after - cpu_before) * 1000.0 / calls
    return run


def drain(api: gd.Api) -> float:
    """Wait until the async queue of ``echo`` is empty; seconds it took. Bounded by DRAIN_TIMEOUT_S."""
    return gd.poll("the async queue to drain", lambda: async_counts(api).get("depth", 0) == 0, DRAIN_TIMEOUT_S, 0.05)


# --------------------------------------------------------------------------------------------- steady block


class Receiver:
    """The callback receiver: a stdlib HTTP server on 127.0.0.1 noting when each call id's callback arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.statuses: dict[str, str] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                now = time.perf_counter()
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    call_id = self.headers.get("X-Call-Id", "")
                    receiver.arrived.setdefault(call_id, now)
                    receiver.statuses[call_id] = self.headers.get("X-Function-Status", "")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer((h.LOCALHOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{h.LOCALHOST}:{self.server.server_address[1]}/done"
        self._thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)
        self._thread.start()

    def count(self, call_ids: set[str]) -> int:
        with self._lock:
            return len(call_ids & self.arrived.keys())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10.0)


class AsyncOpenLoad:
    """``POST /async-function/echo`` on a fixed schedule (as :class:`autoscale.OpenLoad`), each with its own
    ``X-Call-Id`` and the receiver's ``X-Callback-Url``; notes each call's due time and its 202's latency."""

    def __init__(self, port: int, callback_url: str, *, workers: int = 64, timeout: float = 30.0) -> None:
        self.port, self.callback_url, self.workers, self.timeout = port, callback_url, workers, timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self.due: dict[str, float] = {}
        """Call id -> perf_counter() when it was due."""
        self.accept_ms: list[float] = []
        self.refused: dict[str, int] = {}

    def _call(self, t0: float, due: float, call_id: str) -> None:
        status = 0
        headers = {"Content-Type": "text/plain", "X-Call-Id": call_id, "X-Callback-Url": self.callback_url}
        for attempt in range(2):  # a keep-alive connection the server closed is retried once on a new one
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(h.LOCALHOST, self.port, timeout=self.timeout)
            try:
                conn.request("POST", f"/async-function/{FUNCTION}", gd.BODY, headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    status = 0
        latency = (time.perf_counter() - (t0 + due)) * 1000.0
        with self._lock:
            if status == 202:
                self.due[call_id] = t0 + due
                self.accept_ms.append(latency)
            else:
                key = f"HTTP {status}" if status else "no answer"
                self.refused[key] = self.refused.get(key, 0) + 1

    def run(self, rate: float, seconds: float, t0: float) -> None:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="async-load") as pool:
            futures = []
            for i in range(int(rate * seconds)):
                due = i / rate
                delay = t0 + due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self._call, t0, due, f"steady-{i}"))
        for future in futures:
            future.result()


@dataclass
class Steady:
    rate: float
    seconds: float
    sync_ms: list[float] = field(default_factory=list)
    sync_failed: int = 0
    accept_ms: list[float] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    async_failed: dict[str, int] = field(default_factory=dict)
    """Calls not answered 202, or whose callback did not arrive (or did not say 200)."""


def steady_block(api: gd.Api, port: int, args: argparse.Namespace) -> Steady:
    out = Steady(args.rate, args.steady)
    sync = a.OpenLoad(port, FUNCTION, workers=64)
    sync.run([(args.rate, args.steady)], time.perf_counter() + 0.2)
    out.sync_ms = [call.latency_ms for call in sync.calls if call.status == 200]
    out.sync_failed = sum(1 for call in sync.calls if call.status != 200)
    receiver = Receiver()
    try:
        load = AsyncOpenLoad(port, receiver.url)
        load.run(args.rate, args.steady, time.perf_counter() + 0.2)
        ids = set(load.due)
        with contextlib.suppress(h.BenchError):
            gd.poll("every callback", lambda: receiver.count(ids) == len(ids), CALLBACK_TIMEOUT_S, 0.05)
        out.accept_ms = load.accept_ms
        out.async_failed = dict(load.refused)
        for call_id, due in load.due.items():
            arrived = receiver.arrived.get(call_id)
            if arrived is None:
                out.async_failed["no callback"] = out.async_failed.get("no callback", 0) + 1
            elif receiver.statuses.get(call_id) != "200":
                key = f"callback with X-Function-Status {receiver.statuses.get(call_id)}"
                out.async_failed[key] = out.async_failed.get(key, 0) + 1
            else:
                out.end_to_end_ms.append((arrived - due) * 1000.0)
    finally:
        receiver.close()
    return out


# --------------------------------------------------------------------------------------------- report


@dataclass
class Results:
    runs: list[list[AcceptRun]] = field(default_factory=list)
    steady: Steady | None = None
    errors: list[str] = field(default_factory=list)


def series(out: Results, kind: str, attr: str) -> list[float | None]:
    return [next((getattr(r, attr) for r in runs if r.kind == kind), None) for runs in out.runs]


def report(out: Results, args: argparse.Namespace, meta: dict) -> str:
    lines = [
        f"faasd async benchmark -- {meta['faasd']}",
        f"machine: {meta['machine']}",
        f"function: python mode echo, 1 replica pinned; 100-byte POST; {args.rounds} rounds x {args.duration} s "
        f"at {LEVEL.label} (wrk -t{LEVEL.threads} -c{LEVEL.connections}), order rotating",
        "",
        "1. accepted req/s: durable async accept vs sync invoke",
    ]
    rows = []
    for kind, label in (
        ("sync", "sync   POST /function/echo (200)"),
        ("async", "async  POST /async-function/echo (202)"),
    ):
        rows.append(
            [
                label,
                h.fmt_range(series(out, kind, "rps")),
                h.fmt_ms(h.median(series(out, kind, "p50_ms"))),
                h.fmt_ms(h.median(series(out, kind, "p99_ms"))),
                str(sum(int(e or 0) for e in series(out, kind, "errors"))),
                h.fmt_ms(h.median(series(out, kind, "daemon_cpu_ms"))),
                h.fmt_range(series(out, kind, "others_pct")),
            ]
        )
    headers = ["target", "req/s median [min-max]", "p50 ms", "p99 ms", "errors", "daemon CPU ms/call", "others %CPU"]
    lines.append(h.render_table(headers, rows, right=range(1, 7)))
    accepted = sum(int(v or 0) for v in series(out, "async", "accepted"))
    done = sum(int(v or 0) for v in series(out, "async", "done"))
    drained = h.fmt_range(series(out, "async", "drain_s"), fmt_s)
    lines.append(
        f"async calls accepted {accepted:,}, run by the time the queue was empty {done:,} "
        f"(lost: {max(0, accepted - done)}); drain after the load {drained} s; "
        f"queue end-to-end throughput {h.fmt_range(series(out, 'async', 'queue_rps'))} calls/s"
    )
    ratios = h.paired_ratios(series(out, "async", "rps"), series(out, "sync", "rps"))
    lines.append(f"ratio async accept / sync req/s, per round: {h.fmt_ratio(ratios)}")
    steady = out.steady
    if steady is not None:
        lines += ["", f"2. steady open loop: {steady.rate:g} calls/s for {steady.seconds:g} s, latency from due time"]
        calls = int(steady.rate * steady.seconds)
        srows = [
            ["sync   call -> 200", steady.sync_ms, str(steady.sync_failed)],
            ["async  call -> 202 (stored)", steady.accept_ms, "-"],
            ["async  call -> callback (end to end)", steady.end_to_end_ms, str(sum(steady.async_failed.values()))],
        ]
        rows = [
            [
                label,
                f"{len(values)}/{calls}",
                h.fmt_ms(h.percentile(values, 50)),
                h.fmt_ms(h.percentile(values, 99)),
                fail,
            ]
            for label, values, fail in srows
        ]
        lines.append(h.render_table(["path", "calls", "p50 ms", "p99 ms", "failed"], rows, right=range(1, 5)))
        if steady.async_failed:
            lines.append(f"async failures: {steady.async_failed}")
        e2e, sync = h.percentile(steady.end_to_end_ms, 50), h.percentile(steady.sync_ms, 50)
        lines.append(
            f"end-to-end p50 - sync p50: {h.fmt_delta([e2e - sync]) if e2e is not None and sync is not None else '-'} "
            "(the queue's cost: a commit, a worker's turn, the callback's POST)"
        )
    met = h.median(ratios)
    lines += [
        "",
        TARGETS_TEXT,
        f"  ratio {h.fmt_ratio(ratios)} -- {verdict(None if met is None else met >= TARGET_ACCEPT_RATIO)}",
    ]
    others = [v for v in series(out, "sync", "others_pct") + series(out, "async", "others_pct") if v is not None]
    if others and max(others) > DISTURBED_PCT:
        lines.append(f"warning: other processes used up to {max(others):.0f}% of a core during a load: rerun")
    if out.errors:
        lines += ["", "errors:", *(f"  {e}" for e in out.errors)]
    return "\n".join(lines)


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Async invocations: durable accept vs sync invoke, and queue latency (see bench/README.md).",
        epilog=TARGETS_TEXT,
    )
    parser.add_argument("--faasd", type=Path, default=g.DEFAULT_FAASD, help="faasd zipapp (default: %(default)s)")
    parser.add_argument("--faasd-source", type=Path, nargs="?", const=g.REPO, help="run from this source tree")
    parser.add_argument("--python", default=sys.executable, help="interpreter for faasd")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the accept block (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument(
        "--rate",
        type=float,
        help="calls/s of the steady block (default: a quarter of the queue's throughput measured in block 1)",
    )
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of the steady block (default 10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round x 2 s, 4 s steady")
    parser.add_argument("--ready-timeout", type=float, default=15.0, help="seconds the daemon may take to answer")
    parser.add_argument("--json", type=Path, help="also write every figure (and wrk's output) to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.steady = 1, 2, 4.0
    if args.rounds < 1 or args.duration < 1 or not 0 < (args.rate or 1) <= 2000 or not 1 <= args.steady <= 600:
        parser.error("--rounds and --duration must be >= 1, --rate 0-2000, --steady 1-600")
    return args


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
    meta = {
        "machine": h.machine_info(),
        "faasd": faasd.label,
        "wrk": h.wrk_version(wrk),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    h.become_subreaper()
    previous = signal.signal(signal.SIGTERM, g._sigterm)
    out = Results()
    try:
        with tempfile.TemporaryDirectory(prefix="faasd-bench-async-") as tmp:
            password = secrets.token_hex(12)
            target = faasd.daemon(Path(tmp), password)
            target.env.update(DAEMON_ENV)
            daemon = h.start(target, ready_timeout=args.ready_timeout)
            try:
                api = gd.Api(target.port, password)
                deploy_echo(api)
                gd.first_200(api, FUNCTION, 30.0, {})
                scripts = {"sync": SYNC.write_script(Path(tmp), "sync.lua")}
                scripts["async"] = ASYNC.write_script(Path(tmp), "async.lua")
                for index in range(args.rounds):
                    order = ["sync", "async"] if index % 2 == 0 else ["async", "sync"]
                    out.runs.append(
                        [
                            accept_run(kind, wrk, api, daemon.proc.pid, target.port, scripts, args.duration)
                            for kind in order
                        ]
                    )
                if args.rate is None:  # a rate the queue sustains here: beyond it, latency only grows with time
                    measured = h.median(series(out, "async", "queue_rps"))
                    args.rate = max(1.0, round(measured * STEADY_SHARE)) if measured else 20.0
                out.steady = steady_block(api, target.port, args)
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
    accepted = sum(int(v or 0) for v in series(out, "async", "accepted"))
    done = sum(int(v or 0) for v in series(out, "async", "done"))
    if done < accepted:
        out.errors.append(f"{accepted - done} accepted async calls were not run by the time the queue was empty")
    print(report(out, args, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": asdict(out)}, indent=2, default=str) + "\n")
    return 1 if out.errors else 0


if __name__ == "__main__":
    sys.exit(main())
