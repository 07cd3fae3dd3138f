"""The daemon with ``--provider swarm``: a real ``faasd up`` from the zipapp, a real swarm, HTTP on 127.0.0.1.

Deploy the OpenFaaS "catservice" and a Python function built with ``faasd build``, invoke through the
gateway, scale 1 -> 3 -> 1 under traffic (every task answers, no call fails), secrets and a read-only
root, delete; a hand-made labelled service is adopted; a restarted daemon with an empty state dir
rebuilds everything from the swarm; dockerd stopped -> degraded and 503 -> started -> recovered (on a
private dockerd the test starts and stops itself: the shared engine is never stopped).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import Daemon, StartDaemon
from tests.helpers import Load, must_run_everything, wait_for
from tests.reliability.ledger import Entry
from tests.swarm.conftest import SwarmHelper
from tests.swarm.private_dockerd import PrivateDockerd

pytestmark = pytest.mark.slow

SWARM = ("--provider", "swarm")
WAIT_S = 30.0
PYTHON_HANDLER = b'import sys\nprint("py:" + sys.stdin.read().upper(), end="")\n'


def _start(start_daemon: StartDaemon, swarm: SwarmHelper, state_dir: Path | None = None, **env: str) -> Daemon:
    return start_daemon(state_dir=state_dir, args=SWARM, **{"FAASD_READY_TIMEOUT": "10s", **env})


def _functions(daemon: Daemon) -> dict[str, dict]:
    with daemon.client() as client:
        response = client.get("/system/functions")
        assert response.status_code == 200, response.text
        return {f["name"]: f for f in response.json()}


def test_catservice_python_function_scale_secrets_delete(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str, pyz_python: str, faasd_pyz: Path, tmp_path: Path
) -> None:
    names = ("catservice", "st-python", "st-who", "st-secret")
    swarm.track(*names)
    swarm.track_secret("st-token")
    daemon = _start(start_daemon, swarm)
    with daemon.client() as client:
        assert client.get("/healthz").status_code == 200
        info = client.get("/system/info").json()
        assert info["provider"]["orchestration"] == "swarm"

        # The OpenFaaS catservice, exactly as written in the issue.
        response = client.post(
            "/system/functions", json={"service": "catservice", "image": "faasd/watchdog:latest", "envProcess": "cat"}
        )
        assert response.status_code == 202, response.text
        daemon.wait_available("catservice", 1, WAIT_S)
        answer = client.post("/function/catservice", content=b"hello swarm")
        assert (answer.status_code, answer.content) == (200, b"hello swarm")

        # A Python function: a directory with a handler, built into an image FROM the base image.
        source = tmp_path / "pyfunc"
        source.mkdir()
        (source / "handler.py").write_bytes(PYTHON_HANDLER)
        tag = "faasd/st-python:test"
        swarm.track_image(tag)
        built = subprocess.run(
            [pyz_python, str(faasd_pyz), "build", str(source), "--tag", tag],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert built.returncode == 0, built.stderr
        assert built.stdout.strip().startswith("sha256:")
        response = client.post(
            "/system/functions", json={"service": "st-python", "image": tag, "envProcess": "python3 handler.py"}
        )
        assert response.status_code == 202, response.text
        daemon.wait_available("st-python", 1, WAIT_S)
        answer = client.post("/function/st-python", content=b"shout")
        assert (answer.status_code, answer.text) == (200, "py:SHOUT")

        # Secrets from the daemon's store, mounted where OpenFaaS images look; read-only root with /tmp.
        assert client.post("/system/secrets", json={"name": "st-token", "value": "t0ken"}).status_code in (200, 201)
        response = client.post(
            "/system/functions",
            json={
                "service": "st-secret",
                "image": "faasd/watchdog:latest",
                "envProcess": "sh -c 'cat /var/openfaas/secrets/st-token; touch /x 2>/dev/null || echo :ro; "
                "echo ok > /tmp/f && cat /tmp/f'",
                "secrets": ["st-token"],
                "readOnlyRootFilesystem": True,
            },
        )
        assert response.status_code == 202, response.text
        daemon.wait_available("st-secret", 1, WAIT_S)
        answer = client.post("/function/st-secret")
        assert (answer.status_code, answer.text) == (200, "t0ken:ro\nok\n")

        # Scale 1 -> 3 -> 1 under traffic: every task answers, no call fails.
        response = client.post(
            "/system/functions", json={"service": "st-who", "image": "faasd/watchdog:latest", "envProcess": "hostname"}
        )
        assert response.status_code == 202, response.text
        daemon.wait_available("st-who", 1, WAIT_S)
        with Load(
            lambda: httpx.Client(base_url=daemon.url, timeout=10),
            lambda c: c.post("/function/st-who", content=b"x"),
            pause=0.005,
        ) as traffic:
            wait_for(lambda: sum(traffic.answers.values()) >= 10, 10, "calls before scaling")
            response = client.post("/system/scale-function/st-who", json={"serviceName": "st-who", "replicas": 3})
            assert response.status_code == 202, response.text
            started = time.monotonic()
            daemon.wait_available("st-who", 3, WAIT_S)
            print(f"scale 1->3: {time.monotonic() - started:.2f}s")
            before = Counter(traffic.answers)
            wait_for(
                lambda: sum(1 for host, n in traffic.answers.items() if n > before[host]) == 3,
                WAIT_S,
                lambda: f"calls on each of the 3 tasks (answers: {dict(traffic.answers)})",
            )
            hosts = {t["Status"]["ContainerStatus"]["ContainerID"][:12] for t in swarm.running_tasks("st-who")}
            assert set(traffic.answers) >= hosts, (traffic.answers, hosts)
            response = client.post("/system/scale-function/st-who", json={"serviceName": "st-who", "replicas": 1})
            assert response.status_code == 202
            daemon.wait_available("st-who", 1, WAIT_S)
            seen = sum(traffic.answers.values())
            wait_for(lambda: sum(traffic.answers.values()) >= seen + 20, 10, "calls after scaling down")
        assert traffic.failed == 0, traffic.summary()
        assert len(swarm.tasks("st-who")) == 1

        # Delete: gone from the gateway and from the swarm.
        assert client.request("DELETE", "/system/functions", json={"functionName": "catservice"}).status_code == 202
        assert client.post("/function/catservice", content=b"x").status_code == 404
        assert not swarm.service_exists("catservice")
        assert "catservice" not in _functions(daemon)


def _hand_made(swarm: SwarmHelper, base_image: str, name: str) -> None:
    labels = {"com.openfaas.function": name, "function": "true"}
    swarm.api.create_service(
        {
            "ContainerSpec": {"Image": base_image, "Env": ["fprocess=rev"], "Init": True, "Labels": labels},
            "Networks": [{"Target": "functions"}],
        },
        name=name,
        labels=labels,
        endpoint_spec={"Mode": "dnsrr", "Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]},
    )


def test_hand_made_service_and_restart_rebuild_from_swarm(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str, tmp_path: Path
) -> None:
    swarm.track("st-hand", "st-kept")
    daemon = _start(start_daemon, swarm)
    _hand_made(swarm, base_image, "st-hand")
    wait_for(lambda: "st-hand" in _functions(daemon), 15, "the hand-made service to be adopted")
    daemon.wait_available("st-hand", 1, WAIT_S)
    with daemon.client() as client:
        assert client.post("/function/st-hand", content=b"abc\n").text == "cba\n"
        client.post(
            "/system/functions",
            json={"service": "st-kept", "image": "faasd/watchdog:latest", "envProcess": "cat", "labels": {"k": "v"}},
        )
        client.post("/system/scale-function/st-kept", json={"replicas": 2})
    daemon.wait_available("st-kept", 2, WAIT_S)
    assert daemon.stop() == 0
    assert len(swarm.running_tasks("st-kept")) == 2  # Stopping the daemon stops no function.

    # A new daemon with an empty state dir: everything comes from the swarm.
    fresh = _start(start_daemon, swarm, state_dir=tmp_path / "empty-state")
    functions = _functions(fresh)
    assert {"st-hand", "st-kept"} <= set(functions)
    assert functions["st-kept"]["replicas"] == 2 and functions["st-kept"]["labels"] == {"k": "v"}
    assert functions["st-kept"]["image"] == "faasd/watchdog:latest"
    fresh.wait_available("st-kept", 2, WAIT_S)
    with fresh.client() as client:
        assert client.post("/function/st-kept", content=b"still").text == "still"
        assert client.post("/function/st-hand", content=b"xyz\n").text == "zyx\n"


@pytest.fixture
def private_dockerd(base_image: str) -> Iterator[PrivateDockerd]:
    """A dockerd and swarm of this test's own (tests/swarm/private_dockerd.py), with the base image."""
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        reason = "a private dockerd needs root and the dockerd binary (sh scripts/docker_env.sh setup)"
        if must_run_everything():
            pytest.fail(f"{reason}; under CI this test must run")
        pytest.skip(reason)
    engine = PrivateDockerd()
    try:
        engine.start()
        engine.init_swarm("faasd/watchdog:latest")  # By tag: `docker save <id>` would load it untagged.
        with contextlib.closing(engine.client()) as client:
            assert client.images.get("faasd/watchdog:latest").id == base_image
        yield engine
    finally:
        engine.close()


def test_dockerd_down_is_503_then_recovered(
    start_daemon: StartDaemon, private_dockerd: PrivateDockerd, ledger: Entry
) -> None:
    """dockerd stops under a running daemon (its own engine: the shared one is never stopped) -> degraded,
    503 everywhere, no crash -> dockerd starts again -> healthy, and the function answers again by itself.

    Calls go on throughout: every one is answered (200, or 502/503 while dockerd is away -- never a
    reset or a timeout), and what was acknowledged before the outage (a secret, a scale to 2) is there
    after it."""
    daemon = start_daemon(args=SWARM, FAASD_READY_TIMEOUT="2s", DOCKER_HOST=private_dockerd.host)
    with daemon.client() as client:
        deployed = client.post(
            "/system/functions", json={"service": "st-outage", "image": "faasd/watchdog:latest", "envProcess": "cat"}
        )
        assert deployed.status_code == 202, deployed.text
        daemon.wait_available("st-outage", 1, WAIT_S)
        assert client.post("/function/st-outage", content=b"up").text == "up"
        secret = client.post("/system/secrets", json={"name": "st-outage-key", "value": "kept"})
        assert secret.status_code == 201, secret.text
        scaled = client.post("/system/scale-function/st-outage", json={"replicas": 2})
        assert scaled.status_code == 202, scaled.text
        daemon.wait_available("st-outage", 2, WAIT_S)

        with Load(
            lambda: daemon.client(auth=False, timeout=30),
            lambda c: c.post("/function/st-outage", content=b"load"),
            workers=2,
            pause=0.02,
        ) as load:
            load.wait_ok(20)
            private_dockerd.stop()
            ledger.fault("dockerd stopped and started again (Swarm)")
            wait_for(lambda: client.get("/healthz").status_code == 503, 10, "/healthz to say degraded")
            health = client.get("/healthz")
            assert health.text.startswith("degraded:") and "dockerd" in health.text, health.text
            listing = client.get("/system/functions")
            assert listing.status_code == 503 and "dockerd" in listing.text, listing.text
            call = client.post("/function/st-outage", content=b"down")
            assert call.status_code == 503, call.text
            deploy = client.post("/system/functions", json={"service": "st-other", "envProcess": "cat"})
            assert deploy.status_code == 503, deploy.text
            assert daemon.proc.poll() is None, f"the daemon died with dockerd:\n{daemon.logs()[-3000:]}"

            private_dockerd.start()
            wait_for(lambda: client.get("/healthz").status_code == 200, 30, "/healthz to recover")
            daemon.wait_available("st-outage", 2, WAIT_S)
            # Swarm replaces the tasks dockerd stopped; the function answers again by itself.
            answers: list[str] = []

            def answered() -> bool:
                response = client.post("/function/st-outage", content=b"back")
                answers.append(f"{response.status_code} {response.text.strip()}")
                return response.status_code == 200 and response.text == "back"

            wait_for(answered, 10, lambda: f"a call to succeed again: {answers[-3:]}", 0.1)
            load.wait_ok(20, timeout=30)
        ledger.load(load)
        print(f"calls through the outage: {load.summary()}")
        assert set(load.outcomes) <= {"200", "502", "503"}, f"calls with no answer or another status: {load.summary()}"
        assert _functions(daemon)["st-outage"]["replicas"] == 2
        assert {"name": "st-outage-key", "namespace": "openfaas-fn"} in client.get("/system/secrets").json()
    assert "Traceback" not in daemon.logs(), daemon.logs()[-3000:]
