"""``faasd up --provider marathon`` end to end, against the Marathon emulator: the daemon as users run it
(``dist/faasd.pyz``), its API and CLI, functions as Marathon apps whose tasks are real local processes.

What only a whole daemon shows: calls go through the gateway to a task's host port with the function's
own call token (the emulator's agent is 127.0.0.2, the only address its tasks listen on: as for a replica
on another machine, the gateway must call the task's ``host``); scaling from zero; Marathon dying mid-run
(503 with the reason, calls still served, recovery by itself); a daemon restarted on an empty state dir
rebuilding everything from Marathon.

Fixture order matters: the daemon's fixture comes first so that the emulator is stopped (with its
tasks, adopted ones included) before the daemon's teardown looks for processes left behind.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import Daemon, MakeCli
from tests.helpers import scaled, wait_for
from tests.marathon.conftest import MarathonDaemon
from tests.marathon_emulator.fixture import OTHER_HOST, MarathonEmulator, StartEmulator

pytestmark = pytest.mark.slow

IMAGE = "faasd/watchdog:latest"


def _functions(daemon: Daemon) -> dict[str, dict]:
    with daemon.client() as client:
        response = client.get("/system/functions")
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()}


def _invoke(daemon: Daemon, name: str, body: bytes = b"") -> httpx.Response:
    with daemon.client(auth=False) as client:
        return client.post(f"/function/{name}", content=body)


def _app(emulator: MarathonEmulator, name: str) -> dict | None:
    with emulator.client() as client:
        response = client.get(f"/v2/apps/faasd/{name}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.json()["app"]


def test_deploy_invoke_scale_logs_remove(
    marathon_daemon: MarathonDaemon, marathon_emulator: StartEmulator, faasd_cli: MakeCli
) -> None:
    emulator = marathon_emulator(agent_host=OTHER_HOST)
    daemon = marathon_daemon(emulator)
    with daemon.client() as client:
        info = client.get("/system/info").json()
        assert info["provider"] == {**info["provider"], "provider": "faasd-marathon", "orchestration": "marathon"}
        response = client.post("/system/functions", json={"service": "echo", "image": IMAGE, "envProcess": "cat"})
        assert response.status_code == 202, response.text
        response = client.post("/system/functions", json={"service": "plain", "envProcess": "wc -c"})
        assert response.status_code == 202, response.text
    app = _app(emulator, "echo")
    assert app is not None and app["container"]["docker"]["image"] == IMAGE and app["instances"] == 1
    assert _app(emulator, "plain")["cmd"].endswith("_marathon-task")  # type: ignore[index]

    assert (_invoke(daemon, "echo", b"through marathon").status_code, _invoke(daemon, "echo", b"hi").text) == (
        200,
        "hi",
    )
    assert _invoke(daemon, "plain", b"12345").text.strip() == "5"
    (task,) = emulator.tasks("/faasd/echo")
    assert task["host"] == OTHER_HOST, task
    direct = httpx.post(f"http://{task['host']}:{task['ports'][0]}/", content=b"x", timeout=scaled(10))
    assert direct.status_code == 403, "a replica takes calls only with its function's token"
    with pytest.raises(httpx.ConnectError):  # Only at the task's host: the gateway called it there.
        httpx.post(f"http://127.0.0.1:{task['ports'][0]}/", content=b"x", timeout=scaled(10))

    cli = faasd_cli(daemon)
    cli.run("scale", "echo", "2").ok()
    emulator.wait_tasks("/faasd/echo", 2, healthy=True)
    daemon.wait_available("echo", 2)
    bodies = {_invoke(daemon, "echo", str(n).encode()).text for n in range(6)}
    assert bodies == {str(n) for n in range(6)}

    line = cli.run("logs", "echo").error_line()
    assert "not available on Marathon" in line and "Mesos" in line, line
    with daemon.client() as client:
        response = client.get("/system/logs", params={"name": "echo"})
    assert response.status_code == 501, response.text

    cli.run("scale", "echo", "0").ok()
    wait_for(lambda: not emulator.tasks("/faasd/echo"), 15, "echo's tasks to stop")
    assert _invoke(daemon, "echo", b"woken").text == "woken", "scaled from zero by the call"

    cli.run("rm", "echo").ok()
    assert _app(emulator, "echo") is None
    assert "echo" not in _functions(daemon)
    assert _invoke(daemon, "echo").status_code == 404


def test_marathon_killed_and_restarted_mid_run(
    marathon_daemon: MarathonDaemon, marathon_emulator: StartEmulator
) -> None:
    emulator = marathon_emulator(agent_host=OTHER_HOST)
    daemon = marathon_daemon(emulator)
    daemon.deploy("steady", "cat", image=IMAGE)
    assert _invoke(daemon, "steady", b"before").text == "before"

    emulator.crash()  # SIGKILL: the leader is gone, the tasks keep running.
    with daemon.client() as client:
        listed = client.get("/system/functions")
        assert listed.status_code == 503, listed.text
        assert emulator.url in listed.text and "unreachable" in listed.text, listed.text
        deploy = client.post("/system/functions", json={"service": "late", "image": IMAGE, "envProcess": "cat"})
        assert deploy.status_code == 503, deploy.text
    wait_for(lambda: httpx.get(f"{daemon.url}/healthz").status_code == 503, 10, "/healthz to say so")
    assert _invoke(daemon, "steady", b"during").text == "during", "what runs is still called"

    emulator = marathon_emulator.restart(emulator)  # Same port and state: it adopts the running tasks.
    wait_for(lambda: httpx.get(f"{daemon.url}/healthz").status_code == 200, 15, "recovery by itself")
    assert set(_functions(daemon)) == {"steady"}
    daemon.deploy("late", "cat", image=IMAGE)
    assert _invoke(daemon, "late", b"after").text == "after"
    assert _invoke(daemon, "steady", b"after").text == "after"


def test_a_new_daemon_rebuilds_from_marathon_and_adopts_apps_made_by_hand(
    marathon_daemon: MarathonDaemon, marathon_emulator: StartEmulator, tmp_path: Path
) -> None:
    """Stateless: a daemon on an empty state dir (another call token) lists and calls what an earlier
    daemon deployed -- it sends each replica the token in its app -- and takes a labelled app made by
    hand for a function."""
    emulator = marathon_emulator(agent_host=OTHER_HOST)
    first = marathon_daemon(emulator, state_dir=tmp_path / "first")
    first.deploy("kept", "cat", image=IMAGE, labels={"com.openfaas.scale.min": "2"})
    first.wait_available("kept", 2)
    assert first.stop() == 0

    with emulator.client() as client:
        app = {
            "id": "/faasd/byhand",
            "labels": {"com.openfaas.function": "byhand"},
            "env": {"fprocess": "tr a-z A-Z"},
            "container": {"type": "DOCKER", "docker": {"image": IMAGE}, "portMappings": [{"containerPort": 8080}]},
            "networks": [{"mode": "container/bridge"}],
        }
        assert client.post("/v2/apps", json=app).status_code == 201

    second = marathon_daemon(emulator, state_dir=tmp_path / "second")
    wait_for(lambda: set(_functions(second)) == {"kept", "byhand"}, 15, "both functions listed")
    kept = _functions(second)["kept"]
    assert (kept["image"], kept["envProcess"], kept["replicas"]) == (IMAGE, "cat", 2), kept
    assert _invoke(second, "kept", b"same replicas").text == "same replicas"
    second.wait_available("byhand", 1)
    assert _invoke(second, "byhand", b"abc").text == "ABC"


def test_up_on_marathon_without_its_url_says_so_without_a_traceback(
    pyz_python: str, faasd_pyz: Path, tmp_path: Path
) -> None:
    """``faasd up --provider marathon`` used to end in a traceback: now a missing setting is one line
    naming it, and exit status 1 (the other settings' checks: tests/providers/test_marathon.py and
    tests/unit/test_config_flags.py, in-process)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    command = [pyz_python, str(faasd_pyz), "up", "--provider", "marathon", "--state-dir", str(tmp_path / "state")]
    done = subprocess.run([*command, "--port", "0"], env=env, capture_output=True, text=True, timeout=scaled(30))
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "marathon_url must be set" in output, (done.returncode, output)
    assert "Traceback" not in output, output
