"""From (sandbox, replica) to the command line, environment and directory a replica starts with. Pure.

:class:`Sandbox` is what the daemon decided at start (``host.resolve``); :class:`ReplicaSandbox` is one
replica's part (its function's directory, uid and limits). :func:`plan_launch` combines them with the
command that runs ``faasd`` and the environment the backend built:

* ``none`` -- the replica runs as the daemon's user, in the function's directory; only the limits
  apply (``faasd _sandbox SPEC watchdog``).
* ``uid`` -- the daemon (root) starts the replica in the function's directory, which it made
  ``root:<function gid>`` 0750 and keeps in a work root outside the state dir (a function uid cannot
  enter that); the replica drops to its own uid, with the function's gid, before anything else. Its secrets are at
  ``$secret_mount_path/<name>`` (in its directory), ``TMPDIR`` and ``HOME`` are a private 0700 directory
  of its own. The interpreter must be readable by any user (``host.resolve`` picks one). Nothing of the
  host is hidden: files are protected by their owners and modes only.
* ``bwrap`` -- bubblewrap builds a new root: ``/usr``, ``/etc`` and the merged-/usr links read-only,
  the interpreter and faasd read-only at their own paths, a new ``/proc`` (PID namespace), a minimal
  ``/dev``, a private tmpfs ``/tmp`` (size capped), the function's directory read-only at
  ``/home/app`` (its working directory) and its secrets read-only at ``/var/openfaas/secrets``. Nothing
  else of the host exists in it: not ``/root``, ``/home``, ``/run`` (the docker socket), ``/var``, the
  state dir. The network is the host's (replicas listen on 127.0.0.1). As root, bwrap runs without a
  user namespace, keeps only CAP_SETUID/CAP_SETGID and the replica drops to its own uid at once;
  as any other user it makes a user namespace (no root needed) and the replica keeps the daemon's uid.

  bwrap is started through ``setsid --wait``: ``--die-with-parent`` ties each process of the sandbox to
  the one above it, and bwrap's own parent must be a process that lives as long as it does -- the daemon
  starts processes from worker threads, and a parent *thread* that ends would kill the sandbox. Killing
  that ``setsid`` (or bwrap) ends the whole sandbox; the daemon ending ends it through the lifeline pipe
  (:mod:`faasd.sandbox.enter`), since the daemon's pid is not visible from the PID namespace.

In every mode, a replica with a cgroup (:mod:`faasd.sandbox.cgroups`) starts as a shell that joins it and
then executes all of the above (:func:`~faasd.sandbox.cgroups.join_command`); with a cgroup v2 memory
limit, ``RLIMIT_AS`` is not set and the watchdog gets the cgroup's ``memory.events`` (``mev``); with a
pids cgroup, ``RLIMIT_NPROC`` is not set (``pids.max`` counts the replica, in every mode) and the
watchdog gets its ``pids.events`` (``pev``). With a CPU cgroup the replica's autogroup nice value is not
set either: the cgroup's weight does that.

The fork-mode hot path is untouched: the sandbox wraps the replica once, at its start, not each call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from faasd.sandbox.cgroups import NO_CGROUPS, REPLICA_NICE, Cgroups, Placement, join_command
from faasd.sandbox.enter import ENTER_COMMAND, format_spec
from faasd.sandbox.limits import Limits

__all__ = [
    "APP_DIR",
    "BWRAP_OWN_PROCESSES",
    "MODES",
    "REQUESTS",
    "SECRETS_MOUNT",
    "Launch",
    "Mode",
    "ReplicaSandbox",
    "Sandbox",
    "bwrap_prefix",
    "plan_launch",
]

Mode = Literal["bwrap", "uid", "none"]
MODES: tuple[Mode, ...] = ("bwrap", "uid", "none")
REQUESTS = ("auto", "bwrap", "uid", "none")
"""What ``sandbox =`` accepts: a mode, or ``auto`` (bwrap, else uid as root, else none)."""

APP_DIR = "/home/app"
"""Where a bwrap replica sees its function's directory (its working directory), as in OpenFaaS images."""

SECRETS_MOUNT = "/var/openfaas/secrets"
"""Where a bwrap replica reads its secrets, as OpenFaaS functions do."""

OOM_SCORE_ADJ = 1000
"""Every replica's processes go first when the kernel must kill for memory (the daemon stays at 0)."""

AUTOGROUP_NICE = REPLICA_NICE
"""Nice value of each replica's scheduling group (its session) when it has no CPU cgroup: where the
kernel groups sessions (``kernel.sched_autogroup_enabled``), the daemon outweighs any one function about
ten to one when the CPU is short, so a function spinning or fork-bombing cannot slow the gateway
everyone's calls pass. With a CPU cgroup, its weight does the same (:mod:`faasd.sandbox.cgroups`)."""

BWRAP_OWN_PROCESSES = 3
"""A bwrap replica's cgroup also holds ``setsid``, ``bwrap`` and bwrap's init (which reaps the function's
orphans): its ``pids.max`` leaves room for them, so the function gets its whole process limit."""

DROPPED_ENV = ("USER",)
"""Removed from a sandboxed replica's environment: the daemon's user name means nothing there."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """How this daemon sandboxes replicas, decided once at start."""

    mode: Mode
    requested: str
    reason: str
    """Why this mode: auto's choice, a fallback and what it lacked, or the warning of ``none``."""
    root: bool
    """The daemon runs as root: each function gets a uid of its own (bwrap and uid modes)."""
    bwrap: str = ""
    python: str = ""
    """Interpreter the replicas run; empty: the daemon's own."""
    binds: tuple[str, ...] = ()
    """bwrap: host paths bound read-only at the same path (the interpreter's prefixes, faasd itself)."""
    system: tuple[tuple[str, str], ...] = ()
    """bwrap: top-level directories, (path, "") bound read-only, (path, target) made a symlink."""
    hide: tuple[str, ...] = ()
    """bwrap: paths under a bound directory covered by an empty tmpfs (the state dir, if it is there)."""
    work_root: str = ""
    """uid mode: where functions' directories and replicas' scratch directories live, outside the state
    dir (:mod:`faasd.sandbox.files`)."""
    shim: tuple[str, ...] = ()
    """bwrap: the command bwrap is started through (``setsid --wait``, see the module docstring)."""
    cgroups: Cgroups = NO_CGROUPS
    """The control groups replicas get, whatever the mode (:mod:`faasd.sandbox.cgroups`)."""

    @property
    def isolated(self) -> bool:
        return self.mode != "none"

    @property
    def per_function_uid(self) -> bool:
        """Functions run as uids of their own (and their files are shared with that uid's group)."""
        return self.root and self.mode != "none"

    def describe(self) -> dict[str, object]:
        """For ``/system/info`` and ``faasd status``."""
        return {
            "mode": self.mode,
            "requested": self.requested,
            "isolated": self.isolated,
            "function_uids": self.per_function_uid,
            "reason": self.reason,
            "cgroups": self.cgroups.describe(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaSandbox:
    """One replica's part of the plan."""

    workdir: str
    """The function's directory on the host."""
    secrets: bool
    """It has a ``.secrets`` directory to mount."""
    uid: int | None
    """The replica's own uid; None: the daemon's."""
    gid: int | None = None
    """The function's gid (its files are group-readable by it); None: the same number as ``uid``."""
    limits: Limits
    scratch: str = ""
    """uid mode: the replica's private TMPDIR/HOME."""
    name: str = ""
    """The replica's id: names its lock file in a bwrap replica's /tmp."""
    lifeline: int | None = None
    """bwrap: the read end of the daemon's lifeline pipe, passed down (see :mod:`faasd.sandbox.enter`)."""
    writable: bool = False
    """Its directory is writable (a build step, :mod:`faasd.sandbox.build`); a replica's never is."""
    cgroup: Placement | None = None
    """Its control group, made by :func:`faasd.sandbox.cgroups.place`; None: it has none."""


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one replica."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    pass_fds: tuple[int, ...] = ()
    """File descriptors the replica must inherit besides those the caller passes."""


def plan_launch(
    sandbox: Sandbox,
    replica: ReplicaSandbox,
    command: tuple[str, ...],
    env: Mapping[str, str],
    role: tuple[str, ...] = ("watchdog",),
) -> Launch:
    """The replica's command line, environment and working directory (see the module docstring).

    Args:
        command: the argv prefix that runs faasd (``python -S faasd.pyz``), with the daemon's interpreter.
        env: the environment the backend built for the replica (``TMPDIR``, ``secret_mount_path``, ...).
        role: what faasd runs once confined.
    """
    limits = replica.limits
    confined = sandbox.per_function_uid and replica.uid is not None
    placement = replica.cgroup
    join = join_command(placement) if placement is not None else ()
    memory_cgroup = placement is not None and placement.memory_bytes is not None
    events = placement.events_fd if placement is not None and memory_cgroup else None
    pids = placement.pids_fd if placement is not None else None
    procs = placement.procs_fd if placement is not None and pids is not None else None
    spec = format_spec(
        mev=events,
        mmax=placement.memory_bytes if placement is not None and memory_cgroup else None,
        pev=pids,
        plim=limits.processes if pids is not None else None,
        pprc=procs,
        uid=replica.uid if confined else None,
        gid=(replica.gid if replica.gid is not None else replica.uid) if confined else None,
        nnp=1 if confined and sandbox.mode == "uid" else None,  # bwrap sets no_new_privs itself.
        oom=OOM_SCORE_ADJ,
        nice=None if placement is not None and sandbox.cgroups.cpu else AUTOGROUP_NICE,
        nofile=limits.open_files,
        # Counted per uid / user namespace; pids.max, where there is one, counts the replica itself.
        nproc=limits.processes if sandbox.mode != "none" and pids is None else None,
        life=replica.lifeline if sandbox.mode == "bwrap" else None,
        **{"as": None if memory_cgroup else limits.memory_bytes},
    )
    passed = tuple(fd for fd in (events, pids, procs) if fd is not None)
    python = sandbox.python or command[0]
    inner = (python, *command[1:], ENTER_COMMAND, spec, *role)
    new_env = dict(env)
    if sandbox.mode == "none":
        return Launch((*join, *inner), new_env, replica.workdir, passed)
    for key in DROPPED_ENV:
        new_env.pop(key, None)
    if sandbox.mode == "uid":
        new_env.update(TMPDIR=replica.scratch, HOME=replica.scratch)
        if not replica.writable:  # A replica's watchdog; a build step has none.
            new_env["lock_file"] = os.path.join(replica.scratch, ".lock")
        return Launch((*join, *inner), new_env, replica.workdir, passed)
    new_env.pop("parent_pid", None)  # Not visible from the PID namespace; --die-with-parent does its job.
    new_env.update(TMPDIR="/tmp", HOME="/tmp")
    if not replica.writable:
        lock_file = f"/tmp/.lock-{replica.name}" if replica.name else "/tmp/.lock"  # Its name says whose it is.
        new_env.update(lock_file=lock_file, secret_mount_path=SECRETS_MOUNT)
    prefix = bwrap_prefix(
        sandbox,
        workdir=replica.workdir,
        secrets=replica.secrets,
        tmp_bytes=limits.tmp_bytes,
        writable=replica.writable,
    )
    if replica.lifeline is not None:
        passed += (replica.lifeline,)
    return Launch((*join, *sandbox.shim, *prefix, *inner), new_env, replica.workdir, passed)


def bwrap_prefix(
    sandbox: Sandbox, *, workdir: str, secrets: bool, tmp_bytes: int, writable: bool = False
) -> tuple[str, ...]:
    """``bwrap ... --`` for one replica (the filesystem and namespaces described in the module docstring)."""
    args = [sandbox.bwrap or "bwrap"]
    if sandbox.root:
        # No user namespace: bwrap as root would map the sandbox's uid to real root. The replica drops
        # to its own uid itself; until then it holds only what that takes.
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--die-with-parent", "--new-session"]
    for path, target in sandbox.system:
        args += ["--symlink", target, path] if target else ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]  # Before binds that may be in /tmp.
    mounts = [*sandbox.binds, APP_DIR, SECRETS_MOUNT if secrets else ""]
    for parent in _parents([path for path in mounts if path], {path for path, _ in sandbox.system}):
        args += ["--perms", "0755", "--dir", parent]  # bwrap would make them 0700: unreadable after the drop.
    for path in sandbox.binds:
        args += ["--ro-bind", path, path]
    for path in sandbox.hide:
        args += ["--tmpfs", path]
    args += ["--bind" if writable else "--ro-bind", workdir, APP_DIR]
    if secrets:
        args += ["--ro-bind", os.path.join(workdir, ".secrets"), SECRETS_MOUNT]
    args += ["--chdir", APP_DIR, "--"]
    return tuple(args)


def _parents(paths: list[str], skip: set[str]) -> list[str]:
    """Every directory above ``paths`` (outermost first), but ``/`` and those in ``skip``."""
    parents: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path.rstrip("/"))
        while parent not in ("/", ""):
            parents.add(parent)
            parent = os.path.dirname(parent)
    return sorted(parent for parent in parents if not any(parent == s or parent.startswith(s + "/") for s in skip))
