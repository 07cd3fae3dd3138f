"""The autoscaler end to end on Swarm (the scenario of tests/e2e/test_autoscale.py, on real services):
a load step makes the service's replicas grow, idle takes it to zero, and a burst of 50 calls to a
function at zero all succeed while one task starts."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.daemon_fixtures import StartDaemon
from tests.helpers import Load, wait_for
from tests.swarm.conftest import SwarmHelper

pytestmark = pytest.mark.slow

SLOW_ECHO = "sh -c 'cat; sleep 0.3'"
WAIT_S = 30.0


def test_load_step_grows_tasks_and_idle_scales_to_zero(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str
) -> None:
    swarm.track("as-slow")
    daemon = start_daemon(args=("--provider", "swarm"), FAASD_READY_TIMEOUT="20s")
    labels = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "4s"}
    daemon.deploy("as-slow", SLOW_ECHO, image=base_image, labels=labels, wait=False)
    daemon.wait_available("as-slow", 1, WAIT_S)
    step = time.monotonic()
    # ~30 calls in flight: 3-4x one replica's target of 9.
    with Load(
        lambda: daemon.client(auth=False), lambda c: c.post("/function/as-slow", content=b"x"), workers=30
    ) as load:
        wait_for(lambda: daemon.status("as-slow")["replicas"] >= 3, 15, "the service to grow under load")
        ordered_after = time.monotonic() - step
        wait_for(lambda: daemon.status("as-slow")["availableReplicas"] >= 3, WAIT_S, "3 tasks to serve")
        serving_after = time.monotonic() - step
        tasks = swarm.running_tasks("as-slow")
    assert load.failed == 0 and load.ok > 0, load.summary()
    assert len(tasks) >= 3, tasks
    print(f"swarm: scale order {ordered_after:.1f}s, 3 tasks serving {serving_after:.1f}s after a 3x step")
    wait_for(lambda: daemon.status("as-slow")["replicas"] == 0, WAIT_S, "scale to zero after idle")
    wait_for(lambda: not swarm.running_tasks("as-slow"), WAIT_S, "the tasks to stop")


def test_burst_to_a_function_at_zero_all_succeeds(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str
) -> None:
    swarm.track("as-echo")
    daemon = start_daemon(args=("--provider", "swarm"), FAASD_READY_TIMEOUT="20s")
    daemon.deploy("as-echo", "cat", image=base_image, wait=False)
    daemon.wait_available("as-echo", 1, WAIT_S)
    with daemon.client() as client:
        assert client.post("/system/scale-function/as-echo", json={"replicas": 0}).status_code == 202
    daemon.wait_available("as-echo", 0, WAIT_S)
    wait_for(lambda: not swarm.running_tasks("as-echo"), WAIT_S, "the task to stop")

    def call(index: int) -> tuple[int, bytes]:
        with httpx.Client(base_url=daemon.url, timeout=60) as client:
            answer = client.post("/function/as-echo", content=f"call {index}".encode())
            return answer.status_code, answer.content

    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(call, range(50)))
    elapsed = time.monotonic() - started
    assert results == [(200, f"call {i}".encode()) for i in range(50)]
    print(f"swarm: 50 calls to a function at zero, all 200 in {elapsed:.2f}s")
    assert daemon.status("as-echo")["replicas"] == 1  # one task started, no overshoot from the queued burst
