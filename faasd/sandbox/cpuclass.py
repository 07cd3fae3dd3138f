"""A function whose calls are CPU-heavy runs in the idle CPU class: it gets every cycle nobody else wants,
and gives way at once to everything else.

Why. A replica's cgroup weighs a tenth of the daemon and its quota is half the CPUs
(:mod:`faasd.sandbox.cgroups`): a runaway function cannot take more than its share. A share is about
throughput, though, and the calls of other functions are about latency. On a 2-CPU machine a function
whose every call burns ~135 ms of CPU (the reliability suite's memory hog: start ``python3``, fill
128 MiB, fail) keeps one CPU busy within its quota, and another function's calls -- a chain of the
client, the daemon, a watchdog and its child, each woken by the one before -- keep landing on that CPU
and waiting for the hog's time slice to end: their p99 went from ~3.5 ms to 6-9 ms (1.8-2.3x) with the
weight and the quota alone. With the hog's cgroup in the idle class (``cpu.idle`` = 1, cgroup v1 and v2
since Linux 5.15) a waking task of any other cgroup preempts it at once, and the scheduler counts a CPU
that runs only idle-class work as free when it places a waking task. Same test, same machine, six runs
each: 1.27-1.86x (median 1.45x) against 1.77-2.31x (median 1.86x) (docs/sandbox.md, "CPU classes").

Which functions. The daemon cannot know in advance, so it measures: every :data:`INTERVAL_S` it reads
each function's CPU time (the sum over its replicas' cgroups: v2 ``cpu.stat`` ``usage_usec``, v1
``cpuacct.usage``) and divides what it grew by the calls the gateway started to that function meanwhile
(:func:`decide`). A function whose calls took :data:`HEAVY_CALL_CPU_S` or more each, while it kept at
least :data:`BUSY_CPUS` of a CPU busy, becomes *batch* (idle class); one whose calls took less than
half that over the last :data:`WINDOW_INTERVALS` becomes *ordinary* again. Intervals without calls and
with little CPU time change nothing: a batch function called now and then stays batch between its
calls. CPU time with no calls at all (a process left spinning by an http-mode function) counts as one
heavy call. A replica's CPU time counts only from when it was ready, so its own start (an interpreter's
imports) is not mistaken for a call. A deployer may pin a function instead (the label
``com.faasd.cpu-class``, :mod:`faasd.sandbox.limits`), and ``cpu_classes = false`` turns all this off.

What it costs. A batch function is as fast as before on a machine with CPU to spare. Under sustained
contention it gets what the others leave, which can be little: that is the trade -- a light call waits
microseconds for a heavy one instead of a time slice. ``cpu.idle`` is the kernel's own knob for this
(the cgroup form of ``SCHED_IDLE``, what systemd's ``CPUSchedulingPolicy=idle`` is for a service).

Everything here is blocking file I/O on the cgroup file system (microseconds per file): the local
backend's loop (:mod:`faasd.providers.local.cpuwatch`) runs its reads, and its writes, in a worker thread.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from faasd.sandbox.cgroups import Cgroups, Placement, set_idle

__all__ = [
    "BUSY_CPUS",
    "HEAVY_CALL_CPU_S",
    "INTERVAL_S",
    "FunctionCpu",
    "available",
    "decide",
    "set_batch",
    "usage_seconds",
]

INTERVAL_S = 0.25
"""How often the daemon reads the functions' CPU time: a heavy function is in the idle class within about
two intervals of its first heavy calls."""
HEAVY_CALL_CPU_S = 0.05
"""CPU time per call from which a function is batch: well above a ``cat`` (~0.3 ms) or a Python
interpreter started per call (~20 ms on the project's machines), well below the memory hog (~135 ms)."""
LIGHT_CALL_CPU_S = HEAVY_CALL_CPU_S / 2
"""Below this per call a batch function is ordinary again (between the two: it keeps its class)."""
BUSY_CPUS = 0.2
"""CPUs a function must keep busy over an interval to become batch: less does not matter to anyone."""
WINDOW_INTERVALS = 8
"""Intervals (2 s) over which a batch function's calls must be light for it to be ordinary again."""


def decide(batch: bool, recent: Sequence[tuple[float, int]], interval_s: float) -> bool:
    """Whether a function is batch now; ``batch``: what it was; ``recent``: (CPU seconds its replicas
    used, calls the gateway started to it) in each of its last intervals of ``interval_s``, the newest
    last (up to :data:`WINDOW_INTERVALS`).

    Heavy is judged on the newest interval alone, so that the others are protected within an interval or
    two; light again on all of them, so that an interval in which calls began and their CPU time had
    not yet (it comes in the next) does not flip a heavy function back and forth.
    """
    if not recent or interval_s <= 0:
        return batch
    cpu_s, calls = recent[-1]
    if cpu_s / max(calls, 1) >= HEAVY_CALL_CPU_S and cpu_s / interval_s >= BUSY_CPUS:
        return True
    cpu_s = sum(cpu for cpu, _ in recent)
    calls = sum(count for _, count in recent)
    if calls == 0 and cpu_s / (interval_s * len(recent)) < BUSY_CPUS:
        return batch  # Nothing to judge by.
    if cpu_s / max(calls, 1) < LIGHT_CALL_CPU_S:
        return False
    return batch


@dataclass(slots=True)
class FunctionCpu:
    """What the daemon remembers of one function between intervals."""

    calls: int = 0
    """The gateway's count of calls started, at the last interval."""
    batch: bool = False
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=WINDOW_INTERVALS))
    """(CPU seconds, calls started) per interval, the newest last: what :func:`decide` judges."""


def _usage_file(cgroups: Cgroups, placement: Placement) -> str | None:
    for hierarchy, directory in zip(cgroups.hierarchies, placement.directories, strict=True):
        if cgroups.kind == "v2":
            return os.path.join(directory, "cpu.stat")
        if "cpuacct" in hierarchy.controllers:
            return os.path.join(directory, "cpuacct.usage")
    return None


def available(cgroups: Cgroups) -> str | None:
    """None when CPU classes work with these cgroups, else why not (for ``/system/info``). Blocking."""
    if not cgroups.cpu:
        return "no cpu controller"
    if cgroups.kind == "v1" and "cpuacct" not in cgroups.controllers:
        return "no cpuacct controller to measure a replica's CPU time"
    cpu = next(hierarchy for hierarchy in cgroups.hierarchies if "cpu" in hierarchy.controllers)
    if not os.path.exists(os.path.join(cpu.parent, "cpu.idle")):
        return "this kernel has no cpu.idle (Linux 5.15 or later)"
    return None


def usage_seconds(cgroups: Cgroups, placement: Placement) -> float | None:
    """CPU time used by every process that has been in the replica's cgroup; None when unreadable (gone)."""
    path = _usage_file(cgroups, placement)
    if path is None:
        return None
    try:
        with open(path, encoding="ascii") as file:
            text = file.read()
    except OSError:
        return None
    try:
        if cgroups.kind != "v2":
            return int(text) / 1e9
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    except ValueError:  # Not what the kernel writes: treated as unreadable.
        return None
    return None


def set_batch(cgroups: Cgroups, placement: Placement, batch: bool) -> bool:
    """Put the replica's cgroup in the idle class (or take it out); False when the kernel refused or the
    cgroup is gone."""
    try:
        return set_idle(cgroups, placement, batch)
    except OSError:
        return False
