"""The daemon itself runs as a Swarm service on the functions network, started with the command of
docs/swarm.md ("As a Swarm service"): it finds by itself that it runs there (swarm_route = auto ->
overlay-dns), reaches its functions at their addresses on the overlay, and does not take its own
service -- attached to that network like a function -- for one. The test talks only to the daemon's
host-mode published port on 127.0.0.1."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.helpers import free_port, wait_for
from tests.swarm.conftest import SwarmHelper

pytestmark = pytest.mark.slow

PASSWORD = "overlay-test-password"


def _docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def test_daemon_as_a_swarm_service_on_the_overlay(swarm: SwarmHelper, base_image: str, functions_network: str) -> None:
    swarm.track("st-faasd", "st-ovl")
    port = free_port()
    # As in docs/swarm.md, with a tmpfs instead of a named volume (nothing may outlive the test).
    _docker(
        "service", "create", "-d", "-q", "--no-resolve-image", "--name", "st-faasd",
        "--network", "functions", "--constraint", "node.role==manager", "--no-healthcheck", "--init",
        "--mount", "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock",
        "--mount", "type=tmpfs,dst=/var/lib/faasd",
        "--env", "FAASD_PROVIDER=swarm", "--env", "FAASD_BIND=0.0.0.0", "--env", "FAASD_STATE_DIR=/var/lib/faasd",
        "--env", f"FAASD_PASSWORD={PASSWORD}",
        "--publish", f"mode=host,published={port},target=8080",
        "--entrypoint", "python3 /faasd.pyz", base_image, "up",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 30, "the daemon service to answer /healthz", 0.1)
    with httpx.Client(base_url=url, auth=("admin", PASSWORD), timeout=30) as client:
        response = client.post(
            "/system/functions", json={"service": "st-ovl", "image": "faasd/watchdog:latest", "envProcess": "cat"}
        )
        assert response.status_code == 202, response.text
        answer = client.post("/function/st-ovl", content=b"via the overlay")  # Held until a replica is ready.
        assert (answer.status_code, answer.content) == (200, b"via the overlay")
        listed = {f["name"] for f in client.get("/system/functions").json()}
        assert "st-ovl" in listed and "st-faasd" not in listed  # Its own service is no function.
        assert client.get("/system/function/st-faasd").status_code == 404
    spec = swarm.api.inspect_service("st-ovl")["Spec"]
    assert spec["EndpointSpec"] == {"Mode": "dnsrr"}  # No published port in this mode.
    result = subprocess.run(
        ["docker", "service", "logs", "--raw", "st-faasd"], capture_output=True, text=True, timeout=60
    )
    logs = result.stdout + result.stderr
    assert "route=overlay-dns swarm_route=auto" in logs, logs[-3000:]
