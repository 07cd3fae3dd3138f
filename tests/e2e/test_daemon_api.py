"""The daemon end to end: a real ``faasd up`` from the zipapp, the local backend, HTTP on 127.0.0.1.

Deploy -> invoke -> scale -> logs -> rm; the seed's routes (X-Function, Alexa intent); every error
status; auth; metrics against the calls made; restart; a killed replica replaced; SIGTERM drain.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import tarfile
import threading
import time
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_fixtures import StartDaemon, basic_auth, children
from tests.helpers import Load, in_thread, process_alive, scaled, session_members, wait_for
from tests.process_tree import cmdline, proc_table


def _archive(files: dict[str, bytes]) -> str:
    """A handler archive (base64 .tar.gz) with executable files."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o755
            tar.addfile(info, io.BytesIO(content))
    return base64.b64encode(raw.getvalue()).decode()


def _running(replica: int, command: str) -> bool:
    """Whether a process running ``command`` is in the session of replica ``replica``, or below it (a
    sandboxed replica's function runs in sessions of its own): the call reached the function."""
    table = proc_table()
    below, todo = set(), [replica]
    while todo:
        parent = todo.pop()
        children = [pid for pid, info in table.items() if info.ppid == parent and pid not in below]
        below.update(children)
        todo.extend(children)
    found = [cmdline(pid) for pid in below] + [line for _, line in session_members(replica)]
    return any(command in line for line in found)


# Each replica has its own directory: printing the lock file path names the replica that answered.
WHO_AM_I = "sh -c 'cat >/dev/null; printf %s \"$lock_file\"'"


def test_deploy_invoke_scale_logs_rm(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    with daemon.client() as client:
        answer = client.post("/function/echo", content=b"hello faasd")
        assert answer.status_code == 200 and answer.content == b"hello faasd"
        assert answer.headers["x-call-id"] and int(answer.headers["x-start-time"]) > 0
        assert float(answer.headers["x-duration-seconds"]) >= 0
        # Sub-paths and queries reach the function.
        daemon.deploy("env", "env")
        text = client.get("/function/env/some/path?a=1&b=2").text
        assert "Http_Path=/some/path" in text and "Http_Query=a=1&b=2" in text
        assert "Http_X_Forwarded_For=127.0.0.1" in text and "Http_X_Call_Id=" in text

        listed = {f["name"]: f for f in client.get("/system/functions").json()}
        assert listed["echo"]["replicas"] == 1 and listed["echo"]["availableReplicas"] == 1
        assert listed["echo"]["envProcess"] == "cat" and listed["echo"]["invocationCount"] == 1

        response = client.post("/system/scale-function/echo", json={"serviceName": "echo", "replicas": 3})
        assert response.status_code == 202, response.text
    daemon.wait_available("echo", 3)
    with daemon.client() as client:
        client.post(
            "/system/functions",
            json={"service": "who", "envProcess": WHO_AM_I, "labels": {"com.openfaas.scale.min": "3"}},
        )
    daemon.wait_available("who", 3)
    with daemon.client() as client:
        answered_by = Counter(client.post("/function/who", content=b"x").text for _ in range(30))
    assert len(answered_by) == 3, answered_by  # requests spread over every replica
    assert min(answered_by.values()) >= 5, answered_by

    with daemon.client() as client:
        lines = client.get("/system/logs", params={"name": "echo", "tail": "5"})
        assert lines.status_code == 200
        assert lines.headers["content-type"].startswith("application/x-ndjson")
        records = [json.loads(line) for line in lines.text.splitlines()]
        assert 0 < len(records) <= 5
        assert all(r["name"] == "echo" and r["instance"] and r["timestamp"] for r in records)
        assert any(
            "event=ready" in json.loads(line)["text"]
            for line in client.get("/system/logs", params={"name": "echo"}).text.splitlines()
        )

        response = client.post("/system/scale-function/echo", json={"replicas": 1})
        assert response.status_code == 202
    daemon.wait_available("echo", 1)
    with daemon.client() as client:
        assert client.request("DELETE", "/system/functions", json={"functionName": "echo"}).status_code == 202
        assert client.get("/system/function/echo").status_code == 404
        assert client.post("/function/echo", content=b"x").status_code == 404


def test_seed_routes_x_function_and_alexa_intent(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("catservice", "cat")
    daemon.deploy("HostnameIntent", "sh -c 'echo intent-answer'")
    alexa = {
        "session": {"sessionId": "s-1", "application": {"applicationId": "app-1"}},
        "request": {"type": "IntentRequest", "intent": {"name": "HostnameIntent"}},
    }
    with daemon.client(auth=False) as client:
        answer = client.post("/", headers={"X-Function": "catservice"}, content=b"via header")
        assert answer.status_code == 200 and answer.text == "via header"
        answer = client.post("/", json=alexa)
        assert answer.status_code == 200 and answer.text == "intent-answer\n"
        no_route = client.post("/", content=b"just a body")
        assert no_route.status_code == 400
        assert no_route.text == "Provide an x-function header or a valid Alexa SDK request.\n"
        not_alexa = dict(alexa, session={"sessionId": "", "application": {"applicationId": "a"}})
        assert client.post("/", json=not_alexa).status_code == 400
        assert client.post("/", headers={"X-Function": "nope"}, content=b"x").status_code == 404


def test_error_statuses(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(FAASD_READY_TIMEOUT="1s", FAASD_MAX_BODY_SIZE="64k", FAASD_UPSTREAM_TIMEOUT="2s")
    daemon.deploy("echo", "cat")
    daemon.deploy("slow", "sleep 5")  # No timeout of its own: the gateway's 2 s apply (tests/e2e/test_timeouts.py).
    with daemon.client() as client:
        unknown = client.post("/function/nope", content=b"x")
        assert (unknown.status_code, unknown.text) == (404, "Function not found: nope\n")
        assert client.post("/function/bad%20name", content=b"x").status_code == 400
        too_big = client.post("/function/echo", content=b"x" * 70_000)
        assert too_big.status_code == 413
        # Upstream timeout: the gateway answers 502 (as OpenFaaS), with a one-line reason.
        slow = client.post("/function/slow", content=b"x")
        assert slow.status_code == 502 and "did not answer within 2s" in slow.text
        # A call to a function at zero wakes it (scale from zero)...
        assert client.post("/system/scale-function/echo", json={"replicas": 0}).status_code == 202
        daemon.wait_available("echo", 0)
        assert client.post("/function/echo", content=b"woken").text == "woken"
        # ...but when no replica can become ready within the wait: 503 with the reason.
        handler = daemon.state_dir / "functions" / "broken" / "run.sh"
        client.post(
            "/system/functions",
            json={
                "service": "broken",
                "envProcess": "./run.sh",
                "handlerArchive": _archive({"run.sh": b"#!/bin/sh\ncat\n"}),
            },
        )
        daemon.wait_available("broken", 1)
        assert client.post("/system/scale-function/broken", json={"replicas": 0}).status_code == 202
        daemon.wait_available("broken", 0)
        handler.unlink()  # The function's code is gone from disk: its replicas cannot start.
        started = time.monotonic()
        none_ready = client.post("/function/broken", content=b"x")
        assert none_ready.status_code == 503 and "No ready replica" in none_ready.text, none_ready.text
        assert 0.9 <= time.monotonic() - started < scaled(5)
        # Management API validation.
        bad_json = client.post("/system/functions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
        missing = client.post("/system/functions", json={"envProcess": "cat"})
        assert missing.status_code == 400 and "service" in missing.text
        bad_name = client.post("/system/functions", json={"service": "a/b", "envProcess": "cat"})
        assert bad_name.status_code == 400 and "service" in bad_name.text
        no_process = client.post("/system/functions", json={"service": "x", "image": "alpine"})
        assert no_process.status_code == 400 and "envProcess" in no_process.text
        assert client.put("/system/functions", json={"service": "ghost", "envProcess": "cat"}).status_code == 404
        gone = client.request("DELETE", "/system/functions", json={"functionName": "ghost"})
        assert (gone.status_code, gone.text) == (404, "No such service found: ghost.\n")
        assert client.request("DELETE", "/system/functions", json={}).status_code == 400
        assert client.post("/system/scale-function/ghost", json={"replicas": 1}).status_code == 404
        assert client.post("/system/scale-function/echo", json={"replicas": "two"}).status_code == 400
        assert client.post("/system/scale-function/echo", json={"replicas": 1000}).status_code == 400
        assert client.get("/system/function/ghost").status_code == 404
        assert client.get("/system/logs").status_code == 400
        assert client.get("/system/logs", params={"name": "ghost"}).status_code == 404
        assert client.get("/system/nothing").status_code == 404
        assert client.patch("/system/functions").status_code == 405


def test_upstream_failure_is_502(start_daemon: StartDaemon) -> None:
    """The replica's connection dies mid-call (its watchdog is killed): 502 with a reason."""
    daemon = start_daemon()
    daemon.deploy("hang", "sleep 30", envVars={"exec_timeout": "60s", "write_timeout": "60s"})
    [replica] = daemon.replicas()

    def call() -> httpx.Response:
        with daemon.client() as client:
            return client.post("/function/hang", content=b"x")

    answer = in_thread(call)
    wait_for(lambda: _running(replica, "sleep 30"), 10, "the call to reach the function")
    os.kill(replica, signal.SIGKILL)
    answer = answer.result(timeout=scaled(10))
    assert answer.status_code == 502 and answer.text.count("\n") == 1, answer.text


def test_auth_on_system_routes_only(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    with daemon.client(auth=False) as client:
        for method, path in [
            ("GET", "/system/functions"),
            ("GET", "/system/info"),
            ("POST", "/system/functions"),
            ("GET", "/system/logs?name=echo"),
            ("GET", "/system/function/echo"),
        ]:
            denied = client.request(method, path)
            assert denied.status_code == 401, (method, path)
            assert denied.headers["www-authenticate"] == 'Basic realm="Restricted"'
        wrong = client.get("/system/functions", headers={"Authorization": basic_auth("wrong")})
        assert wrong.status_code == 401
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.post("/function/echo", content=b"public").text == "public"


def test_generated_password_is_kept_0600(start_daemon: StartDaemon, tmp_path) -> None:
    daemon = start_daemon(FAASD_PASSWORD="")
    password_file = daemon.state_dir / "password"
    password = password_file.read_text().strip()
    assert len(password) >= 32 and oct(password_file.stat().st_mode & 0o777) == "0o600"
    with httpx.Client(base_url=daemon.url) as client:
        assert client.get("/system/functions", auth=("admin", password)).status_code == 200
        assert client.get("/system/functions", auth=("admin", "guess")).status_code == 401
    assert str(password_file) in daemon.logs()


def test_metrics_match_the_calls(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    daemon.deploy("fails", "sh -c 'exit 3'")
    with daemon.client() as client:
        for _ in range(5):
            client.post("/function/echo", content=b"x")
        for _ in range(2):
            assert client.post("/function/fails").status_code == 500
        text = client.get("/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("gateway_function_invocation_total", (("code", "200"), ("function_name", "echo")))] == 5
    assert samples[("gateway_function_invocation_total", (("code", "500"), ("function_name", "fails")))] == 2
    assert samples[("gateway_functions_seconds_count", (("code", "200"), ("function_name", "echo")))] == 5
    assert samples[("gateway_function_invocation_started_total", (("function_name", "echo"),))] == 5
    assert samples[("gateway_service_count", (("function_name", "echo"),))] == 1
    assert samples[("faasd_function_inflight", (("function_name", "echo"),))] == 0


def test_restart_restores_every_function(start_daemon: StartDaemon, tmp_path) -> None:
    state = tmp_path / "kept-state"
    first = start_daemon(state_dir=state)
    first.deploy("echo", "cat")
    first.deploy("three", "cat", labels={"com.openfaas.scale.min": "3"})
    first.wait_available("three", 3)
    with first.client() as client:
        assert client.post("/system/scale-function/echo", json={"replicas": 2}).status_code == 202
    first.wait_available("echo", 2)
    assert first.stop() == 0
    second = start_daemon(state_dir=state)
    second.wait_available("echo", 2)
    second.wait_available("three", 3)
    with second.client() as client:
        assert client.post("/function/echo", content=b"back").text == "back"


def test_killed_replica_is_replaced_under_load(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat", labels={"com.openfaas.scale.min": "2"})
    daemon.wait_available("echo", 2)
    victim = daemon.replicas()[0]
    with Load(daemon.client, lambda c: c.post("/function/echo", content=b"x"), pause=0.01) as load:
        load.wait_ok(20)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in children(daemon.pid) and len(daemon.replicas()) == 2, 10, "replacement")
        daemon.wait_available("echo", 2)
        load.wait_ok(20)  # Calls go on succeeding after the replacement.
    assert "replica exited" in daemon.logs() or "exited" in daemon.logs()
    # Light load over a replica killed without warning: at most the calls in flight on it fail (every
    # outcome counts: a reset connection is a failed call, not a silently dead thread).
    assert load.failed <= 2, load.summary()


def test_sigterm_drains_a_call_in_flight(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("slow", "sh -c 'sleep 1; echo finished'")

    def call() -> httpx.Response:
        with daemon.client() as client:
            return client.post("/function/slow", content=b"x")

    [replica] = replicas = daemon.replicas()
    answer = in_thread(call)
    wait_for(lambda: _running(replica, "sleep 1"), 10, "the call to reach the function")
    assert daemon.stop() == 0
    answer = answer.result(timeout=scaled(10))
    assert answer.status_code == 200 and answer.text == "finished\n"
    for pid in replicas:
        wait_for(lambda pid=pid: not process_alive(pid), 10, f"replica {pid} to stop")
    assert "shutting down" in daemon.logs()


def test_startup_is_fast(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    print(f"faasd up -> ready line in {daemon.startup_s * 1000:.0f} ms")
    with daemon.client(auth=False) as client:
        assert client.get("/healthz").text == "OK\n"
    assert daemon.startup_s < scaled(5)


@pytest.mark.parametrize("body", [b"", b"x" * 300_000])
def test_large_and_empty_bodies_stream_both_ways(start_daemon: StartDaemon, body: bytes) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")

    def chunks():
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    with daemon.client() as client:
        assert client.post("/function/echo", content=body).content == body
        chunked = client.post("/function/echo", content=chunks())
        assert chunked.status_code == 200 and chunked.content == body


def test_info_and_namespaces(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        info = client.get("/system/info").json()
        assert info["provider"]["orchestration"] == "local" and info["version"]["release"]
        assert info["faasd"]["healthy"] is True
        assert client.get("/system/namespaces").json() == ["openfaas-fn"]


def test_keep_alive_traffic_does_not_hold_shutdown(start_daemon: StartDaemon) -> None:
    """SIGTERM while clients keep calling over keep-alive connections: the daemon exits once no call is
    in flight and the clients are gone -- hypercorn alone waited the whole shutdown_timeout (30 s)."""
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    stop = threading.Event()
    port = int(daemon.url.rsplit(":", 1)[1])
    message = b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 100

    answered: set[int] = set()

    def caller() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            while not stop.is_set():
                try:
                    sock.sendall(message)
                    if not sock.recv(65536):
                        return
                except OSError:
                    return  # The daemon closed the connection while shutting down: expected.
                answered.add(threading.get_ident())

    callers = [in_thread(caller, f"caller-{n}") for n in range(16)]
    wait_for(lambda: len(answered) == 16, 10, lambda: f"every caller to get answers ({len(answered)} did)")
    daemon.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.5)  # Scenario timing: the clients keep calling for a while after the signal.
    stop.set()
    for thread in callers:
        thread.result(timeout=scaled(10))
    code = daemon.proc.wait(scaled(30))
    elapsed = time.monotonic() - signalled
    assert code == 0
    assert elapsed < scaled(5), f"shutdown took {elapsed:.1f}s under keep-alive traffic"


def test_a_call_waiting_for_its_clients_body_does_not_hold_shutdown(start_daemon: StartDaemon) -> None:
    """A client that sent a head and part of its body, then stalls: SIGTERM does not wait shutdown_timeout
    for the rest (the calls actually running are what the drain waits for)."""
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    port = int(daemon.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        # The call has started (the gateway counts it in flight) and waits for the other 990 bytes.
        wait_for(lambda: daemon.metric("faasd_function_inflight", function_name="echo") == 1, 10, "the call")
        daemon.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = daemon.proc.wait(scaled(40))
        elapsed = time.monotonic() - signalled
    assert code == 0
    assert elapsed < scaled(5), f"shutdown took {elapsed:.1f}s with a call stalled on its client"
