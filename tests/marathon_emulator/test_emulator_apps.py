"""The emulator's apps API over HTTP: status codes, headers, bodies and error shapes as Marathon documents
them (apps.raml, traits.raml, the examples), selectors and embeds, and authentication.

The validation rules themselves are tested without a server in tests/unit/test_marathon_appdef.py; here
a few of each kind check that they reach the client as Marathon answers them.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.marathon_emulator.fixture import StartEmulator

TASK_SERVER = Path(__file__).with_name("task_server.py")
SERVER_CMD = f"python3 {TASK_SERVER}"


def app(app_id: str, **fields: object) -> dict[str, object]:
    return {"id": app_id, "cmd": SERVER_CMD, "cpus": 0.1, "mem": 32, "backoffSeconds": 0, **fields}


def test_create_answers_201_with_location_deployment_and_app_info(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    response = client.post("/v2/apps", json=app("fob-aviary/1b6c3f9e-2a6b-4bd8-8d3c-0e0b8f4d9a11"))
    assert response.status_code == 201, response.text
    body = response.json()
    deployment_id = response.headers["Marathon-Deployment-Id"]
    assert body["deployments"] == [{"id": deployment_id}]
    assert response.headers["Location"].endswith("/v2/apps/fob-aviary/1b6c3f9e-2a6b-4bd8-8d3c-0e0b8f4d9a11")
    assert body["id"] == "/fob-aviary/1b6c3f9e-2a6b-4bd8-8d3c-0e0b8f4d9a11"  # made absolute
    assert (body["tasksStaged"], body["tasksRunning"], body["tasksHealthy"], body["tasksUnhealthy"]) == (0, 0, 0, 0)
    assert body["instances"] == 1 and body["networks"] == [{"mode": "host"}]
    assert body["portDefinitions"][0]["port"] >= 10000  # a service port was assigned
    assert body["version"] == body["versionInfo"]["lastConfigChangeAt"]
    assert response.headers["X-Marathon-Leader"] == emulator.url

    shown = client.get("/v2/apps/fob-aviary/1b6c3f9e-2a6b-4bd8-8d3c-0e0b8f4d9a11").json()["app"]
    assert "tasks" in shown and "deployments" in shown  # a single app always embeds its tasks

    put = client.put("/v2/apps/made-by-put", json={"cmd": "sleep 100", "instances": 0})
    assert put.status_code == 201  # PUT creates an unknown app
    assert set(put.json()) == {"version", "deploymentId"}
    assert put.headers["Marathon-Deployment-Id"] == put.json()["deploymentId"]
    assert put.headers["Location"] == f"{emulator.url}/v2/apps/made-by-put"
    patched = client.patch("/v2/apps/made-by-put", json={"labels": {"a": "b"}})
    assert patched.status_code == 200 and patched.headers["Marathon-Deployment-Id"]
    made = client.get("/v2/apps/made-by-put").json()["app"]
    assert made["labels"] == {"a": "b"} and made["cmd"] == "sleep 100"  # PATCH keeps what it does not name

    again = client.post("/v2/apps", json=app("/fob-aviary/1b6c3f9e-2a6b-4bd8-8d3c-0e0b8f4d9a11"))
    assert again.status_code == 409
    assert again.json() == {
        "message": "An app with id [/fob-aviary/1b6c3f9e-2a6b-4bd8-8d3c-0e0b8f4d9a11] already exists."
    }


def test_bridge_app_in_the_1_4_form_is_answered_in_the_1_5_form(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    container = {
        "type": "DOCKER",
        "docker": {"image": "mhausenblas/fob:pydriver", "network": "BRIDGE", "portMappings": [{"containerPort": 8080}]},
    }
    response = client.post("/v2/apps", json=app("/fob", container=container, instances=0))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["networks"] == [{"mode": "container/bridge"}]
    assert "network" not in body["container"]["docker"] and "portMappings" not in body["container"]["docker"]
    [mapping] = body["container"]["portMappings"]
    assert mapping["containerPort"] == 8080 and mapping["hostPort"] == 0 and mapping["protocol"] == "tcp"
    assert mapping["servicePort"] >= 10000


def test_errors_have_marathons_status_and_body(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    cases = [
        (client.get("/v2/apps/nothing-here"), 404, {"message": "App '/nothing-here' does not exist"}),
        (client.get("/v2/nonsense"), 500, {"message": "URI not found"}),
        (client.post("/v2/apps", content=b"{not json"), 400, None),
        (client.post("/v2/apps", content=b""), 400, None),
        (client.put("/v2/apps/x", content=b"NaN"), 400, None),
        (client.post("/v2/apps", json={"id": 123}), 422, None),
        (client.delete("/v2/deployments/abc"), 404, {"message": "DeploymentPlan abc does not exist"}),
        (client.get("/v2/apps", params={"label": "a in b"}), 422, None),
        (client.patch("/v2/apps/absent", json={"instances": 2}), 404, {"message": "App '/absent' does not exist"}),
        (client.post("/v2/apps/x/tasks"), 405, {"message": "Method Not Allowed"}),
    ]
    for response, status, body in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert response.headers["content-type"] == "application/json"
        if body is not None:
            assert response.json() == body
        assert isinstance(response.json()["message"], str)
    assert cases[2][0].json()["message"] == "Invalid JSON" and isinstance(cases[2][0].json()["details"], str)
    assert cases[3][0].json()["message"] == "Please specify data in JSON format"
    assert cases[5][0].json() == {
        "message": "Invalid JSON",
        "details": [{"path": "/id", "errors": ["error.expected.jsstring"]}],
    }
    assert cases[7][0].json()["message"].startswith("Can not parse label selector a in b.")


def test_validation_failures_are_422_with_details(marathon_emulator: StartEmulator) -> None:
    client = marathon_emulator().client()
    response = client.post("/v2/apps", json=app("/a", instances=-1, upgradeStrategy={"minimumHealthCapacity": 1.5}))
    assert response.status_code == 422
    assert response.json() == {
        "message": "Invalid JSON",
        "details": [
            {"path": "/instances", "errors": ["error.min"]},
            {"path": "/upgradeStrategy/minimumHealthCapacity", "errors": ["error.max"]},
        ],
    }
    response = client.post("/v2/apps", json={"id": "/a/restart", "cmd": "sleep 1", "args": ["x"]})
    assert response.status_code == 422
    assert response.json() == {
        "message": "Object is not valid",
        "details": [
            {
                "path": "/id",
                "errors": ["must not end with any of the following reserved keywords: restart, tasks, versions, ., .."],
            },
            {
                "path": "/",
                "errors": ["AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."],
            },
        ],
    }
    assert client.get("/v2/apps").json() == {"apps": []}  # nothing was created


def test_list_filters_by_id_cmd_and_label_selector(marathon_emulator: StartEmulator) -> None:
    client = marathon_emulator().client()
    definitions = [
        app("/faasd/echo", instances=0, labels={"faasd.function": "echo", "tier": "fn"}),
        app("/faasd/upper", instances=0, labels={"faasd.function": "upper", "tier": "fn"}),
        app("/other/db", instances=0, cmd="sleep 1000", labels={"tier": "data base"}),
    ]
    for definition in definitions:
        assert client.post("/v2/apps", json=definition).status_code == 201

    def ids(**params: str) -> list[str]:
        response = client.get("/v2/apps", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["apps"]]

    assert ids() == ["/faasd/echo", "/faasd/upper", "/other/db"]
    assert ids(id="/FAASD/") == ["/faasd/echo", "/faasd/upper"]  # substring, any case
    assert ids(cmd="SLEEP") == ["/other/db"]
    assert ids(label="faasd.function") == ["/faasd/echo", "/faasd/upper"]
    assert ids(label="faasd.function==upper") == ["/faasd/upper"]
    assert ids(label="tier!=fn") == ["/other/db"]  # != needs the label to exist
    assert ids(label="faasd.function notin (echo), tier in (fn, x)") == ["/faasd/upper"]
    assert ids(label=r"tier==data\ base") == ["/other/db"]
    assert ids(label="missing") == []


def test_embeds_and_group_listing(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    assert client.post("/v2/apps", json=app("/faasd/echo")).status_code == 201
    emulator.wait_tasks("/faasd/echo", 1)
    plain = client.get("/v2/apps").json()["apps"][0]
    assert "tasks" not in plain and plain["deployments"] == [] and plain["tasksRunning"] == 1
    embedded = client.get("/v2/apps", params=[("embed", "apps.tasks"), ("embed", "apps.lastTaskFailure")])
    [task] = embedded.json()["apps"][0]["tasks"]
    assert task["appId"] == "/faasd/echo" and task["host"] == "127.0.0.1" and task["state"] == "TASK_RUNNING"
    assert task["id"].startswith("faasd_echo.instance-") and task["id"].endswith("._app.1")
    group = client.get("/v2/apps/faasd/*").json()
    assert [item["id"] for item in group["*"]] == ["/faasd/echo"] and group["*"][0]["tasks"]
    groups = client.get("/v2/groups/faasd").json()
    assert groups["id"] == "/faasd" and [item["id"] for item in groups["apps"]] == ["/faasd/echo"]
    assert client.get("/v2/groups/nothing").status_code == 404
    assert client.get("/v2/apps/nothing/*").json() == {"message": "Group '/nothing' does not exist"}
    versions = client.get("/v2/apps/faasd/echo/versions").json()["versions"]
    assert len(versions) == 1
    assert client.get(f"/v2/apps/faasd/echo/versions/{versions[0]}").json()["cmd"] == SERVER_CMD


def test_basic_auth(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator(username="marathon", password="s3cret")
    with httpx.Client(base_url=emulator.url) as anonymous:
        denied = anonymous.get("/v2/apps")
        assert denied.status_code == 401
        assert denied.json() == {"message": "Invalid username or password."}
        assert denied.headers["WWW-Authenticate"].startswith("Basic")
        assert anonymous.get("/v2/apps", auth=("marathon", "wrong")).status_code == 401
        assert anonymous.get("/v2/nonsense").status_code == 401  # no route is revealed without credentials
        assert anonymous.get("/ping").text == "pong"  # the health endpoint stays open
        assert anonymous.get("/v2/apps", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert emulator.client().get("/v2/apps").status_code == 200


def test_dcos_token_auth(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator(token="eyJhbGciOi.dcos.token")
    with httpx.Client(base_url=emulator.url) as anonymous:
        assert anonymous.get("/v2/info").status_code == 401
        assert anonymous.get("/v2/info", headers={"Authorization": "token=eyJhbGciOi.dcos.token"}).status_code == 200
        bearer = {"Authorization": "Bearer eyJhbGciOi.dcos.token"}  # DC/OS wants literally "token=", not Bearer
        assert anonymous.get("/v2/info", headers=bearer).status_code == 401
        assert anonymous.get("/v2/info", headers={"Authorization": "token=other"}).status_code == 401
    info = emulator.client().get("/v2/info").json()
    assert info["name"] == "marathon" and info["elected"] is True
    assert info["leader"] == emulator.url.removeprefix("http://")
    assert emulator.client().get("/v2/leader").json() == {"leader": info["leader"]}


def test_hostile_requests_get_clear_errors_and_the_emulator_carries_on(marathon_emulator: StartEmulator) -> None:
    emulator = marathon_emulator()
    client = emulator.client()
    deep = b"[" * 100_000 + b"]" * 100_000
    cases = [
        (client.post("/v2/apps", content=deep), 400),
        (client.post("/v2/apps", content=b"\xff\xfe{}"), 400),
        (client.post("/v2/apps", content=b'{"id": "/a", "cmd": "sleep 1", "cpus": Infinity}'), 400),
        (client.post("/v2/apps", json={"id": "/" + "a" * 100_000, "cmd": "sleep 1", "instances": 0}), 201),
        (client.post("/v2/apps", json={"id": "/b", "cmd": "sleep 1", "labels": {"x": {"y": 1}}}), 422),
        (client.post("/v2/apps", json={"id": "/c", "cmd": "sleep 1", "healthChecks": [None]}), 422),
        (client.post("/v2/apps", content=b"x" * (9 * 1024 * 1024)), 413),
        (client.get("/v2/apps/%00"), 404),
        (client.get("/v2/apps", params={"label": "\\"}), 422),
        (client.get("/v2/apps", params={"embed": "apps.nonsense", "id": "\x00"}), 200),
        (client.delete("/v2/apps/a/tasks/%2e%2e"), 404),
        (client.put("/v2/apps/UPPER", json={"cmd": "sleep 1"}), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text[:300])
        assert status < 400 or response.json()["message"]
    assert client.get("/ping").text == "pong"
    assert client.get("/v2/apps").status_code == 200
