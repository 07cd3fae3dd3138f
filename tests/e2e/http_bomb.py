"""Deploying the http-mode fork-bomb function (tests/e2e/fixtures/bomb_server.py) on a test daemon."""

from __future__ import annotations

import base64
import io
import shlex
import tarfile
from pathlib import Path

from tests.daemon_fixtures import Daemon
from tests.e2e.test_watchdog_modes_http import UPSTREAM_PYTHON
from tests.helpers import free_port

__all__ = ["deploy_http_bomb"]

SERVER = Path(__file__).resolve().parent / "fixtures" / "bomb_server.py"


def deploy_http_bomb(daemon: Daemon, name: str, **env: str) -> str:
    """Deploy the bomb server as http-mode function ``name`` (extra ``env`` in its envVars); returns its
    invoke URL (append ``/bomb``, ``/setsid`` or ``/fine``)."""
    port = free_port()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        content = SERVER.read_bytes()
        info = tarfile.TarInfo("bomb_server.py")
        info.size, info.mode = len(content), 0o644
        tar.addfile(info, io.BytesIO(content))
    daemon.deploy(
        name,
        f"{shlex.quote(UPSTREAM_PYTHON)} bomb_server.py {port}",
        envVars={"mode": "http", "upstream_url": f"http://127.0.0.1:{port}", **env},
        handlerArchive=base64.b64encode(raw.getvalue()).decode(),
    )
    return f"{daemon.url}/function/{name}"
