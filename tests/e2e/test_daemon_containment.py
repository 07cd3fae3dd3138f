"""One function, one request, never takes the daemon down (issue 11, section 2), against a real daemon.

Each test is a reproduction that crashed or hung ``faasd up`` (local backend) before the fix:

* two updates in a row: the health probe of a replica being replaced saw its listener close, and
  trio's ``BrokenResourceError`` left the replica supervisor and the provider's nursery;
* ``envVars`` a process environment cannot hold (``=`` or NUL in a name, NUL in a value, ...) were
  accepted with 202, then killed the daemon at once and at every restart;
* a replica that cannot be spawned is one failed function (with its reason in the status), not a
  daemon in a restart loop;
* start-up: the gateway binds and answers first, stored functions are restored in the background
  (a hanging ``pip install`` or an invalid stored spec blocks nothing), calls to a function still
  restoring are held, as at zero replicas;
* a corrupt or unusable state dir/database is one error line naming the file, exit 1;
* a secret a function uses cannot be deleted (409 naming the functions).
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_fixtures import PASSWORD, MakeCli, StartDaemon
from tests.e2e.test_templates import _wheel
from tests.helpers import wait_for


def _archive(files: dict[str, bytes]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o755
            tar.addfile(info, io.BytesIO(content))
    return base64.b64encode(raw.getvalue()).decode()


JSON = {"Content-Type": "application/json"}


def _faasd_state(daemon_status: dict[str, Any]) -> dict[str, Any]:
    """The faasd-specific part of a FunctionStatus document (absent from OpenFaaS's own)."""
    state = daemon_status.get("faasd")
    assert isinstance(state, dict), f"no 'faasd' object in the status: {daemon_status}"
    return state


# -- updates ------------------------------------------------------------------------------------------


def test_updating_twice_in_a_row_keeps_the_daemon_up(start_daemon: StartDaemon) -> None:
    """POST then two PUTs of the same spec, and deploys followed at once by an update: every answer is
    202, the daemon stays up, and the function ends with one ready replica that answers."""
    daemon = start_daemon()
    spec = {"service": "echo", "envProcess": "cat"}
    with daemon.client() as client:
        assert client.post("/system/functions", json=spec).status_code == 202
        for _ in range(2):
            assert client.put("/system/functions", json=spec).status_code == 202
        for round_ in range(3):
            assert client.post("/system/functions", json=spec).status_code == 202, round_
            assert client.put("/system/functions", json=spec).status_code == 202, round_
    daemon.wait_available("echo", 1)
    assert daemon.proc.poll() is None, daemon.logs()[-3000:]
    with daemon.client() as client:
        assert client.post("/function/echo", content=b"still up").text == "still up"
    assert "Traceback" not in daemon.logs()


# -- envVars ------------------------------------------------------------------------------------------

BAD_ENV_VARS = [
    pytest.param({"A=B": "x"}, "'A=B'", id="equals-in-name"),
    pytest.param({"A\0B": "x"}, "'A\\x00B'", id="nul-in-name"),
    pytest.param({"GOOD": "x\0y"}, "'GOOD'", id="nul-in-value"),
    pytest.param({"": "x"}, "empty", id="empty-name"),
    pytest.param({"NUMBER": 5}, "'NUMBER'", id="non-string-value"),
    pytest.param({"BIG": "x" * 200_000}, "'BIG'", id="huge-value"),
    pytest.param({"\ud800": "x"}, "'\\ud800'", id="lone-surrogate-name"),
    pytest.param({"SURROGATE": "\udfff"}, "'SURROGATE'", id="lone-surrogate-value"),
]


def test_env_vars_a_process_cannot_have_are_a_400_naming_the_key(start_daemon: StartDaemon, tmp_path: Path) -> None:
    state = tmp_path / "kept"
    daemon = start_daemon(state_dir=state)
    daemon.deploy("echo", "cat")
    with daemon.client() as client:
        for param in BAD_ENV_VARS:
            env_vars, mention = param.values
            spec = {"service": "bad", "envProcess": "cat", "envVars": env_vars}
            for method in ("POST", "PUT"):
                # json.dumps escapes a lone surrogate as \\ud800 (httpx's encoder cannot send one).
                body = json.dumps(spec).encode()
                answer = client.request(method, "/system/functions", content=body, headers=JSON)
                assert answer.status_code == 400, (param.id, method, answer.status_code, answer.text[:200])
                assert "envVars" in answer.text and mention in answer.text, (param.id, answer.text[:300])
                assert answer.text.count("\n") == 1 and len(answer.text) < 400, answer.text[:500]
        # On an existing function too (an update that would have replaced working replicas).
        answer = client.put("/system/functions", json={"service": "echo", "envProcess": "cat", "envVars": {"X=": ""}})
        assert answer.status_code == 400 and "'X='" in answer.text
        total = {f"K{i}": "v" * 60_000 for i in range(12)}  # Each fine alone; together over the limit.
        answer = client.post("/system/functions", json={"service": "bad", "envProcess": "cat", "envVars": total})
        assert answer.status_code == 400 and "envVars" in answer.text
        assert client.get("/system/function/bad").status_code == 404
        assert client.post("/function/echo", content=b"up").text == "up"
    assert daemon.stop() == 0
    again = start_daemon(state_dir=state)  # Nothing bad was stored: the restart is clean too.
    again.wait_available("echo", 1)
    with again.client() as client:
        assert [f["name"] for f in client.get("/system/functions").json()] == ["echo"]


# -- a function that fails is one failed function ----------------------------------------------------


def test_a_function_whose_replicas_cannot_start_is_marked_failed_and_the_rest_serve(
    start_daemon: StartDaemon, faasd_cli: MakeCli
) -> None:
    """The function's working directory vanishes and its replica is killed: the replacement cannot be
    spawned. That function is failed with the reason (status JSON, ``faasd status``, ``faasd status
    NAME``); the daemon and the other function keep serving; an update brings it back."""
    daemon = start_daemon()
    daemon.deploy("healthy", "cat")
    daemon.deploy("doomed", "cat")
    with daemon.client() as client:
        assert _faasd_state(client.get("/system/function/doomed").json()) == {"state": "deployed"}
    # The doomed replica is the one running in the doomed function's working directory.
    workdir = str(daemon.state_dir / "functions" / "doomed")
    doomed = [pid for pid in daemon.replicas() if os.readlink(f"/proc/{pid}/cwd") == workdir]
    assert len(doomed) == 1, doomed
    subprocess.run(["rm", "-rf", workdir], check=True, timeout=30)
    os.kill(doomed[0], signal.SIGKILL)

    def failed() -> dict[str, Any] | None:
        status = daemon.status("doomed")
        return status if _faasd_state(status).get("state") == "failed" else None

    status = wait_for(failed, 15, "doomed to be marked failed")
    reason = _faasd_state(status)["reason"]
    assert "cannot start" in reason and "No such file or directory" in reason, reason
    assert daemon.proc.poll() is None
    with daemon.client() as client:
        for _ in range(20):
            assert client.post("/function/healthy", content=b"fine").text == "fine"
        assert _faasd_state(client.get("/system/function/healthy").json()) == {"state": "deployed"}
    cli = faasd_cli(daemon)
    table = cli.run("status").ok()
    assert any(row[0] == "doomed" and "failed" in "\t".join(row) for row in table.rows()), table.out
    detail = cli.run("status", "doomed").ok().fields()
    assert detail.get("State", "").startswith("failed") and "No such file or directory" in detail["State"], detail
    # A new deploy of the function clears the failure.
    with daemon.client() as client:
        assert client.put("/system/functions", json={"service": "doomed", "envProcess": "cat"}).status_code == 202
    daemon.wait_available("doomed", 1)
    assert _faasd_state(daemon.status("doomed")) == {"state": "deployed"}


# -- start-up -----------------------------------------------------------------------------------------


class _HeldServer:
    """An HTTP server on 127.0.0.1 that answers each GET only once ``release`` is set (pip downloading
    a requirement from a slow index); ``GET /<wheel>`` serves the wheel file, anything else 404."""

    def __init__(self, wheel: Path) -> None:
        self.release = threading.Event()
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                outer.release.wait(60)
                if self.path == f"/{wheel.name}":
                    data = wheel.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self.send_error(404)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _HeldServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held_index(tmp_path: Path) -> Iterator[tuple[_HeldServer, Path]]:
    wheel = _wheel(tmp_path)
    with _HeldServer(wheel) as server:
        yield server, wheel


def _store_rows(db: Path, rows: dict[str, str], replicas: int = 1) -> None:
    """Write function rows into a faasd.db as the daemon would (the schema comes from faasd.store)."""
    from faasd.store import Store

    Store.open(str(db)).close()
    with sqlite3.connect(db) as connection:
        now = time.time()
        for name, spec in rows.items():
            connection.execute(
                "INSERT INTO functions (name, spec, replicas, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (name, spec, replicas, now, now),
            )


@pytest.mark.slow
def test_startup_serves_at_once_while_functions_restore_in_the_background(
    start_daemon: StartDaemon, faasd_cli: MakeCli, held_index: tuple[_HeldServer, Path], tmp_path: Path
) -> None:
    """Stored: a plain function, one whose requirements.txt downloads from an index that does not
    answer yet, one with an envVars name a process cannot have, one whose spec is not JSON. The daemon
    is ready at once, serves the plain one, shows the others restoring/failed, holds a call to the
    restoring one and answers it once its ``pip install`` is done."""
    server, wheel = held_index
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    requirement = f"tinydep @ http://127.0.0.1:{server.port}/{wheel.name}\n".encode()
    _store_rows(
        state / "faasd.db",
        {
            "quick": json.dumps({"service": "quick", "envProcess": "cat"}),
            "slowdeps": json.dumps(
                {
                    "service": "slowdeps",
                    "envProcess": "cat",
                    "handlerArchive": _archive({"requirements.txt": requirement}),
                }
            ),
            "badenv": json.dumps({"service": "badenv", "envProcess": "cat", "envVars": {"A=B": "x"}}),
            "notjson": "{this is not json",
        },
    )
    # The daemon builds with its interpreter's pip: run it with the test venv's (which has pip).
    daemon = start_daemon(state_dir=state, python=sys.executable, FAASD_READY_TIMEOUT="60s")
    assert daemon.startup_s < 5, f"ready after {daemon.startup_s:.1f}s"
    daemon.wait_available("quick", 1)
    with daemon.client() as client:
        assert client.post("/function/quick", content=b"served").text == "served"
        listed = {f["name"]: f for f in client.get("/system/functions").json()}
    assert set(listed) == {"quick", "slowdeps", "badenv", "notjson"}, listed
    assert _faasd_state(listed["slowdeps"])["state"] == "restoring"
    for name, mention in (("badenv", "'A=B'"), ("notjson", "not valid JSON")):
        failure = _faasd_state(listed[name])
        assert failure["state"] == "failed" and mention in failure["reason"], failure
    wait_for(lambda: server.requests > 0, 30, "pip to ask the index for the requirement")
    assert _faasd_state(daemon.status("slowdeps"))["state"] == "restoring"
    detail = faasd_cli(daemon).run("status", "badenv").ok().fields()
    assert "'A=B'" in detail.get("State", ""), detail

    answer: dict[str, Any] = {}

    def call() -> None:
        try:
            with httpx.Client(base_url=daemon.url, timeout=90) as client:
                answer["response"] = client.post("/function/slowdeps", content=b"held")
        except httpx.HTTPError as exc:
            answer["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    # Readiness: the gateway holds the call (the function is still restoring).
    wait_for(lambda: daemon.metric("faasd_held_requests", function_name="slowdeps") == 1, 10, "the call to be held")
    assert caller.is_alive() and not answer, answer
    server.release.set()
    caller.join(90)
    assert "response" in answer, answer
    assert (answer["response"].status_code, answer["response"].text) == (200, "held")
    assert (state / "functions" / "slowdeps" / ".packages" / "tinydep.py").is_file()
    assert _faasd_state(daemon.status("slowdeps")) == {"state": "deployed"}
    # A failed function can be removed (the invalid row goes) or deployed again (it comes back).
    with daemon.client() as client:
        assert client.request("DELETE", "/system/functions", json={"functionName": "notjson"}).status_code == 202
        answer = client.post("/system/functions", json={"service": "badenv", "envProcess": "cat"})
        assert answer.status_code == 202, answer.text
    daemon.wait_available("badenv", 1)
    assert _faasd_state(daemon.status("badenv")) == {"state": "deployed"}


@pytest.mark.slow
def test_a_hanging_restore_does_not_hold_shutdown(
    start_daemon: StartDaemon, held_index: tuple[_HeldServer, Path], tmp_path: Path
) -> None:
    """SIGTERM while a stored function's ``pip install`` waits on an index that never answers: the
    daemon stops (the install is cancelled) well within its shutdown budget, exit status 0."""
    server, wheel = held_index
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    requirement = f"tinydep @ http://127.0.0.1:{server.port}/{wheel.name}\n".encode()
    _store_rows(
        state / "faasd.db",
        {
            "stuck": json.dumps(
                {"service": "stuck", "envProcess": "cat", "handlerArchive": _archive({"requirements.txt": requirement})}
            )
        },
    )
    daemon = start_daemon(state_dir=state, python=sys.executable)
    wait_for(lambda: server.requests > 0, 30, "pip to ask the index for the requirement")
    with daemon.client() as client:
        assert client.get("/healthz").status_code == 200
    signalled = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - signalled < 10, daemon.logs()[-2000:]


# -- state dir and database ---------------------------------------------------------------------------


def _run_up(
    pyz_python: str, faasd_pyz: Path, state: Path, *, as_nobody: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(state.parent), "FAASD_PASSWORD": PASSWORD}
    kwargs: dict[str, Any] = {}
    if as_nobody:
        kwargs = {"user": 65534, "group": 65534, "extra_groups": []}
    return subprocess.run(
        [pyz_python, str(faasd_pyz), "up", "--port", "0", "--state-dir", str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


def _unusable_state(kind: str, base: Path) -> tuple[Path, Path, bool]:
    """(state dir, the file the error must name, run as nobody) for one kind of broken state."""
    state = base / "state"
    if kind == "garbage-db":
        state.mkdir(mode=0o700)
        (state / "faasd.db").write_bytes(b"this is not an SQLite database, just garbage\n" * 100)
        return state, state / "faasd.db", False
    if kind == "newer-schema":
        state.mkdir(mode=0o700)
        with sqlite3.connect(state / "faasd.db") as connection:
            connection.execute("PRAGMA user_version=99")
        return state, state / "faasd.db", False
    if kind == "db-is-a-directory":
        (state / "faasd.db").mkdir(parents=True)
        return state, state / "faasd.db", False
    if kind == "state-dir-is-a-file":
        state.write_text("not a directory\n")
        return state, state, False
    if kind == "state-dir-not-writable":
        state.mkdir(mode=0o755)
        if os.geteuid() == 0:
            return state, state, True  # Root writes anywhere: run the daemon as nobody.
        state.chmod(0o500)
        return state, state, False
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["garbage-db", "newer-schema", "db-is-a-directory", "state-dir-is-a-file", "state-dir-not-writable"]
)
def test_an_unusable_state_dir_is_one_error_line_naming_the_file(kind: str, pyz_python: str, faasd_pyz: Path) -> None:
    # A directory every user can reach (pytest's tmp_path is private to root).
    with tempfile.TemporaryDirectory(prefix="faasd-h-robust-") as base:
        os.chmod(base, 0o755)
        state, culprit, as_nobody = _unusable_state(kind, Path(base))
        done = _run_up(pyz_python, faasd_pyz, state, as_nobody=as_nobody)
    output = done.stdout + done.stderr
    assert done.returncode == 1, f"exit {done.returncode}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if "level=error" in line]
    assert len(errors) == 1, output[-3000:]
    assert str(culprit) in errors[0], errors[0]


# -- secrets ------------------------------------------------------------------------------------------


def test_deleting_a_secret_a_function_uses_is_refused(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        assert client.post("/system/secrets", json={"name": "token", "value": "t0k3n"}).status_code == 201
        assert client.post("/system/secrets", json={"name": "spare", "value": "x"}).status_code == 201
    for name in ("reader-b", "reader-a"):
        daemon.deploy(name, "sh -c 'cat \"$secret_mount_path/token\"'", secrets=["token"])
    with daemon.client() as client:
        refused = client.request("DELETE", "/system/secrets", json={"name": "token"})
        assert refused.status_code == 409, refused.text
        assert "reader-a" in refused.text and "reader-b" in refused.text and refused.text.count("\n") == 1
        assert client.post("/function/reader-a").text == "t0k3n"
        assert client.request("DELETE", "/system/secrets", json={"name": "spare"}).status_code == 200
        for name in ("reader-a", "reader-b"):
            assert client.request("DELETE", "/system/functions", json={"functionName": name}).status_code == 202
        assert client.request("DELETE", "/system/secrets", json={"name": "token"}).status_code == 200
        assert client.get("/system/secrets").json() == []
