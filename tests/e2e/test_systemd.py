"""systemd integration, as far as it runs without systemd as PID 1 (CI machines have none):

* sd_notify: ``faasd up`` talks to a real unix datagram socket in ``$NOTIFY_SOCKET`` -- ``READY=1`` only
  once the gateway accepts connections, ``STOPPING=1`` on SIGTERM;
* the unit: ``systemd-analyze verify`` (Debian's ``systemd`` package, installed by the test command) finds
  nothing to say about ``systemd/faasd.service``, nor about the one ``faasd install-service`` writes;
* ``faasd install-service --root DIR`` puts the zipapp and the unit in place and prints the next command.

Not covered here: ``systemctl start faasd`` under a live systemd (needs systemd as PID 1).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import MakeCli, StartDaemon
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _messages(sock: socket.socket, timeout: float) -> list[str]:
    """The next datagram's ``KEY=VALUE`` lines."""
    sock.settimeout(timeout)
    data = sock.recv(4096)
    return data.decode().splitlines()


def test_ready_once_the_gateway_accepts_and_stopping_on_sigterm(start_daemon: StartDaemon, tmp_path: Path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        port = free_port()
        daemon = start_daemon(port=port, wait_ready=False, NOTIFY_SOCKET=str(path))
        first = _messages(sock, 30.0)
        # The gateway must already answer when systemd hears READY=1.
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0)
        assert "READY=1" in first, first
        assert health.status_code == 200
        assert f"STATUS=serving on http://127.0.0.1:{port}" in first
        daemon.proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in _messages(sock, 30.0)
        assert daemon.proc.wait(30) == 0


def test_an_abstract_notify_socket_works_too(start_daemon: StartDaemon):
    name = f"faasd-test-{os.getpid()}-{free_port()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        daemon = start_daemon(NOTIFY_SOCKET="@" + name)
        assert "READY=1" in _messages(sock, 30.0)
        assert httpx.get(daemon.url + "/healthz").status_code == 200


def test_a_notify_socket_nobody_reads_does_not_stop_the_daemon(start_daemon: StartDaemon, tmp_path: Path):
    daemon = start_daemon(NOTIFY_SOCKET=str(tmp_path / "gone.sock"))
    assert httpx.get(daemon.url + "/healthz").status_code == 200


def _verify(unit: Path) -> str:
    if SYSTEMD_ANALYZE is None:
        pytest.fail("systemd-analyze is missing: the test command installs Debian's systemd package")
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 even for a unit it warns about ("Failed to parse ..., ignoring"): any output is a finding.
    return f"exit {done.returncode}: {done.stdout}{done.stderr}".strip()


def test_the_shipped_unit_verifies_cleanly():
    assert _verify(REPO / "systemd" / "faasd.service") == "exit 0:"
    text = (REPO / "systemd" / "faasd.service").read_text()
    for line in (
        "Type=notify",
        "StateDirectory=faasd",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "TimeoutStartSec=30s",  # Ready before restoring functions: a slow pip install cannot time the start out.
    ):
        assert line in text.splitlines(), line


def test_verify_does_report_a_broken_unit(tmp_path: Path):
    """The check above can fail: a unit with a bad value gets a finding."""
    broken = tmp_path / "broken.service"
    broken.write_text((REPO / "systemd" / "faasd.service").read_text().replace("Type=notify", "Type=sometimes"))
    assert "Failed to parse service type, ignoring: sometimes" in _verify(broken)


def test_install_service_puts_the_zipapp_and_a_valid_unit_in_place(faasd_cli: MakeCli, faasd_pyz: Path, tmp_path):
    root = tmp_path / "root"
    result = faasd_cli().run("install-service", "--root", str(root)).ok()
    pyz = root / "usr/local/lib/faasd/faasd.pyz"
    unit = root / "etc/systemd/system/faasd.service"
    assert f"Installed {pyz} and {unit}" in result.out
    assert "systemctl daemon-reload && systemctl enable --now faasd" in result.out
    assert pyz.read_bytes() == faasd_pyz.read_bytes() and os.access(pyz, os.X_OK)
    assert "ExecStart=/usr/bin/python3 /usr/local/lib/faasd/faasd.pyz up" in unit.read_text().splitlines()
    assert _verify(unit) == "exit 0:"


def test_install_service_without_permission_is_one_line(faasd_cli: MakeCli, tmp_path: Path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    line = faasd_cli().run("install-service", "--root", str(blocked)).error_line()
    assert line.startswith("Error: cannot install:"), line


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_install_service_keeps_the_docker_group_away_from_local_functions(faasd_cli: MakeCli, tmp_path: Path):
    """A member of the docker group drives dockerd, which is root on the host: the local backend's unit
    (the default) never gets it, even where the group exists; and it can mount a sandbox's /proc."""
    root = tmp_path / "root"
    faasd_cli().run("install-service", "--root", str(root)).ok()
    lines = (root / "etc/systemd/system/faasd.service").read_text().splitlines()
    assert "SupplementaryGroups=docker" not in lines and "DynamicUser=yes" in lines
    assert "ProtectKernelTunables=yes" not in lines and "ProtectKernelLogs=yes" not in lines
    # A cgroup subtree of its own, writable: a cgroup per replica (docs/sandbox.md, "Limits").
    assert "Delegate=yes" in lines and "ProtectControlGroups=yes" not in lines
    assert not any(line.startswith("Environment=") and "FAASD_PROVIDER" in line for line in lines)
    assert _verify(root / "etc/systemd/system/faasd.service") == "exit 0:"


def test_install_service_for_swarm_adds_the_docker_group(faasd_cli: MakeCli, tmp_path: Path):
    root = tmp_path / "root"
    result = faasd_cli().run("install-service", "--root", str(root), "--provider", "swarm").ok()
    assert "(provider swarm)" in result.out
    unit = root / "etc/systemd/system/faasd.service"
    lines = unit.read_text().splitlines()
    assert "Environment=FAASD_PROVIDER=swarm FAASD_BIND=127.0.0.1 FAASD_PORT=8080" in lines
    assert ("SupplementaryGroups=docker" in lines) == _has_group("docker")
    if not _has_group("docker"):
        assert "there is no docker group yet" in result.out
    assert "ProtectKernelTunables=yes" in lines and "ProtectKernelLogs=yes" in lines
    assert "ProtectControlGroups=yes" in lines and "Delegate=yes" not in lines  # No local replicas.
    assert _verify(unit) == "exit 0:"
