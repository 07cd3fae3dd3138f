"""The faas seed's Swarm quick start, literally: the README's block "The seed's way: the gateway in a
container", command by command.

The seed creates the ``functions`` overlay network, runs the gateway as a container with the docker
socket and ``-p 8080:8080``, starts a function with a plain ``docker service create
--network=functions --name catservice <image>`` -- no labels -- and calls it by name. The README does
the same with ``faasd build-base``'s image for both gateway and function (the zipapp under test). The
test reads that block and runs each command as written, but for unique names (gateway, volume,
catservice: other sessions share this engine), the zipapp under test for ``python3 dist/faasd.pyz``, a
port the test picks published on 127.0.0.1 only instead of 8080, and ``curl`` done with httpx (a fresh
machine may have no curl). Between two commands it only waits as a person would: for the gateway to
answer before calling it.

Nothing tells the daemon how to reach the tasks: it finds that it runs in a container attached to
``functions`` and calls task addresses there. Beside the catservice, two more services on the network
that faasd did not make show what else holds: one that is no function at all (no watchdog) is listed
as ``failed`` with the reason and breaks nothing; one that is an HTTP server of its own is called
without the daemon's call token (it was never given one: the token must not leak to it). A function
deployed through this gateway still gets and needs the token. The test talks only to the gateway's
published port on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faasd.images import LABEL_PYZ_SHA256, file_sha256
from tests.helpers import free_port, wait_for
from tests.swarm.conftest import NETWORK, ROOT, SESSION, TEST_LABEL, SwarmHelper

pytestmark = pytest.mark.slow

WAIT_S = 30.0
SECTION = "### The seed's way: the gateway in a container"
STEPS = ("IMAGE=", "docker network", "docker run", "docker service create", "curl", "curl", "docker exec")
"""What the README's block does, in order: the test runs each where its checks need it."""
HEADERS_SERVER = """
import http.server, json
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""


def _docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def readme_commands() -> list[str]:
    """The commands of the README's block, continuation lines joined (comments are left to sh)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    block = text.split(SECTION, 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        commands.append(pending + line)
        pending = ""
    assert not pending, block
    assert [c for c, step in zip(commands, STEPS, strict=True) if not c.startswith(step)] == [], commands
    return commands


class Readme:
    """Runs the README's commands as written, with this test's names (each replacement must apply)."""

    def __init__(self, replacements: dict[str, str], env: dict[str, str]) -> None:
        self.replacements = replacements
        self.used: set[str] = set()
        self.env = env

    def adapt(self, command: str) -> str:
        for old, new in self.replacements.items():
            if old in command:
                command = command.replace(old, new)
                self.used.add(old)
        return command

    def sh(self, command: str, *, timeout: float = 120) -> str:
        """Run one command with ``sh -c`` (``set -e``); its stdout."""
        script = self.adapt(command)
        result = subprocess.run(
            ["sh", "-ec", script], capture_output=True, text=True, timeout=timeout, env=self.env, cwd=ROOT
        )
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def assign(self, command: str) -> None:
        """Run ``NAME=$(...)`` and keep NAME for the next commands."""
        name = command.split("=", 1)[0]
        self.env[name] = self.sh(f'{command}\nprintf %s "${name}"').strip()

    def curl(self, command: str) -> httpx.Response:
        """The README's ``curl -X METHOD [-H 'K: V'] --data-binary @FILE URL``, done with httpx."""
        words = shlex.split(self.adapt(command), comments=True)
        assert words[0] == "curl", words
        method, headers, body, url = "GET", {}, b"", ""
        rest = iter(words[1:])
        for word in rest:
            if word == "-X":
                method = next(rest)
            elif word == "-H":
                key, _, value = next(rest).partition(":")
                headers[key.strip()] = value.strip()
            elif word == "--data-binary":
                body = Path(next(rest).removeprefix("@")).read_bytes()
                method = "POST" if method == "GET" else method
            elif not word.startswith("-") and not url:
                url = word
            else:
                raise AssertionError(f"curl option the test does not know: {word} in {command}")
        return httpx.request(method, url, headers=headers, content=body, timeout=WAIT_S)


@pytest.fixture
def names(swarm: SwarmHelper) -> Iterator[dict[str, str]]:
    """Unique names for what the README calls gateway, faasd-state and catservice, and for the test's
    own services; the container and volume are removed when the test ends (services by ``swarm``)."""
    suffix = uuid.uuid4().hex[:8]
    made = {"gateway": f"faasd-qs-gateway-{suffix}", "volume": f"faasd-qs-state-{suffix}"}
    made |= {kind: f"{kind}-{suffix}" for kind in ("catservice", "qs-hdr", "qs-idle", "qs-bare", "qs-fn")}
    swarm.track(*(made[kind] for kind in ("catservice", "qs-hdr", "qs-idle", "qs-bare", "qs-fn")))
    try:
        yield made
    finally:
        subprocess.run(["docker", "rm", "-f", made["gateway"]], capture_output=True, timeout=60)
        subprocess.run(["docker", "volume", "rm", made["volume"]], capture_output=True, timeout=60)


def test_seed_quick_start_with_an_unlabelled_catservice(
    swarm: SwarmHelper, base_image: str, pyz_python: str, faasd_pyz: Path, names: dict[str, str]
) -> None:
    gateway, catservice = names["gateway"], names["catservice"]
    headers, idle, bare, managed = names["qs-hdr"], names["qs-idle"], names["qs-bare"], names["qs-fn"]
    port = free_port()
    readme = Readme(
        {
            "python3 dist/faasd.pyz": f"{shlex.quote(pyz_python)} {shlex.quote(str(faasd_pyz))}",
            "--name gateway": f"--name {gateway} --label {TEST_LABEL}={SESSION}",
            "docker exec gateway": f"docker exec {gateway}",
            "-p 8080:8080": f"-p 127.0.0.1:{port}:8080",
            "localhost:8080": f"127.0.0.1:{port}",
            "faasd-state:": f"{names['volume']}:",
            "catservice": catservice,
        },
        env=dict(os.environ),
    )
    image, network, run, create, curl_by_name, curl_by_header, password_cmd = readme_commands()
    url = f"http://127.0.0.1:{port}"

    readme.assign(image)
    labels = swarm.api.inspect_image(readme.env["IMAGE"])["Config"]["Labels"]
    assert labels[LABEL_PYZ_SHA256] == file_sha256(str(faasd_pyz))  # It holds the zipapp under test.
    readme.sh(network)
    assert swarm.api.networks(names=[NETWORK])

    # Services on the network that are no working function; made first, so that they have aged by the end.
    # Without the image's HEALTHCHECK (it tests the watchdog's lock file), as any other image would run.
    _docker("service", "create", "-d", "--init", "--no-healthcheck", f"--network={NETWORK}", "--name", idle,
            "--entrypoint", "sleep", base_image, "3600")  # fmt: skip
    _docker("service", "create", "-d", "--init", "--no-healthcheck", f"--network={NETWORK}", "--name", headers,
            "--entrypoint", "python3", base_image, "-c", HEADERS_SERVER)  # fmt: skip
    # The seed's command with the base image alone: its watchdog has no fprocess and exits (status 2).
    _docker("service", "create", "-d", f"--network={NETWORK}", "--name", bare, base_image)

    readme.sh(run)  # The gateway container.

    def logs() -> str:
        return subprocess.run(["docker", "logs", gateway], capture_output=True, text=True, timeout=30).stderr

    def healthy() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        return False

    wait_for(healthy, WAIT_S, lambda: f"the gateway container to answer /healthz:\n{logs()[-3000:]}", 0.1)
    assert 'event="swarm route" route=overlay-dns swarm_route=auto' in logs(), logs()[-3000:]  # By itself.

    readme.sh(create)  # The seed's function: no labels, only the network. Waits until its task runs.
    expected = Path("/etc/hostname").read_bytes()
    for command in (curl_by_name, curl_by_header):
        answer = readme.curl(command)
        assert (answer.status_code, answer.content) == (200, expected), (command, answer.text, logs()[-3000:])
    password = readme.sh(password_cmd).strip()
    assert set(readme.replacements) == readme.used  # Every name in the block was the test's own.

    with httpx.Client(base_url=url, auth=("admin", password), timeout=WAIT_S) as client:
        # A function deployed through this gateway: routed on the overlay too, and it takes the call token.
        deployed = client.post("/system/functions", json={"service": managed, "image": base_image, "envProcess": "cat"})
        assert deployed.status_code == 202, deployed.text
        assert (client.post(f"/function/{managed}", content=b"managed").content) == b"managed"
        spec = swarm.api.inspect_service(managed)["Spec"]
        assert spec["EndpointSpec"] == {"Mode": "dnsrr"}  # Nothing published on the host.
        assert any(
            s["File"]["Name"] == "/run/faasd/call-token" for s in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
        )

        # A server of its own on the network: called, but never given the token.
        seen = wait_for(
            lambda: (r := client.post(f"/function/{headers}", content=b"h")).status_code == 200 and r.json(),
            WAIT_S,
            f"{headers} to answer",
            0.2,
        )
        assert "x-call-id" in seen, seen  # It came through the gateway ...
        assert "x-faasd-call-token" not in seen, seen  # ... without the daemon's token.

        # No function at all, or one that cannot start: listed, not ready, with the reason; the rest goes on.
        def listed() -> dict[str, dict]:
            response = client.get("/system/functions")
            assert response.status_code == 200, response.text
            return {f["name"]: f for f in response.json()}

        def failed(name: str) -> dict | None:
            found = listed().get(name)
            return found if found and found["faasd"]["state"] == "failed" else None

        for name, words in ((idle, ("GET /_/health on 10.", ":8080", "watchdog")), (bare, ("exited with status 2",))):
            status = wait_for(lambda n=name: failed(n), WAIT_S, lambda n=name: f"{n} failed: {listed().get(n)}", 0.5)
            assert status["availableReplicas"] == 0 and status["replicas"] == 1, status
            assert all(word in status["faasd"]["reason"] for word in words), status
            described = client.get(f"/system/function/{name}").json()
            assert described["faasd"] == status["faasd"]
        functions = listed()
        assert functions[catservice]["availableReplicas"] == 1
        assert functions[catservice]["faasd"] == {"state": "deployed"}
        assert functions[catservice]["envProcess"] == "cat"
        assert gateway not in functions  # The daemon's own container is not a function.
        assert (client.post(f"/function/{catservice}", content=b"still").content) == b"still"

        # docker service rm: gone from the gateway too.
        _docker("service", "rm", catservice)
        wait_for(lambda: catservice not in listed(), WAIT_S, f"{catservice} to leave the list", 0.2)
        gone = httpx.post(f"{url}/function/{catservice}", content=b"x", timeout=WAIT_S)
        assert gone.status_code == 404, gone.text
    assert "Traceback" not in logs(), logs()[-3000:]
