"""The Flock-of-Birds API against a real daemon (``dist/faasd.pyz up``, local backend, sandbox as this
machine allows -- bwrap here): the seed's session verbatim, the same ids answering after a restart and
after a ``kill -9``, every error case, the sandbox keeping a snippet away from the daemon's state, and
the CLI. The seed's examples are ``sample-functions/snippets/`` (a helloworld answering 42, an add of
two string parameters)."""

from __future__ import annotations

import json
import re
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from tests.daemon_fixtures import PASSWORD, Daemon, MakeCli, StartDaemon
from tests.helpers import wait_for

SNIPPETS = Path(__file__).resolve().parents[2] / "sample-functions" / "snippets"
HELLO = (SNIPPETS / "helloworld.py").read_bytes()
ADD = (SNIPPETS / "add.py").read_bytes()
HTTPIE = {"Content-Type": "application/json", "Accept": "application/json, */*;q=0.5", "User-Agent": "HTTPie/3.2.2"}
"""What the seed's ``http POST host/api/gen < add.py`` sends: the raw file, labelled JSON (httpie's default)."""
CURL = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "curl/7.88.1"}
"""What ``curl --data-binary @add.py`` sends."""

BEHAVIOURS = b"""
import os, signal, time

def callme(kind="echo", value=""):
    if kind == "raise":
        raise ValueError("bad " + value)
    if kind == "sleep":
        time.sleep(float(value))
        return "woke"
    if kind == "spin":
        while True:
            pass
    if kind == "deaf":  # The driver's timer cannot reach it: the watchdog's exec_timeout must.
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        time.sleep(float(value))
        return "woke"
    if kind == "set":
        return {1, 2}
    if kind == "exit":
        os._exit(1)
    if kind == "read":
        with open(value, "rb") as file:
            return file.read().decode("latin-1")
    return value
"""


def _gen(client: httpx.Client, source: bytes, headers: dict[str, str] | None = None, query: str = "") -> str:
    answer = client.post(f"/api/gen{query}", content=source, headers=headers or CURL)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json" and set(answer.json()) == {"id"}
    snippet_id = answer.json()["id"]
    assert str(uuid.UUID(snippet_id, version=4)) == snippet_id
    return snippet_id


def _call(client: httpx.Client, snippet_id: str, query: str = "") -> httpx.Response:
    # Raw target: httpx would not change ':' or ',', but the seed's form is kept exactly as typed.
    return client.get(f"/api/call/{snippet_id}" + (f"?{query}" if query else ""))


def _session_answers(daemon: Daemon, hello_id: str, add_id: str) -> None:
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        assert client.get("/api/stats").json() == {"functions": [hello_id, add_id]}
        hello = _call(client, hello_id)
        assert hello.status_code == 200 and hello.json() == {"result": 42}
        assert hello.headers["content-type"] == "application/json"
        added = _call(client, add_id, "param1:1,param2:1")
        assert added.status_code == 200 and added.json() == {"result": 2}


@pytest.mark.slow
def test_the_seed_session_verbatim_then_restart_and_kill_9(start_daemon: StartDaemon, tmp_path: Path) -> None:
    state = tmp_path / "kept"
    daemon = start_daemon(state_dir=state)
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        hello_id = _gen(client, HELLO, HTTPIE)
        add_id = _gen(client, ADD, HTTPIE)
    _session_answers(daemon, hello_id, add_id)

    # Each snippet is a function like any other: status, /function/, metrics.
    with daemon.client() as client:
        names = {item["name"] for item in client.get("/system/functions").json()}
        assert names == {f"fob-{hello_id}", f"fob-{add_id}"}
        status = client.get(f"/system/function/fob-{add_id}").json()
        assert status["availableReplicas"] == 1 and status["labels"]["com.faasd.snippet"] == add_id
        direct = client.get(f"/function/fob-{add_id}?param1=2&param2=3")
        assert direct.status_code == 200 and direct.json() == {"result": 5}
    assert daemon.metric("gateway_function_invocation_total", function_name=f"fob-{hello_id}", code="200") == 1

    assert daemon.stop() == 0
    restarted = start_daemon(state_dir=state)
    _session_answers(restarted, hello_id, add_id)  # Calls are held while the functions are restored.

    restarted.proc.send_signal(signal.SIGKILL)
    restarted.proc.wait()
    again = start_daemon(state_dir=state)
    _session_answers(again, hello_id, add_id)
    assert "snippet redeployed" not in again.logs()  # Same faasd, same settings: nothing to redo.


def test_uploads_that_cannot_be_used_are_400_and_leave_nothing(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    cases = [
        (b"def callme(:\n    pass\n", "", "SyntaxError", 1, 12),
        (b"def other():\n    return 1\n", "", "no top-level callme", 1, 1),
        (b"x = 1\nasync def callme():\n    return 1\n", "", "not async def", 2, 1),
        (b"def callme():\n    return '\x00'\n", "", "NUL byte", 2, 13),
        (b"def callme():\n    return '\xe9'\n", "", "not UTF-8", 2, 13),
        (b"x = " + b"-" * 100_000 + b"1\ndef callme(): pass\n", "", "nested too deeply", None, None),
        (b"x = " + b"(" * 100_000 + b"\ndef callme(): pass\n", "", "", 1, None),
        (b"", "", "empty", None, None),
        (ADD, "?lang=js", "unsupported lang 'js'; supported: python", None, None),
        # Compiles, then fails when its replica imports it: the import error, and its line, come back.
        (
            b"import os\nraise ValueError('boom at import')\ndef callme(): pass\n",
            "",
            "ValueError: boom at import",
            2,
            None,
        ),
        (b"callme = 5\n", "", "callme is not a function", None, None),
    ]
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        for source, query, reason, line, column in cases:
            answer = client.post(f"/api/gen{query}", content=source, headers=CURL)
            assert answer.status_code == 400, (source[:40], answer.text)
            error = answer.json()
            assert reason in error["error"] and "\n" not in error["error"], (source[:40], error)
            if line is not None:
                assert error["line"] == line, error
            if column is not None:
                assert error["column"] == column, error
        too_big = client.post("/api/gen", content=b"#" * (256 * 1024 + 1))
        assert too_big.status_code == 413 and "max_snippet_size" in too_big.json()["error"]
        assert client.get("/api/stats").json() == {"functions": []}
    with daemon.client() as client:
        assert client.get("/system/functions").json() == []  # The two that were deployed are gone again.
    assert "Traceback" not in daemon.logs()


def test_every_call_error_is_json(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(FAASD_SNIPPET_TIMEOUT="1s")
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        snippet_id = _gen(client, BEHAVIOURS)

        def error(query: str, status: int) -> dict[str, str]:
            answer = _call(client, snippet_id, query)
            assert answer.status_code == status, (query, answer.status_code, answer.text)
            assert answer.headers["content-type"] == "application/json", (query, answer.headers)
            assert "Traceback" not in answer.text
            return answer.json()

        assert _call(client, snippet_id, "kind:echo,value:a%2Cb:c%3Ad+e").json() == {"result": "a,b:c:d+e"}
        assert error("kind:raise,value:x", 500) == {
            "error": "ValueError: bad x",
            "type": "ValueError",
            "message": "bad x",
        }
        assert "not JSON-serialisable" in error("kind:set", 500)["error"]
        assert error("kind:sleep,value:30", 408)["error"] == "the snippet did not finish within 1s"
        assert error("kind:spin", 408)["error"] == "the snippet did not finish within 1s"
        assert "exceeded exec_timeout" in error("kind:deaf,value:30", 408)["error"]  # The watchdog's own 408.
        assert "crashed" in error("kind:exit", 500)["error"]
        assert _call(client, snippet_id, "value:still+here").json() == {"result": "still+here"}  # New workers.

        assert "unexpected keyword argument 'nope'" in error("nope:1", 400)["error"]
        for bad in ("kind", "kind:a,,", "kind:a,kind:b", "1kind:a", "kind:%zz", "kind:%00"):
            assert error(bad, 400)["error"]
        assert error("", 200) == {"result": ""}
        unknown = client.get(f"/api/call/{uuid.uuid4()}")
        assert unknown.status_code == 404 and "no snippet" in unknown.json()["error"]
        assert client.post(f"/api/call/{snippet_id}").status_code == 405

        # Deleting: credentials always; then the id is unknown and its function gone.
        assert client.delete(f"/api/gen/{snippet_id}").status_code == 401
        deleted = client.delete(f"/api/gen/{snippet_id}", auth=("admin", PASSWORD))
        assert deleted.status_code == 200 and deleted.json() == {"deleted": snippet_id}
        assert _call(client, snippet_id).status_code == 404
        assert client.get("/api/stats").json() == {"functions": []}
    with daemon.client() as client:
        assert client.get(f"/system/function/fob-{snippet_id}").status_code == 404


def test_a_snippet_cannot_read_the_daemons_state(start_daemon: StartDaemon, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "password").write_text(PASSWORD + "\n")
    (state / "password").chmod(0o600)
    daemon = start_daemon(state_dir=state, FAASD_PASSWORD="")
    wait_for(lambda: re.search(r"event=sandbox mode=(bwrap|uid) ", daemon.logs()), 15, "no sandbox here")
    secret_files = [state / "password", state / "faasd.db", state / "call-token", Path(f"/proc/{daemon.pid}/environ")]
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        snippet_id = _gen(client, BEHAVIOURS)
        assert _call(client, snippet_id, "kind:read,value:/etc/hostname").status_code == 200  # The probe works.
        for path in secret_files:
            assert path.exists() or path.name == "environ"
            answer = _call(client, snippet_id, f"kind:read,value:{path}")
            assert answer.status_code == 500, (path, answer.text)
            assert answer.json()["type"] in ("FileNotFoundError", "PermissionError"), answer.json()
            assert PASSWORD not in answer.text
        # At import time too: the upload is refused with the error, never the password.
        thief = f"open({str(state / 'password')!r}).read()\ndef callme(): pass\n".encode()
        stolen = client.post("/api/gen", content=thief)
        assert stolen.status_code == 400 and PASSWORD not in stolen.text
        assert "FileNotFoundError" in stolen.json()["error"] or "PermissionError" in stolen.json()["error"]


def test_faasd_rm_of_its_function_deletes_the_snippet(start_daemon: StartDaemon, tmp_path: Path) -> None:
    state = tmp_path / "kept"
    daemon = start_daemon(state_dir=state)
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        kept, removed = _gen(client, HELLO), _gen(client, ADD)
    with daemon.client() as client:
        answer = client.request("DELETE", "/system/functions", json={"functionName": f"fob-{removed}"})
        assert answer.status_code == 202
        assert client.get("/api/stats").json() == {"functions": [kept]}
        assert client.get(f"/api/call/{removed}").status_code == 404
    wait_for(lambda: "snippet deleted with its function" in daemon.logs(), 10, "the snippet's row to go")
    assert daemon.stop() == 0
    restarted = start_daemon(state_dir=state)
    with httpx.Client(base_url=restarted.url, timeout=60) as client:
        assert client.get("/api/stats").json() == {"functions": [kept]}
        assert client.get(f"/api/call/{kept}").json() == {"result": 42}


def test_the_cli(start_daemon: StartDaemon, faasd_cli: MakeCli, tmp_path: Path) -> None:
    daemon = start_daemon()
    cli = faasd_cli(daemon)
    snippet_id = cli.run("snippet", "add", str(SNIPPETS / "add.py")).ok().out.strip()
    assert str(uuid.UUID(snippet_id, version=4)) == snippet_id
    assert cli.run("snippet", "call", snippet_id, "param1:2", "param2:40").ok().out == "42\n"
    assert cli.run("snippet", "call", snippet_id, "param1:1", "param2:1", "--json").ok().json() == {"result": 2}
    assert cli.run("snippet", "show", snippet_id).ok().stdout == ADD
    rows = cli.run("snippet", "list").ok().rows()
    assert rows == [[snippet_id, f"fob-{snippet_id}", "1", "1", "2"]]
    assert any(f"fob-{snippet_id}" in line for line in cli.run("status").ok().out.splitlines())
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"def callme(:\n")
    assert cli.run("snippet", "add", str(bad)).error_line() == (
        "Error: add: 400: line 1, column 12: SyntaxError: invalid syntax"
    )
    assert "400" in cli.run("snippet", "call", snippet_id, "param1:1").error_line()
    assert "404" in cli.run("snippet", "call", str(uuid.uuid4())).error_line()
    assert json.loads(cli.run("snippet", "rm", snippet_id, "--json").ok().out) == {"removed": [snippet_id]}
    assert cli.run("snippet", "list").ok().rows() == []
    assert "404" in cli.run("snippet", "rm", snippet_id).error_line()
