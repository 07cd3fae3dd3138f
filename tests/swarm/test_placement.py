"""How the daemon finds where it runs (faasd/providers/swarm/placement.py), against the real engine: the
containers are real, only what /proc would say inside them is handed in. The daemon really running in
such a container is tests/swarm/test_seed_quickstart.py."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from faasd.providers.swarm.placement import locate, network_ids
from tests.swarm.conftest import NETWORK, SESSION, TEST_LABEL, SwarmHelper

pytestmark = pytest.mark.slow


@pytest.fixture
def run_container(swarm: SwarmHelper, base_image: str) -> Iterator[Callable[[str], dict]]:
    """``run(network)`` -> the inspect document of a running container on ``network``; removed at the end."""
    started: list[str] = []

    def run(network: str) -> dict:
        name = f"faasd-place-{uuid.uuid4().hex[:8]}"
        command = ["docker", "run", "-d", "--name", name, "--label", f"{TEST_LABEL}={SESSION}", "--network", network]
        command += ["--no-healthcheck", "--entrypoint", "sleep", base_image, "120"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        started.append(name)
        return swarm.api.inspect_container(name)

    try:
        yield run
    finally:
        for name in started:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def _inside(container: dict) -> Callable[[str], str]:
    """What /proc/self/mountinfo says in ``container`` (only its /etc/hostname line matters)."""
    line = f"98 80 254:0 /var/lib/docker/containers/{container['Id']}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
    return lambda path: line if path == "/proc/self/mountinfo" else ""


def test_host_container_on_the_network_and_stranded_container(
    swarm: SwarmHelper, run_container: Callable[[str], dict], functions_network: str
) -> None:
    networks = network_ids(swarm.api, NETWORK)
    assert len(networks) == 2 and NETWORK in networks  # The name and the ID.

    # This test process: not in a container of this engine (a /.dockerenv of an outer one does not count).
    here = locate(swarm.api, networks=networks, network_name=NETWORK)
    assert (here.route, here.container) == ("host-port", "")

    on_network = run_container(NETWORK)
    hostname = on_network["Config"]["Hostname"]
    found = locate(swarm.api, networks=networks, network_name=NETWORK, read=_inside(on_network), hostname=hostname)
    assert (found.route, found.container, found.warning) == ("overlay-dns", on_network["Id"], False)
    # With no /etc mount to go by (another runtime), /.dockerenv and the default hostname (the short ID).
    by_name = locate(
        swarm.api, networks=networks, network_name=NETWORK, read=lambda p: "", exists=lambda p: True, hostname=hostname
    )
    assert by_name.container == on_network["Id"]
    # The ID of a real container whose hostname is not ours: not ours.
    other = locate(swarm.api, networks=networks, network_name=NETWORK, read=_inside(on_network), hostname="elsewhere")
    assert (other.route, other.container) == ("host-port", "")

    stranded = run_container("none")
    lost = locate(
        swarm.api,
        networks=networks,
        network_name=NETWORK,
        read=_inside(stranded),
        hostname=stranded["Config"]["Hostname"],
    )
    assert (lost.route, lost.container, lost.warning) == ("host-port", stranded["Id"], True)
