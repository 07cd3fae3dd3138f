"""The local backend's CPU classes: every :data:`~faasd.sandbox.cpuclass.INTERVAL_S`, each function's CPU
time per call, and its replicas' cgroups in the idle class while that is heavy.

The policy and the cgroup files are :mod:`faasd.sandbox.cpuclass` (which says why); this is the loop
that applies it to the functions the provider runs. One worker thread's hop per interval reads every
ready replica's CPU time; another writes ``cpu.idle`` only where a class changed, and for new replicas
of a batch function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from faasd.errors import describe_exception
from faasd.logs import event
from faasd.providers.local.state import Function, Replica
from faasd.sandbox import cpuclass
from faasd.sandbox.cgroups import Cgroups

__all__ = ["watch_cpu"]

log = logging.getLogger("faasd.providers.local")


def _ready_replicas(function: Function) -> list[Replica]:
    return [
        slot.replica
        for slot in function.slots
        if slot.replica is not None and slot.replica.was_ready and slot.replica.cgroup is not None
    ]


def _read(cgroups: Cgroups, replicas: list[Replica]) -> list[float | None]:
    return [cpuclass.usage_seconds(cgroups, replica.cgroup) for replica in replicas if replica.cgroup is not None]


def _write(cgroups: Cgroups, changes: list[tuple[Replica, bool]]) -> list[bool]:
    return [
        cpuclass.set_batch(cgroups, replica.cgroup, batch) for replica, batch in changes if replica.cgroup is not None
    ]


async def watch_cpu(cgroups: Cgroups, functions: Callable[[], Iterable[Function]], calls: Callable[[str], int]) -> None:
    """Until cancelled: classify ``functions()`` by their CPU time per call (``calls(name)``: the calls the
    gateway has started to it) and keep their replicas' cgroups in their class."""
    last = trio.current_time()
    failed = False
    while True:
        await trio.sleep(cpuclass.INTERVAL_S)
        now = trio.current_time()
        seconds, last = now - last, now
        try:
            await _one_pass(cgroups, functions, calls, seconds)
        except Exception as exc:  # A policy's failure must not stop the backend: say it once, go on.
            if not failed:
                event(log, logging.ERROR, "CPU classes failed; trying again", error=describe_exception(exc))
            failed = True
        else:
            failed = False


async def _one_pass(
    cgroups: Cgroups, functions: Callable[[], Iterable[Function]], calls: Callable[[str], int], seconds: float
) -> None:
    """One interval: read, decide, write."""
    running = [(function, _ready_replicas(function)) for function in functions() if not function.removed]
    replicas = [replica for _, these in running for replica in these]
    if not replicas:
        return
    readings = await trio.to_thread.run_sync(_read, cgroups, replicas)
    used = dict(zip(map(id, replicas), readings, strict=True))
    changes: list[tuple[Replica, bool]] = []
    for function, these in running:
        cpu_s = 0.0
        for replica in these:
            now_s = used[id(replica)]
            if now_s is not None and replica.cpu_s is not None:
                cpu_s += max(0.0, now_s - replica.cpu_s)
            replica.cpu_s = now_s
        state = function.cpu
        count = calls(function.name)
        started, state.calls = max(0, count - state.calls), count
        state.recent.append((cpu_s, started))
        pinned = function.generation.limits.cpu_class
        batch = pinned == "batch" if pinned != "auto" else cpuclass.decide(state.batch, state.recent, seconds)
        if batch != state.batch:
            state.batch = batch
            event(
                log,
                logging.INFO,
                "function CPU class",
                function=function.name,
                cpu_class="batch (idle)" if batch else "ordinary",
                cpu_ms_per_call=round(cpu_s / max(started, 1) * 1000, 1),
                cpus=round(cpu_s / seconds, 2),
            )
        changes += [(replica, batch) for replica in these if replica.batch != batch]
    if changes:
        done = await trio.to_thread.run_sync(_write, cgroups, changes)
        for (replica, batch), ok in zip(changes, done, strict=True):
            if ok:
                replica.batch = batch
