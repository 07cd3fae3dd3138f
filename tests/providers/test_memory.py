"""The in-memory backend: the provider conformance suite, plus what only it promises.

Its replicas are HTTP servers in this test's trio loop, on real 127.0.0.1 sockets; the suite calls them
over TCP like any other backend's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import pytest
import trio

from faasd.calltoken import CallToken
from faasd.errors import BackendUnavailable, InvalidRequest
from faasd.providers import Provider
from faasd.providers.memory import Answer, Call, MemoryProvider, Program
from faasd.providers.types import FunctionSpec
from faasd.registry import EndpointRegistry
from tests.providers.conformance import CHECKS, ProviderFactory, call, function_spec, ready_endpoints, running

SECRETS = {"api-key": b"s3cr3t"}


async def lookup_secret(name: str) -> bytes | None:
    return SECRETS.get(name)


def make_memory(
    *, call_token: CallToken | None = None, programs: Mapping[str, Program] | None = None
) -> ProviderFactory:
    async def factory(nursery: trio.Nursery) -> tuple[Provider, EndpointRegistry]:
        registry = EndpointRegistry()
        provider = MemoryProvider(registry=registry, secrets=lookup_secret, call_token=call_token, programs=programs)
        await nursery.start(provider.run)
        return provider, registry

    return factory


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_conformance(check: Callable[[ProviderFactory], Awaitable[None]]) -> None:
    await check(make_memory())


async def test_replicas_are_real_http_servers_with_the_call_token() -> None:
    """A call without the token is refused 403 (as by a watchdog); the health check needs none."""
    token = CallToken(b"a-call-token-for-tests-only")
    async with running(make_memory(call_token=token)) as (provider, registry):
        await provider.deploy(function_spec("guarded", "cat"), 1)
        (endpoint,) = await ready_endpoints(registry, "guarded", 1)
        status, body = await call(endpoint, b"no token")
        assert (status, body) == (403, b"Forbidden: this replica takes calls only from its faasd gateway\n")
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        async with stream:
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nX-Faasd-Call-Token: a-call-token-for-tests-only\r\n"
                b"Content-Length: 2\r\nConnection: close\r\n\r\nok"
            )
            answer = b""
            while chunk := await stream.receive_some(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok"), answer


async def test_programs_given_to_the_provider_run_per_call_with_the_fork_mode_environment() -> None:
    seen: list[Call] = []

    async def record(call: Call) -> Answer:
        seen.append(call)
        return Answer(201, call.secrets["api-key"] + b" " + call.body, "application/x-test")

    async with running(make_memory(programs={"record": record})) as (provider, registry):
        spec = FunctionSpec(name="rec", env_process="record --flag", env_vars={"K": "v"}, secrets=("api-key",))
        await provider.deploy(spec, 1)
        (endpoint,) = await ready_endpoints(registry, "rec", 1)
        assert await call(endpoint, b"body") == (201, b"s3cr3t body")
    (only,) = seen
    assert only.argv == ("record", "--flag")
    assert only.env["K"] == "v" and only.env["fprocess"] == "record --flag"
    assert only.env["Http_Method"] == "POST" and only.env["Http_Content_Length"] == "4"
    assert "x-faasd-call-token" not in dict(only.headers)


async def test_unknown_programs_and_a_stopped_provider_are_refused() -> None:
    async with running(make_memory()) as (provider, registry):
        with pytest.raises(InvalidRequest, match="runs only its programs: cat, echo, env, false, sleep"):
            await provider.deploy(function_spec("py", "python3 handler.py"), 1)
        with pytest.raises(InvalidRequest, match="envProcess"):
            await provider.deploy(FunctionSpec(name="nothing"), 1)
        assert registry.get("py") == ()
    provider = MemoryProvider(registry=EndpointRegistry())
    with pytest.raises(BackendUnavailable):
        await provider.deploy(function_spec("early"), 1)


async def test_a_stopping_replica_finishes_its_call_and_closes_its_port() -> None:
    """Scale to zero while a call runs: the call is answered, then nothing listens on the port."""
    async with running(make_memory()) as (provider, registry):
        await provider.deploy(function_spec("slow", "sleep 0.3"), 1)
        (endpoint,) = await ready_endpoints(registry, "slow", 1)
        answers: list[tuple[int, bytes]] = []
        async with trio.open_nursery() as nursery:

            async def slow_call() -> None:
                answers.append(await call(endpoint))

            nursery.start_soon(slow_call)
            await trio.sleep(0.1)
            await provider.scale("slow", 0)
            await ready_endpoints(registry, "slow", 0)
        assert answers == [(200, b"")]
        with trio.fail_after(5):
            while True:
                try:
                    stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
                except OSError:
                    break  # Refused: the replica is gone.
                await stream.aclose()
                await trio.sleep(0.02)
