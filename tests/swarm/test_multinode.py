"""The Swarm backend on two real nodes: node 1 is this machine's dockerd (the swarm manager), node 2 a
second dockerd in its own network namespace joined as a worker (``scripts/docker_env.sh setup --nodes
2``, which ``scripts/test`` runs). Node 2 is left drained by the setup, so the single-node tests keep
one node; the ``two_nodes`` fixture makes it active for this module and drains it again after.

What is proved, with the daemon on the host (``host-port`` route) and no registry:

* a function's image reaches node 2 through its engine (``swarm_engines`` on deploy, ``faasd build-base
  --node-engine`` ahead of it), replicas spread over both nodes, and every replica answers calls, node
  2's at its node's address with the call token; a replica whose image is missing on its node makes
  the function failed, naming the node;
* a new replica on node 2 is called as soon as it serves, before Swarm's first health check reports its
  port (the daemon reads the port from node 2's engine);
* the autoscaler's new replicas land on both nodes;
* node 2's dockerd stopped under load: calls keep succeeding (at most 1 % fail), its replicas are
  unpublished at once and rescheduled on node 1; node 2 back: the replicas spread again.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest

from tests.daemon_fixtures import Daemon, StartDaemon
from tests.helpers import Load, wait_for
from tests.process_tree import orphans_to_init
from tests.reliability.ledger import Entry
from tests.swarm.conftest import DOCKER_ENV, SwarmHelper

pytestmark = pytest.mark.slow

NODE2_HOSTNAME = "faasd-node2"
NODE2_ENGINE = "unix:///run/faasd-node2.sock"
NODE2_ADDR = "10.99.0.2"
WAIT_S = 60.0
HOSTNAME = "cat /etc/hostname"
"""The function: answers with its container's hostname (its short container ID)."""


@dataclass(frozen=True)
class Nodes:
    node1: str
    node2: str


def _node_ids(swarm: SwarmHelper) -> Nodes | None:
    own = swarm.client.info()["Swarm"]["NodeID"]
    for node in swarm.api.nodes():
        if node["Description"]["Hostname"] == NODE2_HOSTNAME and node["ID"] != own:
            return Nodes(own, node["ID"])
    return None


def _node2(command: str, *, check: bool = True) -> None:
    """``docker_env.sh stop-node2`` / ``start-node2``. A dockerd started is no leak of the test: it is
    orphaned to init, not to the daemon fixture's leak check (the environment's teardown stops it)."""
    with orphans_to_init():
        subprocess.run(["sh", str(DOCKER_ENV), command], capture_output=True, timeout=120, check=check)


def _set_availability(swarm: SwarmHelper, node_id: str, availability: str) -> None:
    node = swarm.api.inspect_node(node_id)
    spec = {**node["Spec"], "Availability": availability}
    swarm.api.update_node(node_id, node["Version"]["Index"], spec)


@pytest.fixture(scope="module")
def node2_engine() -> Iterator[docker.APIClient]:
    api = docker.APIClient(base_url=NODE2_ENGINE, version="auto", timeout=60)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def two_nodes(swarm: SwarmHelper) -> Iterator[Nodes]:
    """Node 2 joined, ready and active for the test; drained again after it."""
    nodes = _node_ids(swarm)
    if nodes is None:
        pytest.fail(
            f"no second swarm node ({NODE2_HOSTNAME}): run 'sh {DOCKER_ENV} setup --nodes 2' (scripts/test does)"
        )
    if swarm.api.inspect_node(nodes.node2)["Status"]["State"] != "ready":
        _node2("start-node2", check=False)
        wait_for(lambda: swarm.api.inspect_node(nodes.node2)["Status"]["State"] == "ready", WAIT_S, "node 2 ready")
    _set_availability(swarm, nodes.node2, "active")
    try:
        yield nodes
    finally:
        _set_availability(swarm, nodes.node2, "drain")


def _task_nodes(swarm: SwarmHelper, name: str) -> dict[str, str]:
    """Running task's container hostname (its short ID) -> node ID."""
    return {
        task["Status"]["ContainerStatus"]["ContainerID"][:12]: task["NodeID"]
        for task in swarm.running_tasks(name)
        if (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
    }


def _remove_from_node2(engine: docker.APIClient, image: str) -> None:
    """Remove ``image`` from node 2, once the containers of earlier tests there have stopped (a removed
    service's containers stop in the background)."""

    def removed() -> bool:
        try:
            engine.remove_image(image, force=True)
        except docker.errors.ImageNotFound:
            return True
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # Used by a container still stopping.
                return False
            raise
        return True

    wait_for(removed, 30, f"{image[:19]} removed from node 2", interval=0.2)


def _start(start_daemon: StartDaemon) -> Daemon:
    return start_daemon(args=("--provider", "swarm", "--swarm-engines", NODE2_ENGINE), FAASD_READY_TIMEOUT="30s")


def _deploy_spread(daemon: Daemon, swarm: SwarmHelper, nodes: Nodes, name: str, image: str) -> dict[str, str]:
    """``name`` with 4 replicas, 2 on each node, all ready; its tasks' hostnames -> node."""
    swarm.track(name)
    labels = {"com.openfaas.scale.min": "4"}
    daemon.deploy(name, HOSTNAME, image=image, labels=labels, wait=False)
    with daemon.client() as client:
        assert client.post(f"/system/scale-function/{name}", json={"replicas": 4}).status_code == 202
    daemon.wait_available(name, 4, WAIT_S)
    tasks = _task_nodes(swarm, name)
    assert sorted(tasks.values()) == sorted([nodes.node1] * 2 + [nodes.node2] * 2), tasks
    return tasks


def test_four_replicas_spread_over_both_nodes_answer_from_both(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str, two_nodes: Nodes, node2_engine: docker.APIClient
) -> None:
    # The image is not on node 2: the deploy copies it there through node 2's engine.
    _remove_from_node2(node2_engine, base_image)
    daemon = _start(start_daemon)
    tasks = _deploy_spread(daemon, swarm, two_nodes, "mn-spread", base_image)
    assert node2_engine.inspect_image(base_image)["Id"] == base_image
    assert "image copied" in daemon.logs()

    with daemon.client(auth=False) as client:
        answers = [client.post("/function/mn-spread", content=b"").text.strip() for _ in range(120)]
    seen = {answer: answers.count(answer) for answer in set(answers)}
    assert set(seen) == set(tasks), f"answers {seen}, tasks {tasks}"
    print(f"answers per replica: {seen}")

    # Node 2's replicas were called at node 2's address, with the call token: without it they refuse.
    # (The port is read from node 2's engine: Swarm reports it in the task only after the first health check.)
    remote = [t for t in swarm.running_tasks("mn-spread") if t["NodeID"] == two_nodes.node2]
    container = node2_engine.inspect_container(remote[0]["Status"]["ContainerStatus"]["ContainerID"])
    port = int(container["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
    assert httpx.post(f"http://{NODE2_ADDR}:{port}/", content=b"", timeout=10).status_code in (401, 403)
    assert f"{NODE2_ADDR}:{port}" in daemon.logs()


def test_build_base_copies_the_image_to_another_nodes_engine(
    swarm: SwarmHelper, base_image: str, node2_engine: docker.APIClient, pyz_python: str, faasd_pyz: Path
) -> None:
    _remove_from_node2(node2_engine, base_image)
    command = [pyz_python, str(faasd_pyz), "build-base", "--node-engine", NODE2_ENGINE]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == base_image  # The zipapp did not change: the same image, copied.
    assert f"{NODE2_ENGINE}: copied" in result.stderr
    assert node2_engine.inspect_image(base_image)["Id"] == base_image
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert f"{NODE2_ENGINE}: already there" in again.stderr, again.stderr


def test_an_image_missing_on_a_node_fails_the_function_naming_the_node(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str, two_nodes: Nodes, node2_engine: docker.APIClient
) -> None:
    _remove_from_node2(node2_engine, base_image)
    swarm.track("mn-missing")
    # No swarm_engines: nothing copies the image to node 2, where the constraint puts the replica.
    daemon = start_daemon(args=("--provider", "swarm"), FAASD_READY_TIMEOUT="30s")
    constraints = [f"node.hostname == {NODE2_HOSTNAME}"]
    daemon.deploy("mn-missing", HOSTNAME, image=base_image, constraints=constraints, wait=False)
    state = wait_for(
        lambda: (s := daemon.status("mn-missing")["faasd"])["state"] == "failed" and s, 30, "the function to fail"
    )
    assert f"cannot start on node {NODE2_HOSTNAME}" in state["reason"], state
    assert "No such image" in state["reason"] and "swarm_engines" in state["reason"], state


def _started_at(container: dict) -> float:
    """A container's ``State.StartedAt`` (RFC 3339 with nanoseconds) as a Unix time."""
    stamp = container["State"]["StartedAt"].rstrip("Z")
    seconds, _, fraction = stamp.partition(".")
    return datetime.fromisoformat(seconds).replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")


def test_a_replica_on_another_node_is_called_before_swarms_first_health_check(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str, two_nodes: Nodes, node2_engine: docker.APIClient
) -> None:
    # Swarm reports a task's host-mode port in the task's status only once its first health check passed,
    # 2 s (the check's interval) after its container started; the manager's engine does not have another
    # node's containers. With node 2's engine in swarm_engines the daemon reads the port from it at once.
    swarm.track("mn-first")
    daemon = _start(start_daemon)
    constraints = [f"node.hostname == {NODE2_HOSTNAME}"]
    labels = {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"}
    daemon.deploy("mn-first", "cat", image=base_image, labels=labels, constraints=constraints, wait=False)
    with daemon.client(auth=False) as client:
        answer = client.post("/function/mn-first", content=b"first", timeout=WAIT_S)  # Held until it serves.
    answered = time.time()
    assert answer.status_code == 200 and answer.text == "first", answer.text
    (task,) = swarm.running_tasks("mn-first")
    assert task["NodeID"] == two_nodes.node2
    started = _started_at(node2_engine.inspect_container(task["Status"]["ContainerStatus"]["ContainerID"]))
    print(f"first answer {answered - started:.2f}s after node 2 started the container")
    assert answered - started < 1.5, f"{answered - started:.2f}s: the port waited for Swarm's first health check"


def test_the_autoscalers_new_replicas_land_on_both_nodes(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str, two_nodes: Nodes
) -> None:
    swarm.track("mn-slow")
    daemon = _start(start_daemon)
    daemon.deploy("mn-slow", "sh -c 'cat; sleep 0.3'", image=base_image, wait=False)
    daemon.wait_available("mn-slow", 1, WAIT_S)
    with Load(
        lambda: daemon.client(auth=False), lambda c: c.post("/function/mn-slow", content=b"x"), workers=30
    ) as load:
        wait_for(lambda: daemon.status("mn-slow")["availableReplicas"] >= 3, WAIT_S, "3 replicas serving")
        placed = _task_nodes(swarm, "mn-slow")
    assert load.failed == 0 and load.ok > 0, load.summary()
    assert set(placed.values()) == {two_nodes.node1, two_nodes.node2}, placed


def test_node2_lost_under_load_then_back(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str, two_nodes: Nodes, ledger: Entry
) -> None:
    daemon = _start(start_daemon)
    _deploy_spread(daemon, swarm, two_nodes, "mn-loss", base_image)
    spread = sorted([two_nodes.node1] * 2 + [two_nodes.node2] * 2)
    stopped = False
    try:
        with Load(
            lambda: daemon.client(auth=False),
            lambda c: c.post("/function/mn-loss", content=b""),
            workers=4,
            pause=0.01,
            max_seconds=150,
        ) as load:
            load.wait_ok(50)
            before = load.calls
            started = time.monotonic()
            _node2("stop-node2")
            stopped = True
            ledger.fault("a Swarm node's dockerd stopped, then started again")
            stop_s = time.monotonic() - started
            wait_for(lambda: daemon.status("mn-loss")["availableReplicas"] <= 2, 10, "node 2's replicas unpublished")
            unpublished_s = time.monotonic() - started
            wait_for(
                lambda: sorted(_task_nodes(swarm, "mn-loss").values()) == [two_nodes.node1] * 4,
                WAIT_S,
                "the 4 replicas on node 1",
            )
            daemon.wait_available("mn-loss", 4, WAIT_S)
            rescheduled_s = time.monotonic() - started
            lost_calls, lost_failed = load.calls - before, load.failed

            _node2("start-node2")
            stopped = False
            back = time.monotonic()
            wait_for(lambda: sorted(_task_nodes(swarm, "mn-loss").values()) == spread, WAIT_S, "spread again")
            daemon.wait_available("mn-loss", 4, WAIT_S)
            spread_s = time.monotonic() - back
            back_calls, back_failed = load.calls - before - lost_calls, load.failed - lost_failed
        ledger.load(load)
        print(
            f"node 2 stopped in {stop_s:.1f}s; its replicas unpublished {unpublished_s:.1f}s and 4 ready on node 1 "
            f"{rescheduled_s:.1f}s after the stop began, {lost_failed} of {lost_calls} calls failed meanwhile; "
            f"node 2 back: spread again in {spread_s:.1f}s, {back_failed} of {back_calls} calls failed meanwhile"
        )
        assert lost_failed <= 0.01 * lost_calls, load.summary()
        assert back_failed <= 0.01 * back_calls, load.summary()
        assert "replicas spread again" in daemon.logs()
    finally:
        if stopped:
            _node2("start-node2", check=False)
