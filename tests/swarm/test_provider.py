"""SwarmProvider against a real dockerd and swarm: the shared conformance suite, then what only Swarm shows.

The provider runs in the test's trio run; its replicas are real Swarm tasks of the base image, called
on their host-mode ports on 127.0.0.1.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import docker
import pytest
import trio

from faasd.errors import BackendUnavailable, Conflict, InvalidRequest
from faasd.providers import Provider
from faasd.providers.swarm import SwarmProvider
from faasd.providers.types import FunctionSpec
from faasd.registry import EndpointRegistry
from tests.helpers import scaled
from tests.providers.conformance import (
    CHECKS,
    ProviderFactory,
    call,
    function_spec,
    ready_endpoints,
    running,
    wait_until,
)
from tests.swarm.conftest import SwarmHelper

pytestmark = pytest.mark.slow

TIMEOUT_S = 30.0
SECRETS = {"api-key": b"s3cr3t-value\n"}


async def lookup_secret(name: str) -> bytes | None:
    return SECRETS.get(name)


@pytest.fixture
def make_swarm(swarm: SwarmHelper, base_image: str) -> Callable[..., ProviderFactory]:
    """``make_swarm(**options)`` -> a factory of started SwarmProviders labelling what they create."""

    def maker(**options: object) -> ProviderFactory:
        async def factory(nursery: trio.Nursery) -> tuple[Provider, EndpointRegistry]:
            registry = EndpointRegistry()
            provider = SwarmProvider(
                registry=registry,
                secrets=lookup_secret,
                stop_grace_s=2.0,
                extra_labels=swarm.labels,
                **options,  # type: ignore[arg-type]
            )
            await nursery.start(provider.run)
            return provider, registry

        return factory

    return maker


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_conformance(
    check: Callable[..., Awaitable[None]], make_swarm: Callable[..., ProviderFactory], base_image: str
) -> None:
    await check(make_swarm(), image=base_image, timeout_s=TIMEOUT_S)


async def test_scale_down_unpublishes_before_the_container_stops(
    make_swarm: Callable[..., ProviderFactory], swarm: SwarmHelper, base_image: str
) -> None:
    """3 -> 1: the two extra tasks leave the registry within a few ms, while their containers still
    run for 2+ s (Swarm's gossip delay); none of the endpoints is restarted by the scale."""
    async with running(make_swarm()) as (provider, registry):
        await provider.deploy(function_spec("sw-down", image=base_image), 3)
        endpoints = await ready_endpoints(registry, "sw-down", 3, TIMEOUT_S)
        started = trio.current_time()
        await provider.scale("sw-down", 1)
        (survivor,) = await ready_endpoints(registry, "sw-down", 1, TIMEOUT_S)
        unpublished_after = trio.current_time() - started
        assert unpublished_after < 0.5, unpublished_after
        assert survivor in endpoints
        stopping = [e for e in endpoints if e != survivor]
        # The unpublished replicas still answer for a while: nobody was cut off mid-call.
        for endpoint in stopping:
            assert (await call(endpoint, b"late"))[0] == 200
        assert await call(survivor, b"x") == (200, b"x")


async def test_secrets_read_only_root_and_labels(
    make_swarm: Callable[..., ProviderFactory], swarm: SwarmHelper, base_image: str
) -> None:
    """A secret is readable at /var/openfaas/secrets/<name>, the root is read-only with /tmp writable,
    and the service carries the OpenFaaS labels, annotations, limits and the lock-file health check."""
    async with running(make_swarm()) as (provider, registry):
        spec = FunctionSpec(
            name="sw-secret",
            image=base_image,
            env_process="sh -c 'cat /var/openfaas/secrets/api-key; touch /probe 2>&1; echo tmp > /tmp/t && cat /tmp/t'",
            secrets=("api-key",),
            read_only_root_filesystem=True,
            labels={"team": "blue"},
            annotations={"topic": "payments"},
            limits=FunctionSpec.from_json({"service": "x", "limits": {"memory": "64M", "cpu": "0.5"}}).limits,
        )
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "sw-secret", 1, TIMEOUT_S)
        status, body = await call(endpoint)
        assert status == 200, body
        assert b"s3cr3t-value" in body
        assert b"Read-only file system" in body
        assert body.rstrip().endswith(b"tmp")

        service = swarm.api.inspect_service("sw-secret")["Spec"]
        assert service["Labels"]["com.openfaas.function"] == "sw-secret"
        assert service["Labels"]["function"] == "true"
        assert service["Labels"]["team"] == "blue"
        assert service["Labels"]["com.openfaas.annotations.topic"] == "payments"
        container = service["TaskTemplate"]["ContainerSpec"]
        assert container["Init"] is True and container["ReadOnly"] is True
        assert container["Healthcheck"]["Test"] == ["CMD-SHELL", "[ -e /tmp/.lock ]"]
        assert service["TaskTemplate"]["Resources"]["Limits"] == {
            "MemoryBytes": 64 * 1024 * 1024,
            "NanoCPUs": 500_000_000,
        }
        assert service["EndpointSpec"]["Mode"] == "dnsrr"
        assert container["Image"] == base_image  # By ID: Swarm never looks for a registry.

        reported = await provider.status("sw-secret")
        assert reported.spec == spec


async def test_changed_secret_is_a_new_docker_secret(
    make_swarm: Callable[..., ProviderFactory], swarm: SwarmHelper, base_image: str
) -> None:
    async with running(make_swarm()) as (provider, registry):
        spec = FunctionSpec(
            name="sw-rotate", image=base_image, env_process="cat /var/openfaas/secrets/api-key", secrets=("api-key",)
        )
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "sw-rotate", 1, TIMEOUT_S)
        assert (await call(endpoint))[1] == b"s3cr3t-value\n"
        SECRETS["api-key"] = b"rotated\n"
        try:
            await provider.update(spec)

            async def rotated() -> bool:
                endpoints = registry.get("sw-rotate")
                return len(endpoints) == 1 and (await call(endpoints[0]))[1] == b"rotated\n"

            await wait_until(rotated, "the replica to read the new value", TIMEOUT_S, 0.1)
        finally:
            SECRETS["api-key"] = b"s3cr3t-value\n"

        def versions() -> list[str]:
            secrets = swarm.api.secrets(filters={"label": "faasd.secret=api-key"})
            return sorted(
                s["Spec"]["Name"]
                for s in secrets
                if s["Spec"]["Labels"].get("faasd.test") == swarm.labels["faasd.test"]
            )

        # The old version is removed in the background once no service uses it.
        await wait_until(lambda: len(versions()) == 1, "the unused secret version to be removed", 10)


async def test_hand_made_service_is_discovered(
    make_swarm: Callable[..., ProviderFactory], swarm: SwarmHelper, base_image: str
) -> None:
    """A service created with the docker SDK and the OpenFaaS labels is a function like the others."""
    async with running(make_swarm()) as (provider, registry):
        await trio.to_thread.run_sync(_create_by_hand, swarm, base_image, "sw-hand")
        (endpoint,) = await ready_endpoints(registry, "sw-hand", 1, TIMEOUT_S)
        assert await call(endpoint, b"by hand") == (200, b"by hand")
        (status,) = [s for s in await provider.list() if s.name == "sw-hand"]
        assert status.spec.env_process == "cat"
        assert status.spec.env_vars == {"MODE": "manual"}
        await provider.scale("sw-hand", 2)
        await ready_endpoints(registry, "sw-hand", 2, TIMEOUT_S)


def _create_by_hand(swarm: SwarmHelper, image: str, name: str) -> None:
    labels = {"com.openfaas.function": name, "function": "true", **swarm.labels}
    swarm.api.create_service(
        docker.types.TaskTemplate(
            docker.types.ContainerSpec(image, env={"fprocess": "cat", "MODE": "manual"}, init=True, labels=labels),
            networks=["functions"],
        ),
        name=name,
        labels=labels,
        endpoint_spec={"Mode": "dnsrr", "Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]},
    )


async def test_restart_rebuilds_from_swarm(
    make_swarm: Callable[..., ProviderFactory], swarm: SwarmHelper, base_image: str
) -> None:
    """A new provider (a restarted daemon) finds the functions, replicas and endpoints of the old one."""
    async with running(make_swarm()) as (provider, registry):
        await provider.deploy(function_spec("sw-keep", image=base_image), 2)
        before = await ready_endpoints(registry, "sw-keep", 2, TIMEOUT_S)
    assert registry.get("sw-keep") == ()  # A stopped provider publishes nothing.
    async with running(make_swarm()) as (provider, registry):
        after = await ready_endpoints(registry, "sw-keep", 2, TIMEOUT_S)
        assert sorted(after, key=str) == sorted(before, key=str)
        (status,) = [s for s in await provider.list() if s.name == "sw-keep"]
        assert status.replicas == 2 and status.available_replicas == 2


async def test_swarm_route_overrides_what_the_daemon_finds(
    make_swarm: Callable[..., ProviderFactory], swarm: SwarmHelper, base_image: str
) -> None:
    """On the host ``auto`` is host-port (the conformance checks call the published ports); an explicit
    ``overlay-dns`` is taken as given: the service publishes nothing on the host."""
    async with running(make_swarm(route="overlay-dns")) as (provider, _registry):
        await provider.deploy(function_spec("sw-route", image=base_image), 0)
        spec = swarm.api.inspect_service("sw-route")["Spec"]
        assert spec["EndpointSpec"] == {"Mode": "dnsrr"}
    async with running(make_swarm()) as (provider, _registry):
        await provider.deploy(function_spec("sw-route", image=base_image), 0)
        ports = swarm.api.inspect_service("sw-route")["Spec"]["EndpointSpec"]["Ports"]
        assert ports == [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]


async def test_image_missing_locally_is_refused(make_swarm: Callable[..., ProviderFactory]) -> None:
    async with running(make_swarm()) as (provider, _registry):
        with pytest.raises(InvalidRequest, match="not on this Docker engine"):
            await provider.deploy(function_spec("sw-noimage", image="faasd/no-such-image:1"), 1)


async def test_unreachable_dockerd_is_degraded_not_fatal(swarm: SwarmHelper) -> None:
    """A provider pointed at a socket nobody serves starts, reports why, and refuses calls with 503."""
    registry = EndpointRegistry()
    provider = SwarmProvider(registry=registry, docker_host="unix:///nonexistent/docker.sock")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            await nursery.start(provider.run)
        healthy, reason = provider.health()
        assert not healthy and "nonexistent" in reason
        assert await provider.list() == []  # Never connected: nothing known yet, not an error.
        with pytest.raises(BackendUnavailable):
            await provider.deploy(function_spec("sw-down"), 1)
        nursery.cancel_scope.cancel()
    await provider.aclose()


async def test_no_thread_outlives_run(make_swarm: Callable[..., ProviderFactory], base_image: str) -> None:
    """The event stream's and a log follower's worker threads end with the provider."""
    before = {thread.ident for thread in threading.enumerate()}
    async with running(make_swarm()) as (provider, registry):
        await provider.deploy(function_spec("sw-threads", image=base_image), 1)
        await ready_endpoints(registry, "sw-threads", 1, TIMEOUT_S)
        from faasd.providers.types import LogRequest

        follower = provider.logs(LogRequest(name="sw-threads", follow=True))
        with trio.move_on_after(0.5):
            async for _message in follower:
                pass
        await follower.aclose()  # type: ignore[attr-defined]

    # trio keeps idle worker threads in a cache; a thread still *running* a blocking read would be a leak.
    def busy() -> list[threading.Thread]:
        return [
            thread
            for thread in threading.enumerate()
            if thread.ident not in before and "trio.to_thread" in thread.name and thread.is_alive() and _busy(thread)
        ]

    with trio.move_on_after(scaled(2)):  # A worker finishing its last read is given a moment, no more.
        while busy():
            await trio.sleep(0.01)
    assert not busy(), busy()


async def test_a_handler_archive_runs_reads_back_exactly_and_goes_with_its_function(
    make_swarm: Callable[..., ProviderFactory], swarm: SwarmHelper, base_image: str
) -> None:
    """A python-mode function from an archive (no image of its own): called, reported with exactly the
    archive it was given -- also by a provider that did not deploy it (read from the Docker config) --
    and its config removed with it, or with a deploy that failed."""
    archive = _tar_gz(
        {
            "handler.py": b"import helper\n\ndef handle(req):\n    return helper.PREFIX + req\n",
            "helper.py": b"PREFIX = 'arch:'\n",
        }
    )
    spec = FunctionSpec(name="sw-archive", env_vars={"mode": "python", "workers": "1"}, handler_archive=archive)
    async with running(make_swarm()) as (provider, registry):
        await provider.deploy(spec, 1)
        [endpoint] = await ready_endpoints(registry, "sw-archive", 1, TIMEOUT_S)
        assert await call(endpoint, b"x") == (200, b"arch:x")
        assert (await provider.status("sw-archive")).spec == spec
        async with running(make_swarm()) as (fresh, _):
            assert [s.spec for s in await fresh.list() if s.name == "sw-archive"] == [spec]
        await provider.remove("sw-archive")
        assert not swarm.api.configs(filters={"label": "faasd.handler=sw-archive"})

        # A deploy that fails after its config was made leaves no config behind (here: the name is a
        # service that is no function).
        swarm.api.create_service(
            docker.types.TaskTemplate(docker.types.ContainerSpec(base_image, ["cat"])),
            name="sw-clash",
            labels={"function": "false", **swarm.labels},
            mode=docker.types.ServiceMode("replicated", replicas=0),
        )
        with pytest.raises(Conflict, match="not a function"):
            await provider.deploy(FunctionSpec(name="sw-clash", handler_archive=archive), 1)
        assert not swarm.api.configs(filters={"label": "faasd.handler=sw-clash"})


def _tar_gz(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return raw.getvalue()


def _busy(thread: threading.Thread) -> bool:
    import sys

    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name in ("pump", "guarded"):
            return True
        frame = frame.f_back
    return False
