"""The Marathon emulator's app-definition rules, without a server: the documented shape (types, bounds,
enums, required fields: 422 "Invalid JSON"), the documented rules (422 "Object is not valid"), the
canonical form answers are given in, service ports, partial updates, path ids and label selectors.

Sources: app.raml and the types beside it, stringTypes.raml (PathId), traits.raml (error bodies),
https://mesosphere.github.io/marathon/docs/ (application basics, ports, networking, health checks).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.marathon_emulator import appdef, shapes
from tests.marathon_emulator.events import EventBus
from tests.marathon_emulator.labels import LabelSelectorError, parse_selectors
from tests.marathon_emulator.pathid import canonical, path_errors
from tests.marathon_emulator.state import Caller, ClusterState

UUID = "1b6c3f9e-2a6b-4bd8-8d3c-0e0b8f4d9a11"
SEGMENT_MESSAGE = (
    r"must fully match regular expression '^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*"
    r"([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$'"
)
RESERVED_MESSAGE = "must not end with any of the following reserved keywords: restart, tasks, versions, ., .."
CMD_MESSAGE = "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."
FOB_DRIVER = {  # fob's service/templates/python_sandbox.json, with the id and cmd it sets
    "id": f"fob-aviary/{UUID}",
    "cmd": "curl http://fob/api/cs/x > fobfun.py && python fob_driver.py",
    "cpus": 0.1,
    "mem": 100,
    "container": {
        "type": "DOCKER",
        "docker": {
            "image": "mhausenblas/fob:pydriver",
            "forcePullImage": True,
            "network": "BRIDGE",
            "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        },
    },
    "acceptedResourceRoles": ["slave_public"],
}


def read(body: Any) -> dict[str, Any]:
    """The pipeline of ``POST /v2/apps`` minus the state: shape, deprecated forms, canonical form, rules."""
    fields = shapes.read(shapes.APP, body)
    appdef.check_deprecated_forms(fields)
    app = appdef.normalize(fields, allocate=lambda index: 10000 + index)
    appdef.validate(app, fields)
    return app


def failure(body: Any) -> dict[str, Any]:
    """The 422 body ``POST /v2/apps`` answers for ``body``."""
    try:
        read(body)
    except shapes.ShapeErrors as exc:
        return {"message": "Invalid JSON", "details": exc.details}
    except appdef.AppInvalid as exc:
        return {"message": "Object is not valid", "details": exc.details}
    raise AssertionError(f"accepted: {body}")


def cmd_app(**fields: Any) -> dict[str, Any]:
    return {"id": "/a", "cmd": "sleep 100", **fields}


# -- shape errors: 422 "Invalid JSON" with the reader's error keys -------------------------------------

SHAPE_CASES = [
    ({"id": 123, "cmd": "x y"}, "/id", "error.expected.jsstring"),
    ({"cmd": "sleep 1"}, "/id", "error.path.missing"),
    ({"id": None, "cmd": "sleep 1"}, "/id", "error.expected.jsstring"),
    ({"id": "", "cmd": "sleep 1"}, "/id", "error.minLength"),
    ({"id": "/Foo", "cmd": "sleep 1"}, "/id", "error.pattern"),
    ({"id": "/foo_bar", "cmd": "sleep 1"}, "/id", "error.pattern"),
    ({"id": "/-foo", "cmd": "sleep 1"}, "/id", "error.pattern"),
    ({"id": "/a/b c", "cmd": "sleep 1"}, "/id", "error.pattern"),
    (cmd_app(instances=-1), "/instances", "error.min"),
    (cmd_app(instances=1.5), "/instances", "error.expected.int"),
    (cmd_app(instances="2"), "/instances", "error.expected.jsnumber"),
    (cmd_app(instances=True), "/instances", "error.expected.jsnumber"),
    (cmd_app(instances=2**31), "/instances", "error.expected.int"),
    (cmd_app(cpus=0), "/cpus", "error.min"),
    (cmd_app(mem=-128), "/mem", "error.min"),
    (cmd_app(cmd=""), "/cmd", "error.minLength"),
    (cmd_app(args="sleep"), "/args", "error.expected.jsarray"),
    (cmd_app(labels={"a": 1}), "/labels/a", "error.expected.jsstring"),
    (cmd_app(env=[]), "/env", "error.expected.jsobject"),
    (cmd_app(requirePorts="yes"), "/requirePorts", "error.expected.jsboolean"),
    (cmd_app(upgradeStrategy={"minimumHealthCapacity": 1.5}), "/upgradeStrategy/minimumHealthCapacity", "error.max"),
    (cmd_app(upgradeStrategy={"maximumOverCapacity": -0.1}), "/upgradeStrategy/maximumOverCapacity", "error.min"),
    (cmd_app(portDefinitions=[{"port": 70000}]), "/portDefinitions(0)/port", "error.max"),
    (
        cmd_app(portDefinitions=[{"port": 0, "protocol": "sctp"}]),
        "/portDefinitions(0)/protocol",
        "error.unknown.enum.literal",
    ),
    (cmd_app(portDefinitions=[{"name": "Web"}]), "/portDefinitions(0)/name", "error.pattern"),
    (cmd_app(container={"docker": {}}), "/container/docker/image", "error.path.missing"),
    (cmd_app(container={"docker": {"image": ""}}), "/container/docker/image", "error.minLength"),
    (
        cmd_app(container={"docker": {"image": "x", "network": "OVERLAY"}}),
        "/container/docker/network",
        "error.unknown.enum.literal",
    ),
    (cmd_app(container={"type": "RKT"}), "/container/type", "error.unknown.enum.literal"),
    (cmd_app(healthChecks=[{"protocol": "GRPC"}]), "/healthChecks(0)/protocol", "error.unknown.enum.literal"),
    (cmd_app(healthChecks=[{"intervalSeconds": -1}]), "/healthChecks(0)/intervalSeconds", "error.min"),
    (cmd_app(constraints=[["hostname"]]), "/constraints(0)", "error.minLength"),
    (cmd_app(fetch=[{"executable": True}]), "/fetch(0)/uri", "error.path.missing"),
    (cmd_app(networks=[{"mode": "overlay"}]), "/networks(0)/mode", "error.unknown.enum.literal"),
]


@pytest.mark.parametrize(("body", "path", "error"), SHAPE_CASES)
def test_shape_errors_name_the_path_and_the_readers_key(body: dict[str, Any], path: str, error: str) -> None:
    answer = failure(body)
    assert answer["message"] == "Invalid JSON"
    assert {"path": path, "errors": [error]} in answer["details"], answer


def test_a_body_that_is_no_object_and_several_errors_at_once() -> None:
    assert failure([1]) == {"message": "Invalid JSON", "details": [{"path": "", "errors": ["error.expected.jsobject"]}]}
    answer = failure({"id": 1, "instances": -1, "cpus": "x"})
    assert [detail["path"] for detail in answer["details"]] == ["/id", "/cpus", "/instances"]


# -- documented rules: 422 "Object is not valid" -----------------------------------------------------

RULE_CASES = [
    ({"id": "/a//b", "cmd": "sleep 1"}, "/id", SEGMENT_MESSAGE),
    ({"id": "/foo/restart", "cmd": "sleep 1"}, "/id", RESERVED_MESSAGE),
    ({"id": "/foo/tasks", "cmd": "sleep 1"}, "/id", RESERVED_MESSAGE),
    ({"id": "versions", "cmd": "sleep 1"}, "/id", RESERVED_MESSAGE),
    ({"id": "/", "cmd": "sleep 1"}, "/id", "Path must contain at least one path element"),
    ({"id": "/a"}, "/", CMD_MESSAGE),
    (cmd_app(args=["sleep", "1"]), "/", CMD_MESSAGE),  # cmd and args are mutually exclusive
    ({"id": "/a", "container": {"type": "DOCKER"}}, "/", CMD_MESSAGE),  # a DOCKER container needs docker
    (cmd_app(cmd="x"), "/", "must not be an empty string"),
    (
        cmd_app(container={"docker": {"image": "x", "network": "BRIDGE"}}, networks=[{"mode": "host"}]),
        "/",
        "must not specify both container.docker.network and networks",
    ),
    (
        cmd_app(ports=[0], portDefinitions=[{"port": 0}, {"port": 0}]),
        "/",
        "cannot specify both ports and port definitions",
    ),
    (cmd_app(ports=[80, 80]), "/", "ports must be unique"),
    (cmd_app(portDefinitions=[{"port": 81}, {"port": 81}]), "/portDefinitions", "Ports must be unique."),
    (cmd_app(portDefinitions=[{"name": "web"}, {"name": "web"}]), "/portDefinitions", "Port names must be unique."),
    (
        cmd_app(container={"docker": {"image": "x"}, "portMappings": [{"containerPort": 80}]}),
        "/",
        "portMappings are not allowed with host-networking",
    ),
    (
        cmd_app(
            container={"docker": {"image": "x", "network": "BRIDGE"}},
            portDefinitions=[{"port": 0}],
        ),
        "/",
        "portDefinitions are only allowed with host-networking",
    ),
    (
        cmd_app(healthChecks=[{"protocol": "HTTP", "portIndex": 1}]),
        "/healthChecks(0)",
        "Health check port indices must address an element of the ports array or container port mappings.",
    ),
    (
        cmd_app(portDefinitions=[], healthChecks=[{"protocol": "TCP"}]),
        "/healthChecks(0)",
        "Health check port indices must address an element of the ports array or container port mappings.",
    ),
    (
        cmd_app(healthChecks=[{"protocol": "MESOS_HTTP"}, {"protocol": "MESOS_TCP"}]),
        "/",
        "AppDefinition can contain at most one Mesos health check",
    ),
    (cmd_app(env={"PASSWORD": {"secret": "/db/password"}}), "/secrets", None),
    (cmd_app(constraints=[["hostname", "SOMETIMES"]]), "/constraints(0)", None),
    (cmd_app(constraints=[["hostname", "UNIQUE", "x"]]), "/constraints(0)", "UNIQUE does not accept a value"),
    (cmd_app(constraints=[["hostname", "LIKE"]]), "/constraints(0)", None),
    (cmd_app(constraints=[["hostname", "MAX_PER", "two"]]), "/constraints(0)", "MAX_PER requires an integer value"),
    (cmd_app(acceptedResourceRoles=[]), "/acceptedResourceRoles", "must not be empty"),
    (cmd_app(networks=[{"mode": "container", "name": "dcos"}]), "/networks", None),  # an emulator limit
    (cmd_app(container={"docker": {"image": "x", "network": "USER"}}), "/networks", None),  # an emulator limit
]


@pytest.mark.parametrize(("body", "path", "message"), RULE_CASES)
def test_documented_rules(body: dict[str, Any], path: str, message: str | None) -> None:
    answer = failure(body)
    assert answer["message"] == "Object is not valid", answer
    [errors] = [detail["errors"] for detail in answer["details"] if detail["path"] == path]
    if message is not None:
        assert message in errors, answer


VALID = [
    FOB_DRIVER,
    {"id": "fob", "cmd": "python fob_dispatcher.py", "cpus": 0.2, "mem": 300},
    {"id": f"/fob-aviary/{UUID}/", "cmd": "sleep 1"},  # trailing slash
    {"id": "a.b-c/d", "args": ["sleep", "1"]},
    {"id": "/a", "container": {"type": "MESOS"}},  # a Mesos container alone is enough
    {"id": "/a", "container": {"docker": {"image": "x"}}},  # so is a Docker image (its own entrypoint)
    cmd_app(container={"docker": {"image": "x", "network": "bridge"}}),  # enums ignore case
    cmd_app(ports=[0, 0], portDefinitions=[{"port": 0}, {"port": 0}]),  # equivalent forms together
    cmd_app(healthChecks=[{"protocol": "MESOS_HTTP", "portIndex": 5}]),  # only Marathon-level indices are checked
    cmd_app(healthChecks=[{"protocol": "COMMAND", "command": {"value": "true"}}, {"protocol": "MESOS_TCP"}]),
    cmd_app(instances=0, upgradeStrategy={"minimumHealthCapacity": 0, "maximumOverCapacity": 1}),
    cmd_app(constraints=[["hostname", "unique"], ["rack", "LIKE", "r[12]"], ["rack", "MAX_PER", "2"]]),
    cmd_app(unknownField={"is": "dropped"}, instances=2.0),  # unknown fields are ignored; 2.0 is an integer
]


@pytest.mark.parametrize("body", VALID)
def test_valid_definitions(body: dict[str, Any]) -> None:
    app = read(body)
    assert app["id"].startswith("/") and not app["id"].endswith("/")
    assert "unknownField" not in app


# -- the canonical form --------------------------------------------------------------------------------


def test_both_bridge_forms_give_the_same_canonical_app() -> None:
    old_form = read(FOB_DRIVER)
    new_form = {**FOB_DRIVER, "networks": [{"mode": "container/bridge"}]}
    new_form["container"] = {
        "type": "DOCKER",
        "docker": {"image": "mhausenblas/fob:pydriver", "forcePullImage": True},
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
    }
    assert read(new_form) == old_form
    assert old_form["networks"] == [{"mode": "container/bridge"}]
    assert old_form["container"]["portMappings"] == [
        {"containerPort": 8080, "hostPort": 0, "protocol": "tcp", "servicePort": 10000}
    ]
    assert old_form["portDefinitions"] == []
    assert old_form["id"] == f"/fob-aviary/{UUID}"


def test_documented_defaults_are_filled_in() -> None:
    app = read({"id": "/a", "cmd": "sleep 1"})
    expected = {
        "instances": 1,
        "cpus": 1.0,
        "mem": 128.0,
        "disk": 0.0,
        "backoffSeconds": 1,
        "backoffFactor": 1.15,
        "maxLaunchDelaySeconds": 300,
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0},
        "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": 10000, "protocol": "tcp"}],  # one port by default
        "killSelection": "YOUNGEST_FIRST",
        "requirePorts": False,
    }
    assert {key: app[key] for key in expected} == expected
    check = read(cmd_app(healthChecks=[{}]))["healthChecks"][0]
    assert check == {
        "protocol": "HTTP",
        "path": "/",
        "portIndex": 0,
        "gracePeriodSeconds": 300,
        "intervalSeconds": 60,
        "timeoutSeconds": 20,
        "maxConsecutiveFailures": 3,
        "delaySeconds": 15,
        "ignoreHttp1xx": False,
    }
    bridge = read(cmd_app(container={"docker": {"image": "x", "network": "BRIDGE"}}))
    assert bridge["container"]["portMappings"] == [
        {"containerPort": 0, "hostPort": 0, "protocol": "tcp", "servicePort": 10000}
    ]  # "Marathon will provide a single, default port mapping"
    public = appdef.public_json(read({"id": "/a", "cmd": "sleep 1"}))
    assert not {"args", "env", "healthChecks", "constraints", "fetch", "secrets"} & set(public)  # omitEmpty


def test_service_ports_are_unique_and_kept_across_updates() -> None:
    state = ClusterState(EventBus())
    caller = Caller("127.0.0.1", "/v2/apps")
    first, _ = state.create({"id": "/a", "cmd": "sleep 1"}, force=False, caller=caller)
    second, _ = state.create({"id": "/b", "cmd": "sleep 1", "portDefinitions": [{}, {}]}, force=False, caller=caller)
    assert [d["port"] for d in first["portDefinitions"]] == [10000]
    assert [d["port"] for d in second["portDefinitions"]] == [10001, 10002]
    state.update(
        "/a",
        {"cmd": "sleep 2", "portDefinitions": [{"port": 0}]},
        partial=False,
        force=True,
        allow_create=False,
        caller=caller,
    )
    assert state.apps["/a"].app["portDefinitions"][0]["port"] == 10000  # type: ignore[index]
    state.update("/a", {"instances": 3}, partial=True, force=True, allow_create=False, caller=caller)
    app = state.apps["/a"].app
    assert app is not None and app["cmd"] == "sleep 2" and app["instances"] == 3
    assert app["versionInfo"]["lastScalingAt"] == app["version"] != app["versionInfo"]["lastConfigChangeAt"]


def test_a_partial_update_can_switch_networking_form() -> None:
    existing = read(cmd_app(portDefinitions=[{"port": 0}, {"port": 0}]))
    update = shapes.read(shapes.APP_UPDATE, {"container": {"docker": {"image": "x", "network": "BRIDGE"}}})
    merged = appdef.merge_update({**existing, "version": "v", "versionInfo": {}}, update)
    app = read(merged)
    assert app["networks"] == [{"mode": "container/bridge"}] and app["portDefinitions"] == []
    assert len(app["container"]["portMappings"]) == 1


# -- path ids ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [("foo", "/foo"), ("/foo/", "/foo"), ("a/./b", "/a/b"), ("/a/b/../c", "/a/c"), ("/", "/")],
)
def test_canonical_ids(given: str, expected: str) -> None:
    assert canonical(given) == expected


def test_a_hostile_id_costs_linear_time() -> None:
    assert path_errors("/" + "a" * 100_000) == []
    assert failure({"id": "/" + "a-" * 50_000 + "_", "cmd": "sleep 1"})["details"][0]["errors"] == ["error.pattern"]


# -- label selectors -----------------------------------------------------------------------------------


LABELS = {"faasd.function": "echo", "tier": "front end", "env": "prod"}


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        ("", True),
        ("faasd.function", True),
        ("missing", False),
        ("env==prod", True),
        ("env == prod", True),
        ("env!=prod", False),
        ("missing!=prod", False),  # != needs the label
        ("env in (dev, prod)", True),
        ("env notin (dev, prod)", False),
        ("missing notin (dev)", False),
        (r"tier==front\ end", True),
        ("faasd.function, env==prod, tier", True),
        ("faasd.function, env==dev", False),
        ("env in ()", False),
    ],
)
def test_label_selectors(query: str, matches: bool) -> None:
    assert all(selector.matches(LABELS) for selector in parse_selectors(query)) is matches


@pytest.mark.parametrize("query", ["a==", "a in b", "a b", "a,,b", "a in (x", "a@b", "==b", "a in (x,)"])
def test_label_selectors_that_do_not_parse(query: str) -> None:
    with pytest.raises(LabelSelectorError, match=r"^Can not parse label selector .*\. Reason: "):
        parse_selectors(query)
