"""The pure half of faasd.sandbox.cgroups: /proc/self/cgroup and mountinfo parsing, paths, what a replica's
cgroup is given, and the delegation rule. The cgroup file system itself (this machine's v1 hierarchies) is
exercised in tests/e2e/test_cgroups.py.

The cgroup v2 path cannot run on the test machines (cgroup v1, with an empty v2 mount): what can be
checked of it without a delegated v2 hierarchy is here -- the parsing, the layout's paths, the settings
it writes -- and the e2e tests check that this machine's empty v2 mount is found unusable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faasd.sandbox.cgroups import (
    V1_SHARES,
    Hierarchy,
    Mount,
    base_name,
    delegation_problem,
    directory_of,
    mounts_from_mountinfo,
    paths_from_proc_cgroup,
    replica_settings,
)
from faasd.sandbox.limits import Limits

HYBRID = """9:name=systemd:/
8:pids:/
4:memory:/process_api/7595bd7536dec889e5f5dc9f975b3530
2:cpuacct:/
1:cpu:/
0::/
"""
"""This machine type: cgroup v1 hierarchies, one per controller, and an empty v2 mount."""

DEBIAN_12 = "0::/system.slice/faasd.service\n"
"""cgroup v2 only (systemd's unified layout): one line."""

COMBINED = "5:cpu,cpuacct:/user.slice\n3:pids:/user.slice/user-0.slice\n0::/user.slice\n"

MOUNTINFO = r"""31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
52 41 0:38 /machine.slice /mnt/with\040space rw - cgroup2 cgroup2 rw
60 23 0:40 / /proc rw - proc proc rw
"""


def test_proc_cgroup_maps_each_controller_and_the_v2_line_to_its_path():
    assert paths_from_proc_cgroup(HYBRID) == {
        "name=systemd": "/",
        "pids": "/",
        "memory": "/process_api/7595bd7536dec889e5f5dc9f975b3530",
        "cpuacct": "/",
        "cpu": "/",
        "": "/",
    }
    assert paths_from_proc_cgroup(DEBIAN_12) == {"": "/system.slice/faasd.service"}
    combined = paths_from_proc_cgroup(COMBINED)
    assert combined["cpu"] == combined["cpuacct"] == "/user.slice" and combined["pids"] == "/user.slice/user-0.slice"
    assert paths_from_proc_cgroup("garbage\n:x\n12\n") == {}


def test_mountinfo_finds_cgroup_mounts_with_their_controllers():
    mounts = mounts_from_mountinfo(MOUNTINFO)
    assert mounts == [
        Mount("/sys/fs/cgroup/cpu,cpuacct", "/", 1, frozenset({"cpu", "cpuacct"})),
        Mount("/sys/fs/cgroup/pids", "/", 1, frozenset({"pids"})),
        Mount("/sys/fs/cgroup/systemd", "/", 1, frozenset({"xattr", "name=systemd"})),
        Mount("/sys/fs/cgroup/unified", "/", 2, frozenset()),
        Mount("/mnt/with space", "/machine.slice", 2, frozenset()),  # mountinfo escapes a space as \040.
    ]


def test_a_cgroup_path_is_found_under_the_mount_that_shows_it():
    whole = Mount("/sys/fs/cgroup", "/", 2, frozenset())
    assert directory_of(whole, "/system.slice/faasd.service") == "/sys/fs/cgroup/system.slice/faasd.service"
    assert directory_of(whole, "/") == "/sys/fs/cgroup"
    part = Mount("/mnt/m", "/machine.slice", 2, frozenset())
    assert directory_of(part, "/machine.slice/vm.scope") == "/mnt/m/vm.scope"
    assert directory_of(part, "/machine.slice") == "/mnt/m"
    assert directory_of(part, "/machine.slicey") is None and directory_of(part, "/system.slice") is None


def test_replica_cgroups_are_siblings_named_by_the_state_dir(tmp_path: Path):
    name = base_name(str(tmp_path / "state"))
    assert name.startswith("faasd-") and len(name) == len("faasd-") + 12
    assert base_name(str(tmp_path / "state")) == name != base_name(str(tmp_path / "other"))
    hierarchy = Hierarchy("/sys/fs/cgroup/faasd.service", name, ("cpu", "pids", "memory"))
    assert hierarchy.directory("echo-1a2b3c") == f"/sys/fs/cgroup/faasd.service/{name}.echo-1a2b3c"


def test_what_a_replica_cgroup_is_given():
    limits = Limits(memory_bytes=128 << 20, cpu_nanos=250_000_000, processes=64)
    assert replica_settings("v2", ("cpu", "pids", "memory"), limits) == {
        "cpu.weight.nice": "10",
        "cpu.max": "25000 100000",
        "pids.max": "64",
        "memory.max": str(128 << 20),
        "memory.swap.max": "0",
    }
    assert replica_settings("v1", ("cpu",), limits) == {
        "cpu.shares": str(V1_SHARES),
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "25000",
    }
    assert replica_settings("v1", ("pids",), Limits()) == {"pids.max": "128"}
    assert replica_settings("v1", ("pids",), Limits(), own_processes=3) == {"pids.max": "131"}  # bwrap's own.
    assert replica_settings("v2", ("pids", "memory"), Limits()) == {"pids.max": "128"}  # No limits.memory: no cap.
    tiny = Limits(cpu_nanos=1_000_000)  # Below the kernel's 1 ms per period: raised to it.
    assert replica_settings("v2", ("cpu",), tiny)["cpu.max"] == "1000 100000"


@pytest.mark.parametrize(("cpus", "quota"), [(1, None), (2, "100000"), (3, "100000"), (8, "400000")])
def test_without_limits_cpu_a_replica_may_use_half_the_cpus(cpus: int, quota: str | None):
    """At least one CPU; on a one-CPU machine, no quota (it would be all of it): the weight still holds."""
    v1 = replica_settings("v1", ("cpu",), Limits(), cpus)
    assert v1.get("cpu.cfs_quota_us") == quota and v1["cpu.shares"] == str(V1_SHARES)
    v2 = replica_settings("v2", ("cpu",), Limits(), cpus)
    assert v2.get("cpu.max") == (f"{quota} 100000" if quota else None)
    assert replica_settings("v2", ("cpu",), Limits(cpu_nanos=3_000_000_000), cpus)["cpu.max"] == "300000 100000"


def test_the_delegation_rule(tmp_path: Path):
    """Root under systemd divides only a cgroup systemd marked delegated; anything else is decided by
    whether the daemon may write there."""
    assert delegation_problem(str(tmp_path), "/", root=True, systemd=True) is None  # A namespace's root.
    assert delegation_problem(str(tmp_path), "/x.service", root=True, systemd=False) is None
    assert delegation_problem(str(tmp_path), "/x.service", root=False, systemd=True) is None
    problem = delegation_problem(str(tmp_path), "/system.slice/x.service", root=True, systemd=True)
    assert problem is not None and "Delegate=yes" in problem and "/system.slice/x.service" in problem
    try:
        os.setxattr(tmp_path, "user.delegate", b"1")  # What systemd 251+ sets for Delegate=yes.
    except OSError as exc:
        pytest.skip(f"no user extended attributes on {tmp_path}: {exc.strerror}")
    assert delegation_problem(str(tmp_path), "/system.slice/x.service", root=True, systemd=True) is None
