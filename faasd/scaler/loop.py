"""The autoscaler task: every tick, gather each function's load and replicas, call :func:`decide`, apply.

This module only gathers inputs and applies results; every rule is in :mod:`faasd.scaler.decide`.
It also owns the two events that come from elsewhere:

* :meth:`Autoscaler.wake` -- a call arrived for a function with no ready replica; if it is at zero,
  scale it to ``max(1, min)`` now (one scale for any number of concurrent callers);
* :meth:`Autoscaler.manual_scale` -- someone scaled by hand; remembered as a floor (decide.py rule 7).

And it explains itself through one method, :meth:`Autoscaler.explain` (``/system/scaling``, hence
``faasd status``, and the ``faasd_autoscaler_desired_replicas`` metric read it).

Dependencies point one way: the autoscaler drives the functions it is given (:class:`ScaledFunctions`,
which :class:`~faasd.service.FunctionService` is) and knows nothing of the gateway; neither the service
nor the gateway reads its fields.

Error handling: a backend error while scaling one function is logged and retried at the next tick; it
never stops the loop or the other functions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import trio

from faasd.errors import FaasdError
from faasd.logs import event
from faasd.registry import EndpointRegistry
from faasd.scaler.decide import Decision, ScalerState, Window, decide
from faasd.scaler.meter import LoadMeter
from faasd.scaler.settings import ScaleSettings
from faasd.store import StoredFunction

__all__ = ["TICK_S", "Autoscaler", "Explanation", "ScaledFunctions"]

log = logging.getLogger(__name__)

TICK_S = 1.0
"""Decision period. Knative's decider ticks every 2 s; the load is sampled per second, so deciding every
second takes up to a second off the reaction to a step (measured: scale order after a 2x step 2-4 s at
2 s ticks) for the price of one pass over the functions' counters per second."""


class ScaledFunctions(Protocol):
    """What the autoscaler needs of the functions it scales (:class:`~faasd.service.FunctionService`)."""

    def names(self) -> list[str]: ...

    def above_zero(self) -> list[str]:
        """The functions with desired replicas above zero: the only ones a tick decides on."""
        ...

    def stored(self, name: str) -> StoredFunction | None: ...

    async def scale(self, name: str, replicas: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Explanation:
    """The autoscaler's view of one function: what it decided, why, on what load, with which settings."""

    name: str
    desired: int | None
    """Its latest decision; None before the first one."""
    reason: str
    panicking: bool
    stable_load: float
    panic_load: float
    in_flight_now: float
    idle_s: float
    queued: float
    """Async calls waiting for it, counted as load."""
    settings: ScaleSettings

    def to_json(self, *, replicas: int) -> dict[str, Any]:
        """The autoscaler's part of ``GET /system/scaling/NAME``; ``replicas`` stands for the desired
        count until there is a decision."""
        settings = self.settings
        return {
            "desiredReplicas": replicas if self.desired is None else self.desired,
            "reason": self.reason,
            "panicking": self.panicking,
            "load": {
                "type": settings.type,
                "stable": self.stable_load,
                "panic": self.panic_load,
                "inFlightNow": self.in_flight_now,
                "idleSeconds": round(self.idle_s, 3),
                "queued": self.queued,
            },
            "settings": {
                "min": settings.min_replicas,
                "max": settings.max_replicas,
                "type": settings.type,
                "target": settings.target,
                "targetProportion": settings.target_proportion,
                "zero": settings.zero,
                "zeroDurationSeconds": settings.zero_duration_s,
                "enabled": settings.enabled,
            },
        }


class Autoscaler:
    """Scales every function of ``service`` from the load the gateway measured in ``meter``."""

    def __init__(
        self,
        service: ScaledFunctions,
        registry: EndpointRegistry,
        meter: LoadMeter,
        *,
        tick_s: float = TICK_S,
        queued: Callable[[str], float] = lambda name: 0.0,
        on_tick: Callable[[float, int], None] = lambda seconds, functions: None,
    ) -> None:
        self.service = service
        self.queued = queued
        """``queued(name)``: async work waiting for the function, counted as load (decide.py rule 1)."""
        self.on_tick = on_tick
        """``on_tick(seconds, functions)`` after each tick: how long it took and how many functions it decided
        (the ``faasd_autoscaler_tick_seconds`` metric; bench/scale.py reads it)."""
        self.registry = registry
        self.meter = meter
        self.tick_s = tick_s
        self.decisions: dict[str, Decision] = {}
        self._states: dict[str, ScalerState] = {}
        self._settings: dict[str, tuple[Mapping[str, str], ScaleSettings]] = {}
        self._waking: dict[str, trio.Event] = {}
        self._draining: set[str] = set()
        """Functions at zero whose load counters are kept until their last call in flight ends."""
        self.scale_events = 0

    def __repr__(self) -> str:
        panicking = sum(1 for decision in self.decisions.values() if decision.panicking)
        return f"<Autoscaler functions={len(self.decisions)} panicking={panicking} scale_events={self.scale_events}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self.tick_s)
            started = time.perf_counter()
            decided = await self.tick()
            self.on_tick(time.perf_counter() - started, decided)

    def explain(self, name: str) -> Explanation:
        """What the autoscaler thinks of ``name`` now (its latest decision, the load, the settings).

        A function at zero is not decided on by the ticks (it stays at zero until a call wakes it): its
        decision is made here, when asked, and not kept.
        """
        decision = self.decisions.get(name)
        stored = self.service.stored(name)
        if decision is None and stored is not None and stored.replicas == 0:
            decision = self._decide(name, stored, self.meter.peek(name))
        window = self.meter.peek(name)
        return Explanation(
            name=name,
            desired=decision.desired if decision else None,
            reason=decision.reason if decision else f"no decision yet (the autoscaler decides every {self.tick_s:g} s)",
            panicking=decision.panicking if decision else False,
            stable_load=decision.stable_load if decision else 0.0,
            panic_load=decision.panic_load if decision else 0.0,
            in_flight_now=window.concurrency[-1] if window.concurrency else 0.0,
            idle_s=window.idle_s,
            queued=self.queued(name),
            settings=self.settings(name),
        )

    def settings(self, name: str) -> ScaleSettings:
        """The function's settings from its labels (cached until the labels change)."""
        stored = self.service.stored(name)
        labels = stored.spec.labels if stored is not None else {}
        cached = self._settings.get(name)
        if cached is not None and cached[0] == labels:
            return cached[1]
        try:
            settings = ScaleSettings.from_labels(labels)
        except FaasdError as exc:  # Validated at deploy; a function adopted from a backend may still be odd.
            event(log, logging.WARNING, "bad scaling labels, using defaults", function=name, error=exc.message)
            settings = ScaleSettings()
        self._settings[name] = (labels, settings)
        return settings

    def desired_replicas(self) -> dict[str, int]:
        """The latest decision per function, 0 for a function at zero (``faasd_autoscaler_desired_replicas``)."""
        desired = {}
        for name in self.service.names():
            stored = self.service.stored(name)
            decision = self.decisions.get(name)
            if stored is not None and stored.replicas == 0:
                desired[name] = 0
            elif decision is not None:
                desired[name] = decision.desired
        return desired

    def _decide(self, name: str, stored: StoredFunction, window: Window) -> Decision:
        queued = self.queued(name)
        return decide(
            replace(window, queued=queued) if queued else window,
            self.settings(name),
            replicas=stored.replicas,
            ready=len(self.registry.get(name)),
            now=self.meter.clock(),
            state=self._states.get(name, ScalerState()),
        )

    async def tick(self) -> int:
        """One decision per function above zero; apply the ones that change the replica count. Returns how
        many functions it decided.

        A function at zero is left alone: the decision for it is always 0 (decide.py rule 5) until a call
        wakes it (:meth:`wake`), so the tick's work follows the functions in use, not the functions deployed.
        What the autoscaler kept about a function that went to zero (decision, state, settings, and its
        load samples once no call is in flight) is dropped, so an idle function costs only its record.
        """
        names = sorted(self.service.above_zero())
        for name in names:
            stored = self.service.stored(name)
            if stored is None or stored.replicas == 0:
                continue
            if self.queued(name):
                self.meter.touch(name)  # Work is waiting: the function is in use, not idle.
            decision = self._decide(name, stored, self.meter.window(name))
            self._states[name] = decision.state
            self.decisions[name] = decision
            if decision.desired == stored.replicas:
                continue
            try:
                await self.service.scale(name, decision.desired)
            except FaasdError as exc:
                event(log, logging.WARNING, "autoscale failed", function=name, error=exc.message)
                continue
            self.scale_events += 1
            event(
                log,
                logging.INFO,
                "autoscale",
                function=name,
                replicas_from=stored.replicas,
                replicas_to=decision.desired,
                reason=decision.reason,
            )
        deciding = set(names)
        for name in [name for name in (*self.decisions, *self._draining) if name not in deciding]:
            stored = self.service.stored(name)
            if stored is None:
                self.forget(name)  # Removed.
            elif stored.replicas == 0:
                self._rest(name)
        self._draining -= deciding
        return len(names)

    def manual_scale(self, name: str, replicas: int) -> None:
        """Someone scaled ``name`` to ``replicas`` by hand: keep it as a floor for a stable window (a 0 is no
        floor: the function stays at zero until a call wakes it, decide.py rule 7)."""
        if replicas == 0:
            self._rest(name)
            return
        settings = self.settings(name)
        state = self._states.get(name, ScalerState())
        self._states[name] = replace(
            state, manual_floor=replicas, manual_until=self.meter.clock() + settings.stable_window_s
        )

    async def wake(self, name: str) -> bool:
        """A call waits for ``name``: scale it from zero if it is at zero; True if this call did it.

        Concurrent callers share one scale operation. The call itself is not counted as load (the
        meter counts it once a replica takes it), only as activity, so idle scale-to-zero restarts.
        """
        self.meter.touch(name)
        stored = self.service.stored(name)
        if stored is None or stored.replicas > 0:
            return False
        waking = self._waking.get(name)
        if waking is not None:
            await waking.wait()
            return False
        waking = self._waking[name] = trio.Event()
        try:
            replicas = max(1, self.settings(name).min_replicas)
            with trio.CancelScope(shield=True):  # A caller that gives up must not leave it half-done.
                await self.service.scale(name, replicas)
            state = self._states.get(name, ScalerState())
            self._states[name] = replace(state, manual_floor=0, manual_until=-math.inf)
            self.scale_events += 1
            event(log, logging.INFO, "scale from zero", function=name, replicas_to=replicas)
        finally:
            waking.set()
            del self._waking[name]
        return True

    def forget(self, name: str) -> None:
        for table in (self.decisions, self._states, self._settings):
            table.pop(name, None)
        self._draining.discard(name)
        self.meter.forget(name)

    def _rest(self, name: str) -> None:
        """``name`` is at zero: drop what the ticks kept about it (its load samples only once no call is in
        flight: a replica still draining reports its calls' ends)."""
        for table in (self.decisions, self._states, self._settings):
            table.pop(name, None)
        if self.meter.forget_idle(name):
            self._draining.discard(name)
        else:
            self._draining.add(name)
