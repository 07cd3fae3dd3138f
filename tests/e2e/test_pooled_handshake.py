"""A pooled replica's readiness, told on its control socket (faasd.sandbox.pooled): once assigned and its
watchdog ready it says ``serving`` and accepts no connection until the daemon's ``go`` -- the daemon lowers
the replica's CPU weight in between, so no call runs before that (docs/coldstart.md). End of file instead
of ``go`` ends it without serving; so does a SIGTERM.

``faasd.pyz _pooled FD`` runs here without a sandbox spec (the local backend's tests run it in bwrap):
what is checked is the protocol, with real processes and sockets.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from faasd.sandbox.pooled import GO, READY, SERVING, encode_assignment
from tests.helpers import scaled

REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


class Pooled:
    """A ``_pooled`` process, its control socket (ours), and the listening socket it is assigned."""

    def __init__(self, command: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.settimeout(scaled(20))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.process = subprocess.Popen(
            [*command, "_pooled", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            cwd=tmp,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        theirs.close()

    def read(self, size: int) -> bytes:
        data = b""
        while len(data) < size and (chunk := self.control.recv(size - len(data))):
            data += chunk
        return data

    def assign(self, tmp: Path, spec: str = "", env: dict[str, str] | None = None) -> None:
        env = {
            "fprocess": "cat",
            "listen_fd": str(self.listener.fileno()),
            "suppress_lock": "true",
            "port": str(self.port),
            **(env or {}),
        }
        message = encode_assignment(spec, str(tmp), env, ["env:listen_fd"])
        socket.send_fds(self.control, [message], [self.listener.fileno()])

    def connect(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=scaled(20))
        client.sendall(REQUEST)
        return client

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=scaled(20))
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.control.close()
        self.listener.close()


@pytest.fixture
def pooled(pyz_python: str, faasd_pyz: Path, tmp_path: Path) -> Iterator[Pooled]:
    replica = Pooled([pyz_python, str(faasd_pyz)], tmp_path)
    try:
        assert replica.read(len(READY)) == READY
        yield replica
    finally:
        replica.close()


def _drain(stream: IO[bytes]) -> bytes:
    """What the process has written to ``stream`` so far (without waiting for more)."""
    os.set_blocking(stream.fileno(), False)
    data = b""
    while chunk := stream.read():  # None once nothing is waiting.
        data += chunk
    return data


def _answered(client: socket.socket, within_s: float) -> bool:
    client.settimeout(within_s)
    try:
        return bool(client.recv(1, socket.MSG_PEEK))
    except TimeoutError:
        return False


def test_it_says_serving_and_accepts_only_after_go(pooled: Pooled, tmp_path: Path) -> None:
    pooled.assign(tmp_path)
    assert pooled.read(len(SERVING)) == SERVING
    with pooled.connect() as client:
        assert not _answered(client, 0.5)  # In the backlog: nothing of the function may run before the go.
        pooled.control.sendall(GO)
        client.settimeout(scaled(20))
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello"), answer
    assert pooled.read(1) == b""  # It closed its control socket once told.
    assert pooled.process.poll() is None


def test_its_functions_get_the_assignments_environment_and_nothing_of_its_start(
    pyz_python: str, faasd_pyz: Path, tmp_path: Path
) -> None:
    replica = Pooled([pyz_python, str(faasd_pyz)], tmp_path, env={"LEFT_FROM_START": "pool"})
    try:
        assert replica.read(len(READY)) == READY
        replica.assign(tmp_path, env={"fprocess": "env", "GREETING": "from the assignment"})
        assert replica.read(len(SERVING)) == SERVING
        replica.control.sendall(GO)
        with replica.connect() as client:
            client.settimeout(scaled(20))
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"\nGREETING=from the assignment\n" in answer, answer
        assert b"LEFT_FROM_START" not in answer, answer
    finally:
        replica.close()


@pytest.mark.parametrize(
    ("stop", "status"),
    [
        pytest.param(lambda pooled: pooled.control.shutdown(socket.SHUT_WR), 1, id="end of file instead of go"),
        pytest.param(lambda pooled: pooled.process.send_signal(signal.SIGTERM), 0, id="SIGTERM before go"),
    ],
)
def test_stopped_before_go_it_ends_without_serving(
    stop: Callable[[Pooled], None], status: int, pooled: Pooled, tmp_path: Path
) -> None:
    """The daemon stopping this replica (end of file on the control socket: exit 1, never told to serve) or
    a SIGTERM (a clean stop: 0) before the go: it ends, and the connection waiting in its backlog gets
    nothing."""
    pooled.assign(tmp_path)
    assert pooled.read(len(SERVING)) == SERVING
    with pooled.connect() as client:
        stop(pooled)
        assert pooled.process.wait(timeout=scaled(20)) == status
        assert not _answered(client, 0.2)


def test_its_assignment_imports_nothing(pyz_python: str, faasd_pyz: Path, tmp_path: Path) -> None:
    """Everything the assignment runs -- :func:`faasd.sandbox.enter.enter` with limits, the watchdog's
    start -- was imported while the replica waited: an import there (``resource``, a C extension loaded from
    disk, was one: 0.5 ms) lies on every pooled cold start's path. ``-X importtime`` writes a line per
    import as it happens, and everything before ``ready`` was written before ``ready`` was sent."""
    replica = Pooled([pyz_python, "-X", "importtime", str(faasd_pyz)], tmp_path)
    try:
        assert replica.read(len(READY)) == READY
        assert replica.process.stdout is not None
        assert b"import time:" in _drain(replica.process.stdout)  # The preload, as a check of the method.
        replica.assign(tmp_path, spec=f"nofile={min(4096, _hard_open_files())}")
        assert replica.read(len(SERVING)) == SERVING
        late = [line for line in _drain(replica.process.stdout).splitlines() if line.startswith(b"import time:")]
        assert late == []
    finally:
        replica.close()


def _hard_open_files() -> int:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else hard
