"""The event stream ``GET /v2/events`` (https://mesosphere.github.io/marathon/docs/event-bus.html): SSE
frames, the first ``event_stream_attached``, ``event_type`` filters, and the events of an app's life in
the order they happen here (Marathon itself promises no order: clients treat events as hints).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.helpers import scaled
from tests.marathon_emulator.fixture import MarathonEmulator, StartEmulator

SERVER_CMD = f"python3 {Path(__file__).with_name('task_server.py')}"
SSE = {"Accept": "text/event-stream"}


class Events:
    """Parsed SSE frames of one stream, read by a background task into ``seen``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.changed = trio.Event()

    async def read(self, response: httpx.Response) -> None:
        event_type = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event_type = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert data["eventType"] == event_type and data["timestamp"].endswith("Z")
                self.seen.append((event_type, data))
                self.changed.set()
                self.changed = trio.Event()

    def types(self) -> list[str]:
        return [event_type for event_type, _ in self.seen]

    async def wait(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        """The first event (type, data) matching ``predicate``, waiting up to ``timeout`` (scaled)."""
        with trio.fail_after(scaled(timeout)):
            while True:
                for event_type, data in self.seen:
                    if predicate(event_type, data):
                        return data
                await self.changed.wait()


@asynccontextmanager
async def stream(emulator: MarathonEmulator, **params: Any) -> AsyncIterator[Events]:
    events = Events()
    async with (
        httpx.AsyncClient(base_url=emulator.url, timeout=None, **emulator.auth()) as client,
        client.stream("GET", "/v2/events", params=params, headers=SSE) as response,
    ):
        assert response.status_code == 200  # subscribed: no later event is missed
        assert response.headers["content-type"] == "text/event-stream"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.read, response)
            yield events
            nursery.cancel_scope.cancel()


async def test_an_apps_life_on_the_event_stream(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    async with stream(emulator) as events:
        await events.wait(lambda t, _d: t == "event_stream_attached")
        assert events.types()[0] == "event_stream_attached"
        definition = {"id": "/evented", "cmd": SERVER_CMD, "cpus": 0.1, "mem": 32, "backoffSeconds": 0}
        definition["healthChecks"] = [{"protocol": "MESOS_HTTP", "path": "/health", "delaySeconds": 0}]
        definition["healthChecks"][0]["intervalSeconds"] = 1
        created = await trio.to_thread.run_sync(lambda: client.post("/v2/apps", json=definition))
        deployment = created.headers["Marathon-Deployment-Id"]
        success = await events.wait(lambda t, d: t == "deployment_success" and d["id"] == deployment)
        assert success["plan"]["id"] == deployment
        assert success["plan"]["steps"][0]["actions"] == [{"action": "StartApplication", "app": "/evented"}]
        order = [t for t in events.types() if t != "instance_changed_event"]
        expected = [
            "event_stream_attached",
            "api_post_event",
            "group_change_success",
            "deployment_info",
            "status_update_event",  # TASK_STAGING
            "status_update_event",  # TASK_RUNNING
            "health_status_changed_event",
            "instance_health_changed_event",
            "deployment_success",
        ]
        healthy_at = order.index("health_status_changed_event")
        assert [t for t in order[:healthy_at] if t != "failed_health_check_event"] == expected[:6]
        assert order[healthy_at:] == expected[6:]
        statuses = [d for t, d in events.seen if t == "status_update_event"]
        assert [d["taskStatus"] for d in statuses] == ["TASK_STAGING", "TASK_RUNNING"]
        running = statuses[1]
        assert running["appId"] == "/evented" and running["host"] == "127.0.0.1" and len(running["ports"]) == 1
        info = next(d for t, d in events.seen if t == "deployment_info")
        assert info["plan"]["id"] == deployment
        assert info["currentStep"] == {"actions": [{"action": "ScaleApplication", "app": "/evented"}]}
        posted = next(d for t, d in events.seen if t == "api_post_event")
        assert posted["uri"] == "/v2/apps" and posted["appDefinition"]["id"] == "/evented"
        health = next(d for t, d in events.seen if t == "health_status_changed_event")
        assert health["alive"] is True and health["appId"] == "/evented"
        assert health["instanceId"] == running["taskId"].removesuffix("._app.1")

        deleted = await trio.to_thread.run_sync(lambda: client.delete("/v2/apps/evented"))
        stop = deleted.headers["Marathon-Deployment-Id"]
        await events.wait(lambda t, d: t == "deployment_success" and d["id"] == stop)
        tail = [t for t in events.types()[events.types().index("deployment_success") + 1 :]]
        tail = [t for t in tail if t not in ("instance_changed_event", "failed_health_check_event")]
        assert tail[:3] == ["api_post_event", "group_change_success", "deployment_info"]
        killing = [d["taskStatus"] for t, d in events.seen if t == "status_update_event"][2:]
        assert killing == ["TASK_KILLING", "TASK_KILLED"]
        assert tail[-2:] == ["app_terminated_event", "deployment_success"]


async def test_filters_forced_deployments_and_the_accept_header(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator(launch_delay=1.0)
    client = emulator.client()
    refused = await trio.to_thread.run_sync(lambda: client.get("/v2/events"))
    assert refused.status_code == 405  # documented: text/event-stream must be accepted
    wanted = [("event_type", "deployment_failed"), ("event_type", "deployment_success")]
    async with stream(emulator, event_type=[value for _, value in wanted]) as events:
        definition = {"id": "/forced", "cmd": SERVER_CMD, "cpus": 0.1, "mem": 32}
        first = await trio.to_thread.run_sync(lambda: client.post("/v2/apps", json=definition))
        forced = await trio.to_thread.run_sync(
            lambda: client.put("/v2/apps/forced", params={"force": "true"}, json={"instances": 2})
        )
        failed = await events.wait(lambda t, _d: t == "deployment_failed")
        assert failed["id"] == first.headers["Marathon-Deployment-Id"]
        done = await events.wait(lambda t, _d: t == "deployment_success")
        assert done["id"] == forced.headers["Marathon-Deployment-Id"]
        assert set(events.types()) == {"deployment_failed", "deployment_success"}  # nothing else, not even attached
