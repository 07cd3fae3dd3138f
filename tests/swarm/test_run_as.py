"""Who a function runs as on Swarm (faasd/watchdog/privileges.py, faasd/providers/swarm/spec.py ``run_as``):
a real daemon, a real swarm, faasd's base image.

The watchdog is the container's entrypoint and starts as root; it reads the call token (a Docker
secret mounted 0400, root's) and unpacks the handler archive, then serves as ``nobody``: the function
-- forked per call, python mode's workers, http mode's server -- is not root, cannot read the token
file, and still reads its own secrets, writes ``/tmp`` and runs its unpacked code. An image with a
``USER`` of its own runs its functions as that user (faasd starts the container as root so the
watchdog can read the token first). ``run_as=root`` in envVars is the opt-out.

The services are placed on the manager: the images are built on this engine only.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile

import pytest

from faasd.providers.swarm.spec import CALL_TOKEN_PATH
from tests.daemon_fixtures import Daemon, StartDaemon
from tests.swarm.conftest import SwarmHelper

pytestmark = pytest.mark.slow

WAIT_S = 60.0
SECRET = "st-runas-secret"
MANAGER = ["node.role == manager"]
NOBODY = "65534"

FORK_PROBE = (
    f"sh -c 'id -u; cat {CALL_TOKEN_PATH} >/dev/null 2>&1 && echo token-readable || echo token-denied; "
    f"cat /var/openfaas/secrets/{SECRET}; echo; echo t > /tmp/t && cat /tmp/t; grep NoNewPrivs /proc/self/status'"
)

PYTHON_HANDLER = f"""\
import os


def handle(event, context):
    try:
        open({CALL_TOKEN_PATH!r}).read()
        token = "readable"
    except PermissionError:
        token = "denied"
    return {{"uid": os.getuid(), "token": token, "data": open("data.txt").read()}}
"""

HTTP_SERVER = f"""\
import http.server, json, os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        try:
            open({CALL_TOKEN_PATH!r}).read()
            token = "readable"
        except PermissionError:
            token = "denied"
        body = json.dumps({{"uid": os.getuid(), "token": token}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("127.0.0.1", 5000), Handler).serve_forever()
"""


def archive(files: dict[str, str]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(raw.getvalue()).decode()


def deploy(daemon: Daemon, **fields: object) -> None:
    with daemon.client() as client:
        response = client.post("/system/functions", json={"constraints": MANAGER, **fields})
        assert response.status_code == 202, response.text
    daemon.wait_available(str(fields["service"]), 1, WAIT_S)


def call(daemon: Daemon, name: str) -> str:
    with daemon.client() as client:
        answer = client.post(f"/function/{name}", content=b"{}")
    assert answer.status_code == 200, answer.text
    return answer.text


def test_functions_on_swarm_are_not_root_and_cannot_read_the_call_token(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str
) -> None:
    names = ("st-runas-fork", "st-runas-py", "st-runas-http", "st-runas-own", "st-runas-root")
    swarm.track(*names)
    swarm.track_secret(SECRET)
    daemon = start_daemon(args=("--provider", "swarm"), FAASD_READY_TIMEOUT="10s")
    with daemon.client() as client:
        assert client.post("/system/secrets", json={"name": SECRET, "value": "s3cret"}).status_code in (200, 201)

    # Fork mode: not root, the token file closed, its own secret and /tmp open, no new privileges.
    deploy(daemon, service="st-runas-fork", image=base_image, envProcess=FORK_PROBE, secrets=[SECRET])
    assert call(daemon, "st-runas-fork").split() == [NOBODY, "token-denied", "s3cret", "t", "NoNewPrivs:", "1"]

    # Python mode from a handler archive (unpacked as root, run as nobody).
    code = archive({"handler.py": PYTHON_HANDLER, "data.txt": "from the archive"})
    deploy(
        daemon,
        service="st-runas-py",
        image=base_image,
        envVars={"mode": "python", "workers": "1"},
        handlerArchive=code,
    )
    assert json.loads(call(daemon, "st-runas-py")) == {"uid": 65534, "token": "denied", "data": "from the archive"}

    # http mode: the function's own server, started by the watchdog, is not root either.
    deploy(
        daemon,
        service="st-runas-http",
        image=base_image,
        envProcess="python3 server.py",
        envVars={"mode": "http", "upstream_url": "http://127.0.0.1:5000"},
        handlerArchive=archive({"server.py": HTTP_SERVER}),
    )
    assert json.loads(call(daemon, "st-runas-http")) == {"uid": 65534, "token": "denied"}

    # An image with a USER of its own: functions run as that user; the token is still closed to them.
    tag = "faasd/st-runas-own:test"
    swarm.track_image(tag)
    dockerfile = f"FROM {base_image}\nUSER 4242:4242\n".encode()
    swarm.client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, pull=False)
    deploy(
        daemon,
        service="st-runas-own",
        image=tag,
        envProcess=FORK_PROBE.replace(f"cat /var/openfaas/secrets/{SECRET}; ", ""),
    )
    assert call(daemon, "st-runas-own").split() == ["4242", "token-denied", "t", "NoNewPrivs:", "1"]

    # The documented opt-out: run_as=root (the function is root again, and can read the token).
    deploy(
        daemon,
        service="st-runas-root",
        image=base_image,
        envProcess=FORK_PROBE,
        secrets=[SECRET],
        envVars={"run_as": "root"},
    )
    assert call(daemon, "st-runas-root").split()[:2] == ["0", "token-readable"]
    with daemon.client() as client:
        described = client.get("/system/function/st-runas-fork").json()
        assert "run_as" not in (described.get("envVars") or {}), described  # faasd's, not the deployer's
        described = client.get("/system/function/st-runas-root").json()
        assert described["envVars"]["run_as"] == "root", described
