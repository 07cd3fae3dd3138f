"""A dockerd of the test's own, with a single-node swarm, that a test may stop and start at will.

The outage test ("dockerd stopped -> 503 -> started -> recovered") must not stop the engine everybody
else uses (a developer's, or the shared one the other Swarm tests run on), and must not be skipped when
that engine is not its to stop. So it runs its own: a second dockerd beside the first, sharing nothing
with it -- its own ``--data-root`` and ``--exec-root`` (and so its own containerd), its own API socket and
pidfile, no default bridge, no iptables rules, its own ``docker_gwbridge`` interface, and a swarm whose
control and data ports (``--listen-addr``, ``--data-path-port``) differ from the other swarm's. Start-up
and ``swarm init`` take about a second; the base image is copied from the main engine (``docker save |
docker load``), a few seconds.

Everything lives in one short directory under /tmp (unix socket paths are limited to 108 bytes), removed
with the engine at the end.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from tests.helpers import free_port, scaled, wait_for

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0


def _free_udp_port() -> int:
    """A UDP port below 49152 (``--data-path-port`` refuses the ephemeral range) free a moment ago."""
    for _ in range(100):
        port = random.randrange(20000, 40000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port found for the private swarm's data path")


class PrivateDockerd:
    """``start()``, ``stop()``, ``start()`` again (same data: the swarm and its services come back), then
    ``close()`` (leave the swarm, remove its bridge, stop, delete everything). ``host`` is the value for
    ``DOCKER_HOST``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.log_path = self.root / "dockerd.log"
        self.bridge = f"fdgw{secrets.token_hex(3)}"  # Linux interface names: at most 15 bytes.
        self.proc: subprocess.Popen[bytes] | None = None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=60)

    def _docker(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            ["docker", "-H", self.host, *args], capture_output=True, text=True, timeout=scaled(timeout)
        )
        if done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}\n{self.logs()}")
        return done.stdout

    def _answers(self) -> bool:
        try:
            client = self.client()
        except docker.errors.DockerException:
            return False
        try:
            client.ping()
            return True
        except docker.errors.DockerException:
            return False
        finally:
            client.close()

    def start(self) -> None:
        """Start the engine (on its existing data, if any) and wait until its API answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        command = [
            "dockerd",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--host={self.host}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # A Ctrl-C for the tests is not for it; its teardown stops it.
                env={**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},  # Swarm never pulls.
            )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"dockerd exited with {self.proc.returncode}:\n{self.logs()}")
            return self._answers()

        wait_for(up, START_TIMEOUT_S, lambda: f"the private dockerd to answer:\n{self.logs()}", 0.05)

    def init_swarm(self, image: str) -> None:
        """Make it a single-node swarm manager and give it ``image`` (a tag on the main engine)."""
        # Its own docker_gwbridge first: the default one's interface name is taken by the main engine.
        self._docker(
            "network", "create", "--driver", "bridge",
            "--opt", f"com.docker.network.bridge.name={self.bridge}",
            "--opt", "com.docker.network.bridge.enable_icc=false",
            "--opt", "com.docker.network.bridge.enable_ip_masquerade=false",
            "docker_gwbridge",
        )  # fmt: skip
        address = f"127.0.0.1:{free_port()}"
        self._docker(
            "swarm", "init", "--advertise-addr", address, "--listen-addr", address,
            "--data-path-port", str(_free_udp_port()),
        )  # fmt: skip
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        try:
            load = subprocess.run(
                ["docker", "-H", self.host, "load"], stdin=save.stdout, capture_output=True, timeout=scaled(120)
            )
        finally:
            assert save.stdout is not None
            save.stdout.close()
            save.wait(scaled(60))
        assert save.returncode == 0 and load.returncode == 0, f"docker save | load: {load.stderr!r}"

    def stop(self) -> None:
        """SIGTERM, as an init system would; dockerd stops its containers and its containerd first."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(scaled(STOP_TIMEOUT_S))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            reason = f"the private dockerd ignored SIGTERM for {STOP_TIMEOUT_S:g}s:\n{self.logs()}"
            raise AssertionError(reason) from None

    def close(self) -> None:
        """Leave the swarm and remove the bridge (so nothing stays in the host's network), stop, delete."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    self._docker("swarm", "leave", "--force")
                    self._docker("network", "rm", "docker_gwbridge")
            self.stop()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # Only if `docker network rm` failed.
                subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, timeout=10, check=False)
            for _ in range(3):  # Mounts under exec-root may take a moment to go after dockerd exits.
                shutil.rmtree(self.root, ignore_errors=True)
                if not self.root.exists():
                    break
                time.sleep(0.2)
