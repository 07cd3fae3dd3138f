"""The autoscaler end to end on the local backend: load makes replicas grow, idle takes them to zero,
and a burst of calls to a function at zero all succeed (held while one replica starts)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_fixtures import StartDaemon
from tests.helpers import Load, wait_for

SLOW_ECHO = "sh -c 'cat; sleep 0.3'"


def test_load_step_grows_replicas_and_idle_scales_to_zero(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    labels = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "4s"}
    daemon.deploy("slow", SLOW_ECHO, labels=labels)
    step = time.monotonic()
    # ~30 calls in flight: 3-4x one replica's target of 9.
    with Load(lambda: daemon.client(auth=False), lambda c: c.post("/function/slow", content=b"x"), workers=30) as load:
        wait_for(lambda: daemon.status("slow")["replicas"] >= 3, 10, "replicas to grow under load")
        grew_after = time.monotonic() - step
    assert load.failed == 0 and load.ok > 0, load.summary()
    print(f"scale order for a 3x step within {grew_after:.1f}s")
    with daemon.client() as client:
        scaling = client.get("/system/scaling/slow").json()
    assert scaling["settings"]["zero"] is True and scaling["reason"]
    # No calls now: after zero-duration (4 s) the function goes to zero.
    wait_for(lambda: daemon.status("slow")["replicas"] == 0, 15, "scale to zero after idle")
    daemon.wait_available("slow", 0)


def test_burst_to_a_function_at_zero_all_succeeds(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    with daemon.client() as client:
        assert client.post("/system/scale-function/echo", json={"replicas": 0}).status_code == 202
    daemon.wait_available("echo", 0)

    def call(index: int) -> tuple[int, bytes]:
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            answer = client.post("/function/echo", content=f"call {index}".encode())
            return answer.status_code, answer.content

    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(call, range(50)))
    elapsed = time.monotonic() - started
    assert results == [(200, f"call {i}".encode()) for i in range(50)]
    print(f"50 calls to a function at zero: all 200 in {elapsed:.2f}s")
    status = daemon.status("echo")
    assert status["replicas"] == 1  # one replica started, no overshoot from the queued burst
    with daemon.client() as client:
        text = client.get("/metrics").text
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if not s.labels or s.labels.get("function_name") == "echo"
    }
    assert samples["faasd_cold_start_seconds_count"] == 1
    assert samples["faasd_held_requests"] == 0


def test_min_equal_max_is_left_alone(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("fixed", SLOW_ECHO, labels={"com.openfaas.scale.min": "2", "com.openfaas.scale.max": "2"})
    daemon.wait_available("fixed", 2)
    with daemon.client() as client:
        scaling = client.get("/system/scaling/fixed").json()
        assert scaling["settings"]["enabled"] is False
        bad = client.post(
            "/system/functions",
            json={"service": "bad", "envProcess": "cat", "labels": {"com.openfaas.scale.max": "many"}},
        )
        assert bad.status_code == 400 and "com.openfaas.scale.max" in bad.text
