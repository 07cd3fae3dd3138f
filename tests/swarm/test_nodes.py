"""Where a task on another node is called, why a task could not start there, which functions are spread
again, and what a deploy says when another node's engine cannot take the image (pure logic and a
missing engine: no swarm needed; tests/swarm/test_multinode.py runs it all on two real nodes)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
import trio

from faasd.config import ConfigError, DaemonConfig
from faasd.errors import InvalidRequest
from faasd.providers.swarm.client import DockerClient
from faasd.providers.swarm.engines import Engines
from faasd.providers.swarm.liveness import watch_remote
from faasd.providers.swarm.nodes import LOCALHOST, node_address, parse_nodes, rejection
from faasd.providers.swarm.rebalance import to_rebalance
from faasd.providers.swarm.tasks import Snapshot
from faasd.providers.swarm.views import Task, View, Views
from faasd.registry import EndpointRegistry


def _node(node_id: str, addr: str, state: str = "ready", availability: str = "active", manager: str = "") -> dict:
    node: dict = {
        "ID": node_id,
        "Description": {"Hostname": f"host-{node_id}"},
        "Status": {"State": state, "Addr": addr},
        "Spec": {"Availability": availability},
        "UpdatedAt": "2026-11-30T06:00:00Z",
    }
    if manager:
        node["ManagerStatus"] = {"Addr": manager, "Leader": True}
    return node


def test_a_task_is_called_at_its_nodes_address_and_the_own_node_stays_on_loopback() -> None:
    nodes = parse_nodes("n1", [_node("n1", "10.99.0.1"), _node("n2", "10.99.0.2")])
    assert nodes.host("n1") == LOCALHOST
    assert nodes.host("n2") == "10.99.0.2"
    assert nodes.host("") == LOCALHOST  # A task not placed yet: as before multi-node support.
    assert nodes.host("unknown") == ""  # A node removed meanwhile: its tasks are not called at all.
    assert nodes.knows("n2") and not nodes.knows("unknown")
    assert nodes.name("n2") == "host-n2"


def test_a_manager_reporting_an_unspecified_address_is_taken_at_its_advertised_one() -> None:
    assert node_address(_node("m", "0.0.0.0", manager="192.0.2.7:2377")) == "192.0.2.7"
    assert node_address(_node("m", "", manager="")) == ""
    assert node_address(_node("w", "192.0.2.8")) == "192.0.2.8"


def test_eligible_nodes_are_ready_and_active() -> None:
    nodes = parse_nodes(
        "a", [_node("a", "1.1.1.1"), _node("b", "2.2.2.2", state="down"), _node("c", "3.3.3.3", availability="drain")]
    )
    assert nodes.eligible() == {"a"}
    assert nodes.down() == {"b"}


def test_a_task_rejected_for_a_missing_image_names_its_node() -> None:
    nodes = parse_nodes("n1", [_node("n1", "10.99.0.1"), _node("n2", "10.99.0.2")])
    task = {"ID": "t" * 25, "NodeID": "n2", "Status": {"State": "rejected", "Err": "No such image: sha256:abc"}}
    reason = rejection(task, nodes)
    assert "cannot start on node host-n2" in reason and "No such image: sha256:abc" in reason
    assert "swarm_engines" in reason and "swarm_pull" in reason
    other = {**task, "Status": {"State": "failed", "Err": "task: non-zero exit (2)"}}
    assert rejection(other, nodes) == ""
    running = {**task, "Status": {"State": "running", "Err": "No such image"}}
    assert rejection(running, nodes) == ""


def _view(name: str, replicas: int, placed: list[str], ready: bool = True) -> View:
    view = View(name, replicas=replicas)
    for index, node in enumerate(placed):
        view.tasks[f"{name}-{index}"] = Task(f"{name}-{index}", index, "", ready=ready, node=node)
    return view


def test_only_settled_functions_piled_on_one_node_are_spread_again() -> None:
    views = [
        _view("piled", 4, ["n1"] * 4),
        _view("spread", 4, ["n1", "n2", "n1", "n2"]),
        _view("single", 1, ["n1"]),
        _view("starting", 4, ["n1"] * 3),  # One replica still missing: Swarm is placing it.
        _view("unready", 2, ["n1", "n1"], ready=False),
    ]
    assert to_rebalance(views, frozenset({"n1", "n2"})) == ["piled"]
    assert to_rebalance(views, frozenset({"n1"})) == []  # One node: nothing to spread over.


@pytest.mark.parametrize(
    "value",
    ["/run/docker.sock", "http://node2:2375", "unix:///ok.sock,node2:2375"],
)
def test_swarm_engines_refuses_what_is_no_engine_address(value: str) -> None:
    with pytest.raises(ConfigError, match="not a Docker engine address"):
        DaemonConfig.load(env={"FAASD_SWARM_ENGINES": value})


def test_swarm_engines_takes_a_list() -> None:
    config = DaemonConfig.load(env={"FAASD_SWARM_ENGINES": " unix:///run/faasd-node2.sock , tcp://10.0.0.5:2375 ,"})
    assert config.swarm_engines == ("unix:///run/faasd-node2.sock", "tcp://10.0.0.5:2375")


async def test_a_deploy_names_the_engine_it_could_not_copy_the_image_to(tmp_path: Path) -> None:
    missing = f"unix://{tmp_path}/no-such-engine.sock"
    engines = Engines([missing])
    with pytest.raises(InvalidRequest) as caught:
        with trio.fail_after(30):
            await engines.distribute(DockerClient(), "sha256:" + "0" * 64, "faasd/watchdog:latest")
    message = caught.value.message
    assert "faasd/watchdog:latest is not on every node" in message and missing in message, message


def test_an_unreachable_node_engine_gives_no_port_and_is_not_asked_again_at_once(tmp_path: Path) -> None:
    # Discovery asks for a node's engine to read a new replica's port; an engine that is down must not fail
    # the read (the port then comes from Swarm's report) nor be connected to again on every read.
    engines = Engines([f"unix://{tmp_path}/no-such-engine.sock"])
    assert engines.client_for("some-node-id") is None
    started = time.monotonic()
    for _ in range(100):
        assert engines.client_for("some-node-id") is None
    assert time.monotonic() - started < 0.5  # No connection attempt while MAP_AGAIN_S has not passed.
    engines.close()


async def _health_server(nursery: trio.Nursery, host: str) -> tuple[int, trio.CancelScope]:
    """A watchdog's health answer on ``host``: (port, a scope that stops it)."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    port = listeners[0].socket.getsockname()[1]
    scope = trio.CancelScope()

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.receive_some(4096)
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    async def serve() -> None:
        with scope:
            await trio.serve_listeners(answer, listeners)

    nursery.start_soon(serve)
    return port, scope


async def test_a_replica_on_another_node_that_stops_answering_is_unpublished_within_the_interval() -> None:
    # 127.0.0.2 is this machine too, but not 127.0.0.1: the address of "another node".
    registry = EndpointRegistry()
    views = Views(registry)
    async with trio.open_nursery() as nursery:
        views.nursery = nursery
        port, server = await _health_server(nursery, "127.0.0.2")
        service = {"ID": "s", "Spec": {"Name": "far", "Mode": {"Replicated": {"Replicas": 1}}}}
        task = {"ID": "t1", "NodeID": "n2", "Slot": 1, "Status": {"State": "running"}}
        views.apply("far", Snapshot(service, [task], {"t1": ("127.0.0.2", port)}), 0)
        # A task on the engine's own node is left to Docker's events: never probed once ready.
        near = {"ID": "s2", "Spec": {"Name": "near", "Mode": {"Replicated": {"Replicas": 1}}}}
        own = {"ID": "t2", "NodeID": "n1", "Slot": 1, "Status": {"State": "running"}}
        views.apply("near", Snapshot(near, [own], {"t2": ("127.0.0.2", port)}), 1)
        with trio.fail_after(5):
            await registry.wait_for("far")
            await registry.wait_for("near")
        nursery.start_soon(watch_remote, views, lambda: "n1", 0.1)
        await trio.sleep(0.3)
        assert [e.authority for e in registry.get("far")] == [f"127.0.0.2:{port}"]  # Answering: kept.
        server.cancel()
        stopped = trio.current_time()
        with trio.fail_after(5):
            while registry.get("far"):
                await trio.sleep(0.01)
        # A refused port: within one interval (0.1 s here), with room for a busy machine.
        assert trio.current_time() - stopped < 1.0
        await trio.sleep(0.3)
        assert registry.get("near")
        nursery.cancel_scope.cancel()
