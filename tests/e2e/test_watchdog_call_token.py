"""The call token at the watchdog (faasd/calltoken.py, docs/watchdog.md "Call token"): with one, every
request but the health check must carry ``X-Faasd-Call-Token`` or gets 403; the header never reaches
the function in any mode; the token comes from an inherited fd (closed at once), a file, or -- Marathon,
where each function has its own -- the ``call_token`` variable, which no function sees; without one
nothing is checked, as before.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import CLEAN_PATH
from tests.helpers import RawConnection, free_port, http_request, scaled, wait_for

UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream.py"
UPSTREAM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable
HEADER = "X-Faasd-Call-Token"
FORBIDDEN = "Forbidden: this replica takes calls only from its faasd gateway"
NOBODY = 65534

ENV_AND_HEADERS = "sh -c 'env; echo ---; ls /proc/self/fd'"
PYTHON_HANDLER = """\
import os


def handle(event, context):
    return {"headers": event.headers, "env": dict(os.environ)}
"""


def token_pipe(token: bytes) -> int:
    """A pipe holding ``token``; returns the read end (the test closes it once the watchdog has it)."""
    read_end, write_end = os.pipe()
    os.write(write_end, token + b"\n")
    os.close(write_end)
    return read_end


def start_with_token(start_watchdog, token: bytes, mode: str = "fork", tmp_path: Path | None = None, **env: str):
    """A watchdog in ``mode`` given ``token`` on an inherited pipe, like the local backend does."""
    read_end = token_pipe(token)
    try:
        if mode in ("fork", "streaming"):
            env.setdefault("fprocess", ENV_AND_HEADERS)
            fprocess = env.pop("fprocess")
        elif mode == "http":
            port = free_port()
            fprocess = f"{shlex.quote(UPSTREAM_PYTHON)} {shlex.quote(str(UPSTREAM))} {port}"
            env["upstream_url"] = f"http://127.0.0.1:{port}"
        else:
            assert tmp_path is not None
            handler = tmp_path / "handler.py"
            handler.write_text(PYTHON_HANDLER)
            fprocess = None
            env.update(handler=str(handler), workers="1")
        return start_watchdog(fprocess, mode=mode, call_token_fd=str(read_end), pass_fds=(read_end,), **env)
    finally:
        os.close(read_end)


def what_the_function_saw(mode: str, response: httpx.Response) -> str:
    """Everything the function was given about the call (environment and headers), as text."""
    assert response.status_code == 200, response.text
    if mode == "python":
        document = response.json()
        return json.dumps(document["headers"]) + json.dumps(document["env"])
    if mode == "http":
        return json.dumps(response.json()["headers"])
    return response.text


@pytest.mark.parametrize("mode", ["fork", "streaming", "http", "python"])
def test_calls_need_the_token_and_the_function_never_sees_it(start_watchdog, tmp_path: Path, mode: str):
    token = secrets.token_urlsafe(32).encode()
    watchdog = start_with_token(start_watchdog, token, mode, tmp_path)
    for headers in ({}, {HEADER: "wrong" * 8}, {HEADER: token.decode()[:-1]}, {HEADER.lower(): ""}):
        response = watchdog.request("POST", "/call", content=b"body", headers=headers)
        assert (response.status_code, response.text.strip()) == (403, FORBIDDEN), headers
    assert watchdog.request("GET", "/_/health").status_code == 200, "health needs no token"
    response = watchdog.request("POST", "/call", content=b"body", headers={HEADER: token.decode(), "X-Kept": "yes"})
    seen = what_the_function_saw(mode, response)
    assert "x-kept" in seen.lower() or "x_kept" in seen.lower(), seen
    assert token.decode() not in seen, seen
    assert "faasd-call-token" not in seen.lower() and "faasd_call_token" not in seen.lower(), seen


def test_refused_on_the_head_alone_without_reading_the_body(start_watchdog):
    watchdog = start_with_token(start_watchdog, secrets.token_urlsafe(32).encode(), max_body_bytes="1g")
    for extra in ({}, {"Expect": "100-continue"}):
        with RawConnection(watchdog.port) as conn:
            started = time.monotonic()
            conn.send(http_request("POST", "/", headers={"Content-Length": str(500 * 1024 * 1024), **extra}))
            response = conn.read_response()
            assert (response.status, response.text.strip()) == (403, FORBIDDEN), extra
            assert response.header("Connection") == "close"
            assert conn.at_eof(timeout=2.0), "the connection should close: its body is never read"
            assert time.monotonic() - started < scaled(2.0)


def test_a_token_in_a_file_works_too(start_watchdog, tmp_path: Path):
    token = secrets.token_urlsafe(32)
    path = tmp_path / "call-token"
    path.write_text(token + "\n")
    watchdog = start_watchdog(ENV_AND_HEADERS, call_token_file=str(path))
    assert watchdog.request("GET", "/").status_code == 403
    response = watchdog.request("GET", "/", headers={HEADER: token})
    assert response.status_code == 200 and token not in response.text


def test_without_a_token_nothing_is_checked_and_the_header_is_still_stripped(start_watchdog):
    watchdog = start_watchdog(ENV_AND_HEADERS)
    response = watchdog.request("GET", "/", headers={HEADER: "some-token-from-a-gateway-0123"})
    assert response.status_code == 200
    assert "some-token-from-a-gateway" not in response.text and "Call_Token" not in response.text


def test_the_token_fd_is_closed_before_any_function_runs(start_watchdog):
    token = secrets.token_urlsafe(32).encode()
    read_end = token_pipe(token)
    pipe = f"pipe:[{os.fstat(read_end).st_ino}]"
    try:
        watchdog = start_watchdog(
            "sh -c 'for fd in /proc/self/fd/*; do readlink $fd; done; true'",
            call_token_fd=str(read_end),
            pass_fds=(read_end,),
        )
    finally:
        os.close(read_end)
    held = _fd_targets(watchdog.pid)
    assert pipe not in held, held
    response = watchdog.request("GET", "/", headers={HEADER: token.decode()})
    assert response.status_code == 200 and pipe not in response.text, response.text


def _fd_targets(pid: int) -> list[str]:
    """What each open fd of ``pid`` points at (fds closed while we look are skipped)."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return targets


@pytest.mark.parametrize(
    ("env", "pass_fd", "reason"),
    [
        pytest.param({"call_token_fd": "57"}, False, "Bad file descriptor", id="fd-not-open"),
        pytest.param({"call_token_fd": "0"}, False, "not 0-2", id="fd-stdin"),
        pytest.param({"call_token_file": "/nonexistent/token"}, False, "No such file", id="no-file"),
        pytest.param({}, True, "not a call token", id="short-token"),
        pytest.param({"call_token_fd": "9", "call_token_file": "/x"}, False, "not both", id="both"),
    ],
)
def test_an_unusable_token_source_stops_the_watchdog_with_one_line(
    pyz_python, faasd_pyz, tmp_path: Path, env: dict[str, str], pass_fd: bool, reason: str
):
    read_end = token_pipe(b"short") if pass_fd else -1
    if pass_fd:
        env = {"call_token_fd": str(read_end)}
    full = {"PATH": CLEAN_PATH, "fprocess": "cat", "port": str(free_port()), "metrics_port": "0", **env}
    try:
        result = subprocess.run(
            [pyz_python, str(faasd_pyz), "watchdog"],
            env=full,
            capture_output=True,
            text=True,
            timeout=10,
            pass_fds=(read_end,) if pass_fd else (),
            cwd=tmp_path,
        )
    finally:
        if pass_fd:
            os.close(read_end)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faasd watchdog: invalid call_token_"), result.stderr
    assert reason in lines[0], lines[0]


def _run_as_nobody(pyz_python: str, faasd_pyz: Path, env: dict[str, str], pass_fds: tuple[int, ...] = ()):
    return subprocess.Popen(
        [pyz_python, str(faasd_pyz), "watchdog"],
        env=env,
        cwd="/",
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        pass_fds=pass_fds,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the watchdog as another user")
def test_a_function_cannot_read_the_token_from_its_watchdogs_memory(pyz_python, faasd_pyz):
    """The function runs as the watchdog's user: without PR_SET_DUMPABLE=0 it could read the
    watchdog's /proc files (environ, fd, mem: the token is in its memory); the control run (no token,
    so no protection) shows that it can."""
    probe = (
        "sh -c 'cat /proc/$PPID/environ >/dev/null 2>&1 && echo environ-readable; "
        "ls /proc/$PPID/fd >/dev/null 2>&1 && echo fds-readable; echo done'"
    )
    results = {}
    for protected in (False, True):
        port = free_port()
        env = {
            "PATH": CLEAN_PATH,
            "fprocess": probe,
            "port": str(port),
            "metrics_port": "0",
            "bind": "127.0.0.1",
            "suppress_lock": "true",
        }
        token = secrets.token_urlsafe(32)
        read_end = token_pipe(token.encode()) if protected else -1
        if protected:
            env["call_token_fd"] = str(read_end)
        proc = _run_as_nobody(pyz_python, faasd_pyz, env, (read_end,) if protected else ())
        if protected:
            os.close(read_end)
        try:

            def ready(port: int = port) -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/_/health", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, 10, "the watchdog running as nobody")
            response = httpx.get(f"http://127.0.0.1:{port}/", headers={HEADER: token}, timeout=10)
            assert response.status_code == 200, response.text
            results[protected] = response.text
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert "environ-readable" in results[False] and "fds-readable" in results[False], results
    assert "environ-readable" not in results[True] and "fds-readable" not in results[True], results


@pytest.mark.parametrize("mode", ["fork", "streaming", "python"])
def test_a_token_in_the_environment_is_required_and_hidden_from_the_function(start_watchdog, tmp_path: Path, mode: str):
    """Marathon's form (``call_token=<token>``, one per function): checked like the others, and never in
    the environment a function is given (also not the name ``call_token``)."""
    token = secrets.token_urlsafe(32)
    env: dict[str, str] = {"call_token": token}
    fprocess: str | None = ENV_AND_HEADERS
    if mode == "python":
        handler = tmp_path / "handler.py"
        handler.write_text(PYTHON_HANDLER)
        fprocess = None
        env.update(handler=str(handler), workers="1")
    watchdog = start_watchdog(fprocess, mode=mode, **env)
    assert watchdog.request("POST", "/", content=b"x").status_code == 403
    assert watchdog.request("POST", "/", content=b"x", headers={HEADER: token + "x"}).status_code == 403
    seen = what_the_function_saw(mode, watchdog.request("POST", "/", content=b"x", headers={HEADER: token}))
    assert token not in seen and "call_token" not in seen, seen


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        pytest.param({"call_token": "short"}, "not a call token", id="short"),
        pytest.param({"call_token": "t" * 32, "call_token_file": "/x"}, "not both", id="with-file"),
    ],
)
def test_an_unusable_token_in_the_environment_stops_the_watchdog_without_showing_it(
    pyz_python, faasd_pyz, tmp_path: Path, env: dict[str, str], reason: str
):
    full = {"PATH": CLEAN_PATH, "fprocess": "cat", "port": str(free_port()), "metrics_port": "0", **env}
    result = subprocess.run(
        [pyz_python, str(faasd_pyz), "watchdog"], env=full, capture_output=True, text=True, timeout=10, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faasd watchdog: invalid call_token='...'"), result.stderr
    assert reason in lines[0] and env["call_token"] not in lines[0], lines[0]
