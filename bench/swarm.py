"""Swarm backend benchmark: cold starts, scaling, and the gateway's cost on a real single-node swarm.

Run ``python3 bench/swarm.py`` (needs dockerd as a swarm manager: ``sh scripts/docker_env.sh setup``, and wrk).
It starts ``faasd up --provider swarm`` from ``dist/faasd.pyz`` on a free 127.0.0.1 port with a fresh state dir,
makes the base image (``faasd build-base``, cached by the zipapp's digest), and measures, in one run:

1. **cold start, deploy -> first 200**: ``POST /system/functions`` (the base image, ``fprocess=cat``), then one call
   to ``/function/NAME``, which the gateway holds until a replica is ready; ``--runs`` times, a new function each;
2. **cold start, 0 -> 1 -> first 200**: a function scaled to zero (its container gone), then
   ``POST /system/scale-function`` to 1 and one call; and the same with the call alone (the gateway wakes the
   function from zero itself);
3. **scale 1 -> 3**: time until ``availableReplicas`` is 3 (and every new replica has answered a call), then back
   to 1, with 4 client threads calling through the gateway throughout: every failed call is counted;
4. **throughput**: wrk (``--duration`` s at c16, 100-byte POST, keep-alive) through the gateway, and straight to
   the function's only replica on its host-mode port, rounds interleaved.

All traffic goes to 127.0.0.1 (the gateway, and replicas' published ports). Everything it creates -- services
named ``bench-*`` -- is removed at the end, and it waits until their containers are gone. Targets (from the
issue): cold start p50 <= 1.5 s and p99 <= 3 s with the image present; zero failed requests while scaling.
Stdlib only (plus ``bench/_harness.py``); Docker is read through its API on the unix socket.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import math
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # the bench directory is not a package: imported by path, stdlib only

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FAASD = REPO / "dist" / "faasd.pyz"
DOCKER_SOCKET = "/var/run/docker.sock"
IMAGE = "faasd/watchdog:latest"
BODY = b"0123456789" * 10
PINNED = {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"}
"""Autoscaling off (min == max): the benchmark sets replica counts itself."""
PREFIX = "bench-"
CALL_TOKEN_HEADER = "X-Faasd-Call-Token"
CALL_TOKEN_CONFIG = "faasd-call-token"
"""Replicas answer only calls carrying the call token; on Swarm every daemon uses the swarm's, kept in this
Docker config (faasd/providers/swarm/spec.py)."""
READY_TIMEOUT_S = 60.0
GONE_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------- docker API


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Docker:
    """The few Docker Engine API reads the benchmark needs, over the unix socket (stdlib only)."""

    def __init__(self, path: str = DOCKER_SOCKET) -> None:
        self.path = path

    def get(self, path: str, **query: object) -> object:
        return self._request("GET", path, query)

    def delete(self, path: str) -> None:
        self._request("DELETE", path, {})

    def _request(self, method: str, path: str, query: dict[str, object]) -> object:
        connection = _UnixConnection(self.path, timeout=30)
        try:
            params = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in query.items()}
            connection.request(method, path + ("?" + urllib.parse.urlencode(params) if params else ""))
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            raise h.BenchError(f"dockerd unreachable at {self.path}: {exc}") from exc
        finally:
            connection.close()
        if response.status == 404 and method == "DELETE":
            return None
        if response.status >= 400:
            raise h.BenchError(f"docker {method} {path}: {response.status} {data[:200]!r}")
        return json.loads(data) if data else None

    def swarm_ready(self) -> bool:
        info = self.get("/info")
        swarm = info.get("Swarm", {}) if isinstance(info, dict) else {}
        return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))

    def tasks(self, service: str) -> list[dict]:
        tasks = self.get("/tasks", filters={"service": [service], "desired-state": ["running"]})
        return tasks if isinstance(tasks, list) else []

    def running_containers(self, service: str) -> list[dict]:
        found = self.get("/containers/json", filters={"label": [f"com.docker.swarm.service.name={service}"]})
        return found if isinstance(found, list) else []

    def published_port(self, container_id: str) -> int | None:
        container = self.get(f"/containers/{container_id}/json")
        ports = ((container or {}).get("NetworkSettings") or {}).get("Ports") or {}  # type: ignore[union-attr]
        for binding in ports.get("8080/tcp") or []:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        return None

    def call_token(self) -> tuple[tuple[str, str], ...]:
        """The call token header for a call that does not come through the gateway (the swarm's token)."""
        configs = self.get("/configs", filters={"name": [CALL_TOKEN_CONFIG]})
        for config in configs if isinstance(configs, list) else []:
            if config.get("Spec", {}).get("Name") == CALL_TOKEN_CONFIG:
                return ((CALL_TOKEN_HEADER, base64.b64decode(config["Spec"]["Data"]).decode().strip()),)
        raise h.BenchError(f"no Docker config {CALL_TOKEN_CONFIG}: the daemon has not made its call token")

    def services(self) -> list[dict]:
        found = self.get("/services")
        return found if isinstance(found, list) else []


# --------------------------------------------------------------------------------------------- the daemon


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    port: int
    password: str
    log_path: Path

    def request(
        self, method: str, path: str, body: bytes | dict | None = None, *, auth: bool = True, timeout: float = 90
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(h.LOCALHOST, self.port, timeout=timeout)
        headers = {}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"admin:{self.password}".encode()).decode()
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def deploy(
        self, name: str, fprocess: str = "cat", labels: dict[str, str] | None = None, constraints: tuple[str, ...] = ()
    ) -> None:
        document = {"service": name, "image": IMAGE, "envProcess": fprocess, "labels": labels or {}}
        if constraints:
            document["constraints"] = list(constraints)
        status, text = self.request("POST", "/system/functions", document)
        if status != 202:
            raise h.BenchError(f"deploy {name}: {status} {text[:200]!r}")

    def scale(self, name: str, replicas: int) -> None:
        status, text = self.request(
            "POST", f"/system/scale-function/{name}", {"serviceName": name, "replicas": replicas}
        )
        if status != 202:
            raise h.BenchError(f"scale {name} to {replicas}: {status} {text[:200]!r}")

    def remove(self, name: str) -> None:
        self.request("DELETE", "/system/functions", {"functionName": name})

    def available(self, name: str) -> int:
        status, text = self.request("GET", f"/system/function/{name}")
        return int(json.loads(text).get("availableReplicas", 0)) if status == 200 else -1

    def invoke(self, name: str, body: bytes = BODY) -> tuple[int, bytes]:
        return self.request("POST", f"/function/{name}", body, auth=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_daemon(python: str, pyz: Path, workdir: Path, engines: str = "") -> Daemon:
    """``faasd up --provider swarm``; ``engines``: its ``swarm_engines`` (the other nodes' Docker engines)."""
    port = h.free_port()
    password = secrets.token_hex(12)
    log_path = workdir / "daemon.log"
    env = h.clean_env(HOME=str(workdir), FAASD_PASSWORD=password, FAASD_LOG_LEVEL="warning")
    if engines:
        env["FAASD_SWARM_ENGINES"] = engines
    argv = [python, str(pyz), "up", "--provider", "swarm", "--port", str(port), "--state-dir", str(workdir / "state")]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    daemon = Daemon(proc, port, password, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise h.BenchError(f"faasd up exited with {proc.returncode}:\n{h.log_tail(log_path, 20)}")
        with contextlib.suppress(OSError):
            if daemon.request("GET", "/healthz", auth=False, timeout=2)[0] == 200:
                return daemon
        time.sleep(0.05)
    daemon.stop()
    raise h.BenchError(f"faasd up not healthy within 30 s:\n{h.log_tail(log_path, 20)}")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise h.BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------- measurements


@dataclass
class Report:
    deploy_to_200_s: list[float] = field(default_factory=list)
    deploy_api_s: list[float] = field(default_factory=list)
    scale_to_200_s: list[float] = field(default_factory=list)
    wake_to_200_s: list[float] = field(default_factory=list)
    scale_up_s: list[float] = field(default_factory=list)
    scale_down_s: list[float] = field(default_factory=list)
    scaling_calls: int = 0
    scaling_failures: list[str] = field(default_factory=list)
    throughput: dict[str, list[dict[str, object]]] = field(default_factory=lambda: {"gateway": [], "direct": []})
    errors: list[str] = field(default_factory=list)


def cold_deploys(daemon: Daemon, runs: int, report: Report, created: set[str]) -> None:
    for run in range(runs):
        name = f"{PREFIX}cold-{run}"
        created.add(name)
        started = time.perf_counter()
        daemon.deploy(name, labels=PINNED)
        report.deploy_api_s.append(time.perf_counter() - started)
        status, body = daemon.invoke(name)  # Held by the gateway until a replica is ready.
        elapsed = time.perf_counter() - started
        if status != 200 or body != BODY:
            report.errors.append(f"{name}: first call {status} {body[:100]!r}")
            continue
        report.deploy_to_200_s.append(elapsed)
        daemon.remove(name)  # Its container stops in the background while the next run goes on.


def to_zero(daemon: Daemon, docker: Docker, name: str) -> None:
    daemon.scale(name, 0)
    wait_until(lambda: daemon.available(name) == 0, GONE_TIMEOUT_S, f"{name} to have no replica")
    wait_until(lambda: not docker.running_containers(name), GONE_TIMEOUT_S, f"{name}'s container to stop", 0.1)


def cold_scales(daemon: Daemon, docker: Docker, runs: int, report: Report, created: set[str]) -> None:
    name = f"{PREFIX}zero"
    created.add(name)
    daemon.deploy(name, labels=PINNED)
    if daemon.invoke(name)[0] != 200:
        raise h.BenchError(f"{name} does not answer")
    for run in range(2 * runs):
        to_zero(daemon, docker, name)
        by_api = run % 2 == 0
        started = time.perf_counter()
        if by_api:
            daemon.scale(name, 1)
        status, body = daemon.invoke(name)
        elapsed = time.perf_counter() - started
        if status != 200:
            report.errors.append(f"{name} {'scale' if by_api else 'wake'} run {run}: {status} {body[:100]!r}")
            continue
        (report.scale_to_200_s if by_api else report.wake_to_200_s).append(elapsed)


class Traffic:
    """Client threads calling a function through the gateway, one call at a time each; failures counted."""

    def __init__(self, daemon: Daemon, name: str, threads: int = 4) -> None:
        self.daemon, self.name = daemon, name
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.calls = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = self.daemon.invoke(self.name)
                failure = None if status == 200 else f"{status} {body[:120]!r}"
            except (OSError, http.client.HTTPException) as exc:  # Every failed call counts; none kills the thread.
                status, body, failure = 0, b"", repr(exc)
            with self._lock:
                self.calls += 1
                if failure:
                    self.failures.append(failure)
                else:
                    self.answers[body.decode(errors="replace").strip()] += 1

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def scaling(daemon: Daemon, docker: Docker, rounds: int, report: Report, created: set[str]) -> None:
    name = f"{PREFIX}scale"
    created.add(name)
    daemon.deploy(name, fprocess="hostname", labels=PINNED)
    if daemon.invoke(name)[0] != 200:
        raise h.BenchError(f"{name} does not answer")
    with Traffic(daemon, name) as traffic:
        for _ in range(rounds):
            before = Counter(traffic.answers)
            started = time.perf_counter()
            daemon.scale(name, 3)
            wait_until(lambda: daemon.available(name) == 3, READY_TIMEOUT_S, f"{name} at 3 replicas", 0.01)
            report.scale_up_s.append(time.perf_counter() - started)
            wait_until(
                lambda before=before: sum(1 for k, v in traffic.answers.items() if v > before[k]) >= 3,
                READY_TIMEOUT_S,
                "calls on all 3 replicas",
            )
            started = time.perf_counter()
            daemon.scale(name, 1)
            wait_until(lambda: daemon.available(name) == 1, READY_TIMEOUT_S, f"{name} back at 1 replica", 0.01)
            report.scale_down_s.append(time.perf_counter() - started)
            # Keep calling while the two stopped replicas' containers go (≈ 3.3 s): no call may fail then either.
            wait_until(lambda: len(docker.running_containers(name)) == 1, GONE_TIMEOUT_S, "containers to stop", 0.1)
    report.scaling_calls = traffic.calls
    report.scaling_failures = traffic.failures


def throughput(daemon: Daemon, docker: Docker, args: argparse.Namespace, report: Report, created: set[str]) -> None:
    wrk = h.find_wrk()
    if wrk is None:
        report.errors.append("wrk not found: throughput skipped (apt-get install wrk)")
        return
    name = f"{PREFIX}tp"
    created.add(name)
    daemon.deploy(name, labels=PINNED)
    if daemon.invoke(name)[0] != 200:
        raise h.BenchError(f"{name} does not answer")
    (task,) = docker.tasks(name)
    port = docker.published_port(task["Status"]["ContainerStatus"]["ContainerID"])
    if port is None:
        raise h.BenchError(f"{name}: no published port")
    with tempfile.TemporaryDirectory() as tmp:
        # wrk's script sets the request path (it overrides the URL's): one script per target.
        targets = {
            "gateway": (
                f"http://{h.LOCALHOST}:{daemon.port}",
                h.Load(method="POST", path=f"/function/{name}", body=BODY).write_script(Path(tmp), "gateway.lua"),
            ),
            "direct": (  # With the call token, as the gateway sends it: a replica refuses a call without it.
                f"http://{h.LOCALHOST}:{port}",
                h.Load(method="POST", path="/", body=BODY, headers=docker.call_token()).write_script(
                    Path(tmp), "direct.lua"
                ),
            ),
        }
        level = h.Level(2, 16)
        warm_url, warm_script = targets["gateway"]
        h.run_wrk(wrk, warm_url, level, 1, warm_script)  # warm-up, discarded
        for round_number in range(args.rounds):
            order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
            for label in order:
                url, script = targets[label]
                result, _raw = h.run_wrk(wrk, url, level, args.duration, script)
                report.throughput[label].append(result.as_dict())
                if result.errors:
                    report.errors.append(f"{label}: {result.errors} failed calls; {_failures_logged(daemon)}")


def _failures_logged(daemon: Daemon) -> str:
    """The distinct reasons of the last failed calls, from the daemon's log (it logs each at warning level)."""
    reasons = Counter()
    for line in daemon.log_path.read_text(errors="replace").splitlines()[-2000:]:
        if 'event="invoke failed"' in line:
            status = line.split(" status=", 1)[-1].split(" ", 1)[0]
            reason = line.split(" error=", 1)[-1].split(" call_id=", 1)[0][:160]
            reasons[f"{status} {reason}"] += 1
    return "; ".join(f"{count}x {reason}" for reason, count in reasons.most_common(3)) or "nothing in the daemon log"


def cleanup(daemon: Daemon | None, docker: Docker, created: set[str]) -> list[str]:
    """Remove every benchmark service and wait until its containers are gone; what was left, if anything."""
    for service in docker.services():
        spec_name = service.get("Spec", {}).get("Name", "")
        if spec_name in created or (spec_name.startswith(PREFIX) and daemon is None):
            docker.delete(f"/services/{service['ID']}")
    left: list[str] = []

    def gone() -> bool:
        left[:] = [name for name in created if docker.running_containers(name)]
        return not left

    with contextlib.suppress(h.BenchError):
        wait_until(gone, GONE_TIMEOUT_S, "benchmark containers to stop", 0.2)
    return left


# --------------------------------------------------------------------------------------------- report


def failure(exc: BaseException, daemon: Daemon | None) -> list[str]:
    """What a benchmark that stopped on ``exc`` reports: the error, and the daemon's last log lines."""
    lines = [str(exc)]
    if daemon is not None:
        lines.append("daemon log tail:\n" + h.log_tail(daemon.log_path, 15))
    return lines


def finish(report: object, code: int, json_path: Path | None) -> int:
    """Write every number to ``json_path`` (``--json``), if given; the exit status ``code``."""
    if json_path:
        json_path.write_text(json.dumps(report.__dict__, indent=2, default=str))
    return code


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def row(label: str, values: list[float], target: str = "") -> str:
    if not values:
        return f"  {label:<34} (no successful run)"
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return f"  {label:<34} n={len(values):<3} p50 {p50:6.3f} s  p99 {p99:6.3f} s  max {max(values):6.3f} s  {target}"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_report(report: Report) -> int:
    print("\nCold start (image present)")
    cold = report.deploy_to_200_s
    ok_cold = bool(cold) and percentile(cold, 50) <= 1.5 and percentile(cold, 99) <= 3.0
    print(row("deploy -> first 200", cold, f"[target p50 <= 1.5 s, p99 <= 3 s: {verdict(ok_cold)}]"))
    print(row("  (deploy API call alone)", report.deploy_api_s))
    scaled = report.scale_to_200_s
    ok_scale = bool(scaled) and percentile(scaled, 50) <= 1.5 and percentile(scaled, 99) <= 3.0
    print(row("scale 0 -> 1 -> first 200", scaled, f"[target p50 <= 1.5 s, p99 <= 3 s: {verdict(ok_scale)}]"))
    print(row("call at 0 (gateway wakes) -> 200", report.wake_to_200_s))
    print("\nScaling under traffic (4 client threads through the gateway)")
    print(row("1 -> 3, all available", report.scale_up_s))
    print(row("3 -> 1, available == 1", report.scale_down_s))
    failures = len(report.scaling_failures)
    print(f"  calls during scaling: {report.scaling_calls}, failed: {failures}  [target 0: {verdict(failures == 0)}]")
    for failure in report.scaling_failures[:5]:
        print(f"    {failure}")
    if report.throughput["gateway"] and report.throughput["direct"]:
        print("\nThroughput, c16, 100-byte POST, one replica (medians over rounds)")
        medians = {}
        for label, results in report.throughput.items():
            rps = statistics.median(float(r["rps"]) for r in results)  # type: ignore[arg-type]
            p50 = statistics.median(float(r["p50_ms"] or math.nan) for r in results)  # type: ignore[arg-type]
            p99 = statistics.median(float(r["p99_ms"] or math.nan) for r in results)  # type: ignore[arg-type]
            errors = sum(int(r["errors"]) for r in results)  # type: ignore[call-overload]
            medians[label] = rps
            print(f"  {label:<8} {rps:9.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}")
        print(f"  gateway / direct: {medians['gateway'] / medians['direct']:.2f}")
    for error in report.errors:
        print(f"  error: {error}")
    return 0 if ok_cold and ok_scale and failures == 0 and not report.errors else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faasd", type=Path, default=DEFAULT_FAASD, help="zipapp to run (default dist/faasd.pyz)")
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter for faasd (default /usr/bin/python3)")
    parser.add_argument("--runs", type=int, default=8, help="cold starts of each kind (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="scaling and throughput rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--quick", action="store_true", help="--runs 4 --rounds 1 --duration 2")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.rounds, args.duration = 4, 1, 2
    if not args.faasd.exists():
        print(f"{args.faasd} missing: run python3 scripts/build_zipapp.py", file=sys.stderr)
        return 2
    docker = Docker()
    try:
        if not docker.swarm_ready():
            print("dockerd is not a swarm manager: run sh scripts/docker_env.sh setup", file=sys.stderr)
            return 2
    except h.BenchError as exc:
        print(f"{exc}; run sh scripts/docker_env.sh setup", file=sys.stderr)
        return 2
    built = subprocess.run([args.python, str(args.faasd), "build-base"], capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        print(f"faasd build-base failed:\n{built.stderr}", file=sys.stderr)
        return 2
    print(f"base image {IMAGE} = {built.stdout.strip()[:19]}; faasd {args.faasd}")
    report = Report()
    created: set[str] = set()
    daemon: Daemon | None = None
    with tempfile.TemporaryDirectory(prefix="faasd-bench-swarm-") as tmp:
        try:
            daemon = start_daemon(args.python, args.faasd, Path(tmp))
            print("cold starts: deploy -> first 200 ...", flush=True)
            cold_deploys(daemon, args.runs, report, created)
            print("cold starts: 0 -> 1 ...", flush=True)
            cold_scales(daemon, docker, args.runs, report, created)
            print("scaling 1 -> 3 -> 1 under traffic ...", flush=True)
            scaling(daemon, docker, args.rounds, report, created)
            print("throughput: gateway vs direct ...", flush=True)
            throughput(daemon, docker, args, report, created)
        except h.BenchError as exc:
            report.errors.extend(failure(exc, daemon))
        except KeyboardInterrupt:
            report.errors.append("interrupted")
        finally:
            left = cleanup(daemon, docker, created)
            if left:
                report.errors.append(f"containers still running after cleanup: {left}")
            if daemon is not None:
                daemon.stop()
    return finish(report, print_report(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
