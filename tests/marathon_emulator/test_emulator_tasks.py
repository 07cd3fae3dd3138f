"""Tasks are real processes: the documented environment, replacement after a crash (with the launch
backoff), health checks actually probed and acted on, Docker apps running faasd's watchdog, ``fetch``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, process_alive, wait_for
from tests.marathon_emulator.__main__ import parse_args
from tests.marathon_emulator.fixture import OTHER_HOST, StartEmulator

SERVER_CMD = f"python3 {Path(__file__).with_name('task_server.py')}"


def app(app_id: str, **fields: object) -> dict[str, object]:
    return {"id": app_id, "cmd": SERVER_CMD, "cpus": 0.1, "mem": 32, "backoffSeconds": 0, **fields}


def http_check(**fields: object) -> dict[str, object]:
    """A MESOS_HTTP check on /health, probed at once and every second."""
    check = {"protocol": "MESOS_HTTP", "path": "/health", "delaySeconds": 0, "intervalSeconds": 1}
    return {**check, "gracePeriodSeconds": 30, "timeoutSeconds": 2, **fields}


def env_of(task: dict[str, object]) -> dict[str, object]:
    port = task["ports"][0]  # type: ignore[index]
    return wait_for(lambda: _get_env(port), 10, f"the task on {port} to answer")


def _get_env(port: int) -> dict[str, object] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/env", timeout=2).json()
    except httpx.HTTPError:
        return None


def test_a_task_is_a_process_with_the_documented_environment(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    definition = app(
        "/faasd/env",
        env={"GREETING": "hello", "PORT0": "app-cannot-override"},
        labels={"faasd.function": "env"},
        portDefinitions=[{"port": 0, "name": "http"}, {"port": 0}],
    )
    assert client.post("/v2/apps", json=definition).status_code == 201
    [task] = emulator.wait_tasks("/faasd/env", 1)
    answer = env_of(task)
    env = answer["env"]
    assert isinstance(env, dict)
    port0, port1 = task["ports"]
    assert port0 != port1
    service0, service1 = task["servicePorts"]
    expected = {
        "PORT0": str(port0),
        "PORT1": str(port1),
        "PORT": str(port0),
        "PORTS": f"{port0},{port1}",
        "PORT_HTTP": str(port0),
        f"PORT_{service0}": str(port0),
        f"PORT_{service1}": str(port1),
        "HOST": "127.0.0.1",
        "MESOS_TASK_ID": task["id"],
        "MARATHON_APP_ID": "/faasd/env",
        "MARATHON_APP_VERSION": task["version"],
        "MARATHON_APP_RESOURCE_CPUS": "0.1",
        "MARATHON_APP_LABELS": "FAASD_FUNCTION",
        "MARATHON_APP_LABEL_FAASD_FUNCTION": "env",
        "GREETING": "hello",
    }
    assert {key: env.get(key) for key in expected} == expected
    sandbox = Path(str(env["MESOS_SANDBOX"]))
    assert sandbox.is_dir() and env["TMPDIR"] == str(sandbox)
    assert "FAASD_TEST_TIME_FACTOR" not in env and "VIRTUAL_ENV" not in env  # nothing of the emulator's own
    pid = answer["pid"]
    assert isinstance(pid, int)
    assert os.getsid(pid) not in (os.getsid(0), os.getsid(emulator.pid))  # a session of its own: killed whole
    text = client.get("/v2/apps/faasd/env/tasks", headers={"Accept": "text/plain"})
    assert text.headers["content-type"] == "text/plain"
    assert text.text.splitlines()[0] == f"faasd_env {service0} 127.0.0.1:{port0}"


def test_a_crashed_task_is_replaced_after_the_backoff(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/crashy", backoffSeconds=1, backoffFactor=2)).status_code == 201
    [first] = emulator.wait_tasks("/crashy", 1)
    pid = env_of(first)["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    crashed = time.monotonic()
    wait_for(lambda: [t for t in emulator.tasks("/crashy") if t["id"] != first["id"]], 10, "a replacement")
    assert time.monotonic() - crashed >= 0.9  # backoffSeconds: 1 (lower bound: not scaled)
    failure = client.get("/v2/apps/crashy").json()["app"]["lastTaskFailure"]
    assert failure["taskId"] == first["id"] and failure["state"] == "TASK_FAILED"
    # The shell running cmd reports its child's death (dash) or is the child itself (a shell that execs).
    assert failure["message"] in ("Command exited with status 137", "Command terminated with signal Killed")
    [second] = emulator.wait_tasks("/crashy", 1)
    pid = env_of(second)["pid"]
    os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    crashed = time.monotonic()
    wait_for(lambda: [t for t in emulator.tasks("/crashy") if t["id"] != second["id"]], 10, "a second replacement")
    assert time.monotonic() - crashed >= 1.9  # the backoff grew by backoffFactor: 2


def test_health_checks_are_probed_and_reported(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    definition = app("/healthy", instances=2, healthChecks=[http_check()])
    assert client.post("/v2/apps", json=definition).status_code == 201
    tasks = emulator.wait_tasks("/healthy", 2, healthy=True)
    emulator.wait_deployed()
    for task in tasks:
        [result] = task["healthCheckResults"]
        assert result["alive"] is True and result["consecutiveFailures"] == 0
        assert result["instanceId"] == task["id"].removesuffix("._app.1")
        assert result["firstSuccess"] and result["lastSuccess"]
    info = client.get("/v2/apps/healthy").json()["app"]
    assert (info["tasksRunning"], info["tasksHealthy"], info["tasksUnhealthy"]) == (2, 2, 0)


def test_an_unhealthy_task_holds_its_deployment_and_is_killed_and_replaced(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    check = http_check(gracePeriodSeconds=0, maxConsecutiveFailures=3, delaySeconds=1)  # (1 s to start listening)
    definition = app("/sick", env={"HEALTH_STATUS": "503"}, healthChecks=[check])
    assert client.post("/v2/apps", json=definition).status_code == 201

    def answering_503() -> dict[str, object] | None:
        for task in emulator.tasks("/sick"):
            for result in task.get("healthCheckResults", []):
                if result["lastFailureCause"] == "HTTP status 503":
                    return task
        return None

    first = wait_for(answering_503, 10, "a health check failed by status 503")
    result = first["healthCheckResults"][0]  # type: ignore[index]
    assert result["alive"] is False and result["consecutiveFailures"] >= 1
    assert client.get("/v2/apps/sick").json()["app"]["tasksUnhealthy"] == 1
    wait_for(lambda: first["id"] not in [t["id"] for t in emulator.tasks("/sick")], 10, "the unhealthy task killed")
    wait_for(lambda: emulator.tasks("/sick"), 10, "a replacement task")
    assert len(emulator.deployments()) == 1  # never healthy: the deployment does not finish
    failure = client.get("/v2/apps/sick").json()["app"]["lastTaskFailure"]
    assert failure["taskId"] == first["id"] and failure["state"] == "TASK_KILLED"
    assert "503" in failure["message"]

    fixed = client.put("/v2/apps/sick", json={"env": {"HEALTH_STATUS": "200"}})  # locked by the hanging one
    assert fixed.status_code == 409
    fixed = client.put("/v2/apps/sick", params={"force": "true"}, json={"env": {"HEALTH_STATUS": "200"}})
    assert fixed.status_code == 200
    emulator.wait_tasks("/sick", 1, healthy=True)
    emulator.wait_deployed()


def test_marathon_level_check_with_zero_failures_never_kills(marathon_emulator: StartEmulator) -> None:
    """maxConsecutiveFailures 0: HTTP (Marathon-level) checks never kill (documented difference from MESOS_*)."""
    emulator = marathon_emulator()
    client = emulator.client()
    check = {"protocol": "HTTP", "path": "/health", "intervalSeconds": 1, "gracePeriodSeconds": 0}
    check["maxConsecutiveFailures"] = 0
    assert (
        client.post("/v2/apps", json=app("/tolerated", env={"HEALTH_STATUS": "500"}, healthChecks=[check])).status_code
        == 201
    )
    [task] = emulator.wait_tasks("/tolerated", 1)

    def failures() -> int:
        results = [r for t in emulator.tasks("/tolerated") for r in t.get("healthCheckResults", [])]
        return max((r["consecutiveFailures"] for r in results), default=0)

    wait_for(lambda: failures() >= 2, 10, "two failed checks")
    assert [t["id"] for t in emulator.tasks("/tolerated")] == [task["id"]]


def test_a_docker_app_runs_faasds_watchdog_from_the_zipapp(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    definition = {
        "id": "/faasd/echo",
        "instances": 2,
        "cpus": 0.1,
        "mem": 64,
        "container": {
            "type": "DOCKER",
            "docker": {"image": "faasd/echo:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}],
        },
        "networks": [{"mode": "container/bridge"}],
        "env": {"fprocess": "cat"},
        "healthChecks": [http_check(path="/_/health")],
    }
    created = client.post("/v2/apps", json=definition)
    assert created.status_code == 201, created.text
    tasks = emulator.wait_tasks("/faasd/echo", 2, healthy=True)
    emulator.wait_deployed()
    for task in tasks:
        answer = httpx.post(f"http://127.0.0.1:{task['ports'][0]}/", content=b"hello marathon", timeout=10)
        assert answer.status_code == 200 and answer.text == "hello marathon"


def test_tasks_listen_and_are_reported_at_the_agent_host(marathon_emulator: StartEmulator) -> None:
    """``--agent-host 127.0.0.2``: a task as on another machine -- reported there, probed there, and
    listening nowhere else (a client calling 127.0.0.1 instead of the task's host reaches nothing)."""
    emulator = marathon_emulator(agent_host=OTHER_HOST)
    client = emulator.client()
    definition = {
        "id": "/faasd/far",
        "container": {
            "type": "DOCKER",
            "docker": {"image": "faasd/echo:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        },
        "networks": [{"mode": "container/bridge"}],
        "env": {"fprocess": "cat"},
        "healthChecks": [http_check(path="/_/health")],
    }
    assert client.post("/v2/apps", json=definition).status_code == 201
    assert client.post("/v2/apps", json=app("/faasd/far-cmd")).status_code == 201
    (task,) = emulator.wait_tasks("/faasd/far", 1, healthy=True)  # Probed at the agent's address.
    assert (task["host"], task["ipAddresses"]) == (OTHER_HOST, [{"ipAddress": OTHER_HOST, "protocol": "IPv4"}])
    port = task["ports"][0]
    answer = httpx.post(f"http://{OTHER_HOST}:{port}/", content=b"far away", timeout=10)
    assert (answer.status_code, answer.text) == (200, "far away")
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/", content=b"x", timeout=10)
    (command,) = emulator.wait_tasks("/faasd/far-cmd", 1)
    assert env_of(command)["env"]["HOST"] == OTHER_HOST  # type: ignore[index]
    assert f"{OTHER_HOST}:{port}" in client.get("/v2/apps/faasd/far/tasks", headers={"Accept": "text/plain"}).text


def test_the_agent_host_must_be_an_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--agent-host", "127.0.0.2"]).agent_host == "127.0.0.2"
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--agent-host", "agent-1.example"])
    assert exit_info.value.code == 2 and "--agent-host must be an IP address" in capsys.readouterr().err


def test_fetch_puts_artifacts_in_the_sandbox(marathon_emulator: StartEmulator, tmp_path: Path) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    script = tmp_path / "serve.sh"
    script.write_text(f"#!/bin/sh\nexec {SERVER_CMD}\n")
    definition = app("/fetched", cmd="./serve.sh", fetch=[{"uri": script.as_uri(), "executable": True}])
    assert client.post("/v2/apps", json=definition).status_code == 201
    [task] = emulator.wait_tasks("/fetched", 1)
    env = env_of(task)["env"]
    assert (Path(str(env["MESOS_SANDBOX"])) / "serve.sh").read_text() == script.read_text()

    missing = app("/unfetchable", fetch=[{"uri": (tmp_path / "nope.tgz").as_uri()}], backoffSeconds=5)
    assert client.post("/v2/apps", json=missing).status_code == 201

    def failure() -> dict[str, object] | None:
        return client.get("/v2/apps/unfetchable").json()["app"].get("lastTaskFailure")

    found = wait_for(failure, 10, "the fetch failure")
    assert str(found["message"]).startswith("Failed to fetch all URIs for container")
    assert found["state"] == "TASK_FAILED"


def test_a_fixed_host_port_fits_one_task_and_the_second_waits_for_an_offer(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    port = free_port()
    definition = {
        "id": "/pinned",
        "instances": 2,
        "container": {"docker": {"image": "faasd/cat"}, "portMappings": [{"containerPort": 8080, "hostPort": port}]},
        "networks": [{"mode": "container/bridge"}],
        "env": {"fprocess": "cat"},
    }
    assert client.post("/v2/apps", json=definition).status_code == 201
    [task] = emulator.wait_tasks("/pinned", 1)
    assert task["ports"] == [port]
    wait_for(lambda: answers(port), 10, "the watchdog on the fixed host port")
    every = client.get("/v2/tasks", params={"status": "running"}).json()["tasks"]
    assert [t["id"] for t in every] == [task["id"]]  # one agent, one such port: the second is never placed
    assert len(emulator.deployments()) == 1
    assert client.put("/v2/apps/pinned", params={"force": "true"}, json={"instances": 1}).status_code == 200
    emulator.wait_deployed()


def answers(port: int) -> bool:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/", content=b"x", timeout=2).text == "x"
    except httpx.HTTPError:
        return False


def test_stopping_the_emulator_stops_every_task(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/a", instances=2)).status_code == 201
    pids = [env_of(task)["pid"] for task in emulator.wait_tasks("/a", 2)]
    assert emulator.stop() == 0
    assert not any(process_alive(pid) for pid in pids)  # type: ignore[arg-type]
