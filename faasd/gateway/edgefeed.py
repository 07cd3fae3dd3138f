"""What the invoke edge (:mod:`faasd.gateway.edge`, a thread) tells the daemon's trio thread: calls started
and answered, for the metrics and the autoscaler's load meter.

Why a feed and not the counters themselves: :class:`~faasd.gateway.metrics.GatewayMetrics` and
:class:`~faasd.scaler.meter.LoadMeter` are read and written by the trio thread in steps of several
bytecodes (``d[k] = d.get(k, 0) + 1``), which another thread could interleave and lose a count in. So the
edge never touches them: it appends one tuple per event to a :class:`collections.deque` (``append`` and
``popleft`` are atomic), and the trio thread applies the events, in order, with the times they happened:

* whenever it reads those counters (both classes call their ``pull`` hook, :meth:`EdgeFeed.drain`, before
  a read, and the meter before every event of its own, so that its clock never runs backwards): a scrape
  right after a call sees it, and the autoscaler never takes a function with an edge call in flight for
  idle;
* and, so that nothing waits for a read, at most :data:`FLUSH_DELAY_S` after an event (the edge asks the
  trio thread to drain, once per batch: under load that is a few wake-ups a second, none when idle).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["FLUSH_DELAY_S", "EdgeFeed"]

FLUSH_DELAY_S = 0.05
"""Longest an edge call's event waits before the trio thread applies it unasked."""


class EdgeFeed:
    """Events from the edge thread (:meth:`started`, :meth:`finished`), applied on the trio thread by
    :meth:`drain` to ``on_started(name, now, metered)`` and ``on_finished(name, now, status, seconds, metered)``.

    Each event is fed when it happens, not when the call ends: the load meter integrates the calls in flight
    over time (the autoscaler's concurrency), so a call's start must be counted at its place among the other
    calls' events. ``metered``: the call reached a replica (the meter counts those; the metrics count every
    call with a known function, a 413 included, as the trio path does)."""

    def __init__(
        self,
        on_started: Callable[[str, float, bool], None],
        on_finished: Callable[[str, float, int, float, bool], None],
    ) -> None:
        self._events: deque[tuple[str, float, int, float, bool]] = deque()
        self._on_started = on_started
        self._on_finished = on_finished
        self.applied = 0
        """Events applied since start (tests read it)."""

    def __len__(self) -> int:
        return len(self._events)

    # -- the edge thread ------------------------------------------------------------------------------
    def started(self, name: str, now: float, metered: bool) -> None:
        """A call to ``name`` started at ``now`` (``time.monotonic``)."""
        self._events.append((name, now, -1, 0.0, metered))

    def finished(self, name: str, now: float, status: int, seconds: float, metered: bool) -> None:
        """The call to ``name`` was answered with ``status`` (499: its client left) after ``seconds``."""
        self._events.append((name, now, status, seconds, metered))

    # -- the trio thread ------------------------------------------------------------------------------
    def drain(self) -> None:
        """Apply every event so far, oldest first."""
        events = self._events
        while events:
            name, now, status, seconds, metered = events.popleft()
            if status < 0:
                self._on_started(name, now, metered)
            else:
                self._on_finished(name, now, status, seconds, metered)
            self.applied += 1
