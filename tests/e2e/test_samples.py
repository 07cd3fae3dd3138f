"""The sample functions, as a user runs them: ``faasd up -f sample-functions/stack.yml``, then calls.

Each sample answers what its README promises, through the gateway, with the seed's own routes (the
X-Function header and the Alexa intent) included.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import Daemon, StartDaemon

SAMPLES = Path(__file__).resolve().parents[2] / "sample-functions"
NAMES = ("catservice", "hello-python", "wordcount", "json-transform", "HostnameIntent")


@pytest.fixture
def samples(start_daemon: StartDaemon) -> Daemon:
    """A daemon started with the samples' stack file, every sample ready."""
    daemon = start_daemon(args=("-f", str(SAMPLES / "stack.yml")))
    for name in NAMES:
        daemon.wait_available(name, 1, timeout=30.0)
    return daemon


def _call(daemon: Daemon, name: str, body: bytes, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{daemon.url}/function/{name}", content=body, timeout=30.0, **kwargs)  # type: ignore[arg-type]


def test_every_sample_is_deployed_from_the_stack_file(samples):
    with samples.client() as client:
        names = {f["name"] for f in client.get("/system/functions").json()}
    assert names == set(NAMES)


def test_catservice_echoes_and_answers_the_x_function_route(samples):
    assert _call(samples, "catservice", b"meow").content == b"meow"
    routed = httpx.post(samples.url + "/", content=b"via header", headers={"X-Function": "catservice"})
    assert routed.status_code == 200 and routed.content == b"via header"


def test_hello_python_greets_with_the_request_metadata(samples):
    response = httpx.get(
        f"{samples.url}/function/hello-python/some/path?x=1", headers={"User-Agent": "sample-test"}, timeout=30.0
    )
    assert response.status_code == 200, response.text
    assert response.text == "Hello, world!\nYou called GET /some/path?x=1 with sample-test.\n"
    assert _call(samples, "hello-python", b"Ada").text.startswith("Hello, Ada!\n")


def test_wordcount_counts_lines_words_and_bytes(samples):
    assert _call(samples, "wordcount", b"one two\nthree\n").text.split() == ["2", "3", "14"]


def test_json_transform_answers_json_and_rejects_bad_json(samples):
    response = _call(samples, "json-transform", json.dumps({"name": "faasd", "tags": ["fast"]}).encode())
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"data": {"name": "FAASD", "tags": ["FAST"]}, "keys": 2, "strings": 2}
    bad = _call(samples, "json-transform", b"{not json")
    assert bad.status_code == 500
    assert "invalid JSON" in bad.text


def test_the_alexa_request_is_routed_by_its_intent(samples):
    request = (SAMPLES / "alexa-hostname" / "request.json").read_bytes()
    response = httpx.post(samples.url + "/", content=request, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    speech = response.json()["response"]["outputSpeech"]["text"]
    assert speech == f"The hostname is {socket.gethostname()}."
