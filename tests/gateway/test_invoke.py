"""The invoke path in process: routes, cold starts from zero, and every error a caller can get.

Over the in-memory backend (tests/gateway/conftest.py): the gateway proxies each call over a real
socket to a replica in this trio loop, with the call token the replica requires.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx
import trio

from faasd.providers.memory import Answer, Call
from tests.gateway.conftest import Gateway
from tests.helpers import scaled

MakeGateway = Callable[..., Awaitable[Gateway]]


async def test_routes_to_a_function(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    client = gateway.client
    await gateway.deploy("catservice", "cat")
    await gateway.deploy("HostnameIntent", "echo intent-answer")
    await gateway.wait_available("catservice", 1)
    await gateway.wait_available("HostnameIntent", 1)
    assert (await client.post("/function/catservice", content=b"by path")).content == b"by path"
    assert (await client.post("/function/catservice.openfaas-fn", content=b"namespaced")).content == b"namespaced"
    assert (await client.post("/", headers={"X-Function": "catservice"}, content=b"by header")).content == b"by header"
    alexa = {
        "session": {"sessionId": "s-1", "application": {"applicationId": "app-1"}},
        "request": {"type": "IntentRequest", "intent": {"name": "HostnameIntent"}},
    }
    assert (await client.post("/", json=alexa)).text == "intent-answer\n"
    no_route = await client.post("/", content=b"just a body")
    assert (no_route.status_code, no_route.text) == (
        400,
        "Provide an x-function header or a valid Alexa SDK request.\n",
    )


async def test_caller_errors(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(max_body_bytes=64 * 1024)
    client = gateway.client
    await gateway.deploy("echo", "cat")
    await gateway.wait_available("echo", 1)
    unknown = await client.post("/function/nope", content=b"x")
    assert (unknown.status_code, unknown.text) == (404, "Function not found: nope\n")
    assert (await client.post("/function/bad%20name", content=b"x")).status_code == 400
    assert (await client.post("/function/echo.other-namespace", content=b"x")).status_code in (400, 404)
    assert (await client.post("/function/echo", content=b"x" * 70_000)).status_code == 413
    assert (await client.post("/", headers={"X-Function": "nope"}, content=b"x")).status_code == 404


async def test_function_errors_and_timeouts(make_gateway: MakeGateway) -> None:
    async def explode(call: Call) -> Answer:
        raise RuntimeError("the handler broke")

    gateway = await make_gateway(programs={"explode": explode}, upstream_timeout_s=0.5)
    client = gateway.client
    for name, fprocess in (("failing", "false"), ("exploding", "explode"), ("slow", "sleep 3")):
        await gateway.deploy(name, fprocess)
        await gateway.wait_available(name, 1)
    failing = await client.post("/function/failing", content=b"x")
    assert (failing.status_code, failing.content) == (500, b"exit status 1\n")  # The function's answer, passed on.
    exploding = await client.post("/function/exploding")
    assert exploding.status_code == 500 and exploding.text == "RuntimeError: the handler broke\n"
    started = time.monotonic()
    slow = await client.post("/function/slow", content=b"x")
    assert slow.status_code == 502 and "did not answer within 0.5s" in slow.text, slow.text
    assert slow.text.count("\n") == 1
    assert 0.45 <= time.monotonic() - started < scaled(2.5)
    metrics = (await client.get("/metrics")).text
    assert 'gateway_function_invocation_total{code="500",function_name="failing"} 1.0' in metrics, metrics


async def test_a_call_at_zero_wakes_the_function_once(make_gateway: MakeGateway) -> None:
    """Concurrent calls to a function at zero are held, one scale brings it up, all are answered."""
    gateway = await make_gateway(start_delay_s=0.2)
    client, admin = gateway.client, gateway.admin
    await gateway.deploy("sleepy", "cat")
    await gateway.wait_available("sleepy", 1)
    assert (await client.post("/system/scale-function/sleepy", json={"replicas": 0}, headers=admin)).status_code == 202
    await gateway.wait_available("sleepy", 0)
    events = gateway.parts.autoscaler.scale_events
    answers: list[httpx.Response] = []

    async def call(body: bytes) -> None:
        answers.append(await client.post("/function/sleepy", content=body))

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for index in range(5):
            nursery.start_soon(call, b"call %d" % index)
    assert sorted(answer.content for answer in answers) == [b"call %d" % index for index in range(5)]
    assert time.monotonic() - started >= 0.2  # Held until the woken replica answered its health check.
    assert gateway.parts.autoscaler.scale_events == events + 1
    assert (await gateway.status("sleepy")).replicas == 1


async def test_no_ready_replica_in_time_is_503(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(start_delay_s=30.0, ready_timeout_s=0.5)
    await gateway.deploy("never", "cat")
    started = time.monotonic()
    answer = await gateway.client.post("/function/never", content=b"x")
    assert answer.status_code == 503 and "No ready replica" in answer.text, answer.text
    assert 0.45 <= time.monotonic() - started < scaled(3)
    assert (await gateway.status("never")).available_replicas == 0
