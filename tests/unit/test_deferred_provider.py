"""The local backend as the daemon's second stage (faasd/providers/deferred.py), with the in-memory
backend behind it: nothing is built before ``begin`` (or a request that needs the backend); a deploy
that comes before the backend is started starts it, waits for it and is then the backend's own (its
replica is published); a backend that
cannot start ends the stage with its error, and a request waiting for it gets a 503, not a hang.
"""

from __future__ import annotations

import pytest
import trio

from faasd.errors import BackendUnavailable
from faasd.providers.base import Provider
from faasd.providers.deferred import DeferredProvider
from faasd.providers.memory.provider import MemoryProvider
from faasd.providers.types import FunctionSpec
from faasd.registry import EndpointRegistry

PENDING = {"mode": "pending", "requested": "auto", "isolated": False}


def _deferred(build: object) -> DeferredProvider:
    return DeferredProvider(
        name="local",
        orchestration="local",
        persistent=False,
        module="faasd.providers.memory",
        build=build,  # type: ignore[arg-type]
        pending_info=PENDING,
    )


async def test_a_deploy_before_the_backend_starts_waits_and_is_then_applied() -> None:
    registry = EndpointRegistry()
    built: list[MemoryProvider] = []

    def build() -> Provider:
        built.append(MemoryProvider(registry=registry))
        return built[0]

    provider = _deferred(build)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run)
        deployed = trio.Event()

        async def deploy() -> None:
            await provider.deploy(FunctionSpec(name="echo", env_process="cat"), 1)
            deployed.set()

        await trio.sleep(0.1)
        assert built == [], "nothing is built before begin() or a request that needs the backend"
        assert provider.health() == (True, "local processes (starting)")
        assert provider.sandbox_info() == PENDING
        nursery.start_soon(deploy)  # Without begin(): the request starts the load and waits for it.
        with trio.fail_after(10):
            await deployed.wait()
            while not registry.get("echo"):
                await trio.sleep(0.01)
        assert [status.name for status in await provider.list()] == ["echo"]
        assert (await provider.status("echo")).replicas == 1
        nursery.cancel_scope.cancel()
    await provider.aclose()


async def test_a_backend_that_cannot_start_ends_the_stage_and_answers_the_waiting_request() -> None:
    def build() -> Provider:
        raise OSError("bwrap is not installed")

    provider = _deferred(build)
    answers: list[BaseException] = []

    async def scale() -> None:
        try:
            await provider.scale("echo", 1)
        except BackendUnavailable as exc:
            answers.append(exc)

    with pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run)
            nursery.start_soon(scale)  # Starts the load itself, as a request that needs it does.
            await trio.sleep(5)
    assert raised.group_contains(OSError, match="bwrap is not installed")
    assert len(answers) == 1 and answers[0].http_status == 503  # type: ignore[attr-defined]
