"""The gateway's Prometheus metrics, under the OpenFaaS names so existing dashboards work.

Counted in plain Python objects, rendered by prometheus_client only when ``/metrics`` is scraped: the
client with what it imports (``http.server``, ``email``, ``urllib.request``, ``platform``) was about a
fifth of what the daemon imported beyond a hypercorn-trio hello world before it answered ``/healthz``
(docs/coldstart.md), and the first request needs none of it. Per call the invoke path does one
:meth:`GatewayMetrics.started` and one :meth:`GatewayMetrics.finished`: a dict lookup and an addition
each (plus a bisect for the histogram), with no lock -- everything runs on the daemon's one event loop.
Values that are state rather than events (ready replicas, calls in flight) are read at scrape time,
costing nothing per call. The text a scrape gets is the one prometheus_client's own ``Counter`` and
``Histogram`` wrote (same families in the same order, ``_total``/``_bucket``/``_count``/``_sum``/
``_created`` samples).

=========================================== ======== ==============================================
metric                                      type     labels
=========================================== ======== ==============================================
gateway_function_invocation_total           counter  function_name, code
gateway_functions_seconds                   histo    function_name, code
gateway_function_invocation_started         counter  function_name
gateway_service_count                       gauge    function_name (ready replicas)
faasd_function_inflight                     gauge    function_name (started - answered)
faasd_held_requests                         gauge    function_name (calls waiting for a replica)
faasd_autoscaler_desired_replicas           gauge    function_name
faasd_cold_start_seconds                    histo    - (scale from zero to a ready replica)
faasd_autoscaler_tick_seconds               histo    - (one pass of the autoscaler over the functions)
faasd_autoscaler_tick_functions             gauge    - (functions its last tick decided)
faasd_provider_errors_total                 counter  operation
faasd_async_queue_depth                     gauge    function_name (async calls accepted, not finished)
faasd_async_queue_oldest_seconds            gauge    function_name (age of the oldest of them)
faasd_async_queue_running                   gauge    function_name (of them, being invoked or called back)
faasd_async_calls_total                     counter  function_name, outcome (accepted; done, delivered,
                                                     refused, given_up)
faasd_async_retries_total                   counter  function_name, kind (function, callback)
=========================================== ======== ==============================================

Async calls are also counted in ``gateway_function_invocation_total`` when a queue worker invokes
the function (each attempt), as OpenFaaS counts them when its queue-worker calls the gateway.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ASYNC_OUTCOMES = ("accepted", "done", "delivered", "refused", "given_up")
INF = float("inf")
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, INF)
"""prometheus_client's ``Histogram.DEFAULT_BUCKETS`` (``gateway_functions_seconds`` always used them)."""


class Count:
    """One counter series: its value and when it was created (the ``_created`` sample)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()


class Observations:
    """One histogram series: observations per bucket (not cumulative), their sum, its creation time."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose upper bound is at least ``value`` (as the client does)."""
        self.sum += value
        self.counts[bisect_left(self.bounds, value)] += 1


class Family:
    """A counter or histogram with its label names and one series per label values (created when first used)."""

    __slots__ = ("bounds", "help", "kind", "labels", "name", "series")

    def __init__(
        self, kind: str, name: str, help_text: str, labels: tuple[str, ...] = (), bounds: tuple[float, ...] = ()
    ) -> None:
        self.kind, self.name, self.help, self.labels = kind, name, help_text, labels
        self.bounds = (*bounds, INF) if bounds and bounds[-1] != INF else bounds
        self.series: dict[tuple[str, ...], Any] = {}
        if not labels:  # An unlabelled series exists from the start (the client shows it with zeros).
            self.child(())

    def child(self, values: tuple[str, ...]) -> Any:
        """The series for ``values`` (a :class:`Count` or :class:`Observations`), created on first use."""
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = Observations(self.bounds) if self.kind == "histogram" else Count()
        return series

    def remove(self, values: tuple[str, ...]) -> None:
        self.series.pop(values, None)


class GatewayMetrics:
    """Counters of one gateway (tests can run several gateways in one process).

    Args:
        ready_replicas: returns {function name: ready replica count}, read at scrape time.
    """

    def __init__(self, ready_replicas: Callable[[], dict[str, int]]) -> None:
        self._ready_replicas = ready_replicas
        self._registry: Any = None  # prometheus_client's, built on the first scrape.
        self._invocations = Family(
            "counter",
            "gateway_function_invocation",
            "Function invocations answered, by status code",
            ("function_name", "code"),
        )
        self._seconds = Family(
            "histogram",
            "gateway_functions_seconds",
            "Function invocation time through the gateway",
            ("function_name", "code"),
            DEFAULT_BUCKETS,
        )
        self._started = Family(
            "counter", "gateway_function_invocation_started", "Function invocations started", ("function_name",)
        )
        self._provider_errors = Family(
            "counter", "faasd_provider_errors", "Backend operations that failed", ("operation",)
        )
        self._cold_starts = Family(
            "histogram",
            "faasd_cold_start_seconds",
            "Time a call waited for a function scaled from zero to have a ready replica",
            bounds=(0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0),
        )
        self._ticks = Family(
            "histogram",
            "faasd_autoscaler_tick_seconds",
            "Time one autoscaler tick took (it runs every second, on the event loop every call also uses)",
            bounds=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.tick_functions = 0
        """Functions the autoscaler's last tick decided."""
        self._async_calls = Family(
            "counter",
            "faasd_async_calls",
            "Async calls accepted, and finished by outcome",
            ("function_name", "outcome"),
        )
        self._async_retries = Family(
            "counter",
            "faasd_async_retries",
            "Async calls retried: an invocation (kind=function) or a callback (kind=callback)",
            ("function_name", "kind"),
        )
        self.families = (
            self._invocations,
            self._seconds,
            self._started,
            self._provider_errors,
            self._cold_starts,
            self._ticks,
            self._async_calls,
            self._async_retries,
        )
        """In the order a scrape shows them (the order the client's objects were created in before)."""
        self.async_queue: Callable[[], dict[str, tuple[int, int, float]]] = dict
        """Set by the daemon: {function: (queued, running, oldest age in seconds)} of the async queue."""
        self.held: dict[str, int] = {}
        """Calls waiting for a ready replica, per function."""
        self.desired_replicas: Callable[[], dict[str, int]] = dict
        """Set by the daemon: the autoscaler's latest decision per function."""

        self._finished_children: dict[tuple[str, int], tuple[Count, Observations]] = {}
        self._started_children: dict[str, Count] = {}
        self.invocations: dict[str, int] = {}
        """Answered calls per function since start (``invocationCount`` in function listings); read it
        through :meth:`invocation_count`, which counts the edge's calls too."""
        self.pull: Callable[[], None] = _nothing
        """Brings in the calls counted by the invoke edge's thread before a read (the daemon sets it:
        :mod:`faasd.gateway.edgefeed`)."""

    def started(self, function: str) -> None:
        child = self._started_children.get(function)
        if child is None:
            child = self._started_children[function] = self._started.child((function,))
        child.value += 1

    def finished(self, function: str, code: int, seconds: float) -> None:
        children = self._finished_children.get((function, code))
        if children is None:
            labels = (function, str(code))
            children = self._finished_children[(function, code)] = (
                self._invocations.child(labels),
                self._seconds.child(labels),
            )
        children[0].value += 1
        children[1].observe(seconds)
        self.invocations[function] = self.invocations.get(function, 0) + 1

    def started_count(self, function: str) -> int:
        """Calls started to ``function`` since the daemon started (a dict lookup)."""
        self.pull()
        child = self._started_children.get(function)
        return int(child.value) if child is not None else 0

    def in_flight(self) -> dict[str, int]:
        """Calls started and not answered yet, per function: read at scrape time from the two counts the
        calls update anyway (the started counter and :attr:`invocations`), so no third count per call."""
        self.pull()
        invocations = self.invocations
        return {name: int(child.value) - invocations.get(name, 0) for name, child in self._started_children.items()}

    def invocation_count(self, function: str) -> int:
        """Answered calls to ``function`` since the daemon started."""
        self.pull()
        return self.invocations.get(function, 0)

    def hold(self, function: str, delta: int) -> None:
        self.held[function] = self.held.get(function, 0) + delta

    def cold_start(self, seconds: float) -> None:
        self._cold_starts.child(()).observe(seconds)

    def autoscaler_tick(self, seconds: float, functions: int) -> None:
        """One autoscaler tick (:class:`faasd.scaler.loop.Autoscaler`'s ``on_tick``)."""
        self._ticks.child(()).observe(seconds)
        self.tick_functions = functions

    def async_event(self, function: str, what: str) -> None:
        """An async call's event (:class:`faasd.queue.AsyncQueue`'s ``on_event``)."""
        if what == "retry":
            self._async_retries.child((function, "function")).value += 1
        elif what == "callback_retry":
            self._async_retries.child((function, "callback")).value += 1
        else:
            self._async_calls.child((function, what)).value += 1

    def provider_error(self, operation: str) -> None:
        self._provider_errors.child((operation,)).value += 1

    def forget(self, function: str) -> None:
        """Drop a removed function's per-function series (bounded label values)."""
        self.pull()
        for code in [code for (name, code) in self._finished_children if name == function]:
            del self._finished_children[(function, code)]
            for family in (self._invocations, self._seconds):
                family.remove((function, str(code)))
        if self._started_children.pop(function, None) is not None:
            self._started.remove((function,))
        self.invocations.pop(function, None)
        self.held.pop(function, None)
        for family, values in ((self._async_calls, ASYNC_OUTCOMES), (self._async_retries, ("function", "callback"))):
            for value in values:
                family.remove((function, value))

    @staticmethod
    def load_client() -> None:
        """Import what :meth:`render` needs (blocking): the daemon runs it in a worker thread once it serves,
        as it loads the management API, so the first scrape does not stall the event loop importing it."""
        import importlib

        for module in ("", ".platform_collector", ".process_collector"):
            importlib.import_module(f"prometheus_client{module}")

    def render(self) -> bytes:
        """The exposition text (Prometheus 0.0.4), by prometheus_client: imported here if the daemon's
        :meth:`load_client` has not done it yet."""
        from prometheus_client import CollectorRegistry, generate_latest

        self.pull()
        if self._registry is None:
            from prometheus_client.platform_collector import PlatformCollector
            from prometheus_client.process_collector import ProcessCollector

            registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            registry.register(_CountCollector(self.families))
            registry.register(_StateCollector(self, self._ready_replicas))
            self._registry = registry
        return generate_latest(self._registry)


class _CountCollector:
    """The counters and histograms, as the client's ``Counter`` and ``Histogram`` expose them."""

    def __init__(self, families: tuple[Family, ...]) -> None:
        self._families = families

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics import _use_created
        from prometheus_client.metrics_core import Metric
        from prometheus_client.utils import floatToGoString

        for family in self._families:
            metric = Metric(family.name, family.help, family.kind)
            for values, series in list(family.series.items()):
                labels = dict(zip(family.labels, values, strict=True))
                if isinstance(series, Observations):
                    total = 0.0
                    for bound, count in zip(series.bounds, series.counts, strict=True):
                        total += count
                        metric.add_sample(f"{family.name}_bucket", {**labels, "le": floatToGoString(bound)}, total)
                    metric.add_sample(f"{family.name}_count", labels, total)
                    metric.add_sample(f"{family.name}_sum", labels, series.sum)
                else:
                    metric.add_sample(f"{family.name}_total", labels, series.value)
                if _use_created:
                    metric.add_sample(f"{family.name}_created", labels, series.created)
            yield metric

    def describe(self) -> Iterator[Any]:
        return iter(())


class _StateCollector:
    """Gauges computed at scrape time."""

    def __init__(self, metrics: GatewayMetrics, ready_replicas: Callable[[], dict[str, int]]) -> None:
        self._metrics = metrics
        self._ready_replicas = ready_replicas

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        service_count = GaugeMetricFamily(
            "gateway_service_count", "Ready replicas per function", labels=["function_name"]
        )
        for name, count in sorted(self._ready_replicas().items()):
            service_count.add_metric([name], count)
        yield service_count
        in_flight = GaugeMetricFamily(
            "faasd_function_inflight", "Calls in flight through the gateway", labels=["function_name"]
        )
        for name, count in sorted(self._metrics.in_flight().items()):
            in_flight.add_metric([name], count)
        yield in_flight
        held = GaugeMetricFamily(
            "faasd_held_requests", "Calls waiting for a function to have a ready replica", labels=["function_name"]
        )
        for name, count in sorted(self._metrics.held.items()):
            held.add_metric([name], count)
        yield held
        desired = GaugeMetricFamily(
            "faasd_autoscaler_desired_replicas", "The autoscaler's latest decision", labels=["function_name"]
        )
        for name, count in sorted(self._metrics.desired_replicas().items()):
            desired.add_metric([name], count)
        yield desired
        yield GaugeMetricFamily(
            "faasd_autoscaler_tick_functions",
            "Functions the autoscaler's last tick decided",
            self._metrics.tick_functions,
        )
        queue = self._metrics.async_queue()
        families = (
            ("faasd_async_queue_depth", "Async calls accepted and not finished", 0),
            ("faasd_async_queue_running", "Async calls being invoked or called back now", 1),
            ("faasd_async_queue_oldest_seconds", "Age of the oldest async call not finished", 2),
        )
        for metric, help_text, index in families:
            family = GaugeMetricFamily(metric, help_text, labels=["function_name"])
            for name, values in sorted(queue.items()):
                family.add_metric([name], values[index])
            yield family

    def describe(self) -> Iterator[Any]:
        return iter(())


def _nothing() -> None:
    """:attr:`GatewayMetrics.pull` when no other thread counts calls."""
