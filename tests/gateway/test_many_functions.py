"""Many functions in one daemon: what the autoscaler walks, and what the listing costs.

Over the in-memory backend with the wiring ``faasd up`` uses (tests/gateway/conftest.py). bench/scale.py
measures the same things on a real daemon with 10,000 functions; these tests count, they do not time.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from faasd.providers.memory import MemoryProvider
from faasd.providers.types import FunctionSpec
from faasd.registry import EndpointRegistry
from faasd.service import FunctionService
from faasd.store import AsyncStore, Store
from tests.gateway.conftest import Gateway

MakeGateway = Callable[..., Awaitable[Gateway]]
AT_ZERO = {"com.openfaas.scale.min": "0"}


async def test_the_tick_decides_only_the_functions_above_zero(make_gateway: MakeGateway) -> None:
    """Deployed at zero, scaled up and down, updated, removed: the autoscaler's tick follows the functions
    whose desired replicas are above zero, whatever the number of idle ones (it walked all of them)."""
    gateway = await make_gateway()
    client, admin, parts = gateway.client, gateway.admin, gateway.parts
    for index in range(100):
        answer = await gateway.deploy(f"idle-{index}", labels=AT_ZERO)
        assert answer.status_code == 202, answer.text
    assert await parts.autoscaler.tick() == 0
    assert (await gateway.deploy("hot")).status_code == 202
    await gateway.wait_available("hot", 1)
    assert sorted(parts.service.above_zero()) == ["hot"]
    assert await parts.autoscaler.tick() == 1 and list(parts.autoscaler.decisions) == ["hot"]

    async def scale(name: str, replicas: int) -> None:
        document = {"serviceName": name, "replicas": replicas}
        answer = await client.post(f"/system/scale-function/{name}", json=document, headers=admin)
        assert answer.status_code == 202, answer.text

    await scale("idle-7", 2)
    assert sorted(parts.service.above_zero()) == ["hot", "idle-7"]
    assert await parts.autoscaler.tick() == 2
    # An update keeps the count (above zero), a scale to 0 and a removal take it out.
    assert (
        await client.put("/system/functions", json={"service": "idle-7", "envProcess": "cat"}, headers=admin)
    ).status_code == 202
    assert sorted(parts.service.above_zero()) == ["hot", "idle-7"]
    await scale("idle-7", 0)
    answer = await client.request("DELETE", "/system/functions", json={"functionName": "hot"}, headers=admin)
    assert answer.status_code == 202, answer.text
    assert parts.service.above_zero() == []
    assert await parts.autoscaler.tick() == 0
    assert parts.autoscaler.decisions == {} and parts.autoscaler.meter.counted() == 0
    # Every function at zero is still explained and reported, from its record.
    scaling = (await client.get("/system/scaling/idle-3", headers=admin)).json()
    assert scaling["desiredReplicas"] == 0 and scaling["reason"].startswith("at zero"), scaling
    metrics = (await client.get("/metrics")).text
    assert 'faasd_autoscaler_desired_replicas{function_name="idle-99"} 0.0' in metrics


class RecordingProvider(MemoryProvider):
    """The in-memory backend, noting when each deploy starts and ends."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: list[tuple[str, str]] = []

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        self.events.append(("start", spec.name))
        await super().deploy(spec, replicas)
        self.events.append(("done", spec.name))


async def test_a_restart_restores_the_functions_with_replicas_before_those_at_zero(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Restored together, the functions serving calls came back only when every idle one had."""
    store = AsyncStore(await trio.to_thread.run_sync(Store.open, os.path.join(tmp_path, "faasd.db")))
    try:
        for index in range(40):  # Named to come first: the store reads functions by name.
            await store.put_function(FunctionSpec(name=f"a-idle-{index}", env_process="cat", labels=AT_ZERO), 0)
        await store.put_function(FunctionSpec(name="z-hot", env_process="cat"), 1)
        registry = EndpointRegistry()
        provider = RecordingProvider(registry=registry)
        await nursery.start(provider.run)
        service = FunctionService(store, provider, registry)
        await service.load()
        await service.restore()
        hot_done = provider.events.index(("done", "z-hot"))
        first_idle = min(i for i, (what, name) in enumerate(provider.events) if what == "start" and name != "z-hot")
        assert hot_done < first_idle, provider.events[:5]
        assert len(provider.events) == 2 * 41 and (await service.status("z-hot")).state == "deployed"
    finally:
        await store.aclose()


async def test_calls_are_counted_in_the_meter_the_autoscaler_reads(make_gateway: MakeGateway) -> None:
    """The invoke path takes ``meter or LoadMeter()``: a meter that is empty must still be the one it counts in
    (a ``__len__`` on LoadMeter once made every daemon's calls invisible to its autoscaler)."""
    gateway = await make_gateway()
    parts = gateway.parts
    assert parts.invoker.meter is parts.autoscaler.meter
    assert (await gateway.deploy("echo")).status_code == 202
    await gateway.wait_available("echo", 1)
    assert (await gateway.client.post("/function/echo", content=b"counted")).status_code == 200
    assert parts.autoscaler.meter.counted() == 1
