"""The gateway's metrics are counted without prometheus_client and rendered by it only on a scrape
(faasd/gateway/metrics.py): what a scrape reads must be what the client's own ``Counter`` and
``Histogram`` wrote for the same events, and the client must not be imported before the first scrape."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from faasd.gateway.metrics import GatewayMetrics

SECONDS = (0.0001, 0.005, 0.0051, 0.3, 0.75, 7.5, 12.0, 99.0)
"""Call durations on, below and above bucket bounds, and past the last one."""


def _samples(text: str, prefixes: tuple[str, ...]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of the families named with one of ``prefixes``, ``_created``
    left out (a time, different for each side)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith(prefixes)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_a_scrape_reads_what_prometheus_clients_own_objects_would_have() -> None:
    metrics = GatewayMetrics(ready_replicas=lambda: {"echo": 1})
    registry = CollectorRegistry()
    invocations = Counter("gateway_function_invocation", "x", ["function_name", "code"], registry=registry)
    seconds = Histogram("gateway_functions_seconds", "x", ["function_name", "code"], registry=registry)
    started = Counter("gateway_function_invocation_started", "x", ["function_name"], registry=registry)
    ticks = Histogram(
        "faasd_autoscaler_tick_seconds",
        "x",
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        registry=registry,
    )
    async_calls = Counter("faasd_async_calls", "x", ["function_name", "outcome"], registry=registry)
    for index, value in enumerate(SECONDS):
        code = 200 if index % 3 else 502
        metrics.started("echo")
        metrics.finished("echo", code, value)
        metrics.autoscaler_tick(value / 100, 1)
        started.labels("echo").inc()
        invocations.labels("echo", str(code)).inc()
        seconds.labels("echo", str(code)).observe(value)
        ticks.observe(value / 100)
    metrics.started("echo")  # One call still in flight.
    started.labels("echo").inc()
    metrics.async_event("echo", "accepted")
    async_calls.labels("echo", "accepted").inc()

    prefixes = (
        "gateway_function_invocation",
        "gateway_functions_seconds",
        "faasd_autoscaler_tick_seconds",
        "faasd_async_calls",
    )
    ours = metrics.render().decode()
    assert _samples(ours, prefixes) == _samples(generate_latest(registry).decode(), prefixes)
    assert 'gateway_function_invocation_created{code="502",function_name="echo"}' in ours
    assert 'faasd_function_inflight{function_name="echo"} 1.0' in ours
    assert "faasd_cold_start_seconds_count 0.0" in ours  # Unlabelled: shown before its first observation.
    assert "process_cpu_seconds_total" in ours and "python_info" in ours


def test_a_removed_function_leaves_no_series() -> None:
    metrics = GatewayMetrics(ready_replicas=dict)
    metrics.started("gone")
    metrics.finished("gone", 200, 0.01)
    metrics.async_event("gone", "retry")
    metrics.forget("gone")
    assert 'function_name="gone"' not in metrics.render().decode()
    assert metrics.in_flight() == {} and metrics.invocations == {}


def test_counting_imports_no_prometheus_client() -> None:
    """In a fresh interpreter: created and counted without the client, which the first scrape imports."""
    code = (
        "import sys\n"
        "from faasd.gateway.metrics import GatewayMetrics\n"
        "m = GatewayMetrics(dict)\n"
        "m.started('f'); m.finished('f', 200, 0.1); m.cold_start(0.2)\n"
        "assert 'prometheus_client' not in sys.modules, 'imported before a scrape'\n"
        "assert b'gateway_function_invocation_total' in m.render()\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
