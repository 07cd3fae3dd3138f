"""A function whose calls are CPU-heavy runs in the idle CPU class; one whose calls are light does not,
and a heavy one whose calls got light is ordinary again (faasd.sandbox.cpuclass, docs/sandbox.md)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from faasd.sandbox import cgroups
from faasd.sandbox.cpuclass import INTERVAL_S, WINDOW_INTERVALS
from tests.daemon_fixtures import Daemon, MakeCli, StartDaemon
from tests.helpers import must_run_everything, scaled, wait_for

SPIN = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
"""About 0.15 s of one CPU in ``sh`` (dash): a heavy call."""
SWITCHABLE = f"sh -c 'case \"$Http_Path\" in */spin) {SPIN};; esac; cat'"
"""Heavy when called at ``/spin``, a ``cat`` otherwise."""


def _cpu_idle(daemon: Daemon, function: str) -> list[str]:
    """``cpu.idle`` of each replica cgroup of ``function`` (one per replica)."""
    prefix = f"{cgroups.base_name(str(daemon.state_dir))}.{function}-"
    mounts = cgroups.mounts_from_mountinfo(Path("/proc/self/mountinfo").read_text())
    v1 = [mount.point for mount in mounts if mount.version == 1 and "cpu" in mount.controllers]
    cpu = (v1 or [mount.point for mount in mounts if mount.version == 2])[0]
    return sorted(entry.joinpath("cpu.idle").read_text().strip() for entry in Path(cpu).rglob(prefix + "*"))


def _classes(daemon: Daemon, function: str) -> list[str]:
    """The classes the daemon logged for ``function``, in order."""
    return re.findall(rf'event="function CPU class" function={function} cpu_class="?([a-z]+)', daemon.logs())


def _call(client: httpx.Client, path: str, count: int) -> None:
    for _ in range(count):
        answer = client.post(path, content=b"x")
        assert (answer.status_code, answer.content) == (200, b"x"), answer.text


@pytest.fixture
def daemon(start_daemon: StartDaemon) -> Daemon:
    daemon = start_daemon()
    cgroup_info = daemon.sandbox()["cgroups"]
    if cgroup_info.get("cpu_classes") != "on":
        reason = f"no CPU classes here: {cgroup_info.get('cpu_classes')} ({cgroup_info.get('reason')})"
        if must_run_everything():
            pytest.fail(f"{reason}; under CI this test must run")
        pytest.skip(reason)
    return daemon


def test_heavy_calls_put_a_function_in_the_idle_class_and_light_calls_take_it_out(daemon: Daemon) -> None:
    daemon.deploy("switch", SWITCHABLE)
    daemon.deploy("light", "cat")
    assert _cpu_idle(daemon, "switch") == ["0"]
    with daemon.client(auth=False, timeout=30) as client:
        _call(client, "/function/switch/spin", 3)  # ~0.45 s, most of a CPU: heavy within two intervals.
        wait_for(lambda: _cpu_idle(daemon, "switch") == ["1"], scaled(5), "the heavy function in the idle class")
        assert _classes(daemon, "switch") == ["batch"]
        time.sleep(INTERVAL_S * 3)  # Not called: nothing to judge by, it stays batch.
        assert _cpu_idle(daemon, "switch") == ["1"]
        deadline = time.monotonic() + scaled(10)
        while _cpu_idle(daemon, "switch") != ["0"] and time.monotonic() < deadline:
            _call(client, "/function/switch/rest", 50)  # Light calls, for at least WINDOW_INTERVALS.
            _call(client, "/function/light", 50)
        assert _cpu_idle(daemon, "switch") == ["0"], f"still batch after {WINDOW_INTERVALS} intervals of light calls"
    assert _classes(daemon, "switch") == ["batch", "ordinary"]
    assert _classes(daemon, "light") == [] and _cpu_idle(daemon, "light") == ["0"]


def test_status_says_cpu_classes_are_on(daemon: Daemon, faasd_cli: MakeCli) -> None:
    status = faasd_cli(daemon).run("status").ok()
    assert "CPU classes\ton" in status.out, status.out


def test_a_new_replica_of_a_batch_function_joins_its_class(daemon: Daemon) -> None:
    """The class is the function's: a replica started after it was decided gets it too."""
    daemon.deploy("heavy", f"sh -c '{SPIN}; cat'")
    with daemon.client(auth=False, timeout=30) as client:
        _call(client, "/function/heavy", 3)
        wait_for(lambda: _cpu_idle(daemon, "heavy") == ["1"], scaled(5), "the heavy function in the idle class")
    with daemon.client() as client:
        response = client.post("/system/scale-function/heavy", json={"serviceName": "heavy", "replicas": 2})
        assert response.status_code in (200, 202), response.text
    daemon.wait_available("heavy", 2)
    wait_for(lambda: _cpu_idle(daemon, "heavy") == ["1", "1"], scaled(5), "both replicas in the idle class")


def test_a_label_pins_a_function_to_a_class(daemon: Daemon) -> None:
    """``com.faasd.cpu-class``: ``batch`` is in the idle class before any call; ``ordinary`` never, however
    heavy its calls; anything else is a 400 naming the label."""
    daemon.deploy("background", "cat", labels={"com.faasd.cpu-class": "batch"})
    daemon.deploy("pinned", f"sh -c '{SPIN}; cat'", labels={"com.faasd.cpu-class": "ordinary"})
    wait_for(lambda: _cpu_idle(daemon, "background") == ["1"], scaled(5), "the batch function in the idle class")
    with daemon.client(auth=False, timeout=30) as client:
        _call(client, "/function/pinned", 4)
    time.sleep(INTERVAL_S * 3)
    assert _cpu_idle(daemon, "pinned") == ["0"] and _classes(daemon, "pinned") == []
    with daemon.client() as client:
        spec = {"service": "odd", "envProcess": "cat", "labels": {"com.faasd.cpu-class": "idle"}}
        response = client.post("/system/functions", json=spec)
    assert response.status_code == 400 and "com.faasd.cpu-class" in response.text, response.text


def test_cpu_classes_can_be_turned_off(start_daemon: StartDaemon, faasd_cli: MakeCli) -> None:
    daemon = start_daemon(FAASD_CPU_CLASSES="false")
    assert daemon.sandbox()["cgroups"]["cpu_classes"] == "off: turned off (cpu_classes = false)"
    daemon.deploy("heavy", f"sh -c '{SPIN}; cat'")
    with daemon.client(auth=False, timeout=30) as client:
        _call(client, "/function/heavy", 4)
    time.sleep(INTERVAL_S * 3)
    assert _cpu_idle(daemon, "heavy") in ([], ["0"]) and _classes(daemon, "heavy") == []
    status = faasd_cli(daemon).run("status").ok()
    assert "CPU classes\toff: turned off" in status.out, status.out
