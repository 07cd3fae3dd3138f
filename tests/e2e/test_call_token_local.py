"""The call token end to end on the local backend (faasd/calltoken.py): a real daemon, real replicas.

A replica listens on 127.0.0.1, where any local user or function can reach it: a call straight to its
port gets 403 without the daemon's token or with a wrong one, the same call through the gateway 200;
the token is in no replica's or function's environment and in no header the function sees, and the
state dir keeps it 0600.
"""

from __future__ import annotations

import os
import re
import stat

import httpx

from tests.daemon_fixtures import Daemon, StartDaemon
from tests.helpers import wait_for

HEADER = "X-Faasd-Call-Token"
FORBIDDEN = "Forbidden: this replica takes calls only from its faasd gateway"
SHOW_ALL = "sh -c 'env; echo ---; cat'"


def replica_port(daemon: Daemon, function: str) -> int:
    """The port of ``function``'s ready replica, from the daemon's ``replica ready`` log line."""
    pattern = re.compile(rf'event="replica ready" function={function} .*?port=(\d+)')
    match = wait_for(lambda: pattern.search(daemon.logs()), 10, f"a ready replica of {function}")
    return int(match.group(1))


def test_replicas_take_calls_only_from_the_gateway(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    token_path = daemon.state_dir / "call-token"
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    token = token_path.read_text().strip()
    daemon.deploy("tok", SHOW_ALL)
    port = replica_port(daemon, "tok")
    direct = f"http://127.0.0.1:{port}"

    assert httpx.get(f"{direct}/_/health", timeout=5).status_code == 200  # Reveals only OK / Not ready.
    for headers in ({}, {HEADER: "x" * len(token)}, {HEADER: token[:-1]}, {"X-Faasd-Call-Token": ""}):
        response = httpx.post(direct, content=b"direct", headers=headers, timeout=5)
        assert (response.status_code, response.text.strip()) == (403, FORBIDDEN), headers
    assert httpx.post(direct, content=b"direct", headers={HEADER: token}, timeout=5).status_code == 200

    # Through the gateway: the token is added (a client's own guess is replaced) and never seen.
    response = httpx.post(
        f"{daemon.url}/function/tok", content=b"through", headers={HEADER: "client-guess-0123456789"}, timeout=10
    )
    assert response.status_code == 200, response.text
    env, _, body = response.text.partition("---\n")
    assert body == "through"
    assert token not in env and "client-guess" not in env
    assert "FAASD_CALL_TOKEN" not in env.upper(), env
    for pid in daemon.replicas():
        with open(f"/proc/{pid}/environ", "rb") as file:
            assert token.encode() not in file.read(), f"the token is in replica {pid}'s environment"


def test_the_token_is_kept_across_restarts(start_daemon: StartDaemon, tmp_path) -> None:
    state = tmp_path / "kept"
    first = start_daemon(state_dir=state)
    token = (state / "call-token").read_text()
    first.deploy("kept", "cat")
    assert first.stop() == 0
    second = start_daemon(state_dir=state)
    assert (state / "call-token").read_text() == token
    second.wait_available("kept", 1)
    response = httpx.post(f"{second.url}/function/kept", content=b"again", timeout=10)
    assert (response.status_code, response.text) == (200, "again")


def test_a_token_file_others_may_read_stops_the_daemon_with_one_line(start_daemon: StartDaemon, tmp_path) -> None:
    state = tmp_path / "loose"
    state.mkdir(mode=0o700)
    (state / "call-token").write_text("a" * 43 + "\n")
    os.chmod(state / "call-token", 0o644)
    daemon = start_daemon(state_dir=state, wait_ready=False)
    assert daemon.proc.wait(timeout=20) == 1
    lines = [line for line in daemon.logs().splitlines() if "level=error" in line]
    assert len(lines) == 1 and "call-token is readable by others" in lines[0], daemon.logs()
    assert "Traceback" not in daemon.logs()
