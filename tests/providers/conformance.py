"""Provider conformance suite: what every backend (local, Swarm, Marathon) must do, checked end to end.

In the manner of trio's ``testing/_check_streams.py``: each ``check_*`` is an async function taking a
:data:`ProviderFactory` -- ``await make_provider(nursery)`` builds a provider, starts its ``run`` in that
nursery and returns ``(provider, registry)`` -- and raises ``AssertionError`` when the backend breaks
the contract. Every check opens its own nursery and cancels it at the end, which must stop every
replica it started. Real replicas, real HTTP calls to the endpoints the provider publishes.

The functions deployed are the watchdog running ``cat`` (echoes the body) and ``env`` (prints its
environment): a backend passes ``image=`` when it needs one (the local backend ignores it) and a
``timeout_s`` suited to its speed. Run them all with :func:`check_provider`, or one test per check by
parametrizing over :data:`CHECKS`::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    async def test_conformance(check, make_provider):
        await check(make_provider)
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import trio

from faasd.errors import FunctionNotFound, InvalidRequest
from faasd.providers import Provider
from faasd.providers.types import Endpoint, FunctionSpec, LogRequest
from faasd.registry import EndpointRegistry
from tests.helpers import scaled

__all__ = [
    "CHECKS",
    "Load",
    "ProviderFactory",
    "available",
    "call",
    "check_deploy_replaces",
    "check_deploy_status_call",
    "check_invalid_spec",
    "check_logs",
    "check_provider",
    "check_remove",
    "check_rolling_update",
    "check_scale",
    "check_unknown_names",
    "closing",
    "function_spec",
    "ready_endpoints",
    "running",
    "wait_until",
]

ProviderFactory = Callable[[trio.Nursery], Awaitable[tuple[Provider, EndpointRegistry]]]
"""Builds a provider, starts ``provider.run`` in the given nursery, returns it and its registry."""

DEFAULT_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 10.0
UNKNOWN = "no-such-function"


# -- helpers (also used by backend-specific tests) ----------------------------------------------------


def function_spec(name: str, fprocess: str = "cat", *, image: str = "", **env_vars: str) -> FunctionSpec:
    """A spec running ``fprocess`` in the watchdog, with ``env_vars``."""
    return FunctionSpec(name=name, image=image, env_process=fprocess, env_vars=dict(env_vars))


async def call(endpoint: Endpoint, body: bytes = b"", *, timeout_s: float = CALL_TIMEOUT_S) -> tuple[int, bytes]:
    """POST ``body`` to ``endpoint`` on a fresh connection; (status, response body).

    Raises:
        OSError: connection refused or reset (counted as a failed call by the checks).
        trio.TooSlowError: no full answer within ``timeout_s``.
    """
    request = (
        b"POST / HTTP/1.1\r\nHost: %b\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b"
        % (endpoint.authority.encode(), len(body), body)
    )
    with trio.fail_after(scaled(timeout_s)):
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        async with stream:
            await stream.send_all(request)
            data = bytearray()
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, separator, rest = bytes(data).partition(b"\r\n\r\n")
    if not separator or not head.startswith(b"HTTP/1."):
        raise OSError(f"malformed response from {endpoint.authority}: {bytes(data[:80])!r}")
    status = int(head.split(b" ", 2)[1])
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    return status, rest if length is None else rest[:length]


async def wait_until(
    predicate: Callable[[], Awaitable[object]] | Callable[[], object],
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = 0.01,
) -> object:
    """Poll ``predicate`` (sync or async) until it returns something truthy (returned); the bound is
    ``timeout_s`` times FAASD_TEST_TIME_FACTOR."""
    timeout_s = scaled(timeout_s)
    deadline = trio.current_time() + timeout_s
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if trio.current_time() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await trio.sleep(interval_s)


async def ready_endpoints(
    registry: EndpointRegistry, name: str, count: int, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[Endpoint, ...]:
    """Wait until ``name`` has exactly ``count`` published endpoints, with distinct replicas and ports."""

    def settled() -> tuple[Endpoint, ...] | None:
        endpoints = registry.get(name)
        if len(endpoints) != count:
            return None
        assert len({endpoint.replica for endpoint in endpoints}) == count, endpoints
        assert len({endpoint.authority for endpoint in endpoints}) == count, endpoints
        return endpoints or ()

    if count == 0:
        await wait_until(lambda: not registry.get(name), f"{name} to have no endpoints", timeout_s)
        return ()
    result = await wait_until(settled, f"{name} to have {count} ready endpoints", timeout_s)
    assert isinstance(result, tuple)
    return result


async def available(provider: Provider, name: str, count: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Wait until ``status(name).available_replicas == count``."""

    async def reached() -> bool:
        return (await provider.status(name)).available_replicas == count

    await wait_until(reached, f"{name} to report {count} available replicas", timeout_s)


@contextlib.asynccontextmanager
async def running(make_provider: ProviderFactory) -> AsyncIterator[tuple[Provider, EndpointRegistry]]:
    """A started provider for the duration of the block; cancelled (replicas stopped) after it."""
    async with trio.open_nursery() as nursery:
        provider, registry = await make_provider(nursery)
        try:
            yield provider, registry
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class Load:
    """Light background traffic over a function's published endpoints, round robin, one call at a time."""

    registry: EndpointRegistry
    name: str
    body: bytes = b"load"
    interval_s: float = 0.01
    answers: list[tuple[str, int, bytes]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        for turn in itertools.count():
            endpoints = self.registry.get(self.name)
            if not endpoints:
                self.failures.append("no endpoint published")
            else:
                endpoint = endpoints[turn % len(endpoints)]
                try:
                    status, body = await call(endpoint, self.body)
                except (OSError, trio.TooSlowError) as exc:
                    self.failures.append(f"{endpoint.replica}: {exc!r}")
                else:
                    self.answers.append((endpoint.replica, status, body))
                    if status != 200:
                        self.failures.append(f"{endpoint.replica}: status {status}: {body[:200]!r}")
            await trio.sleep(self.interval_s)


# -- checks -----------------------------------------------------------------------------------------


async def check_deploy_status_call(
    make_provider: ProviderFactory, *, image: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """deploy -> status reports replicas/available -> the published endpoint answers a real call."""
    async with running(make_provider) as (provider, registry):
        name = "conf-echo"
        before = time.time()
        await provider.deploy(function_spec(name, "cat", image=image), 1)
        status = await provider.status(name)
        assert status.name == name
        assert status.replicas == 1
        assert status.spec.env_process == "cat"
        assert status.created_at is not None
        assert status.created_at.timestamp() >= math.floor(before) - 1
        (endpoint,) = await ready_endpoints(registry, name, 1, timeout_s)
        await available(provider, name, 1, timeout_s)
        assert [s.name for s in await provider.list() if s.name == name] == [name]
        assert await call(endpoint, b"hello conformance") == (200, b"hello conformance")
        healthy, reason = provider.health()
        assert healthy is True and reason


async def check_scale(make_provider: ProviderFactory, *, image: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """1 -> 3 (three distinct ready endpoints, all answering) -> 1 -> 0 (no endpoints) -> 1."""
    async with running(make_provider) as (provider, registry):
        name = "conf-scale"
        await provider.deploy(function_spec(name, "cat", image=image), 1)
        await ready_endpoints(registry, name, 1, timeout_s)

        await provider.scale(name, 3)
        assert (await provider.status(name)).replicas == 3
        endpoints = await ready_endpoints(registry, name, 3, timeout_s)
        for endpoint in endpoints:
            assert await call(endpoint, endpoint.replica.encode()) == (200, endpoint.replica.encode())
        await available(provider, name, 3, timeout_s)

        await provider.scale(name, 1)
        assert (await provider.status(name)).replicas == 1
        (survivor,) = await ready_endpoints(registry, name, 1, timeout_s)
        assert survivor in endpoints
        assert (await call(survivor, b"x"))[0] == 200
        await available(provider, name, 1, timeout_s)

        await provider.scale(name, 0)
        await ready_endpoints(registry, name, 0, timeout_s)
        status = await provider.status(name)
        assert status.replicas == 0
        await available(provider, name, 0, timeout_s)

        await provider.scale(name, 1)
        (endpoint,) = await ready_endpoints(registry, name, 1, timeout_s)
        assert await call(endpoint, b"back") == (200, b"back")


async def check_rolling_update(
    make_provider: ProviderFactory, *, image: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """update env: new replicas see it, the replica count is kept, and calls made throughout (light
    load, one at a time, fresh connections) all succeed."""
    async with running(make_provider) as (provider, registry):
        name = "conf-update"
        await provider.deploy(function_spec(name, "env", image=image, MARKER="one"), 2)
        for endpoint in await ready_endpoints(registry, name, 2, timeout_s):
            code, body = await call(endpoint)
            assert code == 200 and b"MARKER=one" in body, body

        load = Load(registry, name)
        async with trio.open_nursery() as nursery:
            await nursery.start(load.run)
            await wait_until(lambda: len(load.answers) >= 5, "calls before the update", timeout_s)
            await provider.update(function_spec(name, "env", image=image, MARKER="two"))
            status = await provider.status(name)
            assert status.replicas == 2
            assert status.spec.env_vars["MARKER"] == "two"

            async def rolled() -> bool:
                endpoints = registry.get(name)
                if len(endpoints) != 2:
                    return False
                bodies = [(await call(endpoint))[1] for endpoint in endpoints]
                return all(b"MARKER=two" in body for body in bodies)

            await wait_until(rolled, "both replicas to run the new spec", timeout_s, interval_s=0.05)
            await available(provider, name, 2, timeout_s)
            seen = len(load.answers)
            await wait_until(lambda: len(load.answers) >= seen + 5, "calls after the update", timeout_s)
            nursery.cancel_scope.cancel()
        assert not load.failures, f"{len(load.failures)} failed calls during the update: {load.failures[:5]}"
        bodies = [body for _, _, body in load.answers]
        assert any(b"MARKER=one" in body for body in bodies)
        assert any(b"MARKER=two" in body for body in bodies)


async def check_deploy_replaces(
    make_provider: ProviderFactory, *, image: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """deploy of an existing name replaces its spec and sets its replica count."""
    async with running(make_provider) as (provider, registry):
        name = "conf-replace"
        await provider.deploy(function_spec(name, "env", image=image, MARKER="first"), 1)
        await ready_endpoints(registry, name, 1, timeout_s)
        await provider.deploy(function_spec(name, "env", image=image, MARKER="second"), 2)
        assert (await provider.status(name)).replicas == 2

        async def replaced() -> bool:
            endpoints = registry.get(name)
            return len(endpoints) == 2 and all([b"MARKER=second" in (await call(e))[1] for e in endpoints])

        await wait_until(replaced, "two replicas of the new spec", timeout_s, interval_s=0.05)
        assert [s.name for s in await provider.list()].count(name) == 1


async def check_logs(make_provider: ProviderFactory, *, image: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Replicas' lines are kept (tail, instance filters); follow yields a line produced after subscribing."""
    async with running(make_provider) as (provider, registry):
        name = "conf-logs"
        await provider.deploy(function_spec(name, "cat", image=image, write_debug="true"), 1)
        (endpoint,) = await ready_endpoints(registry, name, 1, timeout_s)
        assert (await call(endpoint, b"token-before-follow"))[0] == 200

        async def kept_lines() -> list[str]:
            return [message.text async for message in provider.logs(LogRequest(name=name))]

        await wait_until(
            lambda: _any_contains(kept_lines(), "token-before-follow"), "the call's log line", timeout_s, 0.05
        )
        messages = [message async for message in provider.logs(LogRequest(name=name))]
        assert all(message.name == name for message in messages)
        assert endpoint.replica in {message.instance for message in messages}
        assert [m.timestamp for m in messages] == sorted(m.timestamp for m in messages)
        last = [message async for message in provider.logs(LogRequest(name=name, tail=1))]
        assert last == messages[-1:]
        only = [message async for message in provider.logs(LogRequest(name=name, instance=endpoint.replica))]
        assert only and all(message.instance == endpoint.replica for message in only)
        assert [message async for message in provider.logs(LogRequest(name=name, instance="nobody"))] == []
        since = messages[-1].timestamp
        recent = [message async for message in provider.logs(LogRequest(name=name, since=since))]
        assert recent and all(message.timestamp >= since for message in recent)

        found = trio.Event()
        subscribed = trio.Event()
        follow = provider.logs(LogRequest(name=name, follow=True, tail=1))

        async def consume() -> None:
            async with closing(follow):
                async for message in follow:
                    subscribed.set()
                    if "token-after-follow" in message.text:
                        found.set()
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            with trio.fail_after(scaled(timeout_s)):
                await subscribed.wait()
                while not found.is_set():
                    assert (await call(endpoint, b"token-after-follow"))[0] == 200
                    with trio.move_on_after(1.0):
                        await found.wait()


async def _any_contains(lines: Awaitable[list[str]], needle: str) -> bool:
    return any(needle in line for line in await lines)


async def check_remove(
    make_provider: ProviderFactory, *, image: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """remove: endpoints gone, status/logs raise FunctionNotFound, not listed; the name can be reused."""
    async with running(make_provider) as (provider, registry):
        name = "conf-remove"
        await provider.deploy(function_spec(name, "cat", image=image), 2)
        await ready_endpoints(registry, name, 2, timeout_s)
        await provider.remove(name)
        await ready_endpoints(registry, name, 0, timeout_s)
        await _expect_not_found(provider.status(name))
        await _expect_not_found(_first(provider.logs(LogRequest(name=name))))
        assert name not in [status.name for status in await provider.list()]

        await provider.deploy(function_spec(name, "cat", image=image), 1)
        (endpoint,) = await ready_endpoints(registry, name, 1, timeout_s)
        assert await call(endpoint, b"again") == (200, b"again")


async def check_unknown_names(
    make_provider: ProviderFactory, *, image: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """remove/scale/status/update/logs of a name never deployed raise FunctionNotFound."""
    async with running(make_provider) as (provider, registry):
        await _expect_not_found(provider.remove(UNKNOWN))
        await _expect_not_found(provider.scale(UNKNOWN, 1))
        await _expect_not_found(provider.status(UNKNOWN))
        await _expect_not_found(provider.update(function_spec(UNKNOWN, "cat", image=image)))
        await _expect_not_found(_first(provider.logs(LogRequest(name=UNKNOWN))))
        assert UNKNOWN not in [status.name for status in await provider.list()]
        assert registry.get(UNKNOWN) == ()


async def check_invalid_spec(
    make_provider: ProviderFactory, *, image: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """A spec the backend cannot run (a secret that does not exist, negative replicas) raises
    InvalidRequest, and leaves nothing deployed."""
    async with running(make_provider) as (provider, registry):
        name = "conf-invalid"
        spec = FunctionSpec(name=name, image=image, env_process="cat", secrets=("conformance-no-such-secret",))
        await _expect(InvalidRequest, provider.deploy(spec, 1), "conformance-no-such-secret")
        await _expect(InvalidRequest, provider.deploy(function_spec(name, "cat", image=image), -1))
        await _expect_not_found(provider.status(name))
        assert registry.get(name) == ()


CHECKS: tuple[Callable[..., Awaitable[None]], ...] = (
    check_deploy_status_call,
    check_scale,
    check_rolling_update,
    check_deploy_replaces,
    check_logs,
    check_remove,
    check_unknown_names,
    check_invalid_spec,
)
"""Every check, in a sensible order (the cheap contract first)."""


async def check_provider(make_provider: ProviderFactory, **options: object) -> None:
    """Run every check in :data:`CHECKS` (``options``: ``image``, ``timeout_s``)."""
    for check in CHECKS:
        await check(make_provider, **options)


# -- internals --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[object]) -> AsyncIterator[None]:
    """Close an async iterator (an async generator's ``aclose``) when the block ends, however it ends."""
    try:
        yield
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def _first(messages: AsyncIterator[object]) -> object:
    async with closing(messages):
        async for message in messages:
            return message
    return None


async def _expect_not_found(awaitable: Awaitable[object]) -> None:
    await _expect(FunctionNotFound, awaitable)


async def _expect(kind: type[Exception], awaitable: Awaitable[object], mention: str = "") -> None:
    try:
        await awaitable
    except kind as exc:
        assert mention in str(exc), f"{kind.__name__} should mention {mention!r}: {exc}"
        return
    raise AssertionError(f"expected {kind.__name__}")
