"""faasd.sandbox.cpuclass: which functions are batch, and the cgroup files it reads and writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd.sandbox import cpuclass
from faasd.sandbox.cgroups import Cgroups, Hierarchy, Placement
from faasd.sandbox.cpuclass import BUSY_CPUS, HEAVY_CALL_CPU_S, INTERVAL_S, LIGHT_CALL_CPU_S, decide

HOG = (0.2, 2)
"""An interval of the memory hog: two calls started, 100 ms of CPU each, 0.8 of a CPU busy."""
CAT = (0.01, 40)
"""An interval of calls to ``cat``: 0.25 ms each."""
NOTHING = (0.0, 0)


def test_calls_that_each_burn_much_cpu_make_a_function_batch_within_one_interval() -> None:
    assert decide(False, [NOTHING, NOTHING, HOG], INTERVAL_S) is True


def test_light_calls_leave_a_function_ordinary_however_many() -> None:
    assert decide(False, [CAT] * 8, INTERVAL_S) is False
    assert decide(False, [(0.2, 800)], INTERVAL_S) is False  # A CPU's worth of light calls.


def test_a_little_cpu_time_without_calls_changes_nothing() -> None:
    """Under BUSY_CPUS of a CPU with no call started: a replica's housekeeping, nothing to judge by."""
    housekeeping = (BUSY_CPUS * INTERVAL_S / 2, 0)
    assert housekeeping[0] >= HEAVY_CALL_CPU_S / 5
    assert decide(False, [housekeeping], INTERVAL_S) is False
    assert decide(True, [housekeeping], INTERVAL_S) is True


def test_cpu_time_without_calls_is_one_heavy_call() -> None:
    """A process an http-mode function left spinning between calls."""
    assert decide(False, [(INTERVAL_S * 0.9, 0)], INTERVAL_S) is True


def test_a_batch_function_stays_batch_while_it_is_not_called() -> None:
    """Between two bursts of the hog's calls: no calls, no CPU time, nothing to judge by."""
    assert decide(True, [HOG, NOTHING], INTERVAL_S) is True
    assert decide(True, [NOTHING] * 8, INTERVAL_S) is True


def test_an_interval_whose_calls_have_not_burnt_their_cpu_yet_does_not_flip_a_heavy_function() -> None:
    """Calls counted when they start, their CPU time in the next interval: the window decides light."""
    assert decide(True, [HOG, HOG, (0.0, 2)], INTERVAL_S) is True


def test_a_batch_function_whose_calls_got_light_is_ordinary_again() -> None:
    assert decide(True, [CAT] * 8, INTERVAL_S) is False


def test_between_light_and_heavy_a_function_keeps_its_class() -> None:
    middle = ((LIGHT_CALL_CPU_S + HEAVY_CALL_CPU_S) / 2 * 4, 4)
    assert decide(True, [middle], INTERVAL_S) is True
    assert decide(False, [middle], INTERVAL_S) is False


def test_no_intervals_or_no_time_change_nothing() -> None:
    assert decide(True, [], INTERVAL_S) is True
    assert decide(False, [HOG], 0.0) is False


def _v1(tmp_path: Path, *, shared: bool) -> tuple[Cgroups, Placement]:
    """A v1 layout in ``tmp_path``: cpu and cpuacct in one hierarchy (``shared``) or two."""
    if shared:
        hierarchies: tuple[Hierarchy, ...] = (Hierarchy(str(tmp_path / "cpu,cpuacct"), "faasd-x", ("cpu", "cpuacct")),)
    else:
        hierarchies = (
            Hierarchy(str(tmp_path / "cpu"), "faasd-x", ("cpu",)),
            Hierarchy(str(tmp_path / "cpuacct"), "faasd-x", ("cpuacct",)),
        )
    directories = []
    for hierarchy in hierarchies:
        Path(hierarchy.parent).mkdir()
        Path(hierarchy.parent, "cpu.idle").write_text("0\n")
        directory = Path(hierarchy.directory("r1"))
        directory.mkdir()
        directories.append(str(directory))
    return Cgroups("v1", hierarchies), Placement(tuple(directories))


@pytest.mark.parametrize("shared", [True, False], ids=["cpu,cpuacct", "cpu and cpuacct"])
def test_v1_reads_cpuacct_usage_and_writes_cpu_idle_where_each_is(tmp_path: Path, shared: bool) -> None:
    cgroups, placement = _v1(tmp_path, shared=shared)
    cpu_dir, acct_dir = Path(placement.directories[0]), Path(placement.directories[-1])
    (acct_dir / "cpuacct.usage").write_text("1500000000\n")
    assert cpuclass.usage_seconds(cgroups, placement) == 1.5
    (cpu_dir / "cpu.idle").write_text("0")
    assert cpuclass.set_batch(cgroups, placement, True)
    assert (cpu_dir / "cpu.idle").read_text() == "1"
    assert cpuclass.set_batch(cgroups, placement, False)
    assert (cpu_dir / "cpu.idle").read_text() == "0"
    assert cpuclass.available(cgroups) is None


def test_v2_reads_usage_usec_from_cpu_stat(tmp_path: Path) -> None:
    hierarchy = Hierarchy(str(tmp_path), "faasd-x", ("cpu", "pids", "memory"))
    directory = Path(hierarchy.directory("r1"))
    directory.mkdir()
    (directory / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    cgroups, placement = Cgroups("v2", (hierarchy,)), Placement((str(directory),))
    assert cpuclass.usage_seconds(cgroups, placement) == 2.5


def test_a_replica_whose_cgroup_is_gone_reads_none_and_is_not_written(tmp_path: Path) -> None:
    cgroups, placement = _v1(tmp_path, shared=True)
    for directory in placement.directories:
        Path(directory).rmdir()
    assert cpuclass.usage_seconds(cgroups, placement) is None
    assert cpuclass.set_batch(cgroups, placement, True) is False


def test_it_says_why_cpu_classes_are_off(tmp_path: Path) -> None:
    assert cpuclass.available(Cgroups("none")) == "no cpu controller"
    without_acct = Cgroups("v1", (Hierarchy(str(tmp_path), "faasd-x", ("cpu", "pids")),))
    assert "cpuacct" in str(cpuclass.available(without_acct))
    old_kernel = Cgroups("v1", (Hierarchy(str(tmp_path), "faasd-x", ("cpu", "cpuacct")),))
    assert "cpu.idle" in str(cpuclass.available(old_kernel))
