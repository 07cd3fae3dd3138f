"""The management API and FunctionService in process: deploy, update, remove, scale, list, logs, errors.

Over the in-memory backend (tests/gateway/conftest.py): the very wiring ``faasd up`` uses, driven
through its ASGI app, with replicas answering real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from tests.gateway.conftest import Gateway

MakeGateway = Callable[..., Awaitable[Gateway]]


async def test_deploy_call_update_scale_remove(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    client, admin = gateway.client, gateway.admin

    created = await gateway.deploy("echo", "cat", labels={"team": "a"})
    assert created.status_code == 202, created.text
    await gateway.wait_available("echo", 1)
    answer = await client.post("/function/echo", content=b"hello in process")
    assert (answer.status_code, answer.content) == (200, b"hello in process")
    assert answer.headers["x-call-id"] and float(answer.headers["x-duration-seconds"]) >= 0

    document = await gateway.function("echo")
    assert document["replicas"] == 1 and document["availableReplicas"] == 1
    assert document["envProcess"] == "cat" and document["labels"] == {"team": "a"}
    assert document["invocationCount"] == 1

    # Update: a new spec rolls; the replica count is kept; calls keep being answered throughout.
    scaled = await client.post(
        "/system/scale-function/echo", json={"serviceName": "echo", "replicas": 2}, headers=admin
    )
    assert scaled.status_code == 202, scaled.text
    await gateway.wait_available("echo", 2)
    updated = await client.put(
        "/system/functions", json={"service": "echo", "envProcess": "env", "envVars": {"MARKER": "two"}}, headers=admin
    )
    assert updated.status_code == 202, updated.text
    failures = []
    with trio.fail_after(10):
        while True:
            answer = await client.post("/function/echo", content=b"x")
            if answer.status_code != 200:
                failures.append(answer.status_code)
            if b"MARKER=two" in answer.content and len(gateway.registry.get("echo")) == 2:
                replicas = {e.replica for e in gateway.registry.get("echo")}
                bodies = [(await client.post("/function/echo")).content for _ in range(4)]
                if all(b"MARKER=two" in body for body in bodies) and len(replicas) == 2:
                    break
    assert failures == []
    document = await gateway.function("echo")
    assert document["replicas"] == 2 and document["envProcess"] == "env" and document["envVars"] == {"MARKER": "two"}

    listed = await client.get("/system/functions", headers=admin)
    assert [f["name"] for f in listed.json()] == ["echo"]

    removed = await client.request("DELETE", "/system/functions", json={"functionName": "echo"}, headers=admin)
    assert removed.status_code == 202, removed.text
    assert gateway.registry.get("echo") == ()
    assert (await client.get("/system/function/echo", headers=admin)).status_code == 404
    gone = await client.post("/function/echo", content=b"x")
    assert (gone.status_code, gone.text) == (404, "Function not found: echo\n")
    assert await gateway.parts.service.store.load_functions() == ([], [])


async def test_sub_paths_queries_and_headers_reach_the_function(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    await gateway.deploy("env", "env")
    await gateway.wait_available("env", 1)
    text = (await gateway.client.get("/function/env/some/path?a=1&b=2", headers={"X-Custom": "yes"})).text
    assert "Http_Path=/some/path" in text and "Http_Query=a=1&b=2" in text, text
    assert "Http_X_Custom=yes" in text and "Http_X_Call_Id=" in text and "Http_Method=GET" in text, text
    assert "X_Faasd_Call_Token" not in text  # The gateway's token reaches the replica, never the function.


async def test_secrets_reach_the_function_and_a_missing_one_is_refused(make_gateway: MakeGateway) -> None:
    from faasd.providers.memory import Answer, Call

    async def reveal(call: Call) -> Answer:
        return Answer(200, call.secrets["db-password"])

    gateway = await make_gateway(programs={"reveal": reveal})
    client, admin = gateway.client, gateway.admin
    refused = await gateway.deploy("needs", "reveal", secrets=["db-password"])
    assert refused.status_code == 400 and "db-password" in refused.text, refused.text
    assert (await client.get("/system/function/needs", headers=admin)).status_code == 404  # Nothing stored.

    made = await client.post("/system/secrets", json={"name": "db-password", "value": "hunter2"}, headers=admin)
    assert made.status_code == 201, made.text
    assert (await gateway.deploy("needs", "reveal", secrets=["db-password"])).status_code == 202
    await gateway.wait_available("needs", 1)
    assert (await client.post("/function/needs")).content == b"hunter2"
    in_use = await client.request("DELETE", "/system/secrets", json={"name": "db-password"}, headers=admin)
    assert in_use.status_code == 409 and "needs" in in_use.text


async def test_a_deploy_the_backend_refuses_leaves_the_store_as_it_was(make_gateway: MakeGateway) -> None:
    """A deploy is committed while the backend checks it (``FunctionService._deploy_and_store``): a refusal
    puts the record back -- none for a new function, the previous spec and replicas for a redeploy."""
    gateway = await make_gateway()
    store = gateway.parts.service.store
    refused = await gateway.deploy("needs", "cat", secrets=["no-such-secret"])
    assert refused.status_code == 400 and "no-such-secret" in refused.text, refused.text
    assert await store.get_function("needs") is None
    assert (await gateway.deploy("echo", "cat", envVars={"MARKER": "one"})).status_code == 202
    scaled = await gateway.client.post("/system/scale-function/echo", json={"replicas": 2}, headers=gateway.admin)
    assert scaled.status_code == 202, scaled.text
    again = await gateway.deploy("echo", "cat", envVars={"MARKER": "two"}, secrets=["no-such-secret"])
    assert again.status_code == 400, again.text
    stored = await store.get_function("echo")
    assert stored is not None and stored.spec.env_vars == {"MARKER": "one"} and stored.replicas == 2, stored
    document = await gateway.function("echo")
    assert document["envVars"] == {"MARKER": "one"} and document["replicas"] == 2, document


async def test_validation_errors_change_nothing(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    client, admin = gateway.client, gateway.admin
    cases: list[tuple[dict[str, Any], str]] = [
        ({"envProcess": "cat"}, "service"),
        ({"service": "a/b", "envProcess": "cat"}, "service"),
        ({"service": "bad-program", "envProcess": "python3 handler.py"}, "runs only its programs"),
        ({"service": "bad-scale", "envProcess": "cat", "labels": {"com.openfaas.scale.min": "-1"}}, "scale.min"),
        ({"service": "bad-timeout", "envProcess": "cat", "envVars": {"exec_timeout": "2h"}}, "exec_timeout"),
    ]
    for body, mention in cases:
        answer = await client.post("/system/functions", json=body, headers=admin)
        assert answer.status_code == 400 and mention in answer.text, (body, answer.text)
    not_json = await client.post(
        "/system/functions", content=b"{not json", headers={**admin, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.text
    assert (await client.get("/system/functions", headers=admin)).json() == []

    ghost = await client.put("/system/functions", json={"service": "ghost", "envProcess": "cat"}, headers=admin)
    assert ghost.status_code == 404
    gone = await client.request("DELETE", "/system/functions", json={"functionName": "ghost"}, headers=admin)
    assert (gone.status_code, gone.text) == (404, "No such service found: ghost.\n")
    assert (await client.post("/system/scale-function/ghost", json={"replicas": 1}, headers=admin)).status_code == 404
    await gateway.deploy("echo")
    for replicas in ("two", 1000, -1):
        answer = await client.post("/system/scale-function/echo", json={"replicas": replicas}, headers=admin)
        assert answer.status_code == 400, (replicas, answer.text)
    assert (await client.get("/system/functions")).status_code == 401  # No credentials.


async def test_logs_kept_and_followed(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    client, admin = gateway.client, gateway.admin
    await gateway.deploy("chatty", "cat", envVars={"write_debug": "true"})
    await gateway.wait_available("chatty", 1)
    assert (await client.post("/function/chatty", content=b"line-one")).status_code == 200
    answer = await client.get("/system/logs", params={"name": "chatty"}, headers=admin)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in answer.text.splitlines()]
    assert [r["text"] for r in records][-1] == "line-one", records
    assert all(r["name"] == "chatty" and r["instance"] and r["timestamp"] for r in records)
    tail = await client.get("/system/logs", params={"name": "chatty", "tail": "1"}, headers=admin)
    assert [json.loads(line)["text"] for line in tail.text.splitlines()] == ["line-one"]
    assert (await client.get("/system/logs", params={"name": "ghost"}, headers=admin)).status_code == 404


async def test_scaling_explains_itself(make_gateway: MakeGateway) -> None:
    """GET /system/scaling/NAME is the autoscaler's explain(): before and after its first decision."""
    gateway = await make_gateway()
    client, admin = gateway.client, gateway.admin
    await gateway.deploy("steady", labels={"com.openfaas.scale.max": "4"})
    before = (await client.get("/system/scaling/steady", headers=admin)).json()
    assert before["desiredReplicas"] == 1 and before["reason"].startswith("no decision yet"), before
    assert before["settings"]["max"] == 4 and before["load"]["type"] == "capacity"
    await gateway.parts.autoscaler.tick()
    after = (await client.get("/system/scaling/steady", headers=admin)).json()
    assert after["desiredReplicas"] == 1 and not after["reason"].startswith("no decision yet"), after
    metrics = (await client.get("/metrics")).text
    assert 'faasd_autoscaler_desired_replicas{function_name="steady"} 1.0' in metrics
