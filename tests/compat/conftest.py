"""OpenFaaS's own CLI against a real daemon: where the binary is, and how each test runs it.

The binary (faas-cli 0.18.12, the unmodified static build of github.com/openfaas/faas-cli) is
``$FAASD_TEST_FAAS_CLI``, else the copy CI keeps in a folder beside the checkout
(:func:`faas_cli_binary`). The tests are skipped, saying why, only when that folder is absent (a
checkout on its own); the folder without the binary, or a ``$FAASD_TEST_FAAS_CLI`` that is not an
executable, is a failure.

One daemon serves a whole test module (``compat_daemon``: starting one per test would double the
suite's time). Each test still starts from an empty daemon: ``faas`` -- a :class:`FaasCli` logged in to
it, with a HOME of its own -- removes every function and secret when the test ends, whatever the test
left. What cannot be reset (invocation counters, metrics, logs of a removed function) is why the tests
give their functions names no other test uses and read metrics as differences. ``faas_cli_for`` makes a
CLI that is not logged in yet (to test ``login``). Commands started in the background (``logs``
following) are killed when the test ends if it has not stopped them.

``invoke_targets`` deploys the functions the invoke tests call (``env`` answers with the request as the
function saw it); ``invoke --async`` (issue 12's async part) belongs beside the sync invoke test, on the
same fixture, with a callback server of its own on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.daemon_fixtures import PASSWORD, Daemon, callback_server, daemon_factory  # noqa: F401 -- a fixture
from tests.helpers import wait_for

TIMEOUT_S = 60.0
"""Longest one faas-cli command may run (``ready`` polls; everything else takes milliseconds)."""


def faas_cli_binary() -> Path:
    """``$FAASD_TEST_FAAS_CLI``, else ``peers/faas-cli`` in the ``shared`` folder beside the checkout; skip
    only when neither is set up, fail when the one named is no executable."""
    configured = os.environ.get("FAASD_TEST_FAAS_CLI")
    shared = ROOT.parent / "shared"
    if not configured and not shared.is_dir():
        pytest.skip(f"no {shared} beside the checkout, so no faas-cli to run (set FAASD_TEST_FAAS_CLI)")
    path = Path(configured) if configured else shared / "peers" / "faas-cli"
    if not os.access(path, os.X_OK):
        pytest.fail(f"faas-cli is not an executable at {path} (set FAASD_TEST_FAAS_CLI)")
    return path


@dataclass(frozen=True)
class Run:
    """One faas-cli command and what it did."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        """stdout and stderr, as a terminal shows them (faas-cli prints errors on either)."""
        return self.out + self.err

    def __str__(self) -> str:
        return f"faas-cli {' '.join(self.args)} -> exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


class FaasCli:
    """Runs faas-cli as a user would: a throw-away HOME (``login`` writes ``~/.openfaas/config.yml``),
    ``OPENFAAS_URL`` pointing at the daemon, a clean environment, the HOME as the working directory."""

    def __init__(self, binary: Path, daemon: Daemon, home: Path) -> None:
        self.binary = binary
        self.daemon = daemon
        self.home = home
        self.cwd = home
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "OPENFAAS_URL": daemon.url}
        self.background: list[subprocess.Popen[bytes]] = []

    def __call__(self, *args: str, stdin: str = "", code: int | None = 0) -> Run:
        """Run ``faas-cli ARGS`` to its end; ``code`` is the exit status it must have (None: any)."""
        try:
            done = subprocess.run(
                [str(self.binary), *args],
                input=stdin,
                env=self.env,
                cwd=self.cwd,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"faas-cli {' '.join(args)} ran over {TIMEOUT_S:g}s: {exc.stdout!r}") from None
        run = Run(tuple(args), done.returncode, done.stdout, done.stderr)
        if code is not None:
            assert run.code == code, str(run)
        return run

    def start(self, *args: str, output: Path) -> subprocess.Popen[bytes]:
        """Start ``faas-cli ARGS`` in the background (``logs`` follows), its stdout and stderr into
        ``output``; the caller stops it (else the fixture kills it when the test ends)."""
        with open(output, "wb") as sink:
            process = subprocess.Popen(
                [str(self.binary), *args],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )
        self.background.append(process)
        return process

    def login(self) -> None:
        run = self("login", "-u", "admin", "--password-stdin", stdin=PASSWORD)
        assert f"credentials saved for admin {self.daemon.url}" in run.out, run

    def deploy(self, name: str, fprocess: str, *flags: str) -> None:
        """``faas-cli deploy`` of a command (the image is not run on the local backend), then ``ready``."""
        deployed = self("deploy", "--image", f"{name}:latest", "--name", name, "--fprocess", fprocess, *flags)
        assert "Deployed. 202 ." in deployed.out, deployed
        assert f"Function {name} is ready" in self("ready", name).out


@pytest.fixture(scope="module")
def compat_daemon(pyz_python: str, faasd_pyz: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module (its leak check runs when the module ends)."""
    faas_cli_binary()  # Skip (or fail) before starting anything.
    with daemon_factory(pyz_python, faasd_pyz, tmp_path_factory.mktemp("compat")) as start:
        yield start()


def reset(daemon: Daemon) -> None:
    """Remove every function, then every secret (one in use cannot be removed), and see them gone."""
    with daemon.client() as client:
        for function in client.get("/system/functions").json():
            answer = client.request("DELETE", "/system/functions", json={"functionName": function["name"]})
            assert answer.status_code == 202, answer.text
        for secret in client.get("/system/secrets").json():
            answer = client.request("DELETE", "/system/secrets", json={"name": secret["name"]})
            assert answer.status_code == 200, answer.text
        wait_for(lambda: client.get("/system/functions").json() == [], 10, "every function removed")
        assert client.get("/system/secrets").json() == []


@pytest.fixture
def faas_cli_for(tmp_path: Path, compat_daemon: Daemon) -> Iterator[Callable[[Daemon], FaasCli]]:
    """Factory: a :class:`FaasCli` for a daemon, not logged in. When the test ends, its background
    commands are killed and the module's daemon is emptied (:func:`reset`)."""
    binary = faas_cli_binary()
    made: list[FaasCli] = []

    def make(daemon: Daemon) -> FaasCli:
        home = tmp_path / f"faas-cli-home{len(made)}"
        home.mkdir()
        made.append(FaasCli(binary, daemon, home))
        return made[-1]

    yield make
    for cli in made:
        for process in cli.background:
            if process.poll() is None:
                process.kill()
            process.wait()
    reset(compat_daemon)


@pytest.fixture
def faas(faas_cli_for: Callable[[Daemon], FaasCli], compat_daemon: Daemon) -> FaasCli:
    """faas-cli, logged in to the module's daemon (empty when the test starts)."""
    cli = faas_cli_for(compat_daemon)
    cli.login()
    return cli


@pytest.fixture
def invoke_targets(faas: FaasCli) -> dict[str, str]:
    """Functions to invoke, deployed with faas-cli: ``env`` answers with its environment (the request's
    method, path, query and headers as ``Http_*`` variables); ``fail`` prints ``oops`` and exits 3."""
    targets = {"env": "env", "fail": "sh -c 'echo oops; exit 3'"}
    for name, fprocess in targets.items():
        faas.deploy(name, fprocess)
    return targets
