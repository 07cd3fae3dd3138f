"""OpenFaaS's own CLI (faas-cli 0.18.12, the unmodified static binary) drives a real daemon: login,
deploy, update, list, describe, secrets, remove -- with the API's auth, JSON-only writes and throttle on.

The binary is found at ``$FAASD_TEST_FAAS_CLI``, else ``../shared/peers/faas-cli`` beside the repository
(where CI has it). The test is skipped, saying why, only when that ``shared`` folder is absent (a
checkout on its own); a ``shared`` folder without the binary, or a ``$FAASD_TEST_FAAS_CLI`` that is not
an executable, is a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.daemon_fixtures import PASSWORD, Daemon, StartDaemon

TIMEOUT_S = 60


def faas_cli_binary() -> Path:
    configured = os.environ.get("FAASD_TEST_FAAS_CLI")
    shared = ROOT.parent / "shared"
    if not configured and not shared.is_dir():
        pytest.skip(f"no {shared} beside the checkout, so no faas-cli to run (set FAASD_TEST_FAAS_CLI)")
    path = Path(configured) if configured else shared / "peers" / "faas-cli"
    if not os.access(path, os.X_OK):
        pytest.fail(f"faas-cli is not an executable at {path} (set FAASD_TEST_FAAS_CLI)")
    return path


class FaasCli:
    """Runs faas-cli with a throw-away HOME (``login`` writes ~/.openfaas/config.yml) and no update check."""

    def __init__(self, binary: Path, daemon: Daemon, home: Path) -> None:
        self.binary = binary
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "OPENFAAS_URL": daemon.url}

    def __call__(self, *args: str, stdin: str = "", ok: bool = True) -> str:
        done = subprocess.run(
            [str(self.binary), *args], input=stdin, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        output = done.stdout + done.stderr
        if ok:
            assert done.returncode == 0, f"faas-cli {' '.join(args)} -> {done.returncode}:\n{output}"
        return output


def test_faas_cli_drives_faasd(start_daemon: StartDaemon, tmp_path: Path) -> None:
    binary = faas_cli_binary()
    daemon = start_daemon()
    home = tmp_path / "faas-cli-home"
    home.mkdir()
    faas = FaasCli(binary, daemon, home)

    refused = faas("login", "-u", "admin", "--password-stdin", stdin="not-the-password-at-all\n", ok=False)
    assert "password is incorrect" in refused, refused
    assert "credentials saved" in faas("login", "-u", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    version = faas("version", "--warn-update=false")  # GET /system/info, with the saved credentials.
    assert "faasd-local" in version, version

    deploy = ("deploy", "--image", "ignored:latest", "--name", "echo", "--fprocess", "cat", "--env", "greeting=hi")
    assert "Deployed. 202" in faas(*deploy)  # faas-cli PUTs first, gets 404, then POSTs.
    daemon.wait_available("echo", 1)
    assert "Deployed. 202" in faas(*deploy[:-1], "greeting=again")  # Now an update (PUT).
    daemon.wait_available("echo", 1)
    assert daemon.status("echo")["envVars"] == {"greeting": "again"}
    listed = faas("list")
    assert "echo" in listed, listed
    described = faas("describe", "echo")
    assert "cat" in described and "Available Replicas: 1" in described, described

    assert "Created: 201" in faas("secret", "create", "token", stdin="s3cret")
    assert "token" in faas("secret", "list")
    faas("secret", "update", "token", stdin="n3w")
    faas("secret", "remove", "token")
    assert "Removing old function" in faas("remove", "echo")

    with daemon.client() as client:
        assert client.get("/system/secrets").json() == []
        assert client.get("/system/functions").json() == []
