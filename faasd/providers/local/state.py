"""What the local backend knows of its functions: generations, slots, replicas, and the host they share.

Plain data, no I/O: :mod:`.provider` changes it under a function's lock, :mod:`.supervisor` while it
runs replicas (:func:`~faasd.providers.common.rollout.plan_replicas` decides how a function's slots move
toward its desired count).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import trio

from faasd.calltoken import CallToken
from faasd.providers.common.logbook import LogBook
from faasd.providers.local.busyuids import BusyUids
from faasd.providers.types import FunctionSpec
from faasd.runtime import SelfCommand
from faasd.sandbox.cgroups import Placement
from faasd.sandbox.cpuclass import FunctionCpu
from faasd.sandbox.limits import Limits
from faasd.sandbox.plan import Sandbox
from faasd.sandbox.uids import UidPool

if TYPE_CHECKING:  # pool.py imports this module.
    from faasd.providers.local.pool import Adopted

__all__ = [
    "FUNCTION_KEY",
    "LOCALHOST",
    "REPLICA_KEY",
    "Function",
    "Generation",
    "Host",
    "LocalStatistics",
    "Replica",
    "ReplicaInfo",
    "Slot",
]

LOCALHOST = "127.0.0.1"

FUNCTION_KEY = "function:"
REPLICA_KEY = "replica:"
"""Keys of :class:`~faasd.sandbox.uids.UidPool` numbers: a function's (its gid) and a replica's (its uid)."""


# -- snapshots --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One replica as it is now (for ``describe``, tests and debugging)."""

    replica: str
    pid: int | None
    """None while the slot waits to restart its replica."""
    port: int
    ready: bool
    generation: int
    """Which deploy/update of the function it runs (1 for the first deploy)."""


@dataclass(frozen=True, slots=True)
class LocalStatistics:
    """Counts across every function, as of the call."""

    functions: int
    replicas: int
    ready_replicas: int
    restarts: int
    """Replicas replaced after exiting on their own (or not becoming ready), since the start."""


# -- bookkeeping ------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Host:
    """What every part of the backend shares about this daemon: its directories, how it starts a
    replica, its sandbox. The directories move and the sandbox is set when the provider starts
    (:meth:`~faasd.providers.local.provider.LocalProvider.run`)."""

    state_dir: str
    functions_dir: str
    replicas_dir: str
    staging_dir: str
    command: SelfCommand
    base_env: dict[str, str]
    call_token: CallToken | None
    ready_timeout_s: float
    stop_grace_s: float
    sandbox: Sandbox | None = None
    lifeline: tuple[int, int] | None = None
    """(read, write) ends of a pipe only this process writes to: bwrap replicas die when it closes."""
    uids: UidPool = field(default_factory=UidPool)
    busy_uids: BusyUids = field(default_factory=BusyUids)
    """Uids live processes ran as when last looked (read ahead of need, faasd.providers.local.busyuids):
    never handed out."""

    @property
    def sandbox_mode(self) -> str:
        """``bwrap``, ``uid`` or ``none``; empty until the provider runs."""
        return self.sandbox.mode if self.sandbox is not None else ""


@dataclass(frozen=True, slots=True)
class Generation:
    """One deploy/update of a function: what its replicas run."""

    number: int
    spec: FunctionSpec
    fprocess: str
    limits: Limits = field(default_factory=Limits)


@dataclass(eq=False, slots=True)
class Replica:
    """One process of a slot."""

    id: str
    pid: int
    started_at: float
    was_ready: bool = False
    trouble: str = ""
    """Why it is being killed before it was ready (the readiness timeout)."""
    pooled: bool = False
    """It was a pooled replica, given this slot's function (:mod:`.pool`)."""
    cgroup: Placement | None = None
    """Its cgroup, when it has one (:mod:`faasd.sandbox.cgroups`)."""
    cpu_s: float | None = None
    """Its cgroup's CPU time when last read since it was ready (:mod:`.cpuwatch`); None before."""
    batch: bool = False
    """Its cgroup is in the idle CPU class (:mod:`faasd.sandbox.cpuclass`)."""


@dataclass(eq=False, slots=True)
class Slot:
    """A place for one replica: its listening socket, its supervisor task, its current process."""

    seq: int
    generation: Generation
    listener: socket.socket
    port: int
    replica: Replica | None = None
    ready: bool = False
    stopping: bool = False
    stop: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    adopted: Adopted | None = None
    """A pooled replica the deploy readied for this slot's first replica (:class:`~.pool.Adopted`); taken
    by it, or stopped with the slot."""

    @property
    def published(self) -> bool:
        return self.ready and not self.stopping and self.replica is not None


@dataclass(eq=False, slots=True)
class Function:
    name: str
    generation: Generation
    desired: int
    created_at: datetime
    workdir: str
    logbook: LogBook
    slots: list[Slot] = field(default_factory=list)
    retired: list[tuple[int, str]] = field(default_factory=list)
    """(generation, old working dir): the dir served the generations before that one."""
    removed: bool = False
    failure: str = ""
    """Why the current generation cannot run (its replicas cannot start, or exit before ready); cleared
    when one of its replicas becomes ready, or by a new generation."""
    cpu: FunctionCpu = field(default_factory=FunctionCpu)
    """Its CPU time per call and CPU class (:mod:`.cpuwatch`)."""
    gid: int | None = None
    """Its own number when the sandbox gives out uids (faasd.sandbox.uids): the gid its files are shared
    with and its replicas run with (each with a uid of its own), and the uid its build step runs as."""
