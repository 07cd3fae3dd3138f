"""Prometheus metrics on ``metrics_port`` (docs/watchdog.md "Metrics"): the OpenFaaS watchdog names,
checked after a known sequence of calls."""

from __future__ import annotations

import os
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.helpers import wait_for

# /fail exits 1, /gate waits for the test's release file, /hang sleeps past exec_timeout, else echo.
SCRIPT = (
    'case "$Http_Path" in'
    " /fail) exit 1;;"
    ' /gate) touch "$DIR/started"; while [ ! -e "$DIR/release" ]; do sleep 0.01; done; echo released;;'
    " /hang) exec sleep 30;;"
    " *) cat;;"
    " esac"
)


def labels(**items: str) -> frozenset[tuple[str, str]]:
    return frozenset(items.items())


def test_metrics_after_a_known_sequence(start_watchdog, tmp_path: Path):
    watchdog = start_watchdog("sh -c " + shlex.quote(SCRIPT), max_inflight="1", DIR=str(tmp_path))
    for i in range(3):
        assert watchdog.request("POST", "/", content=str(i).encode()).status_code == 200
    assert watchdog.request("GET", "/fail").status_code == 500
    with ThreadPoolExecutor(1) as pool:
        gated = pool.submit(watchdog.request, "POST", "/gate")
        try:
            wait_for((tmp_path / "started").exists, 5.0, "the gated call never started")
            during = watchdog.metrics()
            assert during[("http_requests_in_flight", labels())] == 1
            assert watchdog.request("POST", "/").status_code == 429
        finally:
            (tmp_path / "release").touch()
        assert gated.result(timeout=10).status_code == 200

    metrics = watchdog.metrics()
    total = "http_requests_total"
    assert metrics[(total, labels(code="200", method="POST"))] == 4
    assert metrics[(total, labels(code="500", method="GET"))] == 1
    assert metrics[(total, labels(code="429", method="POST"))] == 1
    # Nothing else was answered with those codes.
    codes = {}
    for (name, label_set), value in metrics.items():
        if name == total:
            code = dict(label_set)["code"]
            codes[code] = codes.get(code, 0) + value
    assert codes.get("500") == 1 and codes.get("429") == 1, codes

    hist = "http_request_duration_seconds"
    for code, method, count in (("200", "POST", 4), ("500", "GET", 1), ("429", "POST", 1)):
        key = labels(code=code, method=method)
        assert metrics[(f"{hist}_count", key)] == count
        assert metrics[(f"{hist}_bucket", key | {("le", "+Inf")})] == count
        assert metrics[(f"{hist}_sum", key)] >= 0
    # The gated call took a while: it is not in the fastest buckets, but all POST 200s are under +Inf.
    assert metrics[(f"{hist}_sum", labels(code="200", method="POST"))] > 0
    assert metrics[("http_requests_in_flight", labels())] == 0
    # 3 echoes + /fail + /gate started a process; the 429 did not.
    assert metrics[("faasd_watchdog_process_starts_total", labels())] == 5


def test_in_flight_gauge_counts_concurrent_calls(start_watchdog, tmp_path: Path):
    script = f"touch {tmp_path}/started.$$; while [ ! -e {tmp_path}/release ]; do sleep 0.01; done"
    watchdog = start_watchdog("sh -c " + shlex.quote(script))
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(watchdog.request, "POST", "/") for _ in range(3)]
        try:
            wait_for(lambda: len(list(tmp_path.glob("started.*"))) == 3, 5.0, "three calls should be running")
            assert watchdog.metrics()[("http_requests_in_flight", labels())] == 3
        finally:
            (tmp_path / "release").touch()
        assert [call.result(timeout=10).status_code for call in calls] == [200] * 3
    assert watchdog.metrics()[("http_requests_in_flight", labels())] == 0


def test_kills_are_counted(start_watchdog, tmp_path: Path):
    watchdog = start_watchdog("sh -c " + shlex.quote(SCRIPT), exec_timeout="300ms", DIR=str(tmp_path))
    assert watchdog.request("GET", "/hang").status_code == 408
    metrics = watchdog.metrics()
    kills = {
        dict(label_set).get("reason"): value
        for (name, label_set), value in metrics.items()
        if name == "faasd_watchdog_process_kills_total"
    }
    assert sum(kills.values()) == 1, kills
    assert metrics[("http_requests_total", labels(code="408", method="GET"))] == 1


def test_metrics_content_type_and_404_elsewhere(start_watchdog):
    watchdog = start_watchdog("cat")
    response = httpx.get(watchdog.metrics_url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "http_requests_total" in response.text or "# TYPE http_requests_total" in response.text
    other = httpx.get(f"http://127.0.0.1:{watchdog.metrics_port}/not-metrics", timeout=5)
    assert other.status_code == 404


def test_metrics_port_0_turns_metrics_off(start_watchdog):
    watchdog = start_watchdog("cat", metrics_port="0")
    assert watchdog.request("POST", "/", content=b"x").status_code == 200
    # Only the invoke port listens (not the default 8081, not any other).
    listening = _listening_ports(watchdog.pid)
    assert listening == {watchdog.port}, f"listening on {listening}, expected only the invoke port"


def _listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state on sockets owned by ``pid``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
