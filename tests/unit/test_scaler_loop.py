"""The load meter's buckets, and the autoscaler loop driven in virtual time (trio MockClock)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
import trio

from faasd.errors import BackendUnavailable
from faasd.providers.types import Endpoint, FunctionSpec
from faasd.registry import EndpointRegistry
from faasd.scaler.loop import TICK_S, Autoscaler
from faasd.scaler.meter import LoadMeter
from faasd.store import StoredFunction


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_meter_counts_requests_and_time_weighted_concurrency():
    clock = FakeClock()
    meter = LoadMeter(clock)
    meter.started("f")  # t=1000.0, 1 in flight
    clock.now = 1000.5
    meter.started("f")  # 2 in flight for the second half
    clock.now = 1001.25
    meter.finished("f")
    meter.finished("f")
    clock.now = 1004.0
    window = meter.window("f")
    assert list(window.requests) == [2, 0, 0, 0]
    assert window.concurrency[0] == pytest.approx(1.5)  # 1 for 0.5 s + 2 for 0.5 s
    assert window.concurrency[1] == pytest.approx(0.5)  # 2 for 0.25 s
    assert list(window.concurrency[2:]) == [0, 0]
    assert window.idle_s == pytest.approx(2.75)


def test_meter_fills_quiet_seconds_with_the_ongoing_concurrency():
    clock = FakeClock()
    meter = LoadMeter(clock)
    meter.started("f")
    clock.now = 1010.0
    window = meter.window("f")
    assert list(window.concurrency) == [1.0] * 10 and window.idle_s == 0


def test_touch_marks_activity_without_load():
    clock = FakeClock()
    meter = LoadMeter(clock)
    clock.now = 1100.0
    assert meter.window("f").idle_s == 0  # first seen now
    clock.now = 1200.0
    meter.touch("f")
    clock.now = 1203.0
    window = meter.window("f")
    assert window.idle_s == pytest.approx(3.0) and sum(window.requests) == 0


@dataclass
class FakeService:
    """The slice of FunctionService the autoscaler uses; scaling makes replicas ready at once."""

    registry: EndpointRegistry
    functions: dict[str, StoredFunction] = field(default_factory=dict)
    scaled: list[tuple[float, str, int]] = field(default_factory=list)
    fail: bool = False

    def add(self, name: str, replicas: int, labels: dict[str, str] | None = None) -> None:
        spec = FunctionSpec(name=name, env_process="cat", labels=labels or {})
        now = datetime.now(UTC)
        self.functions[name] = StoredFunction(spec, replicas, now, now)
        self._publish(name, replicas)

    def names(self) -> list[str]:
        return sorted(self.functions)

    def above_zero(self) -> list[str]:
        return [name for name, stored in self.functions.items() if stored.replicas > 0]

    def stored(self, name: str) -> StoredFunction | None:
        return self.functions.get(name)

    async def scale(self, name: str, replicas: int) -> None:
        if self.fail:
            raise BackendUnavailable("backend down")
        self.scaled.append((trio.current_time(), name, replicas))
        self.functions[name] = replace(self.functions[name], replicas=replicas)
        self._publish(name, replicas)

    def _publish(self, name: str, replicas: int) -> None:
        self.registry.publish(name, [Endpoint("127.0.0.1", 10000 + i, f"{name}-{i}") for i in range(replicas)])


def make(labels: dict[str, str] | None = None, replicas: int = 1) -> tuple[Autoscaler, FakeService, LoadMeter]:
    registry = EndpointRegistry()
    service = FakeService(registry)
    service.add("f", replicas, labels)
    meter = LoadMeter(trio.current_time)
    return Autoscaler(service, registry, meter), service, meter  # type: ignore[arg-type]


async def hold_calls(meter: LoadMeter, count: int, seconds: float) -> None:
    for _ in range(count):
        meter.started("f")
    await trio.sleep(seconds)
    for _ in range(count):
        meter.finished("f")


async def test_a_2x_step_is_ordered_within_one_tick(autojump_clock: trio.testing.MockClock) -> None:
    autoscaler, service, meter = make()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(autoscaler.run)
        await hold_calls(meter, 9, 60)  # 1x: 9 in flight on one replica (target 10 x 0.9)
        step = trio.current_time()
        nursery.start_soon(hold_calls, meter, 18, 30)  # 2x
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    [(when, name, replicas)] = service.scaled[:1]
    assert (name, replicas) == ("f", 2)
    # What the loop promises (faasd/scaler/loop.py): load is sampled in whole seconds and decided on every
    # tick. The step starts on a second boundary, so the first second of 2x load is complete one second
    # later, and the tick at that moment orders the scale: within one tick (TICK_S = 1 s), not 2-4 s.
    assert autoscaler.tick_s == TICK_S == 1.0
    assert when - step <= autoscaler.tick_s, f"scale order {when - step:.1f}s after the step"
    assert "panic" in autoscaler.decisions["f"].reason


async def test_idle_function_scales_to_zero_then_calls_wake_it(autojump_clock: trio.testing.MockClock) -> None:
    autoscaler, service, meter = make({"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "20s"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(autoscaler.run)
        await hold_calls(meter, 1, 5)
        last_call = trio.current_time()
        await trio.sleep(30)
        assert service.functions["f"].replicas == 0
        when, _, replicas = service.scaled[-1]
        assert replicas == 0 and 20 <= when - last_call <= 20 + autoscaler.tick_s
        # Fifty calls arrive together: one wake-up scales it to 1, the others share it.
        results = []

        async def call() -> None:
            results.append(await autoscaler.wake("f"))

        async with trio.open_nursery() as callers:
            for _ in range(50):
                callers.start_soon(call)
        assert results.count(True) == 1 and service.functions["f"].replicas == 1
        # The held calls do not count as load: no overshoot at the next ticks.
        await trio.sleep(10)
        assert service.functions["f"].replicas == 1
        nursery.cancel_scope.cancel()


async def test_manual_scale_is_kept_for_a_stable_window(autojump_clock: trio.testing.MockClock) -> None:
    autoscaler, service, _meter = make()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(autoscaler.run)
        await trio.sleep(3)
        await service.scale("f", 6)
        autoscaler.manual_scale("f", 6)
        await trio.sleep(55)
        assert service.functions["f"].replicas == 6
        await trio.sleep(15)  # past the stable window: the load (none) decides, halving per tick
        assert service.functions["f"].replicas < 6
        await trio.sleep(20)
        assert service.functions["f"].replicas == 1
        nursery.cancel_scope.cancel()


async def test_backend_errors_do_not_stop_the_loop(autojump_clock: trio.testing.MockClock) -> None:
    autoscaler, service, meter = make()
    service.fail = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(autoscaler.run)
        nursery.start_soon(hold_calls, meter, 40, 20)
        await trio.sleep(6)
        assert service.functions["f"].replicas == 1  # every scale attempt failed
        service.fail = False
        await trio.sleep(4)
        assert service.functions["f"].replicas >= 4
        nursery.cancel_scope.cancel()


async def test_removed_functions_are_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    autoscaler, service, _meter = make()
    await autoscaler.tick()
    assert "f" in autoscaler.decisions
    del service.functions["f"]
    await autoscaler.tick()
    assert "f" not in autoscaler.decisions


async def test_queued_async_work_scales_up_and_keeps_the_function_from_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autoscaler, service, _meter = make({"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "20s"})
    waiting = {"f": 0.0}
    autoscaler.queued = lambda name: waiting[name]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(autoscaler.run)
        waiting["f"] = 30.0  # a backlog the queue's workers could start now; nothing in flight
        await trio.sleep(5)
        assert service.functions["f"].replicas == 4  # ceil(30 / 9): load at once, not after a replica took it
        await trio.sleep(60)  # 65 s with no call in flight, past zero-duration: queued work is not idleness
        assert service.functions["f"].replicas == 4
        waiting["f"] = 0.0
        await trio.sleep(60 + 25)
        assert service.functions["f"].replicas == 0
        nursery.cancel_scope.cancel()


@dataclass
class CountingService(FakeService):
    """A FakeService that counts the records the autoscaler reads."""

    lookups: int = 0

    def stored(self, name: str) -> StoredFunction | None:
        self.lookups += 1
        return super().stored(name)


async def test_a_tick_does_not_walk_functions_at_zero(autojump_clock: trio.testing.MockClock) -> None:
    """One function in use among 10,000 at zero: each tick decides one function and reads one record, and the
    autoscaler keeps nothing about the others (it decided all 10,001 every second, at 0.5 s a tick and more)."""
    registry = EndpointRegistry()
    service = CountingService(registry)
    service.add("hot", 1)
    for index in range(10_000):
        service.add(f"idle-{index}", 0)
    meter = LoadMeter(trio.current_time)
    decided: list[int] = []
    autoscaler = Autoscaler(service, registry, meter, on_tick=lambda seconds, functions: decided.append(functions))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(autoscaler.run)
        await trio.sleep(5 * TICK_S + TICK_S / 2)
        nursery.cancel_scope.cancel()
    assert decided == [1] * 5
    assert service.lookups <= 2 * 5  # per tick, the hot function's record and its labels (for its settings)
    assert list(autoscaler.decisions) == ["hot"] and meter.counted() == 1
    # Asked about, an idle function is explained without being counted from then on.
    explained = autoscaler.explain("idle-7")
    assert explained.desired == 0 and explained.reason.startswith("at zero"), explained
    assert meter.counted() == 1 and list(autoscaler.decisions) == ["hot"]
    assert autoscaler.desired_replicas() == {"hot": 1, **{f"idle-{i}": 0 for i in range(10_000)}}


async def test_what_a_function_at_zero_leaves_is_dropped_once_no_call_is_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autoscaler, service, meter = make()
    await autoscaler.tick()
    assert "f" in autoscaler.decisions and meter.counted() == 1
    meter.started("f")  # a call still running on a replica when the function is scaled to zero by hand
    await service.scale("f", 0)
    autoscaler.manual_scale("f", 0)
    await autoscaler.tick()
    assert "f" not in autoscaler.decisions and meter.counted() == 1  # its end must still find the counters
    await trio.sleep(1)
    meter.finished("f")
    await trio.sleep(1)
    assert list(meter.peek("f").concurrency) == [1.0, 0.0]  # counted to its end, not below zero after it
    await autoscaler.tick()
    assert meter.counted() == 0, "the counters of an idle function at zero are dropped"
    # A call wakes it: decided again from the next tick.
    assert await autoscaler.wake("f") and service.functions["f"].replicas == 1
    assert await autoscaler.tick() == 1 and autoscaler.decisions["f"].desired == 1
