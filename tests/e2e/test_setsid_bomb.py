"""A fork bomb that leaves its call (faasd/watchdog/proclimit.py, "Processes that left their call"): a real
daemon, each sandbox mode, a real pids cgroup per replica.

The bomb starts in a session of its own (``setsid``) and its call answers at once: no call in flight
holds it, so killing the culprit call's process group -- what stops an ordinary bomb -- cannot reach it.
Without more, it holds its replica's ``pids.max`` until the replica ends: every later call fails to
fork. The watchdog notices the refusals on its tick (also when no call is in flight), kills every
process of its cgroup that is not itself (nor its sandbox's, nor a warm worker, nor a call in flight),
and cools down: the replica answers again within seconds, and the daemon stays healthy.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import Daemon, StartDaemon
from tests.e2e.http_bomb import deploy_http_bomb
from tests.e2e.test_sandbox import ALL_MODES, _archive, _needs
from tests.helpers import scaled, wait_for
from tests.process_tree import cmdline, orphans_to_init, proc_table

pytestmark = pytest.mark.slow

SETSID_BOMB = """sh -c 'case "$Http_Query" in
bomb) setsid python3 -c "import os
while True:
    try:
        os.fork()
    except OSError:
        pass" </dev/null >/dev/null 2>&1 & echo launched;;
*) echo fine;;
esac'"""
"""The call starts the bomb in a new session and answers at once. Every process forks for ever, whether
its forks succeed or not (a shell's bomb dies out by itself when its forks fail, which proves nothing)."""
PY_SETSID_BOMB = b"""import os


def handle(event, context):
    if "bomb" not in event.path:
        return "fine"
    if os.fork() == 0:
        os.setsid()
        while True:
            try:
                os.fork()
            except OSError:
                pass
    return "launched"
"""
"""A python-mode bomb: the worker's child leaves its process group and forks for ever; the call answers.
The worker never waits for that child: once killed, it is the watchdog's to have reaped."""
WATCHDOGS = ["fork", "streaming", "python", "http"]
"""streaming: fork mode's watch, inherited; http: the function's server starts the bomb the way a daemon
would (tests/e2e/fixtures/bomb_server.py)."""
REAPED_WITHIN_S = 5.0
"""After the replica answers again, every process the bomb left is reaped within this."""
RECOVERED_WITHIN_S = 15.0
"""From the launch until the replica answers normally again: the idle tick (1 s) notices the refusals,
the sweep, the first cooldown (1 s), on a loaded 2-CPU machine."""


def _deploy(daemon: Daemon, watchdog: str) -> tuple[str, str]:
    if watchdog == "http":
        url = deploy_http_bomb(daemon, "sbomb", exec_timeout="20s")
        return f"{url}/setsid", f"{url}/fine"
    if watchdog == "python":
        env = {"mode": "python", "workers": "2", "exec_timeout": "20s"}
        daemon.deploy("sbomb", "", envVars=env, handlerArchive=_archive({"handler.py": PY_SETSID_BOMB}))
        return f"{daemon.url}/function/sbomb/bomb", f"{daemon.url}/function/sbomb/fine"
    env = {"exec_timeout": "20s", **({"mode": "streaming"} if watchdog == "streaming" else {})}
    daemon.deploy("sbomb", SETSID_BOMB, envVars=env)
    return f"{daemon.url}/function/sbomb?bomb", f"{daemon.url}/function/sbomb?fine"


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("watchdog", WATCHDOGS)
def test_a_bomb_in_a_session_of_its_own_is_killed_and_the_replica_recovers(
    watchdog: str, mode: str, start_daemon: StartDaemon
) -> None:
    _bomb_and_recover(start_daemon(args=("--sandbox", mode)), watchdog, mode)


@pytest.mark.parametrize("watchdog", WATCHDOGS)
def test_a_pooled_replica_ends_a_bomb_in_a_session_of_its_own_too(watchdog: str, start_daemon: StartDaemon) -> None:
    """A replica from the pool (docs/coldstart.md) was given its cgroup's member list with its assignment."""
    daemon = start_daemon(args=("--pool-size", "1", "--log-level", "debug"), FAASD_POOL_SIZE="1")
    wait_for(lambda: "pooled replica ready" in daemon.logs(), 60.0, "a pooled replica")
    _bomb_and_recover(daemon, watchdog, "pooled")
    ready = [
        line for line in daemon.logs().splitlines() if 'event="replica ready"' in line and "function=sbomb " in line
    ]
    assert ready and "pooled=True" in ready[0], ready


def _bomb_and_recover(daemon: Daemon, watchdog: str, mode: str) -> None:
    """Deploy the bomb, set it off in a session of its own, and wait until the replica answers again."""
    _needs(daemon, "pids")
    bomb, fine = _deploy(daemon, watchdog)
    daemon.wait_available("sbomb", 1)
    assert httpx.post(fine, timeout=10.0).text.strip() == "fine"
    with orphans_to_init():  # Without a PID namespace the bomb's orphans would be ours, unreaped.
        launched = time.monotonic()
        answer = httpx.post(bomb, timeout=30.0)
        assert (answer.status_code, answer.text.strip()) == (200, "launched"), answer.text
        seen: list[tuple[int, str]] = []

        def answers_fine() -> bool:
            """Five calls in a row answered normally (one alone may slip in while the bomb churns)."""
            for _ in range(5):
                response = httpx.post(fine, timeout=10.0)
                seen.append((response.status_code, response.text.strip()[:80]))
                if (response.status_code, response.text.strip()) != (200, "fine"):
                    return False
                time.sleep(0.05)
            return True

        try:
            wait_for(answers_fine, scaled(RECOVERED_WITHIN_S), "the replica to answer after the bomb", interval=0.2)
        except AssertionError:
            with daemon.client() as client:
                logs = client.get("/system/logs", params={"name": "sbomb"}).text
            raise AssertionError(f"{seen[-12:]}\n{logs[-3000:]}") from None
        recovered = time.monotonic() - launched
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
        zombies: list[str] = []

        def reaped() -> bool:
            zombies[:] = _zombies(daemon)
            return not zombies

        wait_for(reaped, REAPED_WITHIN_S, lambda: f"zombies left in the replica after the bomb: {zombies[:5]}")
    print(f"setsid bomb ({watchdog}, {mode}): answering again {recovered:.2f}s after the launch; {Counter(seen)}")
    with daemon.client() as client:
        logs = client.get("/system/logs", params={"name": "sbomb"}).text
    assert "processes that left their call" in logs, logs[-2000:]


def _zombies(daemon: Daemon) -> list[str]:
    """The zombies among the daemon's replicas: their process trees (the PID namespace, in bwrap) and the
    members of their pids cgroups (where the orphans of a replica without a PID namespace are)."""
    table = proc_table()
    tree = set(daemon.replicas())
    members: set[int] = set()
    for root in tree:
        members.update(_pids_cgroup_members(root))
    grown = True
    while grown:
        below = {pid for pid, info in table.items() if info.ppid in tree} - tree
        tree |= below
        grown = bool(below)
    return [
        f"{pid} (parent {table[pid].ppid}: {cmdline(table[pid].ppid)[:80]})"
        for pid in sorted(tree | members)
        if pid in table and table[pid].state == "Z"
    ]


def _pids_cgroup_members(pid: int) -> list[int]:
    """The members of ``pid``'s pids cgroup (v1 hierarchy or v2), as ``cgroup.procs`` lists them."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            procs = Path("/sys/fs/cgroup/pids", path.lstrip("/"), "cgroup.procs")
        elif controllers == "":
            procs = Path("/sys/fs/cgroup", path.lstrip("/"), "cgroup.procs")
        else:
            continue
        try:
            return [int(member) for member in procs.read_text().split()]
        except OSError:
            continue
    return []
