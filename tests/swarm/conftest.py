"""Fixtures for the Swarm backend's tests: a real dockerd, a real swarm, real images.

* ``docker_env`` (session): dockerd answering and a swarm manager. ``scripts/test`` sets that up
  (``scripts/docker_env.sh setup --nodes 2``: with a second node, drained but for
  ``test_multinode.py``); when this session finds neither, it runs the same script and tears down,
  at the end, only what that call started.
* ``base_image`` (session): ``python3 dist/faasd.pyz build-base`` -- the very zipapp under test goes
  into the image; rebuilt only when the zipapp changed (the image is labelled with its sha256).
* ``swarm`` (per test): a Docker client, plus cleanup. Everything a test creates is removed when it
  ends -- services carrying the session's ``faasd.test`` label or a name the test registered with
  :meth:`SwarmHelper.track`, and Docker secrets with that label -- without waiting for their
  containers (≈ 3.3 s each). At the end of the session the sweep waits, in parallel, until no
  container of the session is left, removes the handler archives' Docker configs of the functions
  tracked, the call token's Docker secrets and config when nothing uses them any more
  (:func:`_sweep_call_token`), then the functions network if the session created it.
  "Leave no services, networks or containers behind."

Traffic from the tests goes to 127.0.0.1 only: replicas through their host-mode published ports,
the daemon on its loopback port.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from faasd.providers.swarm.handler import LABEL_HANDLER
from faasd.providers.swarm.spec import (
    CALL_TOKEN_CONFIG,
    CALL_TOKEN_LABEL,
    LABEL_OWNER,
    LABEL_SECRET,
    SECRET_OWNER,
    function_name,
)
from tests.daemon_fixtures import faasd_cli, start_daemon  # noqa: F401 -- the daemon fixtures, for the tests
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKER_ENV = ROOT / "scripts" / "docker_env.sh"
SESSION = uuid.uuid4().hex[:10]
"""Value of the ``faasd.test`` label on what this session creates."""
TEST_LABEL = "faasd.test"
NETWORK = "functions"
CONTAINERS_GONE_TIMEOUT_S = 60.0

_tracked_names: set[str] = set()
_tracked_images: set[str] = set()
_tracked_secrets: set[str] = set()


def _docker_ready() -> bool:
    try:
        client = docker.from_env(timeout=10)
        try:
            swarm = client.info().get("Swarm") or {}
        finally:
            client.close()
    except docker.errors.DockerException:
        return False
    return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))


@pytest.fixture(scope="session")
def docker_env() -> Iterator[None]:
    """dockerd up and a swarm manager; set up (and later torn down) here only when missing."""
    started_here = False
    if not _docker_ready():
        result = subprocess.run(
            ["sh", str(DOCKER_ENV), "setup", "--nodes", "2"], capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            pytest.fail(f"scripts/docker_env.sh setup failed:\n{result.stdout}\n{result.stderr}")
        started_here = True
    client = docker.from_env(timeout=60)
    network_existed = bool(client.networks.list(names=[NETWORK]))
    try:
        yield
    finally:
        _final_sweep(client, remove_network=not network_existed)
        client.close()
        if started_here:
            subprocess.run(["sh", str(DOCKER_ENV), "teardown"], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def base_image(docker_env: None, pyz_python: str, faasd_pyz: Path) -> str:
    """ID of faasd/watchdog:latest holding the zipapp under test (``faasd build-base``)."""
    started = time.monotonic()
    result = subprocess.run(
        [pyz_python, str(faasd_pyz), "build-base"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")},
    )
    if result.returncode != 0:
        pytest.fail(f"faasd build-base failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    image_id = result.stdout.strip().splitlines()[-1]
    assert image_id.startswith("sha256:"), result.stdout
    print(f"base image {image_id[:19]} in {time.monotonic() - started:.2f}s")
    return image_id


class SwarmHelper:
    """A Docker client for assertions, and what the test wants removed when it ends."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.api = client.api
        self.labels = {TEST_LABEL: SESSION}

    def track(self, *names: str) -> None:
        """Remove the services called ``names`` when the test ends (services a daemon created)."""
        _tracked_names.update(names)

    def track_image(self, tag: str) -> None:
        _tracked_images.add(tag)

    def track_secret(self, *names: str) -> None:
        """Remove the Docker secrets a daemon made from its secrets ``names`` (the daemon's own are not
        labelled as the session's, and its services are removed behind its back)."""
        _tracked_secrets.update(names)

    def tasks(self, name: str, desired: str = "running") -> list[dict]:
        return self.api.tasks(filters={"service": name, "desired-state": desired})

    def running_tasks(self, name: str) -> list[dict]:
        return [t for t in self.tasks(name) if t["Status"]["State"] in ("starting", "running")]

    def service_exists(self, name: str) -> bool:
        try:
            return self.api.inspect_service(name)["Spec"]["Name"] == name
        except docker.errors.NotFound:
            return False

    def exec(self, container_id: str, *command: str) -> tuple[int, str]:
        """Run ``command`` in a container; (exit code, combined output)."""
        result = self.client.containers.get(container_id).exec_run(list(command))
        return result.exit_code, result.output.decode(errors="replace")


@pytest.fixture
def swarm(docker_env: None) -> Iterator[SwarmHelper]:
    client = docker.from_env(timeout=60)
    helper = SwarmHelper(client)
    try:
        yield helper
    finally:
        _remove_services(client)
        client.close()


@pytest.fixture
def functions_network(swarm: SwarmHelper) -> str:
    """The functions network, created as the README does (overlay, attachable) when missing -- a daemon
    in a container or a Swarm service must be attached to it before the daemon could make it. The
    session's sweep removes it at the end if the session was the one to make it."""
    if not swarm.api.networks(names=[NETWORK]):
        result = subprocess.run(
            ["docker", "network", "create", "--driver", "overlay", "--attachable", NETWORK],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 or "already exists" in result.stderr, result.stderr
    return NETWORK


def _ours(service: dict) -> bool:
    spec = service.get("Spec") or {}
    labels = spec.get("Labels") or {}
    return labels.get(TEST_LABEL) == SESSION or spec.get("Name") in _tracked_names


def _remove_services(client: docker.DockerClient) -> None:
    """Remove this session's services now (their containers stop in the background)."""
    for service in client.api.services():
        if _ours(service):
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_service(service["ID"])


def _final_sweep(client: docker.DockerClient, *, remove_network: bool) -> None:
    _remove_services(client)

    def leftovers() -> list[str]:
        found = []
        for container in client.api.containers(all=True):
            labels = container.get("Labels") or {}
            name = labels.get("com.docker.swarm.service.name")
            if labels.get(TEST_LABEL) == SESSION or (name and name in _tracked_names):
                found.append(container["Id"])
        return found

    # Swarm removes a removed service's containers itself once they stopped (≈ 3.3 s with init).
    wait_for(lambda: not leftovers(), CONTAINERS_GONE_TIMEOUT_S, lambda: f"containers left: {leftovers()}", 0.2)
    for secret in client.api.secrets(filters={"label": f"{TEST_LABEL}={SESSION}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_secret(secret["ID"])
    for secret in client.api.secrets(filters={"label": f"{LABEL_OWNER}={SECRET_OWNER}"}):
        if ((secret.get("Spec") or {}).get("Labels") or {}).get(LABEL_SECRET) in _tracked_secrets:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_secret(secret["ID"])
    _sweep_handler_configs(client)
    _sweep_call_token(client)
    for tag in _tracked_images:
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(tag, force=True)
    if remove_network:
        for network in client.api.networks(names=[NETWORK]):
            # A network is in use until every task's container is gone; retry for a short while.
            wait_for(lambda network=network: _try_remove_network(client, network["Id"]), 20, "network removal", 0.2)


def _sweep_handler_configs(client: docker.DockerClient) -> None:
    """Remove the handler archives' Docker configs of the session's functions (labelled as the session's
    by a provider of the tests, or of a function tracked): a test that failed before removing its
    function leaves them."""
    for config in client.api.configs(filters={"label": LABEL_HANDLER}):
        labels = (config.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_HANDLER) in _tracked_names or labels.get(TEST_LABEL) == SESSION:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_config(config["ID"])


def _sweep_call_token(client: docker.DockerClient) -> None:
    """Remove the call token's Docker secrets no service uses (Docker refuses the others: another
    session's functions), then its Docker config once no function at all is left on the swarm: a
    daemon of a session still running needs it to call the functions it made."""
    for secret in client.api.secrets(filters={"label": CALL_TOKEN_LABEL}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_secret(secret["ID"])
    if client.api.secrets(filters={"label": CALL_TOKEN_LABEL}):
        return
    if any(function_name(service) for service in client.api.services()):
        return
    for config in client.api.configs(filters={"name": CALL_TOKEN_CONFIG}):
        if (config.get("Spec") or {}).get("Name") == CALL_TOKEN_CONFIG:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_config(config["ID"])


def _try_remove_network(client: docker.DockerClient, network_id: str) -> bool:
    try:
        client.api.remove_network(network_id)
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError:
        return False
    return True
