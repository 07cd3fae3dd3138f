"""Flock-of-Birds snippets and handler archives on the Swarm backend: a real ``faasd up --provider swarm``
from the zipapp, the real swarm, faasd's base image, HTTP on 127.0.0.1.

A snippet's code (and any ``faasd deploy --handler DIR``) travels as a Docker config mounted into its
tasks, which faasd's watchdog unpacks before it starts (docs/swarm.md "Handler archives and snippets"):
the seed's session verbatim, the same ids answering after a daemon restart, a snippet failing at import
refused and leaving nothing behind, deletes removing service and config, the README's ``--handler``
example deployed, updated (the config replaced) and removed through the CLI, and an archive too large
for a config refused.
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import httpx
import pytest

from faasd.providers.swarm.handler import ARCHIVE_PATH, LABEL_HANDLER, MAX_ARCHIVE_BYTES
from tests.daemon_fixtures import PASSWORD, Daemon, MakeCli, StartDaemon
from tests.helpers import wait_for
from tests.swarm.conftest import SwarmHelper

pytestmark = pytest.mark.slow

SWARM = ("--provider", "swarm")
WAIT_S = 30.0
SNIPPETS = Path(__file__).resolve().parents[2] / "sample-functions" / "snippets"
HELLO = (SNIPPETS / "helloworld.py").read_bytes()
ADD = (SNIPPETS / "add.py").read_bytes()


def _start(start_daemon: StartDaemon, state_dir: Path | None = None) -> Daemon:
    return start_daemon(state_dir=state_dir, args=SWARM, FAASD_READY_TIMEOUT="20s")


def _gen(client: httpx.Client, swarm: SwarmHelper, source: bytes) -> str:
    answer = client.post("/api/gen", content=source)
    assert answer.status_code == 200, answer.text
    snippet_id = answer.json()["id"]
    swarm.track(f"fob-{snippet_id}")
    return snippet_id


def _handler_configs(swarm: SwarmHelper, function: str) -> list[dict]:
    return swarm.api.configs(filters={"label": f"{LABEL_HANDLER}={function}"})


def _mounted_config(swarm: SwarmHelper, function: str) -> dict:
    container = swarm.api.inspect_service(function)["Spec"]["TaskTemplate"]["ContainerSpec"]
    [mounted] = [ref for ref in container["Configs"] if ref["File"]["Name"] == ARCHIVE_PATH]
    return mounted


def _gone(swarm: SwarmHelper, function: str) -> bool:
    return not swarm.service_exists(function) and not _handler_configs(swarm, function)


def _session_answers(daemon: Daemon, hello_id: str, add_id: str) -> None:
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        assert client.get("/api/stats").json() == {"functions": [hello_id, add_id]}
        hello = client.get(f"/api/call/{hello_id}")
        assert (hello.status_code, hello.json()) == (200, {"result": 42})
        added = client.get(f"/api/call/{add_id}?param1:1,param2:1")
        assert (added.status_code, added.json()) == (200, {"result": 2})


def test_the_seed_session_on_swarm_restart_and_delete(
    start_daemon: StartDaemon, faasd_cli: MakeCli, swarm: SwarmHelper, base_image: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    daemon = _start(start_daemon, state)
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        hello_id = _gen(client, swarm, HELLO)
        add_id = _gen(client, swarm, ADD)
        # Answered once callable: no wait between the upload and the first call.
        _session_answers(daemon, hello_id, add_id)

        hello, add = f"fob-{hello_id}", f"fob-{add_id}"
        for function in (hello, add):
            mounted = _mounted_config(swarm, function)
            [config] = _handler_configs(swarm, function)
            assert config["ID"] == mounted["ConfigID"] and mounted["ConfigName"] == config["Spec"]["Name"]
            assert mounted["ConfigName"].startswith(f"faasd-handler-{function[:30]}")  # A long name is cut.
            [task] = swarm.running_tasks(function)
            assert task["Spec"]["ContainerSpec"]["Image"].split("@")[0] == base_image

        meta = client.get(f"/api/meta/{add_id}")
        assert meta.status_code == 200 and meta.json()["host"] == "127.0.0.1", meta.text
        assert isinstance(meta.json()["port"], int)
        source = client.get(f"/api/cs/{add_id}")
        assert (source.status_code, source.content) == (200, ADD)
        # The snippet is a function like any other: listed with its archive's size left out.
        listed = {f["name"]: f for f in client.get("/system/functions", auth=("admin", PASSWORD)).json()}
        assert listed[hello]["labels"]["com.faasd.snippet"] == hello_id and "handlerArchive" not in listed[hello]

    # A restart: the rows are in SQLite, the services and configs on the swarm; the same ids answer.
    assert daemon.stop() == 0
    assert len(swarm.running_tasks(hello)) == 1  # Stopping the daemon stops no snippet.
    daemon = _start(start_daemon, state)
    _session_answers(daemon, hello_id, add_id)

    with daemon.client() as client:
        assert client.delete(f"/api/gen/{hello_id}").json() == {"deleted": hello_id}
        wait_for(lambda: _gone(swarm, hello), 10, f"{hello}'s service and config removed")
        assert client.get(f"/api/call/{hello_id}").status_code == 404
        # `faasd rm fob-<id>` deletes the snippet with its function.
        faasd_cli(daemon).run("rm", add).ok()
        wait_for(lambda: _gone(swarm, add), 10, f"{add}'s service and config removed")
        wait_for(lambda: client.get("/api/stats").json() == {"functions": []}, 10, "no snippet listed")


def test_a_snippet_failing_at_import_is_a_400_and_leaves_nothing(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str
) -> None:
    daemon = _start(start_daemon)

    def snippets_on_swarm() -> set[str]:
        names = {s["Spec"]["Name"] for s in swarm.api.services() if s["Spec"]["Name"].startswith("fob-")}
        configs = {c["Spec"]["Labels"][LABEL_HANDLER] for c in swarm.api.configs(filters={"label": LABEL_HANDLER})}
        return names | configs

    before = snippets_on_swarm()
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        answer = client.post("/api/gen", content=b"import no_such_module_4711\n\ndef callme():\n    return 1\n")
        assert answer.status_code == 400, answer.text
        assert "No module named 'no_such_module_4711'" in answer.json()["error"]
        assert answer.json()["line"] == 1
        assert client.get("/api/stats").json() == {"functions": []}
    swarm.track(*(snippets_on_swarm() - before))  # Removed if the assertion below fails.
    assert snippets_on_swarm() == before


def test_deploy_handler_update_and_rm_with_the_cli(
    start_daemon: StartDaemon, faasd_cli: MakeCli, swarm: SwarmHelper, base_image: str, tmp_path: Path
) -> None:
    swarm.track("greet", "too-big")
    daemon = _start(start_daemon)
    greet = tmp_path / "greet"
    greet.mkdir()
    (greet / "greet.sh").write_text('read name; echo "$GREETING, $name!"\n')
    cli = faasd_cli(daemon)

    # The README's example, as written there.
    deploy = ("deploy", "greet", "--fprocess", "sh greet.sh", "--handler", str(greet), "--env", "GREETING=Hi")
    cli.run(*deploy, "--label", "com.openfaas.scale.max=5").ok()
    assert cli.run("invoke", "greet", stdin=b"Ada\n").ok().out == "Hi, Ada!\n"
    with daemon.client() as client:
        first = _mounted_config(swarm, "greet")["ConfigID"]

        # An update is a new config (configs cannot change); the old one stays while a rollback may need it.
        (greet / "greet.sh").write_text('printf "v2 %s" "$(cat)"\n')
        cli.run(*deploy).ok()
        wait_for(lambda: client.post("/function/greet", content=b"x").text == "v2 x", WAIT_S, "the new code answering")
        second = _mounted_config(swarm, "greet")["ConfigID"]
        assert second != first
        assert {c["ID"] for c in _handler_configs(swarm, "greet")} == {first, second}
        (greet / "greet.sh").write_text('printf "v3 %s" "$(cat)"\n')
        cli.run(*deploy).ok()
        wait_for(lambda: client.post("/function/greet", content=b"x").text == "v3 x", WAIT_S, "the third answering")
        third = _mounted_config(swarm, "greet")["ConfigID"]
        assert {c["ID"] for c in _handler_configs(swarm, "greet")} == {second, third}

        # Larger than a Docker config may be: refused before anything is made, with the way out.
        big = base64.b64encode(os.urandom(MAX_ARCHIVE_BYTES + 1)).decode()
        refused = client.post(
            "/system/functions", json={"service": "too-big", "envProcess": "cat", "handlerArchive": big}
        )
        assert refused.status_code == 400 and "faasd build DIR" in refused.text, refused.text
        assert not swarm.service_exists("too-big") and not _handler_configs(swarm, "too-big")

    cli.run("rm", "greet").ok()
    wait_for(lambda: _gone(swarm, "greet"), 10, "greet's service and configs removed")


def test_an_image_without_faasds_watchdog_is_refused_with_an_archive(
    start_daemon: StartDaemon, swarm: SwarmHelper, base_image: str
) -> None:
    """Only faasd's watchdog unpacks an archive: another image would run without the code, silently."""
    repository, tag = "faasd/st-no-watchdog", uuid.uuid4().hex[:8]
    swarm.track_image(f"{repository}:{tag}")
    # The base image's files with another entrypoint (a committed container, never started).
    container = swarm.client.containers.create(base_image, entrypoint=["cat"], labels=swarm.labels)
    try:
        container.commit(repository=repository, tag=tag, changes=['ENTRYPOINT ["cat"]'])
    finally:
        container.remove(force=True)
    daemon = _start(start_daemon)
    archive = base64.b64encode(b"\x1f\x8b not really").decode()
    with daemon.client() as client:
        refused = client.post(
            "/system/functions",
            json={"service": "st-nowd", "image": f"{repository}:{tag}", "envProcess": "cat", "handlerArchive": archive},
        )
    assert refused.status_code == 400 and "does not start faasd's watchdog" in refused.text, refused.text
    assert not swarm.service_exists("st-nowd") and not _handler_configs(swarm, "st-nowd")
