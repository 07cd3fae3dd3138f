"""Per-function load, counted on the invoke path in one-second buckets.

The gateway calls :meth:`LoadMeter.started` when a call is handed to a replica and
:meth:`LoadMeter.finished` when it ends: a dict lookup and a few additions, no lock, no allocation
(one list append per function per second). Concurrency is time-weighted: a bucket holds the area under
the in-flight curve for that second, i.e. the average number of calls in flight.

Calls held while a function scales from zero are not counted until they reach a replica, so a burst
queued during a cold start cannot make the autoscaler overshoot (Knative's known failure). The wake-up
itself is recorded with :meth:`touch`, which marks the function in use without adding load.

Calls answered by the invoke edge (:mod:`faasd.gateway.edge`, another thread) come in through
:mod:`faasd.gateway.edgefeed`: :attr:`LoadMeter.pull` applies them (with :meth:`LoadMeter.started_at` and
:meth:`LoadMeter.finished_at`, at the times they happened) before every read and every event of the meter's own.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from faasd.scaler.decide import Window

__all__ = ["HISTORY_S", "FunctionLoad", "LoadMeter"]

HISTORY_S = 120
"""Seconds of samples kept per function (twice the default stable window)."""


class FunctionLoad:
    """The running counters of one function."""

    __slots__ = ("_area", "_changed", "_concurrency", "_requests", "_second", "_started", "in_flight", "last_active")

    def __init__(self, now: float) -> None:
        self.in_flight = 0
        self.last_active = now  # A function is idle from when it was first seen, not since ever.
        self._second = math.floor(now)
        self._started = 0
        self._area = 0.0
        self._changed = now
        self._requests: deque[float] = deque(maxlen=HISTORY_S)
        self._concurrency: deque[float] = deque(maxlen=HISTORY_S)

    def advance(self, now: float) -> None:
        """Close the seconds that ended before ``now``."""
        second = math.floor(now)
        if second == self._second:
            self._area += self.in_flight * (now - self._changed)
            self._changed = now
            return
        self._area += self.in_flight * (self._second + 1 - self._changed)
        self._requests.append(self._started)
        self._concurrency.append(self._area)
        for _ in range(min(second - self._second - 1, HISTORY_S)):  # Whole seconds with no event.
            self._requests.append(0)
            self._concurrency.append(self.in_flight)
        self._second = second
        self._started = 0
        self._area = self.in_flight * (now - second)
        self._changed = now

    @property
    def changed(self) -> float:
        """When the last event was counted."""
        return self._changed

    def started(self, now: float) -> None:
        self.advance(now)
        self._started += 1
        self.in_flight += 1
        self.last_active = now

    def finished(self, now: float) -> None:
        self.advance(now)
        self.in_flight -= 1
        self.last_active = now

    def window(self, now: float) -> Window:
        self.advance(now)
        idle = 0.0 if self.in_flight else max(0.0, now - self.last_active)
        return Window(requests=tuple(self._requests), concurrency=tuple(self._concurrency), idle_s=idle)


class LoadMeter:
    """:class:`FunctionLoad` per function, on one clock (``time.monotonic``; tests pass a fake one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._loads: dict[str, FunctionLoad] = {}
        self.pull: Callable[[], None] = _nothing
        """Brings in the events counted elsewhere first (the daemon sets it: :mod:`faasd.gateway.edgefeed`)."""

    def _load(self, name: str, now: float) -> FunctionLoad:
        load = self._loads.get(name)
        if load is None:
            load = self._loads[name] = FunctionLoad(now)
        return load

    def started(self, name: str) -> None:
        self.pull()
        now = self.clock()
        self._load(name, now).started(now)

    def finished(self, name: str) -> None:
        self.pull()
        now = self.clock()
        self._load(name, now).finished(now)

    def started_at(self, name: str, now: float) -> None:
        """:meth:`started` for a call that started at ``now``, counted later (an edge call): a time before the
        function's last counted event counts as that event's, so the meter's clock never runs backwards."""
        load = self._load(name, now)
        load.started(max(now, load.changed))

    def finished_at(self, name: str, now: float) -> None:
        """:meth:`finished` for a call that ended at ``now``, counted later (see :meth:`started_at`)."""
        load = self._load(name, now)
        load.finished(max(now, load.changed))

    def touch(self, name: str) -> None:
        """Mark ``name`` in use now without counting a call (a call is waiting for a replica)."""
        self.pull()
        now = self.clock()
        load = self._load(name, now)
        load.advance(now)
        load.last_active = now

    def window(self, name: str) -> Window:
        self.pull()
        now = self.clock()
        return self._load(name, now).window(now)

    def peek(self, name: str) -> Window:
        """The window of ``name`` without starting to count it (empty when it has no counters)."""
        self.pull()
        load = self._loads.get(name)
        return load.window(self.clock()) if load is not None else Window(requests=(), concurrency=(), idle_s=0.0)

    def forget(self, name: str) -> None:
        self._loads.pop(name, None)

    def forget_idle(self, name: str) -> bool:
        """Drop the counters of ``name`` unless a call is in flight (its end must find them); True when it
        has none left."""
        self.pull()
        load = self._loads.get(name)
        if load is not None and load.in_flight:
            return False
        self._loads.pop(name, None)
        return True

    def counted(self) -> int:
        """How many functions have counters (not ``__len__``: an empty meter must stay truthy, callers write
        ``meter or LoadMeter()``)."""
        return len(self._loads)


def _nothing() -> None:
    """:attr:`LoadMeter.pull` when nothing is counted elsewhere."""
