"""A control group per local replica: its CPU share, its process count and (cgroup v2) its memory total.

rlimits bound what one *process* may have; a misbehaving function is many processes. A cgroup bounds
the replica as a whole, in every sandbox mode (``none`` included): a CPU weight equal to every other
replica's (so a fork bomb or a spinner gets one replica's share of a busy CPU, never more), a CPU quota
from ``limits.cpu``, ``pids.max`` = its process limit, and on cgroup v2 ``memory.max`` = its
``limits.memory`` (then the per-process ``RLIMIT_AS`` is not set: docs/sandbox.md, "Limits").

What the daemon can use is decided once, at start (:func:`setup`, blocking), in this order:

1. **cgroup v2 with a delegated subtree** -- the daemon's own cgroup ``D`` (the ``0::`` line of
   ``/proc/self/cgroup``, under the ``cgroup2`` mount) is writable, is ours to divide (see
   :func:`delegation_problem`), and offers ``cpu``, ``pids`` or ``memory`` in ``cgroup.controllers``.
   A cgroup with controllers enabled for its children may hold no process itself (cgroup v2's "no
   internal processes" rule), so the daemon first moves itself -- and whatever else is in ``D`` -- into
   a leaf of its own, then enables the controllers in ``D/cgroup.subtree_control``::

       D/faasd-daemon/                      the daemon
       D/faasd-<hash>.<replica id>/         one replica: cpu.max, pids.max, memory.max, memory.swap.max=0

   Under systemd that is what ``Delegate=yes`` gives the unit (the shipped unit says so). The test
   machines cannot run this path -- they boot cgroup v1 with every controller on a v1 hierarchy and an
   empty v2 mount -- so it is covered by the parsing and detection tests only; the v1 path runs for real.
2. **cgroup v1** -- the ``cpu``, ``cpuacct`` and ``pids`` hierarchies (``cpuacct`` often shares the
   ``cpu`` one) where the daemon's cgroup in each is writable and ours:
   ``<mount><daemon's path>/faasd-<hash>.<replica id>`` in each (v1 lets a cgroup have both processes
   and children: no leaf needed). Memory stays ``RLIMIT_AS`` (the v1 memory controller is
   not used).
3. **none** -- rlimits only, and the autogroup nice value of each replica's session
   (:mod:`faasd.sandbox.enter`); the reason is reported.

**CPU.** Each replica's cgroup is a *sibling* of the daemon's, weighted like a process at nice
:data:`REPLICA_NICE` (v2 ``cpu.weight.nice``; v1 ``cpu.shares`` :data:`V1_SHARES`), a tenth of the
daemon's weight -- the policy of each replica's autogroup nice value without cgroups, but one the kernel
applies to every process of the replica whatever its session, with no rate limit, and also where
autogroups do not apply (any process in a non-root CPU cgroup, e.g. under a systemd unit with
``Delegate=yes``). A pooled replica given a fork- or streaming-mode function weighs what the daemon
does from its assignment until the daemon has seen it ready (:func:`relimit`, :func:`weigh`): only faasd's
code runs in it then, and on a busy host a tenth made that start wait for a core; the daemon lowers it
before the replica accepts its first call (:mod:`faasd.sandbox.pooled`). And a CFS quota:
``limits.cpu``, else half the CPUs the daemon may use, at least one
(:func:`default_cpu_nanos`), so that a runaway function leaves a CPU to everyone else on a small machine.
A function whose calls are CPU-heavy also goes to the idle class (:mod:`faasd.sandbox.cpuclass`).

Measured on a 2-CPU machine shared with other work, a fork bomb (or a memory hog) next to a function
called in a loop through the daemon: the callers waited for the CPU in the daemon and the client more
than in the other replica, so the bomb's weight against everything else is what matters most -- at the
default weight the other function's p99 rose about 4x, at a tenth within 2x, and the quota trimmed what
was left. The price of a tenth: on a busy host a replica also waits behind ordinary processes (the
other function's own p99 was higher, fault or not). As siblings, a mostly idle replica keeps its own
place in the scheduler's queue; under one parent group for all replicas the others waited for the
parent's turn once the bomb had used it up (single windows of 370-580 ms).

``<hash>`` is a hash of the state dir, as for the uid work root: stable across restarts, so :func:`setup`
finds what a daemon killed with SIGKILL left and removes it (killing any process still in it), and
distinct per daemon, so several daemons on one host never touch each other's replicas.

A replica's first process joins its cgroup before it does anything else (:func:`join_command`): the
daemon starts it as ``/bin/sh -c 'echo 0 > <cgroup>/cgroup.procs && ... && exec "$@"' <the replica's
command>``, so every process of the replica -- in ``bwrap`` mode bubblewrap's own processes too, which
reap the function's orphans -- is in it from its first fork on: no race, and the shell runs as the
daemon, with the daemon's right to write there. A replica that cannot join does not run (exit 126, with
the reason). When the replica ends, :func:`remove` kills whatever is still in its cgroup and removes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shlex
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from faasd.sandbox.limits import Limits
from faasd.units import NANOS_PER_CPU

__all__ = [
    "CPU_PERIOD_US",
    "DAEMON_LEAF",
    "REPLICA_NICE",
    "V1_SHARES",
    "Cgroups",
    "Hierarchy",
    "Mount",
    "Placement",
    "base_name",
    "default_cpu_nanos",
    "delegation_problem",
    "directory_of",
    "join_command",
    "mounts_from_mountinfo",
    "parents_here",
    "paths_from_proc_cgroup",
    "place",
    "relimit",
    "remove",
    "replica_settings",
    "set_idle",
    "setup",
    "sweep",
    "weigh",
]

Kind = Literal["v2", "v1", "none"]

CONTROLLERS = ("cpu", "pids", "memory")
"""What faasd uses, in v2; on v1 ``cpu``, ``cpuacct`` (a replica's CPU time, :mod:`faasd.sandbox.cpuclass`)
and ``pids`` (see the module docstring)."""
V1_CONTROLLERS = ("cpu", "cpuacct", "pids")

DAEMON_LEAF = "faasd-daemon"
"""cgroup v2: the leaf the daemon moves itself into (the "no internal processes" rule)."""

REPLICA_NICE = 10
"""A replica's CPU weight, as a nice value: a tenth of the daemon's (see the module docstring)."""
V1_SHARES = 110
"""cgroup v1 ``cpu.shares`` of nice :data:`REPLICA_NICE`: the kernel's weight table (nice 0 = 1024)."""
START_NICE = 0
START_V1_SHARES = 1024
"""The weight of a replica's cgroup while only faasd's code runs in it (:func:`weigh`): the daemon's."""

CPU_PERIOD_US = 100_000
"""The CFS period a ``limits.cpu`` quota is a share of (the kernel's default)."""

OPTIONAL_FILES = frozenset({"memory.swap.max"})
"""Not there without swap accounting (a kernel built or booted without it): then there is nothing to cap."""

REMOVE_TRIES = 50
REMOVE_PAUSE_S = 0.02
"""Removing a cgroup: its killed processes take a moment to exit; at most ~1 s, then it is left for the
next start's sweep (and logged by the caller)."""


@dataclass(frozen=True, slots=True)
class Mount:
    """A cgroup file system mount, from ``/proc/self/mountinfo``."""

    point: str
    root: str
    """The cgroup path mounted there (``/`` unless a subtree was bind-mounted)."""
    version: int
    controllers: frozenset[str]
    """v1: the controllers of the hierarchy (``name=...`` ones included); v2: empty (see cgroup.controllers)."""


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where this daemon's replica cgroups go in one hierarchy, and what faasd uses of it."""

    parent: str
    """The daemon's cgroup (v2: the one it divided): a directory of the cgroup file system."""
    prefix: str
    """``faasd-<hash>``: a replica's cgroup is ``<parent>/<prefix>.<replica id>``."""
    controllers: tuple[str, ...]

    def directory(self, replica: str) -> str:
        return os.path.join(self.parent, f"{self.prefix}.{replica}")


@dataclass(frozen=True, slots=True)
class Cgroups:
    """What the daemon uses, decided at start by :func:`setup`."""

    kind: Kind
    hierarchies: tuple[Hierarchy, ...] = ()
    reason: str = ""
    """What is used and where, or why nothing is."""
    cpus: int = 1
    """CPUs the daemon may run on (its affinity), when it was set up: the default quota is half."""
    cpu_classes: str = "off: not checked"
    """``on`` when CPU-heavy functions go to the idle class (:mod:`faasd.sandbox.cpuclass`), else why not."""

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(name for hierarchy in self.hierarchies for name in hierarchy.controllers)

    @property
    def cpu(self) -> bool:
        """Each replica has a CPU weight of its own (then the autogroup nice value is moot)."""
        return "cpu" in self.controllers

    @property
    def memory(self) -> bool:
        """``limits.memory`` is the replica's ``memory.max`` (and not an ``RLIMIT_AS``)."""
        return "memory" in self.controllers

    def describe(self) -> dict[str, object]:
        """For ``/system/info`` (``faasd.sandbox.cgroups``) and ``faasd status``."""
        described: dict[str, object] = {"mode": self.kind, "controllers": sorted(self.controllers)}
        default = default_cpu_nanos(self.cpus) if self.cpu else None
        if default:
            described["default_cpu"] = f"{default / NANOS_PER_CPU:g}"
        return {**described, "cpu_classes": self.cpu_classes, "reason": self.reason}


NO_CGROUPS = Cgroups("none", reason="not set up")


@dataclass(slots=True)
class Placement:
    """One replica's cgroup: a directory per hierarchy, and what the watchdog reads of it.

    Resource handling: :func:`place` opens ``events_fd`` (cgroup v2 with a memory limit), ``pids_fd`` and ``procs_fd``
    (with the pids controller); the caller passes them to the replica and closes its own copies
    (:meth:`close_fds`) once the replica is spawned; :func:`remove` removes the directories.
    """

    directories: tuple[str, ...]
    events_fd: int | None = None
    """cgroup v2 with a memory limit: ``memory.events``, open for reading (the watchdog tells an
    out-of-memory kill by its ``oom_kill`` count)."""
    memory_bytes: int | None = None
    """The ``memory.max`` set, if any."""
    pids_fd: int | None = None
    """With the pids controller: ``pids.events``, open for reading (the watchdog notices its replica
    refused a fork at its limit, :mod:`faasd.watchdog.proclimit`)."""
    procs_fd: int | None = None
    """With the pids controller: that cgroup's ``cgroup.procs``, open for reading (once the limit is
    reached, the watchdog kills the processes that left their call: :mod:`faasd.watchdog.proclimit`)."""

    def close_fds(self) -> None:
        for name in ("events_fd", "pids_fd", "procs_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)


# -- parsing (pure) ---------------------------------------------------------------------------------


def paths_from_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` -> {controller: path}; the v2 hierarchy's line (``0::/path``) is ``""``.

    A v1 line names one or more controllers (``4:cpu,cpuacct:/x``): each maps to the path.
    """
    paths: dict[str, str] = {}
    for line in text.splitlines():
        number, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not sep or not sep2 or not number.isdigit():
            continue
        if number == "0" and controllers == "":
            paths[""] = path
            continue
        for name in controllers.split(","):
            if name:
                paths[name] = path
    return paths


def mounts_from_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of ``/proc/self/mountinfo`` (see proc(5) for the format)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 4 or dash < 5:
            continue
        fstype, options = fields[dash + 1], fields[dash + 3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        point, root = _unescape(fields[4]), _unescape(fields[3])
        if fstype == "cgroup2":
            mounts.append(Mount(point, root, 2, frozenset()))
        else:
            known = {option for option in options.split(",") if option not in ("rw", "ro")}
            mounts.append(Mount(point, root, 1, frozenset(known)))
    return mounts


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    if "\\" not in text:
        return text
    out, index = [], 0
    while index < len(text):
        if text[index] == "\\" and text[index + 1 : index + 4].isdigit():
            out.append(chr(int(text[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def directory_of(mount: Mount, path: str) -> str | None:
    """The directory of cgroup ``path`` under ``mount``, or None when the mount does not show it."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None
    return os.path.join(mount.point, path[len(root) :].lstrip("/")).rstrip("/") or "/"


def base_name(state_dir: str) -> str:
    """``faasd-<hash of the state dir>``: this daemon's, stable across its restarts."""
    return "faasd-" + hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:12]


# -- what this daemon may use -----------------------------------------------------------------------


def delegation_problem(directory: str, path: str, *, root: bool, systemd: bool) -> str | None:
    """Why the daemon must not divide cgroup ``path`` (at ``directory``); None when it may.

    It may when nobody else manages that part of the tree: it is the root of the daemon's cgroup
    namespace (a container's), or no systemd runs, or the daemon is not root (a non-root daemon that can
    write there was given it: that is what delegation is), or systemd marked it delegated (the
    ``trusted.delegate`` or ``user.delegate`` extended attribute, systemd 251+, for ``Delegate=yes``).
    A root daemon in a systemd unit without ``Delegate=yes`` must not: systemd owns that cgroup and
    may undo changes made to it.
    """
    if path == "/" or not systemd or not root:
        return None
    for name in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(directory, name) == b"1":
                return None
    return f"the daemon's cgroup {path} is systemd's and not delegated (run it in a unit with Delegate=yes)"


def _writable(directory: str, *files: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK) and all(
        os.access(os.path.join(directory, name), os.W_OK) for name in files
    )


def _read(path: str) -> str:
    with open(path, encoding="ascii") as file:
        return file.read()


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(value)


def setup(state_dir: str) -> Cgroups:
    """Decide what to use (see the module docstring), lay it out, and sweep what an earlier run of this
    daemon left. Blocking; never raises: a failure is a :class:`Cgroups` of kind ``none`` saying why."""
    try:
        proc_cgroup = _read("/proc/self/cgroup")
        mountinfo = _read("/proc/self/mountinfo")
    except OSError as exc:
        return Cgroups("none", reason=f"cannot read /proc/self: {exc.strerror}")
    paths = paths_from_proc_cgroup(proc_cgroup)
    mounts = mounts_from_mountinfo(mountinfo)
    root = os.geteuid() == 0
    systemd = os.path.isdir("/run/systemd/system")
    name = base_name(state_dir)
    problems: list[str] = []
    found = _setup_v2(paths, mounts, name, root=root, systemd=systemd, problems=problems)
    if found is None:
        found = _setup_v1(paths, mounts, name, root=root, systemd=systemd, problems=problems)
        if found is not None and problems:  # Why not v2 (and so no memory.max), or not every v1 hierarchy.
            found = replace(found, reason=f"{found.reason} ({'; '.join(problems)})")
    if found is None:
        return Cgroups("none", reason="; ".join(problems) or "no cgroup file system is mounted")
    for hierarchy in found.hierarchies:
        sweep(hierarchy)
    return replace(found, cpus=len(os.sched_getaffinity(0)))


def parents_here() -> list[str]:
    """Where a daemon started by this process would make its replicas' cgroups, in every mounted
    hierarchy faasd uses (it may not be allowed to): for cleaning up after a daemon that died. Blocking."""
    try:
        paths = paths_from_proc_cgroup(_read("/proc/self/cgroup"))
        mounts = mounts_from_mountinfo(_read("/proc/self/mountinfo"))
    except OSError:
        return []
    found = []
    for mount in mounts:
        key = "" if mount.version == 2 else next((c for c in V1_CONTROLLERS if c in mount.controllers), None)
        if key is None or key not in paths:
            continue
        path = paths[key]
        if mount.version == 2 and os.path.basename(path) == DAEMON_LEAF:
            path = os.path.dirname(path)
        directory = directory_of(mount, path)
        if directory is not None and os.path.isdir(directory):
            found.append(directory)
    return found


def _setup_v2(
    paths: Mapping[str, str], mounts: Iterable[Mount], name: str, *, root: bool, systemd: bool, problems: list[str]
) -> Cgroups | None:
    mount = next((mount for mount in mounts if mount.version == 2), None)
    if mount is None or "" not in paths:
        return None
    path = paths[""]
    if os.path.basename(path) == DAEMON_LEAF:  # Moved there by an earlier daemon in the same cgroup.
        path = os.path.dirname(path)
    directory = directory_of(mount, path)
    if directory is None:
        problems.append(f"cgroup v2: the daemon's cgroup {path} is not under the mount at {mount.point}")
        return None
    try:
        offered = _read(os.path.join(directory, "cgroup.controllers")).split()
    except OSError as exc:
        problems.append(f"cgroup v2: cannot read {directory}/cgroup.controllers: {exc.strerror}")
        return None
    usable = tuple(controller for controller in CONTROLLERS if controller in offered)
    if not usable:
        problems.append(
            f"cgroup v2 at {mount.point}: none of {', '.join(CONTROLLERS)} is available to the daemon's cgroup "
            f"(they are on cgroup v1 hierarchies, or not delegated)"
        )
        return None
    problem = delegation_problem(directory, path, root=root, systemd=systemd)
    if problem is None and not _writable(directory, "cgroup.procs", "cgroup.subtree_control"):
        problem = f"the daemon's cgroup {directory} is not writable by it"
    if problem is None:
        problem = _divide_v2(directory, usable)
    if problem is not None:
        problems.append(f"cgroup v2: {problem}")
        return None
    where = f"cgroup v2 ({', '.join(usable)}) in {directory}"
    return Cgroups("v2", (Hierarchy(directory, name, usable),), where)


def _divide_v2(directory: str, controllers: tuple[str, ...]) -> str | None:
    """The layout of the module docstring under ``directory``; None, or what failed."""
    enable = " ".join(f"+{controller}" for controller in controllers)
    try:
        # Only the host's root cgroup (it has no cgroup.type) is exempt from the no-internal-processes
        # rule; a container's root (its cgroup namespace's) is not.
        if os.path.exists(os.path.join(directory, "cgroup.type")):
            leaf = os.path.join(directory, DAEMON_LEAF)
            with contextlib.suppress(FileExistsError):
                os.mkdir(leaf)
            for _ in range(10):  # Until nothing is left in the daemon's cgroup (it might fork meanwhile).
                pids = _read(os.path.join(directory, "cgroup.procs")).split()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        _write(os.path.join(leaf, "cgroup.procs"), pid)
        _write(os.path.join(directory, "cgroup.subtree_control"), enable)
    except OSError as exc:
        return f"cannot divide {directory}: {exc.strerror or exc}"
    return None


def _setup_v1(
    paths: Mapping[str, str], mounts: Iterable[Mount], name: str, *, root: bool, systemd: bool, problems: list[str]
) -> Cgroups | None:
    hierarchies = []
    for mount in mounts:
        controllers = tuple(controller for controller in V1_CONTROLLERS if controller in mount.controllers)
        if mount.version != 1 or not controllers or controllers[0] not in paths:
            continue
        path = paths[controllers[0]]
        directory = directory_of(mount, path)
        if directory is None:
            problem: str | None = f"the daemon's cgroup {path} is not under the mount at {mount.point}"
        else:
            problem = delegation_problem(directory, path, root=root, systemd=systemd)
            if problem is None and not _writable(directory, "cgroup.procs"):
                problem = f"{directory} is not writable by the daemon"
        if directory is None or problem is not None:
            problems.append(f"cgroup v1 {','.join(controllers)}: {problem}")
            continue
        hierarchies.append(Hierarchy(directory, name, controllers))
    if not hierarchies:
        return None
    where = "; ".join(f"{','.join(hierarchy.controllers)} in {hierarchy.parent}" for hierarchy in hierarchies)
    return Cgroups("v1", tuple(hierarchies), f"cgroup v1 ({where}); memory: RLIMIT_AS")


# -- one replica ------------------------------------------------------------------------------------


def place(cgroups: Cgroups, replica: str, limits: Limits, own_processes: int = 0, *, idle: bool = False) -> Placement:
    """Create ``replica``'s cgroup with ``limits`` (and open ``memory.events`` with a v2 memory limit).
    Blocking.

    ``own_processes``: processes of the sandbox itself in the cgroup (bwrap's), not counted against the
    function's process limit. ``idle``: in the idle CPU class (``cpu.idle`` 1), as a pooled replica
    starts (:mod:`faasd.providers.local.pool`); :func:`relimit` takes it out.

    Raises:
        OSError: the cgroup cannot be made or limited (it is removed again; nothing stays open).
    """
    placement = Placement(directories=())
    try:
        for hierarchy in cgroups.hierarchies:
            directory = hierarchy.directory(replica)
            os.mkdir(directory)
            placement.directories += (directory,)
        _limit(cgroups, placement, limits, own_processes)
        if idle:
            set_idle(cgroups, placement, True)
    except OSError:
        placement.close_fds()
        remove(placement)
        raise
    return placement


def relimit(
    cgroups: Cgroups, placement: Placement, limits: Limits, own_processes: int = 0, *, starting: bool = False
) -> Placement:
    """The cgroup of a pooled replica (made by :func:`place` when it started, it runs in it) given the
    limits of the function it is assigned: a new :class:`Placement` of the same directories, its files
    open. With ``starting``, its CPU weight is the daemon's until :func:`weigh` lowers it. Blocking.

    Moving a process into a cgroup costs the kernel a grace period of RCU when no other move happened in
    the last few milliseconds (10-14 ms on the project's VMs, more when they are busy): a pooled replica
    is moved once, when it starts, not on the path to its first answer.

    Raises:
        OSError: a write the kernel refused (nothing stays open; the caller discards the replica).
    """
    adopted = Placement(directories=placement.directories)
    try:
        set_idle(cgroups, adopted, False)  # First: the kernel refuses a weight for a cgroup in the idle class.
        _limit(cgroups, adopted, limits, own_processes, starting=starting)
    except OSError:
        adopted.close_fds()
        raise
    return adopted


def _limit(
    cgroups: Cgroups, placement: Placement, limits: Limits, own_processes: int, *, starting: bool = False
) -> None:
    for hierarchy, directory in zip(cgroups.hierarchies, placement.directories, strict=True):
        settings = replica_settings(cgroups.kind, hierarchy.controllers, limits, cgroups.cpus, own_processes)
        if starting and "cpu" in hierarchy.controllers:
            name, value = _weight(cgroups.kind, starting=True)
            settings[name] = value
        for file_name, value in settings.items():
            path = os.path.join(directory, file_name)
            if file_name in OPTIONAL_FILES and not os.path.exists(path):
                continue
            _write(path, value)
        if "memory.max" in settings:
            placement.memory_bytes = limits.memory_bytes
            placement.events_fd = os.open(os.path.join(directory, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        if "pids.max" in settings:
            placement.pids_fd = os.open(os.path.join(directory, "pids.events"), os.O_RDONLY | os.O_CLOEXEC)
            placement.procs_fd = os.open(os.path.join(directory, "cgroup.procs"), os.O_RDONLY | os.O_CLOEXEC)


def set_idle(cgroups: Cgroups, placement: Placement, idle: bool) -> bool:
    """``cpu.idle`` of the replica's cgroup, where the kernel has it (Linux 5.15 and later): True when
    written, False when there is no such file (an older kernel, or the cgroup is gone). Blocking.

    Raises:
        OSError: the kernel refused the write.
    """
    written = False
    for hierarchy, directory in zip(cgroups.hierarchies, placement.directories, strict=True):
        path = os.path.join(directory, "cpu.idle")
        if "cpu" in hierarchy.controllers and os.path.exists(path):
            _write(path, "1" if idle else "0")
            written = True
    return written


def _weight(kind: Kind, *, starting: bool) -> tuple[str, str]:
    """The CPU weight file of a replica's cgroup and its value: the daemon's while starting, else its own."""
    if kind == "v2":
        return "cpu.weight.nice", str(START_NICE if starting else REPLICA_NICE)
    return "cpu.shares", str(START_V1_SHARES if starting else V1_SHARES)


JOIN_FAILED = 126
"""Exit status of a replica that could not join its cgroup (as :mod:`faasd.sandbox.enter`'s)."""


def join_command(placement: Placement) -> tuple[str, ...]:
    """The argv prefix that puts the process into ``placement``'s cgroups, then executes the rest.

    A shell, not faasd: it costs a millisecond, and bwrap's processes must be in the cgroup too.
    """
    writes = " && ".join(f"echo 0 > {shlex.quote(os.path.join(d, 'cgroup.procs'))}" for d in placement.directories)
    failed = f'echo "faasd sandbox: cannot join the replica\'s cgroup" >&2; exit {JOIN_FAILED}'
    return ("/bin/sh", "-c", f'{{ {writes}; }} || {{ {failed}; }}; exec "$@"', "faasd-join")


def default_cpu_nanos(cpus: int) -> int | None:
    """The CPU quota of a replica whose spec sets no ``limits.cpu``: half the CPUs the daemon may use, at
    least one -- None (no quota) on a one-CPU machine, where that would be all of it."""
    share = max(1, cpus // 2)
    return share * NANOS_PER_CPU if share < cpus else None


def replica_settings(
    kind: Kind, controllers: tuple[str, ...], limits: Limits, cpus: int = 1, own_processes: int = 0
) -> dict[str, str]:
    """The files to write in a replica's cgroup, in order; ``cpus``: how many the daemon may use;
    ``own_processes``: the sandbox's own processes in the cgroup (see :func:`place`)."""
    settings: dict[str, str] = {}
    if "cpu" in controllers:
        name, value = _weight(kind, starting=False)
        settings[name] = value
    cpu_nanos = limits.cpu_nanos or default_cpu_nanos(cpus)
    if "cpu" in controllers and cpu_nanos:
        quota = max(1000, cpu_nanos * CPU_PERIOD_US // NANOS_PER_CPU)  # The kernel's minimum: 1 ms.
        if kind == "v2":
            settings["cpu.max"] = f"{quota} {CPU_PERIOD_US}"
        else:
            settings["cpu.cfs_period_us"] = str(CPU_PERIOD_US)
            settings["cpu.cfs_quota_us"] = str(quota)
    if "pids" in controllers:
        settings["pids.max"] = str(limits.processes + own_processes)
    if "memory" in controllers and limits.memory_bytes:
        settings["memory.max"] = str(limits.memory_bytes)
        settings["memory.swap.max"] = "0"  # The limit is the memory it has, not that plus swap.
    return settings


def weigh(cgroups: Cgroups, placement: Placement, *, starting: bool) -> None:
    """Set the CPU weight of a replica's cgroup: the daemon's while ``starting`` (see the module
    docstring), then its own. Blocking, but a write to the cgroup file system: microseconds.

    Raises:
        OSError: the kernel refused the write.
    """
    name, value = _weight(cgroups.kind, starting=starting)
    for hierarchy, directory in zip(cgroups.hierarchies, placement.directories, strict=True):
        if "cpu" in hierarchy.controllers:
            _write(os.path.join(directory, name), value)


def members(placement: Placement) -> list[int] | None:
    """The processes in the replica's cgroup (the first hierarchy's; each holds the same ones), None when it
    cannot be read. Blocking."""
    try:
        return [int(pid) for pid in _read(os.path.join(placement.directories[0], "cgroup.procs")).split()]
    except (OSError, ValueError, IndexError):
        return None


def remove(placement: Placement) -> bool:
    """Kill whatever still runs in the replica's cgroup and remove it; False when it would not go (it
    is left for the next start's :func:`sweep`). Blocking."""
    gone = True
    for directory in placement.directories:
        gone = _remove_tree(directory) and gone
    return gone


def sweep(hierarchy: Hierarchy) -> None:
    """Remove every replica cgroup of this daemon in ``hierarchy``, killing what still runs in it: what a
    daemon killed with SIGKILL left behind. Blocking."""
    try:
        entries = [
            entry.path
            for entry in os.scandir(hierarchy.parent)
            if entry.name.startswith(hierarchy.prefix + ".") and entry.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return
    for directory in entries:
        _remove_tree(directory)


def _remove_tree(directory: str) -> bool:
    try:
        children = [entry.path for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return True
    except OSError:
        children = []
    for child in children:  # A replica's cgroup has none, unless a function made some (v2, delegated).
        _remove_tree(child)
    for _ in range(REMOVE_TRIES):
        _kill_all(directory)
        try:
            os.rmdir(directory)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return False
        time.sleep(REMOVE_PAUSE_S)
    return False


def _kill_all(directory: str) -> None:
    """SIGKILL every process in the cgroup at ``directory`` (v2: ``cgroup.kill`` at once, Linux 5.14+)."""
    kill_file = os.path.join(directory, "cgroup.kill")
    if os.path.exists(kill_file):
        with contextlib.suppress(OSError):
            _write(kill_file, "1")
            return
    try:
        pids = _read(os.path.join(directory, "cgroup.procs")).split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
