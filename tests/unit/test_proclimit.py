"""The watchdog's view of its replica's process limit (faasd.watchdog.proclimit): the cooldown's doubling
and reset, which refusals count, and which call is the culprit -- with a real file standing in for the
cgroup's ``pids.events`` (what the kernel writes there is the e2e tests' part: tests/e2e/test_sandbox.py)
and real process groups."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.sandbox import enter
from faasd.watchdog.proclimit import COOLDOWN_FIRST_S, COOLDOWN_MAX_S, COOLDOWN_RESET_S, ProcessLimit
from tests.helpers import scaled, wait_for

LIMIT = 128
GONE = 2**22 + 1
"""A process group that does not exist (above the kernel's largest pid)."""


class Events:
    """A stand-in for a pids cgroup's ``pids.events``, kept open as :mod:`faasd.sandbox.enter` keeps it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.refused(0)

    def refused(self, count: int) -> None:
        self.path.write_text(f"max {count}\n")


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Events]:
    found = Events(tmp_path / "pids.events")
    fd = os.open(found.path, os.O_RDONLY)
    monkeypatch.setitem(enter._kept, "pev", fd)
    monkeypatch.setitem(enter._kept, "plim", LIMIT)
    yield found
    os.close(fd)


def test_without_a_pids_cgroup_nothing_is_watched():
    assert "pev" not in enter._kept
    limit = ProcessLimit()
    assert not limit.active and limit.call_nice is None and limit.to_kill({1: "call"}, 0.0) is None
    before = os.getpriority(os.PRIO_PROCESS, 0)
    limit.lower(os.getpid())  # Not watched: no nice value to give.
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_only_refusals_since_the_last_look_count(events: Events):
    events.refused(3)  # Before the watchdog started: not its calls' doing.
    limit = ProcessLimit()
    assert limit.active and limit.limit == LIMIT and not limit.reached()
    events.refused(4)
    assert limit.reached() and not limit.reached()
    events.refused(9)
    assert limit.reached()


def test_the_cooldown_doubles_with_each_kill_up_to_its_maximum_and_starts_over_after_a_quiet_while(events: Events):
    limit = ProcessLimit()
    now = 1000.0
    assert limit.cooling(now) == 0.0
    lengths = []
    for _ in range(8):
        limit.killed(now, GONE)
        lengths.append(limit.cooling(now))
        now += lengths[-1]
        assert limit.cooling(now) == 0.0  # Over at its end.
    assert lengths == [COOLDOWN_FIRST_S * 2**n for n in range(5)] + [COOLDOWN_MAX_S] * 3
    limit.killed(now + COOLDOWN_RESET_S + 1, GONE)
    assert limit.cooling(now + COOLDOWN_RESET_S + 1) == COOLDOWN_FIRST_S


def test_refusals_during_a_cooldown_are_not_blamed_on_the_next_call(events: Events):
    """The killed bomb's last processes are refused forks until they are gone; when the cooldown is
    over, the next call starts with a clean count."""
    limit = ProcessLimit()
    events.refused(1)
    assert limit.to_kill({GONE: "bomb"}, 50.0) == "bomb"
    events.refused(7)  # After the tick that killed it.
    assert limit.cooling(50.5) == pytest.approx(0.5)
    assert limit.cooling(51.0) == 0.0
    assert limit.to_kill({GONE + 1: "next"}, 51.1) is None
    events.refused(8)
    assert limit.to_kill({GONE + 1: "next"}, 51.2) == "next"
    assert limit.cooling(51.2) == 2 * COOLDOWN_FIRST_S


def test_the_cooldown_runs_from_the_answer_and_while_the_killed_group_lives(events: Events, groups: list):
    """Fork mode answers a killed call once its processes are gone (or a second after the kill): a client
    that calls again at once is still refused; and a new call must not find the replica still full."""
    limit = ProcessLimit()
    limit.killed(10.0, GONE)
    limit.answered(10.8)
    assert limit.cooling(11.5) == pytest.approx(0.3)
    assert limit.cooling(11.8) == 0.0
    groups.append(_group(3))
    limit.killed(20.0, groups[0].pid)
    assert limit.cooling(25.0) == COOLDOWN_FIRST_S  # Past its time, but the group is still there.
    os.killpg(groups[0].pid, signal.SIGKILL)
    groups[0].wait()
    wait_for(lambda: limit.cooling(25.0) == 0.0, scaled(10.0), "the killed group to be gone")


def test_no_refusal_no_kill(events: Events):
    limit = ProcessLimit()
    assert limit.to_kill({GONE: "call"}, 1.0) is None and limit.cooling(1.0) == 0.0


def _group(processes: int) -> subprocess.Popen[bytes]:
    """A process group of ``processes`` processes (a shell and its sleeps), like a call's."""
    script = f"for i in $(seq {processes - 1}); do sleep 60 & done; echo up; wait"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, process_group=0)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


@pytest.fixture
def groups() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_culprit_is_the_call_holding_a_quarter_of_the_limit(events: Events, groups: list):
    """Of several calls, the one whose process group holds the most processes, when that is at least a
    quarter of the limit -- not an ordinary call, nor one of many that together reached it."""
    groups += [_group(2), _group(LIMIT // 4), _group(1)]
    small, big, lone = (proc.pid for proc in groups)
    wait_for(lambda: _members(big) >= LIMIT // 4, scaled(10.0), "the sleeps to start")
    limit = ProcessLimit()
    assert limit.culprit([small, big, lone]) == big
    assert limit.culprit([small, lone]) is None  # Three processes between them: ordinary calls.
    assert limit.culprit([lone]) == lone  # Alone: nobody else could have filled it.
    events.refused(1)
    calls = {small: "small", big: "big", lone: "lone"}
    assert limit.to_kill(calls, 10.0) == "big" and limit.cooling(10.0) == COOLDOWN_FIRST_S


def _members(group: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                count += os.getpgid(int(entry)) == group
    return count


def test_calls_are_made_nicer_than_the_watchdog(events: Events, groups: list):
    limit = ProcessLimit()
    assert limit.call_nice == os.getpriority(os.PRIO_PROCESS, 0) + 5
    groups.append(_group(1))
    limit.lower(groups[0].pid)
    assert os.getpriority(os.PRIO_PROCESS, groups[0].pid) == limit.call_nice


def _with_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """A new ``sleep`` under ``pid`` (free again), through ``ns_last_pid`` (root only); None when another
    process of this shared machine took it first every time."""
    for _ in range(50):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w", encoding="ascii") as file:
                file.write(str(pid - 1))
        except OSError:
            return None
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
        if child.pid == pid:
            return child
        child.kill()
        child.wait()
    return None


def test_a_stopped_process_whose_pid_is_recycled_mid_sweep_is_stopped_and_killed_too(
    events: Events, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep pins each process it stopped by a pidfd: once one is gone, a new process under its pid is
    stopped and killed in turn. It was taken for the one already stopped and left running: a bomb process
    under a recycled pid forked on, and the sweep never converged."""
    if os.geteuid() != 0:
        pytest.skip("choosing a process's pid (ns_last_pid) needs root")
    procs = tmp_path / "cgroup.procs"  # A real file standing in for the cgroup's member list.
    procs.write_text("")
    fd = os.open(procs, os.O_RDONLY)
    monkeypatch.setitem(enter._kept, "pprc", fd)
    try:
        limit = ProcessLimit()
        first = subprocess.Popen(["sleep", "30"], start_new_session=True)
        procs.write_text(f"{first.pid}\n")
        events.refused(1)
        assert limit.to_kill({}, 0.0) is None and limit.sweeping
        assert first.wait(timeout=scaled(5)) == -signal.SIGKILL  # Stopped, killed, and reaped: its pid is free.
        second = _with_pid(first.pid)
        if second is None:
            pytest.skip(f"pid {first.pid} was taken by another process every time")
        try:
            wait_for(lambda: (limit.to_kill({}, 0.0), second.poll() is not None)[1], 5.0, "the new process killed")
            assert second.returncode == -signal.SIGKILL
            procs.write_text("")
            wait_for(lambda: (limit.to_kill({}, 0.0), not limit.sweeping)[1], 5.0, "the sweep to end")
        finally:
            with contextlib.suppress(ProcessLookupError):
                second.kill()
            second.wait()
    finally:
        os.close(fd)
