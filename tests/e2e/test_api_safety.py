"""The management API as an exposed service, against a real daemon: the password rule at start, failed
logins slowed per client address (other addresses and the invoke path unaffected), JSON-only writes
(no cross-site form can deploy), ``nosniff`` on the gateway's own answers, and the public OpenAPI document.

Client addresses: all of 127.0.0.0/8 is loopback on Linux, so a client bound to 127.0.0.2 is a
different address to the daemon than one on 127.0.0.1 (the daemon still listens on 127.0.0.1 only).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from faasd.credentials import MIN_PASSWORD_LENGTH
from faasd.gateway.throttle import FREE_FAILURES
from tests.daemon_fixtures import PASSWORD, Daemon, StartDaemon, basic_auth
from tests.helpers import free_port

NOSNIFF = "nosniff"


def client_from(daemon: Daemon, address: str, *, auth: bool = True) -> httpx.Client:
    """A client whose connections come from ``address`` (a 127.0.0.0/8 address)."""
    return httpx.Client(
        base_url=daemon.url,
        auth=("admin", PASSWORD) if auth else None,
        timeout=30,
        transport=httpx.HTTPTransport(local_address=address),
    )


def test_a_short_password_is_refused_at_start(start_daemon: StartDaemon, tmp_path: Path) -> None:
    short = "p" * (MIN_PASSWORD_LENGTH - 1)
    daemon = start_daemon(wait_ready=False, port=free_port(), FAASD_PASSWORD=short)
    assert daemon.proc.wait(30) == 1
    lines = [line for line in daemon.logs().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"FAASD_PASSWORD has {len(short)} characters; at least {MIN_PASSWORD_LENGTH}" in lines[0]
    assert short not in lines[0]  # The message never echoes the password.
    # A hand-written password file that is too short: the same, naming the file.
    state = tmp_path / "short-file-state"
    state.mkdir(mode=0o700)
    (state / "password").write_text("hunter2\n")
    (state / "password").chmod(0o600)  # Private, as it must be (one others could read is refused for that).
    from_file = start_daemon(state_dir=state, wait_ready=False, port=free_port(), FAASD_PASSWORD="")
    assert from_file.proc.wait(30) == 1
    lines = [line for line in from_file.logs().splitlines() if line.strip()]
    assert len(lines) == 1 and f"{state / 'password'} has 7 characters" in lines[0], lines
    # Long enough: starts.
    start_daemon(FAASD_PASSWORD="q" * MIN_PASSWORD_LENGTH)


def test_system_writes_need_json_content_type(start_daemon: StartDaemon) -> None:
    """A browser form (urlencoded, multipart, text/plain: the types a cross-site form may send) cannot
    deploy, delete, scale or change secrets, even with the browser's cached credentials: 415, one line."""
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    with daemon.client() as client:
        spec = b'{"service": "forged", "envProcess": "cat"}'
        for content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
            "",
        ):
            headers = {"Content-Type": content_type} if content_type else {}
            for method, path, body in [
                ("POST", "/system/functions", spec),
                ("PUT", "/system/functions", spec),
                ("DELETE", "/system/functions", b'{"functionName": "echo"}'),
                ("POST", "/system/scale-function/echo", b'{"replicas": 0}'),
                ("POST", "/system/secrets", b'{"name": "s", "value": "v"}'),
                ("PUT", "/system/secrets", b'{"name": "s", "value": "v"}'),
                ("DELETE", "/system/secrets", b'{"name": "s"}'),
            ]:
                # One connection per request: a keep-alive connection answered before its body was
                # read can hang its next request (issue 11, section 3; fixed in the gateway separately).
                refused = client.request(method, path, content=body, headers={**headers, "Connection": "close"})
                assert refused.status_code == 415, (method, path, content_type, refused.text)
                assert refused.text.count("\n") == 1 and "application/json" in refused.text, refused.text
                assert refused.headers["x-content-type-options"] == NOSNIFF
        assert [f["name"] for f in client.get("/system/functions").json()] == ["echo"]
        assert client.get("/system/secrets").json() == []
        assert client.get("/system/function/echo").json()["replicas"] == 1
        # JSON with parameters is JSON; credentials are checked before the content type.
        accepted = client.post(
            "/system/secrets",
            content=b'{"name": "s", "value": "v"}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert accepted.status_code == 201, accepted.text
        assert client.patch("/system/functions", content=b"x").status_code == 405  # No such route: not 415.
    with daemon.client(auth=False) as anonymous:
        assert (
            anonymous.post("/system/functions", content=spec, headers={"Content-Type": "text/plain"}).status_code == 401
        )


def test_every_gateway_answer_says_nosniff_and_function_answers_are_their_own(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    with daemon.client() as client, daemon.client(auth=False) as anonymous:
        answers = {
            "info": client.get("/system/info"),
            "401": anonymous.get("/system/functions"),
            "404 system": client.get("/system/function/ghost"),
            "400 system": client.post("/system/functions", json={"service": "a/b"}),
            "healthz": anonymous.get("/healthz"),
            "healthz HEAD": anonymous.head("/healthz"),
            "metrics": anonymous.get("/metrics"),
            "openapi": anonymous.get("/openapi.json"),
            "index": anonymous.get("/"),
            "404 invoke": anonymous.post("/function/ghost", content=b"x"),
            "400 invoke": anonymous.post("/function/bad%20name", content=b"x"),
            "400 root": anonymous.post("/", content=b"x"),
        }
        for what, answer in answers.items():
            assert answer.headers.get("x-content-type-options") == NOSNIFF, (what, answer.status_code, answer.headers)
        echoed = anonymous.post("/function/echo", content=b"<script>1</script>")
        assert echoed.status_code == 200 and "x-content-type-options" not in echoed.headers


def test_failed_logins_are_slowed_per_address(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.deploy("echo", "cat")
    wrong = {"Authorization": basic_auth("not-the-password-at-all")}
    right = {"Authorization": basic_auth()}
    with (
        client_from(daemon, "127.0.0.2", auth=False) as attacker,
        client_from(daemon, "127.0.0.3", auth=False) as admin,
    ):
        for _ in range(FREE_FAILURES):
            assert attacker.get("/system/functions", headers=wrong).status_code == 401
        locked = attacker.get("/system/functions", headers=wrong)
        assert locked.status_code == 429, locked.text
        assert locked.text.count("\n") == 1 and "too many failed logins" in locked.text
        assert int(locked.headers["retry-after"]) >= 1
        # Locked means locked: the right password from that address is not even looked at.
        assert attacker.get("/system/functions", headers=right).status_code == 429
        # Other addresses and the invoke path are untouched.
        assert admin.get("/system/functions", headers=right).status_code == 200
        assert admin.get("/system/functions", headers=wrong).status_code == 401
        assert attacker.post("/function/echo", content=b"still public").text == "still public"
        time.sleep(float(locked.headers["retry-after"]) + 0.1)
        assert attacker.get("/system/functions", headers=right).status_code == 200


FLOOD = """
import base64, collections, json, sys, time
import httpx
url, seconds = sys.argv[1], float(sys.argv[2])
wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:not-the-password-at-all").decode()}
answers = collections.Counter()
with httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = client.get("/system/functions", headers=wrong).status_code
        answers[status] += 1
        if status == 429 and answers[429] == 1:
            print("throttled", flush=True)  # The daemon slows this address down from here on.
print(json.dumps(answers))
"""


def test_a_flood_of_bad_logins_does_not_slow_other_clients(start_daemon: StartDaemon) -> None:
    """Two processes on one address hammer /system/* with a wrong password as fast as they can; another
    address's management calls and anonymous invokes keep succeeding, at latencies close to those
    measured just before (same run). The flood runs in processes of its own so that it competes with
    the sampler for CPU only, not for this interpreter's GIL."""
    daemon = start_daemon()
    daemon.deploy("echo", "cat")

    def sample(admin: httpx.Client, caller: httpx.Client, count: int) -> tuple[list[float], list[float]]:
        manage, invoke = [], []
        for _ in range(count):
            started = time.perf_counter()
            assert admin.get("/system/function/echo").status_code == 200
            manage.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert caller.post("/function/echo", content=b"x").status_code == 200
            invoke.append(time.perf_counter() - started)
        return manage, invoke

    with client_from(daemon, "127.0.0.3") as admin, client_from(daemon, "127.0.0.1", auth=False) as caller:
        sample(admin, caller, 10)  # Warm both connections and the replica.
        manage_before, invoke_before = sample(admin, caller, 50)
        floods = [
            subprocess.Popen([sys.executable, "-c", FLOOD, daemon.url, "5"], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        try:
            for flood in floods:
                assert flood.stdout is not None and flood.stdout.readline() == "throttled\n"
            manage_during, invoke_during = sample(admin, caller, 50)
        finally:
            outputs = [flood.communicate(timeout=60)[0] for flood in floods]
    answers: dict[str, int] = {}
    for flood, output in zip(floods, outputs, strict=True):
        assert flood.returncode == 0, output
        for status, count in json.loads(output).items():
            answers[status] = answers.get(status, 0) + count
    assert answers.get("429", 0) > 10 * answers.get("401", 0), answers
    # The flood shares the machine's cores with the daemon and this sampler, so some slowdown is CPU,
    # not the throttle (about 2-3x here, more on a loaded machine: hence 5x or 50 ms); what must not
    # happen is others waiting on the flood -- a shared lock or a blocking sleep costs 1 s and more.
    for before, during, what in [(manage_before, manage_during, "manage"), (invoke_before, invoke_during, "invoke")]:
        base, loaded = statistics.median(before), statistics.median(during)
        limit = max(5 * base, base + 0.05)
        assert loaded < limit, f"{what}: median {loaded * 1000:.1f} ms during vs {base * 1000:.1f} ms before"
