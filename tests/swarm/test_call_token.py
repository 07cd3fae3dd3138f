"""The call token on Swarm (faasd/calltoken.py, faasd/providers/swarm/spec.py): a real daemon, a real swarm.

A task's host-mode published port listens on every interface of the node: a call straight to it gets
403 without the token or with a wrong one, the same call through the gateway 200. The token reaches
the container as a Docker secret (never in the service's environment, never in a header or an
``Http_*`` variable the function sees) and is not reported as one of the function's secrets. The
value lives in the swarm (Docker config ``faasd-call-token``): a second daemon with its own state dir
adopts it and calls the same functions.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from faasd.providers.swarm.spec import CALL_TOKEN_CONFIG, CALL_TOKEN_PATH
from tests.daemon_fixtures import Daemon, StartDaemon
from tests.helpers import wait_for
from tests.swarm.conftest import SwarmHelper

pytestmark = pytest.mark.slow

WAIT_S = 30.0
HEADER = "X-Faasd-Call-Token"
FORBIDDEN = "Forbidden: this replica takes calls only from its faasd gateway"
NAME = "st-calltoken"


def published_ports(swarm: SwarmHelper, name: str) -> list[int]:
    """The host ports the service's running containers publish the watchdog on, on every IPv4 interface
    (IPv6 gets a port of its own).

    By service ID: a container of an earlier service of that name may still be stopping."""
    service_id = swarm.api.inspect_service(name)["ID"]
    ports = []
    for container in swarm.api.containers(filters={"label": f"com.docker.swarm.service.id={service_id}"}):
        for port in container.get("Ports") or []:
            if port.get("PrivatePort") == 8080 and port.get("PublicPort") and port.get("IP") == "0.0.0.0":
                ports.append(int(port["PublicPort"]))
    return sorted(set(ports))


def swarm_token(swarm: SwarmHelper) -> str:
    configs = swarm.api.configs(filters={"name": CALL_TOKEN_CONFIG})
    [config] = [c for c in configs if c["Spec"]["Name"] == CALL_TOKEN_CONFIG]
    return base64.b64decode(swarm.api.inspect_config(config["ID"])["Spec"]["Data"]).decode()


def _start(start_daemon: StartDaemon, **kwargs: object) -> Daemon:
    return start_daemon(args=("--provider", "swarm"), FAASD_READY_TIMEOUT="10s", **kwargs)


def test_published_ports_refuse_calls_that_do_not_come_through_the_gateway(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str, tmp_path
) -> None:
    swarm.track(NAME)
    daemon = _start(start_daemon)
    with daemon.client() as client:
        response = client.post(
            "/system/functions",
            # The image by ID: faasd/watchdog:latest is shared by every test session on this engine.
            json={"service": NAME, "image": base_image, "envProcess": "sh -c 'env; echo ---; cat'"},
        )
        assert response.status_code == 202, response.text
        daemon.wait_available(NAME, 1, WAIT_S)
        token = swarm_token(swarm)
        assert len(token) >= 32

        [port] = wait_for(lambda: published_ports(swarm, NAME), 10, "the task's published port")
        direct = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{direct}/_/health", timeout=5).status_code == 200
        for headers in ({}, {HEADER: "w" * len(token)}, {HEADER: token[:-1]}):
            answer = httpx.post(direct, content=b"direct", headers=headers, timeout=5)
            assert (answer.status_code, answer.text.strip()) == (403, FORBIDDEN), headers

        answer = client.post(f"/function/{NAME}", content=b"through", headers={HEADER: "client-guess-0123456789"})
        assert answer.status_code == 200, answer.text
        env, _, body = answer.text.partition("---\n")
        assert body == "through"
        assert token not in env and "client-guess" not in env and "FAASD_CALL_TOKEN" not in env.upper()
        assert f"call_token_file={CALL_TOKEN_PATH}" in env  # A path, not the token.

        service = swarm.api.inspect_service(NAME)["Spec"]
        assert not any(token in item for item in service["TaskTemplate"]["ContainerSpec"]["Env"])
        assert token not in str(service)
        described = client.get(f"/system/function/{NAME}").json()
        assert described.get("secrets") in (None, []), described
        assert "call_token_file" not in (described.get("envVars") or {}), described

    # A second daemon, its own state dir: it adopts the swarm's token and calls the same function.
    other = _start(start_daemon, state_dir=tmp_path / "other-state")
    other.wait_available(NAME, 1, WAIT_S)
    answer = httpx.post(f"{other.url}/function/{NAME}", content=b"from the other", timeout=10)
    assert (answer.status_code, answer.text.partition("---\n")[2]) == (200, "from the other")
