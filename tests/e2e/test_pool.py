"""The local backend's replica pool (docs/coldstart.md) against a real daemon: a pooled replica is
contained exactly like a cold one, serves only its own function's code and secrets with a uid of its own,
gets its function's environment, works in every mode, dies with the daemon, and the pool refills after
each cold start without leaking processes, directories or descriptors.

The daemon fixtures start daemons with ``FAASD_POOL_SIZE=0`` (tests/daemon_fixtures.py); these tests ask
for a pool. Which replica came from the pool is read from the daemon's ``replica ready ... pooled=True``
log line.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from faasd.providers.local.pool import REFILL_DELAY_S
from faasd.sandbox.cgroups import REPLICA_NICE, V1_SHARES, Cgroups
from faasd.sandbox.uids import FUNCTION_UID_FIRST, FUNCTION_UID_LAST
from tests.daemon_fixtures import Daemon, StartDaemon
from tests.e2e.test_cgroups import _replica_dirs
from tests.e2e.test_cgroups import here as here_fixture
from tests.e2e.test_sandbox import (
    CANARY,
    HAVE_BWRAP,
    MODES,
    ROOT,
    _admin,
    _archive,
    _assert_contained,
    _descendants,
    _probe,
    _wait_all_ended,
)
from tests.e2e.test_sandbox import (
    stand_in_socket as stand_in_fixture,
)
from tests.e2e.test_watchdog_modes_http import UPSTREAM, UPSTREAM_PYTHON
from tests.helpers import free_port, process_alive, wait_for

pytestmark = pytest.mark.slow
stand_in_socket = stand_in_fixture  # The docker socket's stand-in, a fixture of test_sandbox.
here = here_fixture  # The cgroups a daemon uses on this machine, a fixture of test_cgroups.

ECHO_ENV = 'sh -c \'echo "greeting=$GREETING"; id -u; ls -A; cat "$secret_mount_path"/* 2>/dev/null; exit 0\''


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _pooled_any(daemon: Daemon) -> list[int]:
    """Any process below the daemon started as a pooled replica (its outer process, whatever the mode)."""
    found = [pid for pid in _descendants(daemon.pid) if "_pooled" in _argv(pid)]
    return [pid for pid in found if not any(pid in _descendants(other) for other in found if other != pid)]


def _fds(daemon: Daemon) -> list[str]:
    """What the daemon's descriptors point at (a pipe, a socket, a file)."""
    found = []
    for fd in os.listdir(f"/proc/{daemon.pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{daemon.pid}/fd/{fd}"))
        except OSError:
            continue
    return found


def _ready_lines(daemon: Daemon, function: str, pooled: bool | None = True) -> int:
    """``replica ready`` lines (of ``function``, all when empty) from pooled replicas."""
    count = 0
    for line in daemon.logs().splitlines():
        if 'event="replica ready"' not in line or (function and f"function={function} " not in line):
            continue
        if pooled is None or (f"pooled={pooled}" in line):
            count += 1
    return count


def _start(start_daemon: StartDaemon, mode: str, size: int = 1, **env: str) -> Daemon:
    return start_daemon(
        args=("--sandbox", mode, "--pool-size", str(size), "--log-level", "debug"), FAASD_POOL_SIZE=str(size), **env
    )


def _cpu_dirs(daemon: Daemon, here: Cgroups) -> list[Path]:
    """The daemon's replica cgroups in the cpu hierarchy that have ``cpu.idle`` (none: no idle class here)."""
    return [d for d in _replica_dirs(daemon.state_dir, here) if (d / "cpu.idle").exists()]


def _wait_pool(daemon: Daemon, ready: int) -> None:
    """Until the pool has said ``pooled replica ready`` ``ready`` times in all."""
    wait_for(lambda: daemon.logs().count("pooled replica ready") >= ready, 60.0, f"{ready} pooled replicas ready")


@pytest.mark.parametrize("mode_vars", [{}, {"mode": "streaming"}], ids=["fork", "streaming"])
def test_a_pooled_replica_runs_its_calls_at_the_replica_weight(
    start_daemon: StartDaemon, here: Cgroups, mode_vars: dict[str, str]
) -> None:
    """It weighs the daemon's weight while it starts (docs/coldstart.md): lowered before it serves."""
    daemon = _start(start_daemon, "bwrap")
    _wait_pool(daemon, 1)
    pooled = {directory.name for directory in _replica_dirs(daemon.state_dir, here)}  # Not the refill, later.
    spec = {"service": "echo", "envProcess": "cat", "envVars": mode_vars}
    with _admin(daemon) as client:
        assert client.post("/system/functions", json=spec).status_code == 202
    answer = httpx.post(f"{daemon.url}/function/echo", content=b"weighed", timeout=30.0)
    assert (answer.status_code, answer.text) == (200, "weighed")
    assert _ready_lines(daemon, "echo") == 1
    wanted = {"cpu.shares": str(V1_SHARES), "cpu.weight.nice": str(REPLICA_NICE)}
    found = {
        name: (directory / name).read_text().strip()
        for directory in _replica_dirs(daemon.state_dir, here)
        for name in wanted
        if (directory / name).exists() and directory.name in pooled
    }
    assert found and all(found[name] == wanted[name] for name in found), (found, here.reason)


def test_a_pooled_replica_starts_in_its_own_cgroup_and_is_given_the_functions_limits(
    start_daemon: StartDaemon, here: Cgroups
) -> None:
    """Moving a process into a cgroup costs a grace period of RCU (docs/coldstart.md): a pooled replica is
    in its own cgroup from its start, and its assignment writes the function's limits there, moving nothing."""
    daemon = _start(start_daemon, "bwrap")
    _wait_pool(daemon, 1)
    pids = [d for d in _replica_dirs(daemon.state_dir, here) if (d / "pids.max").exists()]
    assert len(pids) == 1 and ".pool-" in pids[0].name, pids
    idle = sorted((pids[0] / "cgroup.procs").read_text().split())
    assert len(idle) == 4, idle  # setsid, bwrap, bwrap's init, the watchdog: all of its sandbox.
    cpu_idle = {d.name: (d / "cpu.idle").read_text().strip() for d in _cpu_dirs(daemon, here)}
    classes = daemon.sandbox()["cgroups"]["cpu_classes"]
    spec = {"service": "echo", "envProcess": "cat", "labels": {"com.faasd.limits.processes": "32"}}
    with _admin(daemon) as client:
        assert client.post("/system/functions", json=spec).status_code == 202
    answer = httpx.post(f"{daemon.url}/function/echo", content=b"limited", timeout=30.0)
    assert (answer.status_code, answer.text) == (200, "limited")
    assert _ready_lines(daemon, "echo") == 1
    assert (pids[0] / "pids.max").read_text().strip() == "35"  # 32, and room for setsid, bwrap and its init.
    assert sorted((pids[0] / "cgroup.procs").read_text().split()) == idle  # The same processes, not moved.
    if classes == "on":  # It started in the idle CPU class, and left it when it was given its function.
        assert cpu_idle == {pids[0].name: "1"}, cpu_idle
        assert {d.name: (d / "cpu.idle").read_text().strip() for d in _cpu_dirs(daemon, here)}[pids[0].name] == "0"
    with _admin(daemon) as client:
        assert client.request("DELETE", "/system/functions", json={"functionName": "echo"}).status_code == 202
    wait_for(lambda: not pids[0].exists(), 15.0, "the pooled replica's cgroup to be removed with it")


@pytest.mark.parametrize("mode", MODES)
def test_a_pooled_replica_is_contained_like_a_cold_one(
    mode: str, start_daemon: StartDaemon, stand_in_socket: str
) -> None:
    daemon = _start(start_daemon, mode, size=2, FAASD_PASSWORD="", FAASD_TEST_CANARY=CANARY)
    _wait_pool(daemon, 2)
    found = _probe(daemon, stand_in_socket)
    _assert_contained(found, daemon)
    assert FUNCTION_UID_FIRST <= int(found["uid"]) <= FUNCTION_UID_LAST  # type: ignore[call-overload]
    assert _ready_lines(daemon, "probe") == 1, daemon.logs()[-3000:]  # It was a pooled one.


@pytest.mark.parametrize("mode", MODES)
def test_a_pooled_replica_serves_only_its_functions_code_and_secrets_as_its_own_uid(
    mode: str, start_daemon: StartDaemon
) -> None:
    daemon = _start(start_daemon, mode, size=2)
    _wait_pool(daemon, 2)
    answers = {}
    with _admin(daemon) as client:
        for name in ("alpha", "beta"):
            response = client.post("/system/secrets", json={"name": f"{name}-key", "value": f"{name}-secret-value"})
            assert response.status_code in (200, 201, 202), response.text
            spec = {
                "service": name,
                "envProcess": ECHO_ENV,
                "envVars": {"GREETING": f"hello from {name}"},
                "secrets": [f"{name}-key"],
                "handlerArchive": _archive({f"{name}-code.txt": name.encode()}),
            }
            assert client.post("/system/functions", json=spec).status_code == 202
        for name in ("alpha", "beta"):
            daemon.wait_available(name, 1)
            answer = httpx.post(f"{daemon.url}/function/{name}", content=b"", timeout=30.0)
            assert answer.status_code == 200, answer.text
            answers[name] = answer.text
    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        text = answers[name]
        assert f"greeting=hello from {name}" in text
        assert f"{name}-code.txt" in text and f"{name}-secret-value" in text
        assert f"{other}-code.txt" not in text and f"{other}-secret-value" not in text, text
        assert _ready_lines(daemon, name) == 1, daemon.logs()[-3000:]
    uids = {name: int(text.splitlines()[1]) for name, text in answers.items()}
    if ROOT:
        assert uids["alpha"] != uids["beta"], uids
        assert all(FUNCTION_UID_FIRST <= uid <= FUNCTION_UID_LAST for uid in uids.values()), uids


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
@pytest.mark.parametrize(
    "mode_vars",
    [{}, {"mode": "streaming"}, {"mode": "python"}, {"mode": "http"}],
    ids=["fork", "streaming", "python", "http"],
)
def test_every_watchdog_mode_runs_from_the_pool(start_daemon: StartDaemon, mode_vars: dict[str, str]) -> None:
    daemon = _start(start_daemon, "bwrap")
    _wait_pool(daemon, 1)
    spec: dict[str, object] = {"service": "echo", "envProcess": "cat", "envVars": mode_vars}
    if mode_vars.get("mode") == "python":
        spec = {
            "service": "echo",
            "envVars": mode_vars,
            "handlerArchive": _archive({"handler.py": b"def handle(req):\n    return req\n"}),
        }
    if mode_vars.get("mode") == "http":  # The function's own server, started before the replica is ready.
        port = free_port()
        spec = {
            "service": "echo",
            "envProcess": f"{shlex.quote(UPSTREAM_PYTHON)} upstream.py {port}",
            "envVars": {**mode_vars, "upstream_url": f"http://127.0.0.1:{port}"},
            "handlerArchive": _archive({"upstream.py": UPSTREAM.read_bytes()}),
        }
    with _admin(daemon) as client:
        assert client.post("/system/functions", json=spec).status_code == 202
    daemon.wait_available("echo", 1)
    answer = httpx.post(f"{daemon.url}/function/echo", content=b"pooled echo", timeout=30.0)
    text = json.loads(answer.text)["body"] if mode_vars.get("mode") == "http" else answer.text
    assert (answer.status_code, text) == (200, "pooled echo")
    assert _ready_lines(daemon, "echo") == 1


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_a_function_with_a_memory_limit_starts_cold(start_daemon: StartDaemon) -> None:
    """Its /tmp is sized by its memory limit when bwrap starts: a pooled replica's cannot be."""
    daemon = _start(start_daemon, "bwrap")
    _wait_pool(daemon, 1)
    with _admin(daemon) as client:
        spec = {"service": "small", "envProcess": "cat", "limits": {"memory": "128M"}}
        assert client.post("/system/functions", json=spec).status_code == 202
    daemon.wait_available("small", 1)
    assert httpx.post(f"{daemon.url}/function/small", content=b"x", timeout=30.0).text == "x"
    assert _ready_lines(daemon, "small", pooled=False) == 1


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_the_pool_refills_and_cold_starts_leave_nothing_behind(start_daemon: StartDaemon) -> None:
    daemon = _start(start_daemon, "bwrap")
    _wait_pool(daemon, 1)
    fds_before = _fds(daemon)
    cycles = 6
    with _admin(daemon) as client:
        for number in range(cycles):
            _wait_pool(daemon, number + 1)  # The previous one was used: it has been replaced.
            name = f"cold{number}"
            assert client.post("/system/functions", json={"service": name, "envProcess": "cat"}).status_code == 202
            daemon.wait_available(name, 1)
            assert httpx.post(f"{daemon.url}/function/{name}", content=b"hi", timeout=30.0).text == "hi"
            response = client.request("DELETE", "/system/functions", json={"functionName": name})
            assert response.status_code in (200, 202), response.text
    pooled = sum(_ready_lines(daemon, f"cold{number}") for number in range(cycles))
    assert pooled == cycles, daemon.logs()[-4000:]
    _wait_pool(daemon, cycles + 1)

    def settled() -> bool:
        leftover = [p for p in (daemon.state_dir / "replicas").iterdir()]
        return len(_pooled_any(daemon)) == 1 and len(leftover) == 1  # The idle one's directory.

    wait_for(settled, 30.0, lambda: f"one idle pooled replica left: {_pooled_any(daemon)}")
    # Each replica and pooled replica has a pipe for its output: none may stay open once it is gone. (The
    # daemon keeps about one more socket per deploy and removal, with or without a pool: not counted here.)
    pipes_before = [fd for fd in fds_before if fd.startswith("pipe:")]
    pipes_after = [fd for fd in _fds(daemon) if fd.startswith("pipe:")]
    assert len(pipes_after) <= len(pipes_before), (pipes_before, pipes_after)


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_a_refused_deploy_stops_the_pooled_replica_it_took(start_daemon: StartDaemon) -> None:
    """A deploy takes a pooled replica before it builds the function's directory (it is readied in the same
    worker thread's hop): one whose archive is then refused stops it, the pool refills, nothing is left."""
    daemon = _start(start_daemon, "bwrap")
    _wait_pool(daemon, 1)
    [taken] = _pooled_any(daemon)
    with _admin(daemon) as client:
        bad = {"service": "bad", "envProcess": "cat", "handlerArchive": _archive({"../escape": b"x"})}
        refused = client.post("/system/functions", json=bad)
        assert refused.status_code == 400 and ".." in refused.text, refused.text
        wait_for(lambda: not process_alive(taken), 10.0, "the pooled replica the refused deploy took to stop")
        _wait_pool(daemon, 2)
        assert client.post("/system/functions", json={"service": "good", "envProcess": "cat"}).status_code == 202
    daemon.wait_available("good", 1)
    assert httpx.post(f"{daemon.url}/function/good", content=b"ok", timeout=30.0).text == "ok"
    assert _ready_lines(daemon, "good") == 1
    with _admin(daemon) as client:
        removed = client.request("DELETE", "/system/functions", json={"functionName": "good"})
        assert removed.status_code in (200, 202), removed.text
    _wait_pool(daemon, 3)

    def settled() -> bool:
        return len(_pooled_any(daemon)) == 1 and len(list((daemon.state_dir / "replicas").iterdir())) == 1

    wait_for(settled, 30.0, lambda: f"one idle pooled replica and its directory left: {_pooled_any(daemon)}")


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_a_deploy_at_zero_replicas_leaves_the_pool_alone(start_daemon: StartDaemon) -> None:
    """``com.openfaas.scale.min: 0`` starts nothing: the idle pooled replica stays for the first call."""
    daemon = _start(start_daemon, "bwrap")
    _wait_pool(daemon, 1)
    [idle] = _pooled_any(daemon)
    with _admin(daemon) as client:
        spec = {"service": "lazy", "envProcess": "cat", "labels": {"com.openfaas.scale.min": "0"}}
        assert client.post("/system/functions", json=spec).status_code == 202
    assert _pooled_any(daemon) == [idle] and daemon.logs().count("pooled replica ready") == 1
    assert httpx.post(f"{daemon.url}/function/lazy", content=b"woken", timeout=30.0).text == "woken"
    assert _ready_lines(daemon, "lazy") == 1


def _started_at(pid: int) -> float:
    """When process ``pid`` started, in seconds since the epoch (to the kernel's clock tick, 10 ms)."""
    boot = next(
        float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
    )
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _logged_at(line: str) -> float:
    stamp = line.split(" ", 1)[0]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_a_pooled_replica_in_the_idle_class_is_replaced_at_once(start_daemon: StartDaemon) -> None:
    """Where pooled replicas start in the idle CPU class, a refill starts soon after one is taken
    (IDLE_START_DELAY_S, not REFILL_DELAY_S later), so cold starts a little apart all find the pool refilled."""
    daemon = _start(start_daemon, "bwrap")
    classes = daemon.sandbox()["cgroups"]["cpu_classes"]
    if classes != "on":
        pytest.skip(f"pooled replicas start in the idle class only with CPU classes: {classes}")
    _wait_pool(daemon, 1)
    [first] = _pooled_any(daemon)
    with _admin(daemon) as client:
        assert client.post("/system/functions", json={"service": "echo", "envProcess": "cat"}).status_code == 202
    assert httpx.post(f"{daemon.url}/function/echo", content=b"hi", timeout=30.0).text == "hi"
    [ready] = [line for line in daemon.logs().splitlines() if 'event="replica ready"' in line and "pooled=True" in line]
    found: list[int] = []
    wait_for(lambda: found.extend(p for p in _pooled_any(daemon) if p != first) or found, 15.0, "the refill")
    waited = _started_at(found[0]) - _logged_at(ready)
    assert waited < REFILL_DELAY_S * 2 / 3, f"the refill started {waited:.3f} s after the pooled replica was ready"


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_a_cold_start_takes_the_refill_under_way_rather_than_starting_another(start_daemon: StartDaemon) -> None:
    """When cold starts come faster than the pool refills, the next one waits for the refill that is starting --
    out of the idle CPU class from then on -- instead of starting a cold replica beside it. Here the refill is
    kept from finishing by a busy machine (a CPU burner per CPU: the idle class gets no CPU time) until the
    second deploy comes; its replica is that pooled one, not a cold one."""
    daemon = _start(start_daemon, "bwrap")
    classes = daemon.sandbox()["cgroups"]["cpu_classes"]
    if classes != "on":
        pytest.skip(f"pooled replicas start in the idle class only with CPU classes: {classes}")
    _wait_pool(daemon, 1)
    burners = [
        subprocess.Popen(
            [sys.executable, "-c", "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"]
        )
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        with _admin(daemon) as client:
            assert client.post("/system/functions", json={"service": "first", "envProcess": "cat"}).status_code == 202
            daemon.wait_available("first", 1)
            wait_for(lambda: len(_pooled_any(daemon)) == 2, 15.0, "the refill to start")  # Beside first's replica.
            assert daemon.logs().count("pooled replica ready") == 1, "the refill was not held back by the burners"
            assert client.post("/system/functions", json={"service": "second", "envProcess": "cat"}).status_code == 202
            daemon.wait_available("second", 1)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert httpx.post(f"{daemon.url}/function/second", content=b"hi", timeout=30.0).text == "hi"
    assert (_ready_lines(daemon, "second"), _ready_lines(daemon, "second", pooled=False)) == (1, 0)


@pytest.mark.parametrize("mode", MODES)
def test_idle_pooled_replicas_die_with_a_killed_daemon(mode: str, start_daemon: StartDaemon) -> None:
    daemon = _start(start_daemon, mode, size=2)
    _wait_pool(daemon, 2)
    inside = _descendants(daemon.pid)
    assert len(_pooled_any(daemon)) == 2, inside
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    _wait_all_ended(inside)


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_a_pooled_replica_follows_the_lifeline_from_its_assignment_on(start_daemon: StartDaemon) -> None:
    """Idle, a pooled replica runs one thread: the lifeline's thread would take part in each of its
    assignment's uid changes (glibc signals every thread). Assigned, the same process -- now the watchdog --
    follows the lifeline, and ends with a killed daemon."""
    daemon = _start(start_daemon, "bwrap", size=1)
    _wait_pool(daemon, 1)
    [outer] = _pooled_any(daemon)
    [inner] = [pid for pid in [outer, *_descendants(outer)] if not _descendants(pid)]
    assert _threads(inner) == 1
    daemon.deploy("echo", "cat")
    assert _ready_lines(daemon, "echo") == 1, daemon.logs()[-3000:]  # It was the pooled one.
    assert process_alive(inner) and _threads(inner) == 2  # Its watchdog (no call yet) and the lifeline's.
    inside = _descendants(daemon.pid)
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    _wait_all_ended(inside)


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap is not installed")
def test_a_stopped_daemon_stops_its_idle_pooled_replicas(start_daemon: StartDaemon) -> None:
    daemon = _start(start_daemon, "bwrap", size=2)
    _wait_pool(daemon, 2)
    inside = _descendants(daemon.pid)
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 10
    assert not [pid for pid in inside if process_alive(pid)]


def test_the_pool_works_without_a_sandbox_too(start_daemon: StartDaemon) -> None:
    """``none`` mode: a pooled replica changes into its function's directory when it is given one."""
    daemon = _start(start_daemon, "none")
    _wait_pool(daemon, 1)
    with _admin(daemon) as client:
        spec = {"service": "plain", "envProcess": "cat data.txt", "handlerArchive": _archive({"data.txt": b"own-code"})}
        assert client.post("/system/functions", json=spec).status_code == 202
    daemon.wait_available("plain", 1)
    assert httpx.post(f"{daemon.url}/function/plain", content=b"", timeout=30.0).text == "own-code"
    assert _ready_lines(daemon, "plain") == 1
