"""OPTIONS and HEAD reach the function in every watchdog mode (so a function answers its own CORS
preflight, as OpenFaaS lets it), HEAD answers carry no body, and TRACE and unknown methods stay 405.

First at the watchdog (raw HTTP/1.1: a HEAD answer followed by another answer on the same connection,
so one stray body byte would show), then through a real daemon and its gateway for each mode. Also the
seed's ``GET /metrics/``.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import StartDaemon
from tests.e2e.test_watchdog_modes_http import UPSTREAM, UPSTREAM_PYTHON, start_http
from tests.helpers import RawConnection, free_port, http_request

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PY_HANDLER = FIXTURES / "py_event_handler.py"
PRINT_METHOD = "sh -c 'echo \"$Http_Method\"'"
MODES = ("fork", "streaming", "http", "python")
STATUS = {"fork": 200, "streaming": 200, "http": 200, "python": 201}
"""What each mode's function answers on /echo (the python fixture's /echo says 201)."""


def _start(start_watchdog, mode: str):
    if mode == "http":
        return start_http(start_watchdog)
    if mode == "python":
        return start_watchdog(None, mode="python", handler=str(PY_HANDLER))
    return start_watchdog(PRINT_METHOD, mode=mode)


def _method_seen(mode: str, body: bytes) -> str:
    """Which method the function says it was called with (each mode's function reports it its way)."""
    if mode in ("fork", "streaming"):
        return body.decode().strip()
    return json.loads(body)["method"]


@pytest.mark.parametrize("mode", MODES)
def test_options_and_head_run_the_function_and_head_has_no_body(start_watchdog, mode: str) -> None:
    watchdog = _start(start_watchdog, mode)
    with RawConnection(watchdog.port) as conn:
        conn.send(
            http_request("HEAD", "/echo")
            + http_request("OPTIONS", "/echo", headers={"Origin": "https://example.com"})
            + http_request("GET", "/echo", headers={"Connection": "close"})
        )
        head = conn.read_response(head_request=True)
        options = conn.read_response()  # Parsed right after the HEAD answer: no body came in between.
        get = conn.read_response()
        assert conn.at_eof()
    assert head.status == STATUS[mode], (head.status, head.headers)
    assert head.body == b""
    assert options.status == STATUS[mode], options.text
    assert _method_seen(mode, options.body) == "OPTIONS"
    assert get.status == STATUS[mode] and _method_seen(mode, get.body) == "GET"
    if mode == "streaming":
        assert head.header("Transfer-Encoding") == "chunked"  # Its head as a GET's: the length is not known.
    elif mode == "fork":
        assert head.header("Content-Length") == "5"  # "HEAD\n": the function ran for the HEAD request.
    else:
        assert int(head.header("Content-Length") or 0) > 0  # What the function declared for its answer.


@pytest.mark.parametrize("method", ["TRACE", "CONNECT_ISH", "PROPFIND"])
def test_other_methods_are_405_with_the_full_allow_list(start_watchdog, method: str) -> None:
    watchdog = start_watchdog(PRINT_METHOD)
    with RawConnection(watchdog.port) as conn:
        conn.send(http_request(method, "/"))
        response = conn.read_response()
    assert response.status == 405
    allow = {name.strip() for name in (response.header("Allow") or "").split(",")}
    assert allow == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _archive(files: dict[str, bytes]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return base64.b64encode(raw.getvalue()).decode()


def test_options_and_head_reach_functions_through_the_gateway(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    upstream_port = free_port()
    daemon.deploy("fork", PRINT_METHOD)
    daemon.deploy("streaming", PRINT_METHOD, envVars={"mode": "streaming"})
    daemon.deploy(
        "http",
        f"{shlex.quote(UPSTREAM_PYTHON)} upstream.py {upstream_port}",
        envVars={"mode": "http", "upstream_url": f"http://127.0.0.1:{upstream_port}"},
        handlerArchive=_archive({"upstream.py": UPSTREAM.read_bytes()}),
    )
    daemon.deploy(
        "python", "", envVars={"mode": "python"}, handlerArchive=_archive({"handler.py": PY_HANDLER.read_bytes()})
    )
    preflight = {"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}
    with httpx.Client(base_url=daemon.url, timeout=30) as client:  # One keep-alive connection for all calls.
        for mode in MODES:
            options = client.options(f"/function/{mode}/echo", headers=preflight)
            assert options.status_code == STATUS[mode], (mode, options.text)
            assert _method_seen(mode, options.content) == "OPTIONS", mode
            head = client.head(f"/function/{mode}/echo")
            assert head.status_code == STATUS[mode] and head.content == b"", (mode, head.headers)
            assert head.headers.get("x-call-id"), mode  # Answered through the gateway, as any call.
            assert _method_seen(mode, client.get(f"/function/{mode}/echo").content) == "GET", mode
        assert client.head("/function/fork").headers["content-length"] == "5"
        assert client.head("/function/http/echo").headers["x-upstream"] == "echo"
        assert client.head("/function/python/echo").headers["x-thing"] == "1"


def test_metrics_with_a_trailing_slash_as_the_seed_spells_it(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        assert client.post("/function/echo", content=b"x").status_code == 200
        plain, slash = client.get("/metrics"), client.get("/metrics/")
        assert slash.status_code == 200, slash.text
        assert slash.headers["content-type"] == plain.headers["content-type"]
        assert 'gateway_function_invocation_total{code="200",function_name="echo"} 1.0' in slash.text
        assert client.head("/metrics/").status_code == 200
        assert client.post("/metrics/", content=b"").status_code == 405
