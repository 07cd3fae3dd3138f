"""The gateway's Prometheus metrics, under the OpenFaaS names so existing dashboards work.

The only module that creates prometheus_client objects. Per call the invoke path does one
:meth:`GatewayMetrics.started` and one :meth:`GatewayMetrics.finished`: label children are cached,
so a call costs two dict lookups and the client's own increments. Values that are state rather than
events (ready replicas, calls in flight) are read at scrape time by a collector, costing nothing per
call.

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

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ASYNC_OUTCOMES = ("accepted", "done", "delivered", "refused", "given_up")


class GatewayMetrics:
    """Counters of one gateway, in their own registry (tests can run several gateways in one process).

    Args:
        ready_replicas: returns {function name: ready replica count}, read at scrape time.
    """

    def __init__(self, ready_replicas: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._invocations = Counter(
            "gateway_function_invocation",
            "Function invocations answered, by status code",
            ["function_name", "code"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "gateway_functions_seconds",
            "Function invocation time through the gateway",
            ["function_name", "code"],
            registry=self.registry,
        )
        self._started = Counter(
            "gateway_function_invocation_started",
            "Function invocations started",
            ["function_name"],
            registry=self.registry,
        )
        self._provider_errors = Counter(
            "faasd_provider_errors",
            "Backend operations that failed",
            ["operation"],
            registry=self.registry,
        )
        self._cold_starts = Histogram(
            "faasd_cold_start_seconds",
            "Time a call waited for a function scaled from zero to have a ready replica",
            buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self._ticks = Histogram(
            "faasd_autoscaler_tick_seconds",
            "Time one autoscaler tick took (it runs every second, on the event loop every call also uses)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.tick_functions = 0
        """Functions the autoscaler's last tick decided."""
        self._async_calls = Counter(
            "faasd_async_calls",
            "Async calls accepted, and finished by outcome",
            ["function_name", "outcome"],
            registry=self.registry,
        )
        self._async_retries = Counter(
            "faasd_async_retries",
            "Async calls retried: an invocation (kind=function) or a callback (kind=callback)",
            ["function_name", "kind"],
            registry=self.registry,
        )
        self.async_queue: Callable[[], dict[str, tuple[int, int, float]]] = dict
        """Set by the daemon: {function: (queued, running, oldest age in seconds)} of the async queue."""
        self.held: dict[str, int] = {}
        """Calls waiting for a ready replica, per function."""
        self.desired_replicas: Callable[[], dict[str, int]] = dict
        """Set by the daemon: the autoscaler's latest decision per function."""

        self._finished_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._started_children: dict[str, Any] = {}
        self.invocations: dict[str, int] = {}
        """Answered calls per function since start (``invocationCount`` in function listings)."""
        self.registry.register(_StateCollector(self, ready_replicas))

    def started(self, function: str) -> None:
        child = self._started_children.get(function)
        if child is None:
            child = self._started_children[function] = self._started.labels(function)
        child.inc()

    def finished(self, function: str, code: int, seconds: float) -> None:
        children = self._finished_children.get((function, code))
        if children is None:
            children = self._finished_children[(function, code)] = (
                self._invocations.labels(function, str(code)),
                self._seconds.labels(function, str(code)),
            )
        children[0].inc()
        children[1].observe(seconds)
        self.invocations[function] = self.invocations.get(function, 0) + 1

    def in_flight(self) -> dict[str, int]:
        """Calls started and not answered yet, per function: read at scrape time from the two counts the
        calls update anyway (the started counter and :attr:`invocations`), so no third count per call."""
        invocations = self.invocations
        return {
            name: int(child._value.get()) - invocations.get(name, 0)  # prometheus_client's value of the child
            for name, child in self._started_children.items()
        }

    def hold(self, function: str, delta: int) -> None:
        self.held[function] = self.held.get(function, 0) + delta

    def cold_start(self, seconds: float) -> None:
        self._cold_starts.observe(seconds)

    def autoscaler_tick(self, seconds: float, functions: int) -> None:
        """One autoscaler tick (:class:`faasd.scaler.loop.Autoscaler`'s ``on_tick``)."""
        self._ticks.observe(seconds)
        self.tick_functions = functions

    def async_event(self, function: str, what: str) -> None:
        """An async call's event (:class:`faasd.queue.AsyncQueue`'s ``on_event``)."""
        if what == "retry":
            self._async_retries.labels(function, "function").inc()
        elif what == "callback_retry":
            self._async_retries.labels(function, "callback").inc()
        else:
            self._async_calls.labels(function, what).inc()

    def provider_error(self, operation: str) -> None:
        self._provider_errors.labels(operation).inc()

    def forget(self, function: str) -> None:
        """Drop a removed function's per-function series (bounded label values)."""
        for code in [code for (name, code) in self._finished_children if name == function]:
            del self._finished_children[(function, code)]
            for metric in (self._invocations, self._seconds):
                with contextlib.suppress(KeyError):
                    metric.remove(function, str(code))
        if self._started_children.pop(function, None) is not None:
            self._started.remove(function)
        self.invocations.pop(function, None)
        self.held.pop(function, None)
        for metric, values in ((self._async_calls, ASYNC_OUTCOMES), (self._async_retries, ("function", "callback"))):
            for value in values:
                with contextlib.suppress(KeyError):
                    metric.remove(function, value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Gauges computed at scrape time."""

    def __init__(self, metrics: GatewayMetrics, ready_replicas: Callable[[], dict[str, int]]) -> None:
        self._metrics = metrics
        self._ready_replicas = ready_replicas

    def collect(self) -> Iterator[GaugeMetricFamily]:
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

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
