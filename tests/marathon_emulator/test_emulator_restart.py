"""Kill and restart the emulator mid-run: what survives, as Marathon keeps its state in ZooKeeper and
Mesos keeps the tasks running (https://mesosphere.github.io/marathon/docs/high-availability.html).

* crash (SIGKILL, a leader failover): the tasks keep serving; the next emulator on the state file has
  the same apps, adopts the same tasks (same ids, ports, processes) and carries on with the deployments
  that were running, and it still replaces an adopted task that dies;
* stop (SIGTERM, the cluster goes away): the tasks are stopped; the next emulator has the same apps and
  starts their tasks anew.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx

from tests.helpers import process_alive, wait_for
from tests.marathon_emulator.fixture import StartEmulator

SERVER_CMD = f"python3 {Path(__file__).with_name('task_server.py')}"


def app(app_id: str, **fields: object) -> dict[str, object]:
    return {"id": app_id, "cmd": SERVER_CMD, "cpus": 0.1, "mem": 32, "backoffSeconds": 0, **fields}


def pid_of(task: dict[str, object]) -> int:
    port = task["ports"][0]  # type: ignore[index]

    def read() -> int | None:
        try:
            return int(httpx.get(f"http://127.0.0.1:{port}/env", timeout=2).json()["pid"])
        except httpx.HTTPError:
            return None

    return wait_for(read, 10, f"the task on {port} to answer")


def test_a_crashed_emulator_is_replaced_by_one_that_adopts_its_tasks(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator(launch_delay=0.5)
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/survivor", instances=2, labels={"keep": "me"})).status_code == 201
    tasks = emulator.wait_tasks("/survivor", 2)
    emulator.wait_deployed()
    pids = {task["id"]: pid_of(task) for task in tasks}
    scaling = client.put("/v2/apps/survivor", json={"instances": 3})  # a deployment in flight when it dies
    assert scaling.status_code == 200

    emulator.crash()
    assert all(process_alive(pid) for pid in pids.values())  # Mesos still runs them
    assert all(pid_of(task) == pids[task["id"]] for task in tasks)

    restarted = marathon_emulator.restart(emulator)
    assert restarted.url == emulator.url
    client = restarted.client()
    shown = client.get("/v2/apps/survivor").json()["app"]
    assert shown["labels"] == {"keep": "me"} and shown["instances"] == 3
    assert shown["version"] == scaling.json()["version"]
    now = restarted.wait_tasks("/survivor", 3)
    restarted.wait_deployed()  # the scaling deployment carried on
    adopted = {task["id"]: task for task in now if task["id"] in pids}
    assert set(adopted) == set(pids)  # the same tasks, not new ones
    assert all(pid_of(adopted[task_id]) == pid for task_id, pid in pids.items())

    victim_id, victim_pid = next(iter(pids.items()))
    os.kill(victim_pid, signal.SIGKILL)  # an adopted task still gets replaced when it dies
    wait_for(
        lambda: victim_id not in [t["id"] for t in restarted.wait_tasks("/survivor", 3)], 15, "the dead task replaced"
    )

    assert restarted.stop() == 0
    assert not any(process_alive(pid) for pid in pids.values())


def test_a_stopped_emulator_is_replaced_by_one_that_starts_the_tasks_anew(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/phoenix", instances=2)).status_code == 201
    before = emulator.wait_tasks("/phoenix", 2)
    pids = [pid_of(task) for task in before]
    version = client.get("/v2/apps/phoenix").json()["app"]["version"]

    restarted = marathon_emulator.restart(emulator)
    assert not any(process_alive(pid) for pid in pids)
    client = restarted.client()
    assert client.get("/v2/apps/phoenix").json()["app"]["version"] == version
    after = restarted.wait_tasks("/phoenix", 2)
    assert not {task["id"] for task in after} & {task["id"] for task in before}
    assert all(pid_of(task) not in pids for task in after)
    assert client.post("/v2/apps", json=app("/phoenix")).status_code == 409  # it is still there


def test_a_crash_loses_no_answered_change(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    for number in range(5):
        assert client.post("/v2/apps", json=app(f"/app-{number}", instances=0)).status_code == 201
    assert client.delete("/v2/apps/app-3").status_code == 200
    emulator.crash()  # at once: every change above was answered, so it must be there
    restarted = marathon_emulator.restart(emulator)
    ids = [item["id"] for item in restarted.client().get("/v2/apps").json()["apps"]]
    assert ids == ["/app-0", "/app-1", "/app-2", "/app-4"]


def test_a_task_started_just_before_a_crash_is_killed_as_unknown(marathon_emulator: StartEmulator) -> None:
    """A crash between spawning a task and writing the state leaves a process nobody knows of; the next
    emulator kills it (as Marathon kills unknown tasks) instead of leaking it. The state file is edited
    to be what such a crash leaves."""
    emulator = marathon_emulator()
    assert emulator.client().post("/v2/apps", json=app("/racy")).status_code == 201
    [task] = emulator.wait_tasks("/racy", 1)
    pid = pid_of(task)
    emulator.crash()
    state = json.loads(emulator.state_file.read_text())
    state["tasks"] = []
    emulator.state_file.write_text(json.dumps(state))
    restarted = marathon_emulator.restart(emulator)
    wait_for(lambda: not process_alive(pid), 10, f"the unknown task process {pid} to be killed")
    [replacement] = restarted.wait_tasks("/racy", 1)
    assert replacement["id"] != task["id"]


def test_a_crashed_emulators_tasks_are_cleaned_up_by_the_fixture(marathon_emulator: StartEmulator) -> None:
    """The leak check must see the tasks of a crash nobody restarted as the test's doing, and the fixture
    kills them (what a restarted emulator would have done); here nothing is restarted."""
    emulator = marathon_emulator()
    assert emulator.client().post("/v2/apps", json=app("/orphaned")).status_code == 201
    pid = pid_of(emulator.wait_tasks("/orphaned", 1)[0])
    emulator.crash()
    assert process_alive(pid)
