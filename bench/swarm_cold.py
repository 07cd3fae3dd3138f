"""Swarm cold starts: what a pre-pulled image and a warm task would save.

Run ``python3 bench/swarm_cold.py`` (needs a two-node swarm: ``sh scripts/docker_env.sh setup --nodes 2``, which
``scripts/test`` also runs). It starts ``faasd up --provider swarm --swarm-engines unix:///run/faasd-node2.sock``
from ``dist/faasd.pyz`` on a free 127.0.0.1 port with a fresh state dir, makes node 2 active for the run (and
drained again at the end, as the setup leaves it), and measures, in one run:

1. **the image**: deploy -> first 200 of a new function placed on node 2 (``node.hostname == faasd-node2``), with
   the function's image already on node 2 ("pre-pulled") and, alternating, with it removed from node 2 first, so
   the deploy streams it there from the manager's engine (``docker save | docker load``, what ``swarm_engines``
   does on this machine without a registry; a pull from a registry would be another cost, not measured here);
2. **the task**: a function scaled 0 -> 1 by the scale API, on node 1, split at the moment its container started
   (the engine's ``start`` event): before it, Swarm's part (the service update, the task scheduled, the
   container created with its network and mounts) -- what a task already running would save; after it, the
   watchdog's start in the container, faasd seeing it ready, and the call. For scale: the same function's
   call while a replica already runs (a warm call).

All traffic goes to 127.0.0.1 (the gateway; the gateway reaches node 2's replicas on its veth address, inside
this machine). Everything it creates -- services named ``bench-cold-*`` -- is removed at the end. Stdlib only
(plus ``bench/_harness.py`` and ``bench/swarm.py``'s Docker and daemon helpers); the docker CLI only to set
node 2's availability.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # the bench directory is not a package: imported by path, stdlib only
import swarm as sw

NODE2_HOSTNAME = "faasd-node2"
NODE2_SOCKET = "/run/faasd-node2.sock"
PREFIX = "bench-cold-"
ON_NODE2 = (f"node.hostname == {NODE2_HOSTNAME}",)
ON_NODE1 = ("node.role == manager",)


@dataclass
class ColdReport:
    present_s: list[float] = field(default_factory=list)  # deploy -> first 200, image on node 2 already
    present_api_s: list[float] = field(default_factory=list)  # of it, the deploy API call
    absent_s: list[float] = field(default_factory=list)  # deploy -> first 200, image streamed to node 2
    absent_api_s: list[float] = field(default_factory=list)
    present_started_s: list[float] = field(default_factory=list)  # deploy -> its container started on node 2
    absent_started_s: list[float] = field(default_factory=list)
    image_mb: float = 0.0
    scale_s: list[float] = field(default_factory=list)  # scale POST -> first 200
    swarm_part_s: list[float] = field(default_factory=list)  # scale POST -> container started
    container_part_s: list[float] = field(default_factory=list)  # container started -> first 200
    warm_call_s: list[float] = field(default_factory=list)  # a call to a running replica
    errors: list[str] = field(default_factory=list)


def node_availability(availability: str) -> None:
    subprocess.run(
        ["docker", "node", "update", "--availability", availability, NODE2_HOSTNAME],
        check=True,
        capture_output=True,
        timeout=60,
    )


def container_started_ns(docker: sw.Docker, name: str, since_ns: int) -> int | None:
    """When the engine started ``name``'s container after ``since_ns`` (wall clock, ns), from its events."""
    until = time.time() + 0.001
    query = {
        "since": f"{since_ns / 1e9:.9f}",
        "until": f"{until:.9f}",
        "filters": json.dumps(
            {"type": ["container"], "event": ["start"], "label": [f"com.docker.swarm.service.name={name}"]}
        ),
    }
    connection = sw._UnixConnection(docker.path, timeout=30)
    try:
        connection.request("GET", "/events?" + urllib.parse.urlencode(query))
        data = connection.getresponse().read()
    finally:
        connection.close()
    times = [json.loads(line)["timeNano"] for line in data.splitlines() if line.strip()]
    return min(times) if times else None


def wait_no_containers(docker: sw.Docker, names: set[str]) -> None:
    sw.wait_until(
        lambda: not any(docker.running_containers(name) for name in names),
        sw.GONE_TIMEOUT_S,
        "the previous functions' containers to stop",
        0.1,
    )


def image_runs(daemon: sw.Daemon, node2: sw.Docker, image_id: str, runs: int, report: ColdReport, created: set) -> None:
    """Deploys placed on node 2, alternating: image there already / removed from node 2 first."""
    for run in range(2 * runs):
        present = run % 2 == 1
        wait_no_containers(node2, created)
        if not present:
            node2.delete(f"/images/{image_id}?force=1")
            if any(image.get("Id") == image_id for image in node2.get("/images/json") or []):  # type: ignore[union-attr]
                raise h.BenchError("the image is still on node 2 after its removal")
        name = f"{PREFIX}img-{run}"
        created.add(name)
        since_ns = time.time_ns()
        started = time.perf_counter()
        daemon.deploy(name, labels=sw.PINNED, constraints=ON_NODE2)
        api_s = time.perf_counter() - started
        status, body = daemon.invoke(name)  # Held by the gateway until the replica is ready.
        elapsed = time.perf_counter() - started
        if status != 200 or body != sw.BODY:
            report.errors.append(f"{name}: first call {status} {body[:100]!r}")
        else:
            (report.present_s if present else report.absent_s).append(elapsed)
            (report.present_api_s if present else report.absent_api_s).append(api_s)
            started_ns = container_started_ns(node2, name, since_ns)
            if started_ns is not None:
                (report.present_started_s if present else report.absent_started_s).append((started_ns - since_ns) / 1e9)
        daemon.remove(name)


def task_runs(daemon: sw.Daemon, docker: sw.Docker, runs: int, report: ColdReport, created: set) -> None:
    """Scale 0 -> 1 by the API on node 1, split at the container's start; then warm calls for scale."""
    name = f"{PREFIX}zero"
    created.add(name)
    daemon.deploy(name, labels=sw.PINNED, constraints=ON_NODE1)  # Where the events are read.
    if daemon.invoke(name)[0] != 200:
        raise h.BenchError(f"{name} does not answer")
    for run in range(runs):
        sw.to_zero(daemon, docker, name)
        since_ns = time.time_ns()
        started = time.perf_counter()
        daemon.scale(name, 1)
        status, body = daemon.invoke(name)
        elapsed = time.perf_counter() - started
        if status != 200:
            report.errors.append(f"{name} run {run}: {status} {body[:100]!r}")
            continue
        started_ns = container_started_ns(docker, name, since_ns)
        if started_ns is None:
            report.errors.append(f"{name} run {run}: no container start event")
            continue
        report.scale_s.append(elapsed)
        report.swarm_part_s.append((started_ns - since_ns) / 1e9)
        report.container_part_s.append(elapsed - (started_ns - since_ns) / 1e9)
        for _ in range(3):
            began = time.perf_counter()
            daemon.invoke(name)
            report.warm_call_s.append(time.perf_counter() - began)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f}" if values else "       -"


def min_max_ms(values: list[float]) -> str:
    return f"[{min(values) * 1000:.0f}-{max(values) * 1000:.0f}]" if values else ""


def print_rows(*rows: tuple[str, list[float]]) -> None:
    for label, values in rows:
        print(f"  {label:<46} {median_ms(values)}  {min_max_ms(values)}")


def print_report(report: ColdReport) -> int:
    print(f"\n1. the image (deploys placed on node 2; the image is {report.image_mb:.0f} MB)")
    print(f"  {'':<46} {'p50 ms':>8}  min-max")
    print_rows(
        ("deploy -> first 200, image on node 2", report.present_s),
        ("  of it, the deploy API call", report.present_api_s),
        ("  deploy -> the container started", report.present_started_s),
        ("deploy -> first 200, image streamed to node 2", report.absent_s),
        ("  of it, the deploy API call", report.absent_api_s),
        ("  deploy -> the container started", report.absent_started_s),
    )
    if report.present_s and report.absent_s:
        saved = statistics.median(report.absent_s) - statistics.median(report.present_s)
        ratio = statistics.median(report.absent_s) / statistics.median(report.present_s)
        print(f"  a pre-pulled image saves {saved * 1000:.0f} ms of a deploy (absent / present: {ratio:.2f}x)")
    print("\n2. the task (scale 0 -> 1 by the API, node 1)")
    print_rows(
        ("scale POST -> first 200", report.scale_s),
        ("  Swarm's part: POST -> container started", report.swarm_part_s),
        ("  the container's: started -> first 200", report.container_part_s),
        ("a call to the running replica (warm)", report.warm_call_s),
    )
    if report.scale_s and report.swarm_part_s:
        share = statistics.median(report.swarm_part_s) / statistics.median(report.scale_s)
        print(f"  Swarm's part is {share:.0%} of a scale from zero: what a task started ahead would save, at most")
    for error in report.errors:
        print(f"  error: {error}")
    return 0 if not report.errors else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faasd", type=Path, default=sw.DEFAULT_FAASD, help="zipapp to run (default dist/faasd.pyz)")
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter for faasd (default /usr/bin/python3)")
    parser.add_argument("--runs", type=int, default=5, help="deploys of each kind and scales from zero (default 5)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    if not args.faasd.exists():
        print(f"{args.faasd} missing: run python3 scripts/build_zipapp.py", file=sys.stderr)
        return 2
    docker, node2 = sw.Docker(), sw.Docker(NODE2_SOCKET)
    try:
        if not docker.swarm_ready():
            print("dockerd is not a swarm manager: run sh scripts/docker_env.sh setup --nodes 2", file=sys.stderr)
            return 2
        node2.get("/info")
    except h.BenchError as exc:
        print(f"{exc}; run sh scripts/docker_env.sh setup --nodes 2", file=sys.stderr)
        return 2
    engine = f"unix://{NODE2_SOCKET}"
    built = subprocess.run(
        [args.python, str(args.faasd), "build-base", "--node-engine", engine],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0:
        print(f"faasd build-base failed:\n{built.stderr}", file=sys.stderr)
        return 2
    image = docker.get(f"/images/{sw.IMAGE}/json")
    image_id = image["Id"]  # type: ignore[index]
    report = ColdReport(image_mb=image["Size"] / 1e6)  # type: ignore[index]
    print(f"base image {sw.IMAGE} = {image_id[:19]}; faasd {args.faasd}")
    created: set[str] = set()
    daemon: sw.Daemon | None = None
    with tempfile.TemporaryDirectory(prefix="faasd-bench-swarm-cold-") as tmp:
        try:
            node_availability("active")
            daemon = sw.start_daemon(args.python, args.faasd, Path(tmp), engines=engine)
            print("the image: deploys on node 2 ...", flush=True)
            image_runs(daemon, node2, image_id, args.runs, report, created)
            print("the task: scale 0 -> 1 ...", flush=True)
            task_runs(daemon, docker, args.runs, report, created)
        except (h.BenchError, subprocess.SubprocessError) as exc:
            report.errors.extend(sw.failure(exc, daemon))
        except KeyboardInterrupt:
            report.errors.append("interrupted")
        finally:
            left = sw.cleanup(daemon, docker, created)
            try:
                wait_no_containers(node2, created)
            except h.BenchError:
                left += sorted(name for name in created if node2.running_containers(name))
            if left:
                report.errors.append(f"containers still running after cleanup: {left}")
            if daemon is not None:
                daemon.stop()
            try:
                node_availability("drain")
            except subprocess.SubprocessError as exc:
                report.errors.append(f"node 2 not drained again: {exc}")
    return sw.finish(report, print_report(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
