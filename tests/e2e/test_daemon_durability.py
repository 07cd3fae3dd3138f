"""Through the gateway, what was covered only at lower layers (issue 11, section 6): rolling updates under
traffic lose no call, ``/system/secrets`` works on the local backend and survives a restart, and a
daemon killed with SIGKILL comes back with everything it had and leaves no replica behind.

Every call's outcome is recorded (status or exception): a reset connection counts as a failed call.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.daemon_fixtures import Daemon, StartDaemon
from tests.helpers import Load, process_alive, session_members, wait_for

READ_SECRET = "sh -c 'cat \"$secret_mount_path/$0\"' api-key"
"""Answers with the value of the secret named ``api-key`` (``$0`` keeps the name out of the quotes)."""


def _echo_traffic(daemon: Daemon, name: str, callers: int = 4) -> Load:
    """Callers posting a body of their own to ``/function/{name}``; a call counts as ok only when its own
    body comes back (every other outcome, exceptions included, is recorded by :class:`Load`)."""
    numbers = itertools.count()

    def post(client: httpx.Client) -> httpx.Response:
        return client.post(f"/function/{name}", content=f"call-{next(numbers)}".encode())

    def echoed(answer: httpx.Response) -> bool:
        return answer.status_code == 200 and answer.content == answer.request.content

    return Load(lambda: daemon.client(timeout=30), post, workers=callers, ok=echoed)


def test_rolling_updates_under_traffic_lose_no_call(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat", labels={"com.openfaas.scale.min": "2"})
    daemon.wait_available("echo", 2)
    with _echo_traffic(daemon, "echo") as traffic:
        traffic.wait_ok(20, 15)  # Traffic flows.
        with daemon.client() as client:
            for generation in range(3):
                spec = {
                    "service": "echo",
                    "envProcess": "cat",
                    "envVars": {"generation": str(generation)},
                    "labels": {"com.openfaas.scale.min": "2"},
                }
                assert client.put("/system/functions", json=spec).status_code == 202
                daemon.wait_available("echo", 2, timeout=20)
                traffic.wait_ok(10, 15)  # Calls on the new replicas.
    assert traffic.failed == 0, traffic.summary()
    assert traffic.ok >= 50, traffic.summary()
    assert daemon.status("echo")["envVars"] == {"generation": "2"}


def test_secrets_crud_through_the_gateway_and_after_a_restart(start_daemon: StartDaemon, tmp_path: Path) -> None:
    state = tmp_path / "kept"
    daemon = start_daemon(state_dir=state)
    reader = {"service": "reader", "envProcess": READ_SECRET, "secrets": ["api-key"]}
    with daemon.client() as client:
        assert client.get("/system/secrets").json() == []
        assert client.post("/system/secrets", json={"name": "api-key", "value": "first"}).status_code == 201
        assert client.post("/system/secrets", json={"name": "binary", "rawValue": "AAEC/w=="}).status_code == 201
        again = client.post("/system/secrets", json={"name": "api-key", "value": "again"})
        assert again.status_code == 409 and "api-key" in again.text  # faas-cli's --replace expects 409
        assert client.get("/system/secrets").json() == [
            {"name": "api-key", "namespace": "openfaas-fn"},
            {"name": "binary", "namespace": "openfaas-fn"},
        ]
        assert client.put("/system/secrets", json={"name": "ghost", "value": "x"}).status_code == 404
        assert client.request("DELETE", "/system/secrets", json={"name": "ghost"}).status_code == 404
        assert client.post("/system/secrets", json={"name": "../x", "value": "x"}).status_code == 400
        assert client.post("/system/secrets", json={"name": "x"}).status_code == 400
    daemon.deploy("reader", READ_SECRET, secrets=["api-key"])
    with daemon.client() as client:
        assert client.post("/function/reader").text == "first"  # The refused POST changed nothing.
        assert client.put("/system/secrets", json={"name": "api-key", "value": "second"}).status_code == 200
        # A function reads the value it was deployed with; a new deploy picks up the new one.
        assert client.post("/function/reader").text == "first"
        assert client.put("/system/functions", json=reader).status_code == 202
        wait_for(lambda: client.post("/function/reader").text == "second", 15, "the updated secret value")
        assert client.request("DELETE", "/system/secrets", json={"name": "binary"}).status_code == 200
    assert daemon.stop() == 0

    restarted = start_daemon(state_dir=state)
    restarted.wait_available("reader", 1)
    with restarted.client() as client:
        assert client.get("/system/secrets").json() == [{"name": "api-key", "namespace": "openfaas-fn"}]
        assert client.post("/function/reader").text == "second"
        assert client.put("/system/secrets", json={"name": "api-key", "value": "third"}).status_code == 200
        assert client.put("/system/functions", json=reader).status_code == 202
        wait_for(lambda: client.post("/function/reader").text == "third", 15, "the new secret value")
        assert client.request("DELETE", "/system/functions", json={"functionName": "reader"}).status_code == 202
        assert client.request("DELETE", "/system/secrets", json={"name": "api-key"}).status_code == 200
        assert client.get("/system/secrets").json() == []


def _tree(pid: int) -> set[int]:
    """Every live process below ``pid``: its descendants, and everything in the sessions of its direct
    children (replicas and their calls; a sandboxed replica starts sessions of its own below that)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                data = file.read()
        except OSError:
            continue
        parents[int(entry)] = int(data[data.rindex(b")") + 2 :].split(b" ")[1])
    found = {pid}
    while True:
        more = {child for child, parent in parents.items() if parent in found} - found
        if not more:
            break
        found |= more
    for child in [child for child, parent in parents.items() if parent == pid]:
        found.update(member for member, _ in session_members(child))
    return found - {pid}


def test_sigkill_of_the_daemon_then_restart_loses_nothing_and_leaves_no_replica(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    state = tmp_path / "kept"
    daemon = start_daemon(state_dir=state)
    with daemon.client() as client:
        assert client.post("/system/secrets", json={"name": "api-key", "value": "kept"}).status_code == 201
    daemon.deploy("echo", "cat")
    daemon.deploy("three", "cat", labels={"com.openfaas.scale.min": "3"})
    daemon.deploy("reader", READ_SECRET, secrets=["api-key"])
    daemon.deploy("sleeper", "sleep 30", envVars={"exec_timeout": "60s", "write_timeout": "60s"})
    daemon.wait_available("three", 3)
    with daemon.client() as client:
        assert client.post("/system/scale-function/echo", json={"replicas": 2}).status_code == 202
    daemon.wait_available("echo", 2)
    # A call in flight, so a function process (a grandchild of the daemon) is running too.
    in_flight = threading.Thread(target=lambda: _quiet_call(daemon, "sleeper"), daemon=True)
    in_flight.start()
    wait_for(lambda: any("sleep" in cmd for _, cmd in _commands(_tree(daemon.pid))), 10, "the sleeper call to run")
    before = {name: daemon.status(name) for name in ("echo", "three", "reader", "sleeper")}
    processes = _tree(daemon.pid)
    assert len(processes) >= 8, processes  # 2 + 3 + 1 + 1 watchdogs and the running call

    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    started = time.monotonic()
    wait_for(
        lambda: not [pid for pid in processes if process_alive(pid)], 15, lambda: f"orphans: {_commands(processes)}"
    )
    print(f"every replica process gone {time.monotonic() - started:.2f}s after the daemon's SIGKILL")

    restarted = start_daemon(state_dir=state)
    for name, status in before.items():
        restarted.wait_available(name, status["replicas"])
        after = restarted.status(name)
        for key in ("replicas", "envProcess", "labels", "secrets", "envVars", "createdAt"):
            assert after.get(key) == status.get(key), (name, key, after.get(key), status.get(key))
    with restarted.client() as client:
        assert client.post("/function/echo", content=b"back").text == "back"
        assert client.post("/function/reader").text == "kept"
        assert client.get("/system/secrets").json() == [{"name": "api-key", "namespace": "openfaas-fn"}]
    assert not set(_tree(restarted.pid)) & processes


def _quiet_call(daemon: Daemon, name: str) -> None:
    try:
        with daemon.client(timeout=60) as client:
            client.post(f"/function/{name}")
    except httpx.HTTPError:
        pass  # The daemon is killed under this call: it cannot be answered.


def _commands(pids: set[int]) -> list[tuple[int, str]]:
    found = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                found.append((pid, file.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found
