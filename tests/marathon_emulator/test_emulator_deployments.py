"""Deployments: they take time, lock their app (409 with the deployment ids unless forced), can be rolled
back or cancelled, scale apps up and down, and replace tasks in a rolling restart
(https://mesosphere.github.io/marathon/docs/deployments.html, deployments.raml, traits.raml "deployable").
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.helpers import port_refuses, process_alive, wait_for
from tests.marathon_emulator.fixture import StartEmulator

SERVER_CMD = f"python3 {Path(__file__).with_name('task_server.py')}"
LAUNCH_DELAY_S = 1.0


def app(app_id: str, **fields: object) -> dict[str, object]:
    return {"id": app_id, "cmd": SERVER_CMD, "cpus": 0.1, "mem": 32, "backoffSeconds": 0, **fields}


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_answering(tasks: list[dict[str, object]]) -> None:
    """TASK_RUNNING means the process started, not that it listens yet (as on Mesos, without health
    checks): wait until each task answers on its first port."""
    ports = [task["ports"][0] for task in tasks]  # type: ignore[index]
    wait_for(lambda: all(answers(port) for port in ports), 10, f"tasks on ports {ports} to answer")


def test_a_deployment_takes_time_and_locks_its_app_until_forced(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator(launch_delay=LAUNCH_DELAY_S)
    client = emulator.client()
    started = time.monotonic()
    created = client.post("/v2/apps", json=app("/locked"))
    assert created.status_code == 201
    first = created.headers["Marathon-Deployment-Id"]
    [listed] = client.get("/v2/deployments").json()
    assert listed["id"] == first and listed["affectedApps"] == ["/locked"]
    assert [step["actions"][0]["action"] for step in listed["steps"]] == ["StartApplication", "ScaleApplication"]
    assert listed["currentStep"] == 2 and listed["totalSteps"] == 2
    assert client.get("/v2/apps/locked").json()["app"]["tasks"][0]["state"] == "TASK_STAGING"

    refused = client.put("/v2/apps/locked", json={"instances": 2})
    assert refused.status_code == 409
    assert refused.json() == {
        "message": "App is locked by one or more deployments. Override with the option '?force=true'. "
        f"View details at '/v2/deployments/{first}'.",
        "deployments": [{"id": first}],
    }
    assert client.delete("/v2/apps/locked/tasks", params={"scale": "true"}).status_code == 409
    assert client.post("/v2/apps/locked/restart").status_code == 409

    forced = client.put("/v2/apps/locked", params={"force": "true"}, json={"instances": 2})
    assert forced.status_code == 200
    second = forced.headers["Marathon-Deployment-Id"]
    assert forced.json()["deploymentId"] == second and second != first
    assert [d["id"] for d in client.get("/v2/deployments").json()] == [second]  # the forced one replaced it
    [scaling] = client.get("/v2/deployments").json()
    assert [step["actions"][0]["action"] for step in scaling["steps"]] == ["ScaleApplication"]

    emulator.wait_deployed()
    assert time.monotonic() - started >= LAUNCH_DELAY_S  # tasks staged for the launch delay first
    wait_answering(emulator.wait_tasks("/locked", 2))
    assert client.put("/v2/apps/locked", json={"instances": 1}).status_code == 200  # unlocked again


def test_scale_up_and_down_starts_and_kills_processes(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/scaled", instances=1)).status_code == 201
    [first] = emulator.wait_tasks("/scaled", 1)
    emulator.wait_deployed()
    scaled_up = client.put("/v2/apps/scaled", json={"instances": 3})
    assert scaled_up.status_code == 200
    tasks = emulator.wait_tasks("/scaled", 3)
    emulator.wait_deployed()
    ports = [task["ports"][0] for task in tasks]
    assert len(set(ports)) == 3
    wait_answering(tasks)
    assert first["id"] in [task["id"] for task in tasks]  # scaling does not restart the others
    info = client.get("/v2/apps/scaled").json()["app"]
    assert info["versionInfo"]["lastScalingAt"] == info["version"] != info["versionInfo"]["lastConfigChangeAt"]

    assert client.put("/v2/apps/scaled", json={"instances": 1}).status_code == 200
    [kept] = emulator.wait_tasks("/scaled", 1)
    emulator.wait_deployed()
    gone = [port for port in ports if port != kept["ports"][0]]
    assert len(gone) == 2
    wait_for(lambda: all(port_refuses(port) for port in gone), 10, f"the scaled-down tasks on {gone} to stop")
    assert kept["id"] == first["id"]  # YOUNGEST_FIRST: the oldest task stays

    assert client.put("/v2/apps/scaled", json={"instances": 0}).status_code == 200
    emulator.wait_deployed()
    assert emulator.tasks("/scaled") == [] and port_refuses(kept["ports"][0])


def test_delete_kills_the_tasks_and_the_app_is_gone_at_once(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/doomed", instances=2)).status_code == 201
    tasks = emulator.wait_tasks("/doomed", 2)
    deleted = client.delete("/v2/apps/doomed")
    assert deleted.status_code == 200
    assert set(deleted.json()) == {"version", "deploymentId"}
    assert deleted.headers["Marathon-Deployment-Id"] == deleted.json()["deploymentId"]
    assert client.get("/v2/apps/doomed").status_code == 404
    emulator.wait_deployed()
    assert all(port_refuses(task["ports"][0]) for task in tasks)
    recreated = client.post("/v2/apps", json=app("/doomed", instances=1))
    assert recreated.status_code == 201
    [task] = emulator.wait_tasks("/doomed", 1)
    assert task["id"] not in [old["id"] for old in tasks]


def test_rolling_restart_replaces_every_task_with_the_new_configuration(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/rolled", instances=2, env={"GENERATION": "1"})).status_code == 201
    old = emulator.wait_tasks("/rolled", 2)
    emulator.wait_deployed()
    updated = client.put("/v2/apps/rolled", json={"env": {"GENERATION": "2"}})
    assert updated.status_code == 200
    [deployment] = client.get("/v2/deployments").json()
    assert deployment["steps"] == [{"actions": [{"action": "RestartApplication", "app": "/rolled"}]}]
    emulator.wait_deployed()
    new = emulator.wait_tasks("/rolled", 2)
    wait_answering(new)
    assert not {task["id"] for task in new} & {task["id"] for task in old}
    for task in new:
        env = httpx.get(f"http://127.0.0.1:{task['ports'][0]}/env").json()["env"]
        assert env["GENERATION"] == "2" and task["version"] == updated.json()["version"]
    assert all(port_refuses(task["ports"][0]) for task in old)
    app_now = client.get("/v2/apps/rolled").json()["app"]
    assert app_now["env"] == {"GENERATION": "2"} and app_now["instances"] == 2  # partial update kept instances


def test_restart_endpoint_replaces_tasks(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/again")).status_code == 201
    [old] = emulator.wait_tasks("/again", 1)
    emulator.wait_deployed()
    restarted = client.post("/v2/apps/again/restart")
    assert restarted.status_code == 200 and restarted.headers["Marathon-Deployment-Id"]
    emulator.wait_deployed()
    [new] = emulator.wait_tasks("/again", 1)
    assert new["id"] != old["id"]


def test_cancelling_a_deployment_rolls_it_back_or_with_force_just_stops_it(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator(launch_delay=LAUNCH_DELAY_S)
    client = emulator.client()
    created = client.post("/v2/apps", json=app("/undone"))
    rollback = client.delete(f"/v2/deployments/{created.headers['Marathon-Deployment-Id']}")
    assert rollback.status_code == 200
    assert rollback.headers["Marathon-Deployment-Id"] == rollback.json()["deploymentId"]
    assert client.get("/v2/apps/undone").status_code == 404  # rolling back a creation removes the app
    emulator.wait_deployed()
    assert client.get("/v2/apps").json() == {"apps": []}

    created = client.post("/v2/apps", json=app("/halfway", instances=1))
    emulator.wait_deployed()
    scaling = client.put("/v2/apps/halfway", json={"instances": 3})
    cancelled = client.delete(f"/v2/deployments/{scaling.json()['deploymentId']}", params={"force": "true"})
    assert cancelled.status_code == 202 and cancelled.content == b""
    assert client.get("/v2/deployments").json() == []
    assert client.get("/v2/apps/halfway").json()["app"]["instances"] == 3  # no rollback: the target stays
    assert client.delete("/v2/deployments/nope").status_code == 404


def pid_of(task: dict[str, object]) -> int:
    return int(httpx.get(f"http://127.0.0.1:{task['ports'][0]}/env").json()["pid"])  # type: ignore[index]


def test_killing_a_task_through_the_api_replaces_it_or_scales_down(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/victim", instances=2)).status_code == 201
    tasks = emulator.wait_tasks("/victim", 2)
    wait_answering(tasks)
    emulator.wait_deployed()
    pid = pid_of(tasks[0])
    killed = client.delete(f"/v2/apps/victim/tasks/{tasks[0]['id']}")
    assert killed.status_code == 200
    assert killed.json()["task"]["id"] == tasks[0]["id"]

    def replaced() -> bool:
        now = emulator.tasks("/victim")
        running = [task["id"] for task in now if task["state"] == "TASK_RUNNING"]
        return len(now) == 2 and len(running) == 2 and tasks[0]["id"] not in running

    wait_for(replaced, 10, "the killed task to be replaced")
    wait_for(lambda: not process_alive(pid), 10, f"the killed task's process {pid} to end")
    assert client.get("/v2/apps/victim").json()["app"]["instances"] == 2

    current = emulator.wait_tasks("/victim", 2)
    scaled = client.delete(f"/v2/apps/victim/tasks/{current[1]['id']}", params={"scale": "true"})
    assert scaled.status_code == 200 and set(scaled.json()) == {"version", "deploymentId"}
    emulator.wait_deployed()
    [left] = emulator.wait_tasks("/victim", 1)
    assert left["id"] == current[0]["id"]
    assert client.get("/v2/apps/victim").json()["app"]["instances"] == 1
    missing = client.delete("/v2/apps/victim/tasks/victim.instance-nope._app.1")
    assert missing.status_code == 404
    assert missing.json() == {"message": "Task 'victim.instance-nope._app.1' does not exist"}


def states(emulator: object, app_id: str, version: str) -> tuple[list[str], list[str]]:
    """(states of the tasks of the new version, states of the others), sorted."""
    tasks = emulator.tasks(app_id)  # type: ignore[attr-defined]
    new = sorted(task["state"] for task in tasks if task["version"] == version)
    old = sorted(task["state"] for task in tasks if task["version"] != version)
    return new, old


def test_upgrade_strategy_bounds_the_rolling_restart(marathon_emulator: StartEmulator) -> None:
    """minimumHealthCapacity 1, maximumOverCapacity 1 (the defaults): all new tasks start beside the old
    ones, which stay until the new are up. minimumHealthCapacity 0: the old are killed first."""
    emulator = marathon_emulator(launch_delay=LAUNCH_DELAY_S)
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/side-by-side", instances=2, env={"V": "1"})).status_code == 201
    emulator.wait_deployed()
    version = client.put("/v2/apps/side-by-side", json={"env": {"V": "2"}}).json()["version"]
    side_by_side = (["TASK_STAGING"] * 2, ["TASK_RUNNING"] * 2)  # the old still serve while the new stage
    wait_for(lambda: states(emulator, "/side-by-side", version)[0], 5, "new tasks to be staged")
    seen = states(emulator, "/side-by-side", version)
    assert seen == side_by_side, seen
    emulator.wait_deployed()
    assert states(emulator, "/side-by-side", version) == (["TASK_RUNNING"] * 2, [])

    strategy = {"minimumHealthCapacity": 0, "maximumOverCapacity": 0}
    definition = app("/kill-first", instances=2, env={"V": "1"}, upgradeStrategy=strategy)
    assert client.post("/v2/apps", json=definition).status_code == 201
    emulator.wait_deployed()
    version = client.put("/v2/apps/kill-first", json={"env": {"V": "2"}}).json()["version"]
    wait_for(lambda: states(emulator, "/kill-first", version)[1] == [], 5, "the old tasks to be killed first")
    assert states(emulator, "/kill-first", version)[0] == ["TASK_STAGING"] * 2
    emulator.wait_deployed()
    assert states(emulator, "/kill-first", version) == (["TASK_RUNNING"] * 2, [])
