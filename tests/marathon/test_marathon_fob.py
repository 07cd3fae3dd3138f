"""The Flock-of-Birds seed's session on the Marathon backend, against the emulator -- where the seed itself
ran (its functions were Marathon apps ``/fob-aviary/<uuid>``). Each snippet is the function ``fob-<id>``:
a Marathon command task that downloads faasd.pyz and carries the snippet in its app definition, so a
replica relaunched anywhere needs nothing from the daemon (the seed's replicas downloaded their code
from its dispatcher, and broke when it moved).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.test_fob import ADD, HELLO, HTTPIE, _gen, _session_answers
from tests.marathon.conftest import MarathonDaemon
from tests.marathon_emulator.fixture import OTHER_HOST, StartEmulator

pytestmark = pytest.mark.slow


def test_the_seed_session_on_marathon_then_a_restart(
    marathon_daemon: MarathonDaemon, marathon_emulator: StartEmulator, tmp_path: Path
) -> None:
    """The agent is 127.0.0.2 (the only address its tasks listen on): calls reach each replica at its
    task's host, and ``/api/meta`` names that host."""
    emulator = marathon_emulator(agent_host=OTHER_HOST)
    state = tmp_path / "kept"
    daemon = marathon_daemon(emulator, state_dir=state)
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        hello_id = _gen(client, HELLO, HTTPIE)
        add_id = _gen(client, ADD, HTTPIE)
        _session_answers(daemon, hello_id, add_id)

        with emulator.client() as marathon:
            app = marathon.get(f"/v2/apps/faasd/fob-{add_id}").json()["app"]
        assert app["cmd"].endswith("_marathon-task") and app["labels"]["com.faasd.snippet"] == add_id
        (task,) = emulator.tasks(f"/faasd/fob-{add_id}")
        assert task["host"] == OTHER_HOST, task
        assert client.get(f"/api/meta/{add_id}").json() == {"host": task["host"], "port": task["ports"][0]}
        assert client.get(f"/api/cs/{add_id}").content == ADD

    assert daemon.stop() == 0
    restarted = marathon_daemon(emulator, state_dir=state)
    _session_answers(restarted, hello_id, add_id)  # Same replicas: Marathon kept them.
    assert [again["id"] for again in emulator.tasks(f"/faasd/fob-{add_id}")] == [task["id"]]


def test_a_snippet_that_cannot_start_is_a_400_and_leaves_nothing_in_marathon(
    marathon_daemon: MarathonDaemon, marathon_emulator: StartEmulator
) -> None:
    """It compiles, so it is deployed; its import fails in the replica, Marathon reports the task failed,
    and the upload answers 400 with that reason (the import error itself is in the task's sandbox, which
    Marathon's API does not serve)."""
    emulator = marathon_emulator()
    daemon = marathon_daemon(emulator)
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        answer = client.post("/api/gen", content=b"import no_such_module_xyz\n\ndef callme():\n    return 1\n")
        assert answer.status_code == 400, answer.text
        assert "did not start on Marathon" in answer.json()["error"], answer.text
        assert client.get("/api/stats").json() == {"functions": []}
    with emulator.client() as marathon:
        assert marathon.get("/v2/apps", params={"id": "/faasd/"}).json()["apps"] == []
