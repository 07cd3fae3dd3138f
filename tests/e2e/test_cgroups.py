"""A control group per local replica (faasd.sandbox.cgroups), on this machine's real cgroup file system.

The test machines boot cgroup v1 (a hierarchy per controller, writable as root) with an empty cgroup v2
mount: the daemon must find v2 unusable and say why, and use the v1 ``cpu`` and ``pids`` hierarchies --
every test here runs that path for real. The cgroup v2 path (``memory.max``, a delegated subtree) cannot
run here; tests/unit/test_cgroup_settings.py covers its parsing and settings, and the watchdog's report of an
out-of-memory kill is checked here against a stand-in for ``memory.events``.

* a replica's cgroup bounds its processes even without a sandbox (``pids.max``, where ``none`` mode has
  no ``RLIMIT_NPROC``), and removing it kills what is left in it -- a process that left its session too;
* a replica that cannot join its cgroup does not run;
* through the daemon, in every sandbox mode: each replica in a cgroup of its own with its limits
  (``limits.cpu`` a quota, the process label ``pids.max``), shown in ``/system/info`` and ``faasd
  status``, removed with the function; after a ``kill -9`` of the daemon, a restart sweeps what it left
  (killing a process that escaped its replica) and nothing of another daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faasd.sandbox import cgroups
from faasd.sandbox.cgroups import Cgroups, Placement
from faasd.sandbox.limits import Limits
from tests.daemon_fixtures import Daemon, MakeCli, StartDaemon
from tests.e2e.conftest import StartWatchdog
from tests.e2e.test_daemon_api import _archive
from tests.e2e.test_sandbox import ALL_MODES
from tests.helpers import must_run_everything, process_alive, scaled, wait_for

FORKER = """
import os, sys, time
print(open("/proc/self/cgroup").read().replace("\\n", " "), flush=True)
children = 0
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        print(f"forked {children}, then {exc.strerror}", flush=True)
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    children += 1
time.sleep(120)
"""
"""Forks children that stay until the fork fails, says how many, and stays (with them)."""


def _cgroups_here(state_dir: Path) -> Cgroups:
    """What a daemon with ``state_dir`` would use here; skip (fail under CI) when it is nothing."""
    found = cgroups.setup(str(state_dir))
    if not found.hierarchies:
        reason = f"no cgroups for replicas here: {found.reason}"
        if must_run_everything():
            pytest.fail(f"{reason}; under CI this test must run")
        pytest.skip(reason)
    return found


@pytest.fixture
def here(tmp_path: Path) -> Iterator[Cgroups]:
    found = _cgroups_here(tmp_path / "state")
    yield found
    for hierarchy in found.hierarchies:
        cgroups.sweep(hierarchy)


def _joined(placement: Placement, *program: str) -> subprocess.Popen[str]:
    """``program`` started as a replica is: joining ``placement`` first (:func:`cgroups.join_command`)."""
    return subprocess.Popen(
        [*cgroups.join_command(placement), *program],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _replica_dirs(daemon_state: Path, here: Cgroups) -> list[Path]:
    """The replica cgroups of the daemon with state dir ``daemon_state``, in every hierarchy."""
    prefix = cgroups.base_name(str(daemon_state)) + "."
    return sorted(
        Path(hierarchy.parent) / entry
        for hierarchy in here.hierarchies
        for entry in os.listdir(hierarchy.parent)
        if entry.startswith(prefix)
    )


def test_this_machine_uses_cgroup_v1_and_says_why_not_v2(tmp_path: Path):
    """The empty v2 mount (no cpu, pids or memory controller: they are on v1 hierarchies) is found
    unusable, with the reason; the writable v1 cpu, cpuacct and pids hierarchies are used."""
    found = _cgroups_here(tmp_path / "state")
    if found.kind == "v2":
        pytest.skip(f"this machine has a usable cgroup v2 hierarchy: {found.reason}")
    assert found.kind == "v1" and found.controllers == {"cpu", "cpuacct", "pids"}, found
    assert "memory: RLIMIT_AS" in found.reason and "cgroup v2 at " in found.reason, found.reason
    assert "none of cpu, pids, memory is available" in found.reason, found.reason


def test_a_replica_cgroup_bounds_its_processes_and_takes_them_along(here: Cgroups) -> None:
    """``pids.max`` bounds a process tree that has no rlimit (as in ``none`` mode), from its first
    process on; :func:`remove` kills everything in the cgroup, then removes it."""
    placement = cgroups.place(here, "forker-0a0a0a", Limits(processes=16))
    proc = _joined(placement, sys.executable, "-c", FORKER)
    try:
        assert proc.stdout is not None
        where, outcome = proc.stdout.readline(), proc.stdout.readline()
        for directory in placement.directories:  # Joined, in every hierarchy: /proc shows it.
            assert f":/{os.path.basename(directory)} " in where or where.rstrip().endswith(
                f":/{os.path.basename(directory)}"
            ), where
        if "pids" in here.controllers:
            forked = int(outcome.split()[1].rstrip(","))
            assert 0 < forked < 16 and "Resource temporarily unavailable" in outcome, outcome
        assert cgroups.remove(placement)
        assert proc.wait(timeout=scaled(10)) == -signal.SIGKILL
        assert not any(os.path.exists(directory) for directory in placement.directories)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        cgroups.remove(placement)


def test_a_replica_that_cannot_join_its_cgroup_does_not_run(here: Cgroups):
    """Its cgroup removed under it: the replica exits 126 saying so, and never runs the program."""
    placement = cgroups.place(here, "orphan-0b0b0b", Limits())
    assert cgroups.remove(placement)
    proc = _joined(placement, "/bin/echo", "ran")
    output, _ = proc.communicate(timeout=scaled(10))
    assert proc.returncode == 126 and "cannot join the replica's cgroup" in output and "ran" not in output, output


def _start(start_daemon: StartDaemon, mode: str, state_dir: Path | None = None) -> Daemon:
    return start_daemon(state_dir=state_dir, args=("--sandbox", mode))


@pytest.mark.parametrize("mode", ALL_MODES)
def test_each_replica_gets_its_cgroup_with_its_limits_until_the_function_goes(
    mode: str, here: Cgroups, start_daemon: StartDaemon, faasd_cli: MakeCli
) -> None:
    daemon = _start(start_daemon, mode)
    daemon.deploy(
        "capped",
        "cat",
        limits={"cpu": "0.5"},
        labels={"com.faasd.limits.processes": "32", "com.openfaas.scale.min": "2"},
    )
    daemon.wait_available("capped", 2)
    dirs = _replica_dirs(daemon.state_dir, here)
    assert len(dirs) == 2 * len(here.hierarchies), dirs
    for directory in dirs:
        members = (directory / "cgroup.procs").read_text().split()
        # The watchdog; in bwrap, setsid, bwrap and its init (which reaps the function's orphans) too.
        assert len(members) == (4 if mode == "bwrap" else 1), (directory, members)
        if (directory / "cpu.shares").exists():
            assert (directory / "cpu.shares").read_text().strip() == str(cgroups.V1_SHARES)
            assert (directory / "cpu.cfs_quota_us").read_text().strip() == "50000"
        if (directory / "pids.max").exists():  # In bwrap, room for setsid, bwrap and its init besides.
            assert (directory / "pids.max").read_text().strip() == ("35" if mode == "bwrap" else "32")
    with daemon.client() as client:
        info = client.get("/system/info").json()["faasd"]["sandbox"]["cgroups"]
    assert info["mode"] == here.kind and set(info["controllers"]) == here.controllers, info
    status = faasd_cli(daemon).run("status").ok()
    assert f"Cgroups\t{here.kind}: " in status.out, status.out
    assert f"cgroups={here.kind}" in daemon.logs()  # The event=sandbox line.
    with daemon.client() as client:
        assert client.request("DELETE", "/system/functions", json={"functionName": "capped"}).status_code == 202
    wait_for(lambda: not _replica_dirs(daemon.state_dir, here), 15.0, "the function's cgroups to be removed")


def test_a_restart_after_kill_9_sweeps_what_the_daemon_left(here: Cgroups, start_daemon: StartDaemon, tmp_path: Path):
    """``kill -9`` leaves the replicas' cgroups, and in ``none`` mode a process that left its replica's
    session runs on; the next start of that daemon kills it and removes them -- and nothing of another
    daemon's."""
    other = _start(start_daemon, "none")
    other.deploy("neighbour", "cat")
    other.wait_available("neighbour", 1)
    state = tmp_path / "kept-state"
    daemon = _start(start_daemon, "none", state)
    daemon.deploy("leaver", "sh -c 'setsid sleep 300 >/dev/null 2>&1 & cat'")
    daemon.wait_available("leaver", 1)
    assert httpx.post(f"{daemon.url}/function/leaver", content=b"x", timeout=10.0).status_code == 200
    left = _replica_dirs(state, here)
    found: list[int] = []  # The call answers once cat ends: the setsid'd sleep may still be exec'ing.
    wait_for(lambda: found.extend(_sleeps_in(left[0])) or found, scaled(10.0), "the escaped sleep in the cgroup")
    [sleeper] = found
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    assert _replica_dirs(state, here) == left and process_alive(sleeper)
    theirs = _replica_dirs(other.state_dir, here)
    _start(start_daemon, "none", state)  # The same daemon again; its stored function is restored meanwhile.
    wait_for(lambda: not process_alive(sleeper), 10.0, "the escaped process to be killed")
    # The sweep is the backend's start, which runs after the ready line (faasd/providers/deferred.py).
    wait_for(lambda: not set(left) & set(_replica_dirs(state, here)), 10.0, "the left cgroups to be removed")
    assert _replica_dirs(other.state_dir, here) == theirs and all(path.exists() for path in theirs)


def _sleeps_in(directory: Path) -> list[int]:
    return [int(pid) for pid in (directory / "cgroup.procs").read_text().split() if _is_sleep(int(pid))]


def _is_sleep(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"sleep")
    except OSError:
        return False


def test_an_out_of_memory_kill_names_the_memory_limit(start_watchdog: StartWatchdog, tmp_path: Path):
    """cgroup v2: the kernel SIGKILLs a process of a replica at its ``memory.max``; the call's answer says
    so and names the limit, from the cgroup's ``oom_kill`` count. Here a file stands in for
    ``memory.events`` (no cgroup v2 memory controller on this machine): the function raises the count,
    then dies of SIGKILL; a SIGKILL with no new OOM kill is reported as before."""
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    script = tmp_path / "function.sh"
    script.write_text(f'[ "$Http_Query" = oom ] && printf "oom 1\\noom_kill 1\\n" > {events}\nkill -9 $$\n')
    fd = os.open(events, os.O_RDONLY)
    try:
        watchdog = start_watchdog(f"sh {script}", sandbox_spec=f"mev={fd},mmax={128 << 20}", pass_fds=(fd,))
    finally:
        os.close(fd)
    plain = watchdog.request("POST", "/", content=b"x")
    assert (plain.status_code, plain.text) == (500, "killed by signal SIGKILL\n")
    oom = watchdog.request("POST", "/?oom", content=b"x")
    assert oom.status_code == 500
    assert oom.text == (
        "killed by signal SIGKILL: out of memory: the replica reached its memory limit of 128 MiB (limits.memory)\n"
    )
    again = watchdog.request("POST", "/", content=b"x")  # The count did not move: not an OOM kill.
    assert again.text == "killed by signal SIGKILL\n"


def _autogroup_nice(path: Path) -> str:
    """The nice value an autogroup file shows. The kernel's default autogroup -- that of init's session,
    which a process started by PID 1 without ``setsid`` (a container's, a CI runner's) stays in -- shows
    nothing: its weight is the root CPU group's, nice 0, and no process can change it."""
    shown = path.read_text().split()
    return shown[-1] if shown else "0"


@pytest.fixture
def session_at_nice_0() -> Iterator[Path]:
    """This test's session -- which a daemon fixture's daemon shares -- with its autogroup at nice 0 (as
    root, should anything have raised it before), restored afterwards; the path to read it at."""
    path = Path("/proc/self/autogroup")
    if not path.exists():
        pytest.skip("no autogroups here (kernel.sched_autogroup_enabled, CONFIG_SCHED_AUTOGROUP)")
    before = _autogroup_nice(path)
    if before != "0":
        if os.geteuid() != 0:
            pytest.skip(f"this session's autogroup is at nice {before} already (only root may lower it)")
        path.write_text("0")
    try:
        yield path
    finally:
        if before != "0":
            path.write_text(before)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_the_daemon_keeps_its_own_scheduling_weight(mode: str, start_daemon: StartDaemon, session_at_nice_0: Path):
    """A replica (or the start-up probe, or a build) lowers the weight of *its* session's autogroup, never
    the daemon's: the probe (uid mode) and builds once ran in the daemon's session and left it -- and the
    shell that started it -- at nice 10, as light as a function."""
    daemon = _start(start_daemon, mode)
    daemon.deploy("echo", "cat")
    with daemon.client() as client:  # A build step in the function's sandbox (pip fails at once).
        built = {"service": "built", "envProcess": "cat", "handlerArchive": _archive({"requirements.txt": b"./none"})}
        response = client.post("/system/functions", json=built)
    assert response.status_code == 400 and "pip install failed" in response.text, response.text
    assert _autogroup_nice(Path(f"/proc/{daemon.pid}/autogroup")) == "0"
    assert _autogroup_nice(session_at_nice_0) == "0"
