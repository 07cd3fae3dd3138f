"""Watchdog counters, kept as plain numbers and turned into Prometheus text only when scraped.

Why not prometheus_client objects on the hot path: importing prometheus_client costs ~40 ms (it pulls
in http.server and wsgiref), which is a quarter of the watchdog's start-up budget, and its metric
objects take a lock on every update. Here a call costs two dict operations and a bisect; the library is
imported on the first scrape and renders the standard text format from a custom collector.

The names are those of the OpenFaaS watchdogs (``http_requests_total``,
``http_request_duration_seconds``, ``http_requests_in_flight``), so existing dashboards work.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    from typing import Any

__all__ = ["BUCKETS_S", "WatchdogStats"]

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram bucket upper bounds (Prometheus client defaults, as the OpenFaaS watchdogs use)."""

_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class WatchdogStats:
    """Counters for one watchdog process. Single-threaded: only the event loop touches them."""

    __slots__ = ("_requests", "in_flight", "kills", "process_starts")

    def __init__(self) -> None:
        # (code, method) -> [count, sum_seconds, bucket_0, ..., bucket_inf] (buckets not cumulative).
        self._requests: dict[tuple[int, str], list[float]] = {}
        self.in_flight = 0
        self.process_starts = 0
        self.kills: dict[str, int] = {}

    def record(self, code: int, method: str, seconds: float) -> None:
        """Count one answered request."""
        key = (code, method if method in _KNOWN_METHODS else "other")
        entry = self._requests.get(key)
        if entry is None:
            entry = self._requests[key] = [0.0] * (len(BUCKETS_S) + 3)
        entry[0] += 1
        entry[1] += seconds
        entry[2 + bisect_left(BUCKETS_S, seconds)] += 1

    def count_kill(self, reason: str) -> None:
        """Count a process group killed for ``reason`` (timeout, output_limit, process_limit, shutdown,
        client_gone)."""
        self.kills[reason] = self.kills.get(reason, 0) + 1

    def requests_by_code(self) -> dict[int, int]:
        """Answered requests per status code (for tests and logs)."""
        totals: dict[int, int] = {}
        for (code, _method), entry in self._requests.items():
            totals[code] = totals.get(code, 0) + int(entry[0])
        return totals

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every counter.

        prometheus_client's exposition module imports ``ssl``, which a watchdog keeps out of its start
        (``faasd.__main__``, a None entry in ``sys.modules``): let it in at the first scrape."""
        if "ssl" in sys.modules and sys.modules["ssl"] is None:
            del sys.modules["ssl"]
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.collect))
        return generate_latest(registry)

    def collect(self) -> Iterator[Any]:
        """Yield prometheus_client metric families for the current values."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily(
            "http_requests_total", "Requests answered by the watchdog", labels=["code", "method"]
        )
        durations = HistogramMetricFamily(
            "http_request_duration_seconds", "Time to answer a request", labels=["code", "method"]
        )
        for (code, method), entry in sorted(self._requests.items()):
            labels = [str(code), method]
            requests.add_metric(labels, entry[0])
            cumulative = 0.0
            buckets = []
            for bound, count in zip((*BUCKETS_S, float("inf")), entry[2:], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            durations.add_metric(labels, buckets, entry[1])
        yield requests
        yield durations
        yield GaugeMetricFamily("http_requests_in_flight", "Requests being answered now", value=self.in_flight)
        yield CounterMetricFamily(
            "faasd_watchdog_process_starts_total", "Function processes started", value=self.process_starts
        )
        kills = CounterMetricFamily(
            "faasd_watchdog_process_kills_total", "Function process groups killed", labels=["reason"]
        )
        for reason, count in sorted(self.kills.items()):
            kills.add_metric([reason], count)
        yield kills


class _Collector:
    """Adapts a generator function to prometheus_client's collector protocol."""

    def __init__(self, collect: Callable[[], Iterator[Any]]) -> None:
        self.collect = collect
