"""The pure parts of the Marathon backend: ids, the app definition, reading apps and tasks back, the
per-function token, a command task's environment, and Marathon's error bodies.

The JSON shapes are Marathon's documented ones (task.raml, app.raml, the error bodies of
MarathonExceptionMapper); the emulator's own tests and tests/providers/test_marathon.py check the same
code against a running API.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile

import pytest

from faasd.calltoken import check_token
from faasd.errors import InvalidRequest
from faasd.providers.marathon import appdef
from faasd.providers.marathon.appdef import (
    ARCHIVE_ENV_PREFIX,
    MAX_ARCHIVE_CHARS,
    AppSettings,
    app_definition,
    app_id,
    check_group,
    check_spec,
    function_name,
    function_token,
    spec_from_app,
)
from faasd.providers.marathon.client import MarathonHttpError
from faasd.providers.marathon.view import read_app
from faasd.providers.types import FunctionSpec, Resources
from faasd.watchdog import marathon as task

SETTINGS = AppSettings(group="/faasd", watchdog_uri="https://example.test/faasd.pyz")


def _archive(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return raw.getvalue()


# -- ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "path"),
    [("faasd", "/faasd"), ("/team/fns/", "/team/fns"), ("a.b/c-1", "/a.b/c-1")],
)
def test_groups_are_absolute_marathon_paths(group: str, path: str) -> None:
    assert check_group(group) == path


@pytest.mark.parametrize("group", ["", "/", "Upper", "a_b", "-a", "a-", "a//b", "a/../b"])
def test_groups_marathon_cannot_hold_are_refused(group: str) -> None:
    with pytest.raises(InvalidRequest, match="marathon_group"):
        check_group(group)


def test_app_ids_and_names_map_both_ways() -> None:
    assert app_id("/faasd", "echo-2") == "/faasd/echo-2"
    assert function_name("/faasd", "/faasd/echo-2") == "echo-2"
    for other in ("/faasd", "/faasd/a/b", "/faasdx/a", "/other/a", 7, None):
        assert function_name("/faasd", other) is None


@pytest.mark.parametrize("name", ["Echo", "my_fn", "-x", "x-", "restart", "tasks", "versions"])
def test_names_no_marathon_id_can_hold_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="cannot be a Marathon app id"):
        app_id("/faasd", name)


# -- the call token -----------------------------------------------------------------------------------


def test_each_app_has_its_own_token_derived_from_the_daemons() -> None:
    one = function_token(b"daemon-token-aaaaaaaaaaaaaaaa", "/faasd/one")
    assert one == function_token(b"daemon-token-aaaaaaaaaaaaaaaa", "/faasd/one"), "stable across restarts"
    assert one != function_token(b"daemon-token-aaaaaaaaaaaaaaaa", "/faasd/two")
    assert one != function_token(b"daemon-token-bbbbbbbbbbbbbbbb", "/faasd/one")
    assert check_token(one.encode()) == one.encode()
    assert "daemon-token" not in one


# -- spec -> app ----------------------------------------------------------------------------------------


def test_an_image_runs_in_docker_on_bridge_with_the_watchdog_port_mapped_and_checked() -> None:
    spec = FunctionSpec(name="echo", image="ghcr.io/me/echo:1", env_process="cat", env_vars={"A": "1"})
    app = app_definition(spec, 3, SETTINGS, call_token="t" * 43)
    assert app["id"] == "/faasd/echo" and app["instances"] == 3
    assert app["container"] == {
        "type": "DOCKER",
        "docker": {"image": "ghcr.io/me/echo:1", "forcePullImage": False},
        "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp", "name": "http"}],
    }
    assert app["networks"] == [{"mode": "container/bridge"}]
    (check,) = app["healthChecks"]
    assert (check["protocol"], check["path"], check["portIndex"]) == ("MESOS_HTTP", "/_/health", 0)
    assert app["env"] == {"healthcheck_interval": "1s", "A": "1", "fprocess": "cat", "call_token": "t" * 43}
    assert app["labels"]["com.openfaas.function"] == "echo"
    assert "cmd" not in app and "fetch" not in app


def test_a_command_task_fetches_the_zipapp_and_carries_its_archive_in_pieces() -> None:
    archive = bytes(range(256)) * 600  # 150 KiB: three pieces of base64.
    spec = FunctionSpec(name="snip", env_vars={"mode": "python"}, handler_archive=archive)
    app = app_definition(spec, 1, SETTINGS)
    assert app["cmd"] == "exec python3 faasd.pyz _marathon-task"
    assert app["fetch"] == [
        {"uri": "https://example.test/faasd.pyz", "destPath": "faasd.pyz", "extract": False, "cache": False}
    ]
    assert app["portDefinitions"] == [{"port": 0, "protocol": "tcp", "name": "http"}]
    assert "container" not in app and "networks" not in app
    pieces = [key for key in app["env"] if key.startswith(ARCHIVE_ENV_PREFIX)]
    assert pieces == [f"{ARCHIVE_ENV_PREFIX}{n}" for n in range(len(pieces))] and len(pieces) == 4
    assert all(len(app["env"][key]) <= appdef.ARCHIVE_CHUNK_CHARS for key in pieces)
    assert task.read_archive(app["env"]) == archive, "the task side reads what the daemon side wrote"
    assert ARCHIVE_ENV_PREFIX == task.ARCHIVE_ENV_PREFIX


@pytest.mark.parametrize(
    "spec",
    [
        FunctionSpec(name="a", image="img:1", env_process="cat"),
        FunctionSpec(name="b", image="img:1", env_process="cat", read_only_root_filesystem=True),
        FunctionSpec(
            name="c",
            image="img:1",
            env_vars={"fprocess": "x", "healthcheck_interval": "1s", "K": "v=w"},
            labels={"team": "blue", "com.openfaas.scale.min": "2"},
            annotations={"owner": "me", "topic": "x.y"},
            limits=Resources(memory="256M", cpu="0.5"),
            requests=Resources(memory="128Mi", cpu="100m"),
            constraints=("hostname:UNIQUE", "rack:LIKE:rack-[1-3]"),
        ),
        FunctionSpec(name="f", image="img:1", env_process="cat", env_vars={"fprocess": "shadowed"}),
        FunctionSpec(name="d", env_process="sh ./run.sh", handler_archive=_archive({"run.sh": b"cat\n"})),
        FunctionSpec(name="e", env_vars={"mode": "python"}, handler_archive=bytes(MAX_ARCHIVE_CHARS // 2)),
    ],
    ids=["image", "read-only", "everything", "both-fprocess", "archive", "big-archive"],
)
def test_what_is_deployed_reads_back_exactly(spec: FunctionSpec) -> None:
    """What a restarted daemon compares against the store: equal, or it would rewrite its store."""
    app = json.loads(json.dumps(app_definition(spec, 1, SETTINGS, call_token="t" * 43)))
    assert spec_from_app(app, spec.name) == spec


def test_resources_map_to_marathons_one_reservation() -> None:
    def reserved(**fields: Resources) -> tuple[object, object]:
        app = app_definition(FunctionSpec(name="r", image="i", **fields), 1, SETTINGS)
        return app["cpus"], app["mem"]

    assert reserved() == (0.1, 128.0)
    assert reserved(limits=Resources(memory="1G", cpu="2")) == (2.0, 1024.0)
    assert reserved(limits=Resources(memory="64M", cpu="1"), requests=Resources(memory="32M", cpu="250m")) == (
        0.25,
        64.0,
    ), "memory from limits (what kills), CPU from requests (what is reserved)"
    assert reserved(requests=Resources(cpu="500000000")) == (0.5, 128.0), "faas-swarm's nano-CPUs"


def test_an_app_made_by_hand_reports_what_it_has() -> None:
    app = {
        "id": "/faasd/byhand",
        "cpus": 0.5,
        "mem": 300,
        "labels": {"com.openfaas.function": "byhand", "faasd.spec": "not json", "x": "y"},
        "env": {"fprocess": "rev", "call_token": "hidden-by-faasd-000", f"{ARCHIVE_ENV_PREFIX}3": "stray"},
        "container": {"type": "DOCKER", "docker": {"image": "me/rev"}},
        "constraints": [["hostname", "UNIQUE"]],
    }
    spec = spec_from_app(app, "byhand")
    assert spec == FunctionSpec(
        name="byhand",
        image="me/rev",
        env_process="rev",
        labels={"x": "y"},
        limits=Resources(memory="300Mi", cpu="0.5"),
        constraints=("hostname:UNIQUE",),
    )


@pytest.mark.parametrize(
    ("spec", "mention"),
    [
        (FunctionSpec(name="s", image="i", secrets=("db",)), "secrets (db)"),
        (FunctionSpec(name="s", env_process="cat"), None),
        (FunctionSpec(name="s", image="i", handler_archive=b"x"), "handlerArchive with an image"),
        (FunctionSpec(name="s", env_process="cat", read_only_root_filesystem=True), "readOnlyRootFilesystem"),
        (FunctionSpec(name="s", image="i", labels={"faasd.spec": "{}"}), "reserved"),
        (FunctionSpec(name="s", image="i", labels={"com.openfaas.function": "other"}), "set by faasd"),
        (FunctionSpec(name="s", image="i", env_vars={"call_token": "mine"}), "call_token"),
        (FunctionSpec(name="s", image="i", env_vars={f"{ARCHIVE_ENV_PREFIX}0": "x"}), ARCHIVE_ENV_PREFIX),
        (FunctionSpec(name="s", image="i", constraints=("node.role == manager",)), "field:OPERATOR"),
        (FunctionSpec(name="s", image="i", constraints=("hostname:NEAR",)), "field:OPERATOR"),
        (FunctionSpec(name="s", image="i", limits=Resources(memory="lots")), "limits.memory"),
        (FunctionSpec(name="s", image="i", requests=Resources(cpu="0.0001")), "at least 0.001"),
        (FunctionSpec(name="s", image="i", limits=Resources(memory="1k")), "at least 1 MiB"),
        (FunctionSpec(name="s", handler_archive=bytes(MAX_ARCHIVE_CHARS)), "build an image"),
    ],
)
def test_what_marathon_cannot_run_is_refused_with_the_reason(spec: FunctionSpec, mention: str | None) -> None:
    settings = SETTINGS if mention is not None else AppSettings(group="/faasd")
    with pytest.raises(InvalidRequest) as caught:
        check_spec(spec, settings)
    assert (mention or "marathon_watchdog_uri") in caught.value.message


# -- app -> status and endpoints ------------------------------------------------------------------------


def _task(number: int, state: str = "TASK_RUNNING", alive: bool | None = True, **fields: object) -> dict:
    item: dict = {
        "id": f"faasd_echo.instance-{number}._app.1",
        "appId": "/faasd/echo",
        "host": "10.0.0.7",
        "ports": [31000 + number],
        "state": state,
        "version": "2026-01-01T00:00:00.000Z",
        **fields,
    }
    if alive is not None:
        item["healthCheckResults"] = [{"alive": alive, "consecutiveFailures": 0, "instanceId": "x"}]
    return item


def _app(tasks: list[dict], **fields: object) -> dict:
    spec = FunctionSpec(name="echo", image="img", env_process="cat")
    return {
        **app_definition(spec, 2, SETTINGS, call_token="tok-" + "x" * 40),
        "tasks": tasks,
        "version": "2026-01-01T00:00:00.000Z",
        "versionInfo": {"lastConfigChangeAt": "2026-01-01T00:00:00.000Z", "lastScalingAt": "2026-01-02T00:00:00.000Z"},
        **fields,
    }


def test_only_running_healthy_tasks_are_endpoints_at_host_and_mapped_port() -> None:
    state = read_app(
        _app([_task(1), _task(2, alive=False), _task(3, "TASK_STAGING", alive=None), _task(4, alive=None)]), "/faasd"
    )
    assert state is not None
    (endpoint,) = state.endpoints
    assert (endpoint.host, endpoint.port, endpoint.replica) == ("10.0.0.7", 31001, "faasd_echo.instance-1._app.1")
    assert endpoint.call_token and endpoint.token_line == b"\r\nX-Faasd-Call-Token: tok-" + b"x" * 40
    status = state.status()
    assert (status.replicas, status.available_replicas, status.state) == (2, 1, "deployed")


def test_before_marathon_has_a_verdict_a_task_is_ready_once_faasds_own_probe_answered() -> None:
    """Marathon's first health result comes at its check interval; faasd's probe of /_/health as soon as
    the watchdog listens. A failing check Marathon reports always wins over the probe."""
    tasks = [_task(1, alive=None), _task(2, alive=None), _task(3, alive=False), _task(4, alive=True)]
    probed = {"faasd_echo.instance-1._app.1", "faasd_echo.instance-3._app.1"}
    state = read_app(_app(tasks), "/faasd", probed)
    assert state is not None
    assert [e.replica for e in state.endpoints] == ["faasd_echo.instance-1._app.1", "faasd_echo.instance-4._app.1"]


def test_an_app_without_health_checks_or_token_is_ready_by_the_probe_and_sent_no_token() -> None:
    app = _app([_task(1, alive=None)], healthChecks=[], env={"fprocess": "cat"})
    assert read_app(app, "/faasd").endpoints == ()  # type: ignore[union-attr]
    state = read_app(app, "/faasd", {"faasd_echo.instance-1._app.1"})
    assert state is not None
    (endpoint,) = state.endpoints
    assert not endpoint.call_token and endpoint.token_line == b""


def test_not_ready_says_why_from_the_last_failure_since_the_last_change() -> None:
    failure = {
        "state": "TASK_FAILED",
        "message": "Command exited with status 2",
        "timestamp": "2026-01-03T00:00:00.000Z",
        "version": "2026-01-01T00:00:00.000Z",
    }
    state = read_app(_app([], lastTaskFailure=failure), "/faasd")
    assert state is not None and state.status().state == "failed"
    assert state.failure == "a replica failed: Command exited with status 2"
    older = {**failure, "timestamp": "2026-01-01T12:00:00.000Z"}  # Before the last scaling: history.
    assert read_app(_app([], lastTaskFailure=older), "/faasd").failure == ""  # type: ignore[union-attr]
    sick = _task(1, alive=None, healthCheckResults=[{"alive": False, "lastFailureCause": "503 Service Unavailable"}])
    assert read_app(_app([sick]), "/faasd").failure == "a replica fails its health check: 503 Service Unavailable"  # type: ignore[union-attr]


def test_apps_that_are_not_functions_of_the_group_are_not_read() -> None:
    app = _app([])
    assert read_app({**app, "labels": {"x": "y"}}, "/faasd") is None
    assert read_app({**app, "id": "/other/echo"}, "/faasd") is None
    assert read_app({**app, "id": "/faasd/sub/echo"}, "/faasd") is None


# -- a command task's start ---------------------------------------------------------------------------------


def test_a_command_task_becomes_the_watchdog_on_its_port_in_its_sandbox() -> None:
    env = {"PORT0": "31005", "HOST": "10.0.0.7", f"{ARCHIVE_ENV_PREFIX}0": "abcd", "fprocess": "cat"}
    result = task.watchdog_environment(env, "/sandbox")
    assert result == {
        "PORT0": "31005",
        "HOST": "10.0.0.7",
        "fprocess": "cat",
        "port": "31005",
        "metrics_port": "0",
        "bind": "10.0.0.7",
        "TMPDIR": "/sandbox/tmp",
    }
    named = task.watchdog_environment({"PORT0": "1", "HOST": "agent-3.example", "metrics_port": "9"}, "/s")
    assert "bind" not in named and named["metrics_port"] == "9", "a host name: every interface; theirs kept"
    assert task.watchdog_environment({"PORT0": "1", "HOST": "10.0.0.7", "bind": "0.0.0.0"}, "/s")["bind"] == "0.0.0.0"
    with pytest.raises(task.TaskError, match="PORT0"):
        task.watchdog_environment({}, "/s")
    with pytest.raises(task.TaskError, match="not base64"):
        task.read_archive({f"{ARCHIVE_ENV_PREFIX}0": "!!!"})
    assert task.read_archive({f"{ARCHIVE_ENV_PREFIX}1": base64.b64encode(b"x").decode()}) == b"", "no piece 0"


# -- Marathon's error bodies --------------------------------------------------------------------------------


def test_error_bodies_read_as_one_line_with_their_details() -> None:
    invalid = MarathonHttpError(
        422,
        "Object is not valid",
        [{"path": "/mem", "errors": ["got 0.0, expected 0.0 or more"]}, {"path": "/id", "errors": ["a", "b"]}],
    )
    assert invalid.describe() == "Object is not valid: /mem: got 0.0, expected 0.0 or more; /id: a, b"
    assert MarathonHttpError(400, "Invalid JSON", "Unexpected end").describe() == "Invalid JSON: Unexpected end"
    locked = MarathonHttpError(409, "App is locked by one or more deployments.", None, ["d-1"])
    assert locked.locked and not MarathonHttpError(409, "An app with id [/x] already exists.").locked
