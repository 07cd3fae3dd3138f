"""Per-function timeouts through a real daemon: a function's own ``exec_timeout``/``write_timeout`` raises
the gateway's wait above the global ``upstream_timeout`` (the rule is in :mod:`faasd.timeouts`).

The daemon's ``upstream_timeout`` is 1 s here so that "longer than the global timeout" takes a second or
two. The calls run side by side, each in its own thread, so the test lasts as long as the slowest one.
"""

from __future__ import annotations

import time

import httpx

from tests.daemon_fixtures import Daemon, StartDaemon
from tests.helpers import in_thread, scaled


def _timed_call(daemon: Daemon, name: str) -> tuple[int, str, float]:
    started = time.monotonic()
    with daemon.client(auth=False, timeout=scaled(30)) as client:
        response = client.post(f"/function/{name}", content=b"x")
    return response.status_code, response.text, time.monotonic() - started


def test_a_functions_own_timeout_raises_the_gateways(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(FAASD_UPSTREAM_TIMEOUT="1s", FAASD_MAX_UPSTREAM_TIMEOUT="20s")
    # Runs 2 s, allowed 5 s by its own exec_timeout: the gateway waits for it (502 at 1 s before).
    daemon.deploy("patient", "sh -c 'sleep 2; echo done'", envVars={"exec_timeout": "5s"})
    # The same with only write_timeout set (the watchdog's bound when exec_timeout is 0).
    daemon.deploy("written", "sh -c 'sleep 2; echo done'", envVars={"write_timeout": "5s"})
    # No timeout of its own: the global 1 s applies, and the gateway answers 502.
    daemon.deploy("plain", "sh -c 'sleep 2; echo done'")
    # Its own limit (1.5 s) ends it: the watchdog's 408 reaches the caller, not the gateway's 502.
    daemon.deploy("overrun", "sleep 30", envVars={"exec_timeout": "1500ms"})
    # The same, but a process that left the call's group holds its output open: the watchdog waits
    # FORCE_FINISH_AFTER_KILL_S (1 s) for it after the kill, then answers 408 anyway -- and the gateway
    # must still be waiting then (it gave up at the same moment when its grace was 1 s: a 502).
    daemon.deploy("escaped", "sh -c 'setsid sleep 30 & sleep 30'", envVars={"exec_timeout": "1500ms"})

    calls = {
        name: in_thread(lambda name=name: _timed_call(daemon, name))
        for name in ("patient", "written", "plain", "overrun", "escaped")
    }
    results = {name: call.result(timeout=scaled(40)) for name, call in calls.items()}

    for name in ("patient", "written"):
        status, text, took = results[name]
        assert (status, text) == (200, "done\n"), results[name]
        assert took >= 1.9, results[name]
    status, text, took = results["plain"]
    assert status == 502 and "did not answer within 1s" in text, results["plain"]
    assert 0.9 <= took < scaled(1.9), results["plain"]
    status, text, took = results["overrun"]
    assert status == 408 and "exceeded exec_timeout of 1.5s" in text, results["overrun"]
    assert 1.4 <= took < scaled(2.4), results["overrun"]
    status, text, took = results["escaped"]
    assert status == 408 and "exceeded exec_timeout of 1.5s" in text, results["escaped"]
    assert 2.4 <= took < scaled(3.4), results["escaped"]


def test_a_timeout_above_the_bound_is_refused_at_deploy(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(FAASD_UPSTREAM_TIMEOUT="1s", FAASD_MAX_UPSTREAM_TIMEOUT="10s")
    with daemon.client() as client:
        too_long = client.post(
            "/system/functions", json={"service": "long", "envProcess": "cat", "envVars": {"exec_timeout": "1h"}}
        )
        assert too_long.status_code == 400, too_long.text
        assert "max_upstream_timeout (10s)" in too_long.text and "3600s" in too_long.text, too_long.text
        malformed = client.post(
            "/system/functions", json={"service": "bad", "envProcess": "cat", "envVars": {"write_timeout": "soon"}}
        )
        assert malformed.status_code == 400 and "write_timeout" in malformed.text, malformed.text
        assert client.get("/system/functions").json() == []
        fits = client.post(
            "/system/functions", json={"service": "fits", "envProcess": "cat", "envVars": {"exec_timeout": "8s"}}
        )
        assert fits.status_code == 202, fits.text
    assert httpx.post(f"{daemon.url}/function/fits", content=b"ok").text == "ok"


def test_a_replicas_429_reaches_the_caller_through_the_gateway(start_daemon: StartDaemon) -> None:
    # max_inflight=1 on the one replica, three calls of 2 s at once: one runs, the watchdog refuses the
    # others, and the gateway relays that 429 and its reason (it neither retries nor turns it into a 502).
    daemon = start_daemon()
    daemon.deploy("single", "sh -c 'sleep 2; echo done'", envVars={"max_inflight": "1"})
    calls = [in_thread(lambda: _timed_call(daemon, "single")) for _ in range(3)]
    results = [call.result(timeout=scaled(20)) for call in calls]
    statuses = sorted(status for status, _, _ in results)
    assert statuses[0] == 200 and statuses[-1] == 429 and set(statuses) == {200, 429}, results
    refused = next(text for status, text, _ in results if status == 429)
    assert "Concurrent request limit exceeded" in refused, results
    metrics = httpx.get(f"{daemon.url}/metrics").text
    assert 'gateway_function_invocation_total{code="429",function_name="single"}' in metrics, metrics[-2000:]
