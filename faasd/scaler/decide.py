"""The autoscaling decision: a pure function of (load samples, settings, replicas, time) -> desired replicas.

No I/O, no clock of its own, no trio: tested with synthetic timelines (tests/unit/test_scaler_decide.py)
and called every tick by :mod:`faasd.scaler.loop`. The rules, after Knative's KPA:

1. The load is the function's in-flight calls (``capacity``) or its calls per second (``rps``), as
   per-second samples. Two averages: the **stable window** (60 s) and the **panic window** (6 s).
   Queued async work (``Window.queued``: calls the async queue's workers could start now but have not
   -- waiting for a worker slot, or to retry after a 429/502/503) is added to both: a backlog is load
   even before it reaches a replica.
2. ``want = ceil(average / per_replica)`` for each window, where ``per_replica = target * proportion``.
3. **Panic** starts when the panic window asks for at least ``panic_threshold`` (2) times the ready
   replicas, and ends once a whole stable window passed without that happening. While panicking the
   decision is ``max(stable want, panic want, current)``: it scales up at once and never down.
   Each window averages the samples there are (a function younger than 60 s has fewer): in its
   first seconds both windows see nearly the same samples, the stable want rises about as fast as the
   panic want and the ready replicas keep up, so a burst may scale it without a panic.
4. Otherwise the decision is the stable want, but a scale-down at most halves the replicas per tick.
5. Bounds: never above ``max``; never below ``max(min, 1)`` -- the autoscaler itself never scales to
   zero except by rule 6. A function at 0 replicas (scaled to zero, deployed with ``min=0``, or scaled
   to 0 by hand) stays there until a call arrives: the gateway then starts one (scale from zero).
6. **Scale to zero** (label ``com.openfaas.scale.zero=true``): after ``zero-duration`` without any call,
   the decision is 0, whatever ``min`` says.
7. **Manual scale** (``POST /system/scale-function``): the count given is kept as a floor for one stable
   window -- long enough for the stable window to reflect real load -- and then the rules above apply
   again. A panic can still scale above it at once: the load says otherwise. A manual 0 is rule 5:
   the function stays at zero until a call arrives. The daemon applies the same floor to the counts it
   restores after a restart (its windows are empty then).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from faasd.scaler.settings import ScaleSettings

__all__ = ["Decision", "ScalerState", "Window", "decide"]


@dataclass(frozen=True, slots=True)
class Window:
    """Load samples of one function, one per complete second, oldest first."""

    requests: Sequence[float]
    """Calls started in each second."""
    concurrency: Sequence[float]
    """Average calls in flight during each second."""
    idle_s: float
    """Seconds since a call was last in flight (0 while one is), or since the function was first seen."""
    queued: float = 0.0
    """Async calls waiting that the queue could run now (see :meth:`faasd.queue.AsyncQueue.waiting_load`)."""


@dataclass(frozen=True, slots=True)
class ScalerState:
    """What a decision remembers for the next one."""

    panic_since: float | None = None
    panic_last_trigger: float | None = None
    manual_floor: int = 0
    manual_until: float = -math.inf


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    reason: str
    state: ScalerState
    stable_load: float
    panic_load: float

    @property
    def panicking(self) -> bool:
        return self.state.panic_since is not None


def _average(samples: Sequence[float], seconds: float) -> float:
    count = min(len(samples), max(1, int(seconds)))
    if count == 0:
        return 0.0
    return sum(samples[-count:]) / count


def decide(
    window: Window,
    settings: ScaleSettings,
    *,
    replicas: int,
    ready: int,
    now: float,
    state: ScalerState = ScalerState(),
) -> Decision:
    """Desired replicas for one function, and a one-line reason a person can read.

    Args:
        replicas: the function's desired replicas now.
        ready: how many of them are ready.
        now: the time (same clock as the samples; only differences matter).
        state: what the previous decision returned.
    """
    series = window.concurrency if settings.type == "capacity" else window.requests
    unit = "in flight" if settings.type == "capacity" else "calls/s"
    stable = _average(series, settings.stable_window_s) + window.queued
    panic = _average(series, settings.panic_window_s) + window.queued
    per_replica = settings.per_replica
    want_stable = math.ceil(round(stable / per_replica, 9))
    want_panic = math.ceil(round(panic / per_replica, 9))
    parts = [f"{settings.type}: {stable:.1f} {unit} over {settings.stable_window_s:g}s at {per_replica:g}/replica"]

    if not settings.enabled:
        return Decision(replicas, f"autoscaling off (min = max = {settings.min_replicas})", state, stable, panic)

    # 3. Panic mode.
    if want_panic > ready and want_panic >= settings.panic_threshold * max(ready, 1):
        state = replace(
            state, panic_since=state.panic_since if state.panic_since is not None else now, panic_last_trigger=now
        )
    elif state.panic_since is not None and now - (state.panic_last_trigger or now) >= settings.stable_window_s:
        state = replace(state, panic_since=None, panic_last_trigger=None)
        parts.append("panic over")
    if state.panic_since is not None:
        desired = max(want_stable, want_panic, replicas)
        parts.append(
            f"panic: {panic:.1f} {unit} over {settings.panic_window_s:g}s wants {want_panic}, "
            f"no scale-down (since {now - state.panic_since:.0f}s)"
        )
    else:
        desired = want_stable
        parts.append(f"wants {want_stable}")
        halved = math.ceil(replicas / settings.max_scale_down_rate)
        if desired < halved:
            desired = halved
            parts.append(f"scale-down limited to {halved}")

    # 6. Scale to zero, 5. floors, 7. manual floor.
    if replicas == 0:
        desired = 0
        parts = ["at zero: a call arriving starts a replica (scale from zero)"]
    elif settings.zero and window.idle_s >= settings.zero_duration_s:
        desired = 0
        parts = [f"idle {window.idle_s:.0f}s >= zero-duration {settings.zero_duration_s:g}s: scale to zero"]
    else:
        floor = max(settings.min_replicas, 1)
        if desired < floor:
            desired = floor
            parts.append(f"min {floor}")
        if now < state.manual_until and desired < state.manual_floor:
            desired = state.manual_floor
            parts.append(f"manual scale to {state.manual_floor} kept for {state.manual_until - now:.0f}s more")

    if desired > settings.max_replicas:
        desired = settings.max_replicas
        parts.append(f"max {settings.max_replicas}")
    return Decision(desired, f"{'; '.join(parts)} -> {desired}", state, stable, panic)
