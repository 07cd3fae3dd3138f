"""faasd's one namespace, ``openfaas-fn``, the OpenFaaS way, against a real daemon (faasd.namespace).

OpenFaaS clients name it in the invoke path (``/function/<name>.openfaas-fn``, which faas-cli and the
Go SDK always call), in ``?namespace=`` and in the ``namespace`` field of write bodies: each spelling
reaches the same function or secret as none at all, and any other namespace is a one-line 400 naming
it and the one that exists. A dot in a function name would make ``/function/a.b`` ambiguous, so a
deploy of one is a 400.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.daemon_fixtures import Daemon, StartDaemon

NO_SUCH = "namespace 'dev' does not exist: faasd has one namespace, openfaas-fn\n"


@pytest.fixture
def daemon(start_daemon: StartDaemon) -> Daemon:
    daemon = start_daemon()
    daemon.deploy("env", "env")
    return daemon


def test_name_dot_openfaas_fn_is_the_same_function(daemon: Daemon) -> None:
    with daemon.client(auth=False) as client:
        plain = client.get("/function/env/some/path?a=1")
        qualified = client.get("/function/env.openfaas-fn/some/path?a=1")
        for answer in (plain, qualified):
            assert answer.status_code == 200, answer.text
            assert "Http_Path=/some/path" in answer.text and "Http_Query=a=1" in answer.text
        assert client.post("/function/env.openfaas-fn", content=b"x").status_code == 200
        header = client.post("/", headers={"X-Function": "env.openfaas-fn"}, content=b"x")
        assert header.status_code == 200 and "Http_Method=POST" in header.text
        # The metrics count both spellings as the one function.
        assert daemon.metric("gateway_function_invocation_total", function_name="env", code="200") == 4
        for path in ("/function/env.dev", "/function/env.dev/some/path", "/function/env.openfaas-fn.dev"):
            answer = client.get(path)
            assert (answer.status_code, answer.text) == (400, NO_SUCH), path
            assert answer.headers["x-call-id"]
        trailing = client.get("/function/env.")
        assert (trailing.status_code, trailing.text) == (400, NO_SUCH.replace("'dev'", "''"))
        assert client.post("/", headers={"X-Function": "env.dev"}, content=b"x").text == NO_SUCH
        missing = client.get("/function/ghost.openfaas-fn")
        assert (missing.status_code, missing.text) == (404, "Function not found: ghost\n")


def test_a_dot_in_a_function_name_is_refused_at_deploy(daemon: Daemon) -> None:
    with daemon.client() as client:
        for name in ("a.b", "env.openfaas-fn"):
            answer = client.post("/system/functions", json={"service": name, "envProcess": "cat"})
            assert answer.status_code == 400 and f"service '{name}' may not contain '.'" in answer.text, answer.text
        assert [function["name"] for function in client.get("/system/functions").json()] == ["env"]
        # Secret names keep their dots: they never appear in a path.
        assert client.post("/system/secrets", json={"name": "aws.key", "value": "v"}).status_code == 201


def _requests(query: str, body: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every /system request about functions or secrets, with ``?namespace=query`` and, in the writes
    whose OpenFaaS types carry one, ``"namespace": body``."""
    params = {"namespace": query}
    deployment = {"service": "ns", "envProcess": "cat", "namespace": body}
    return [
        ("GET", "/system/functions", {"params": params}),
        ("GET", "/system/function/env", {"params": params}),
        ("GET", "/system/scaling/env", {"params": params}),
        ("GET", "/system/logs", {"params": {**params, "name": "env", "follow": "false"}}),
        ("GET", "/system/secrets", {"params": params}),
        ("POST", "/system/functions", {"json": deployment, "params": params}),
        ("PUT", "/system/functions", {"json": deployment, "params": params}),
        ("POST", "/system/scale-function/ns", {"json": {"replicas": 0, "namespace": body}, "params": params}),
        ("POST", "/system/secrets", {"json": {"name": "k", "value": "1", "namespace": body}, "params": params}),
        ("PUT", "/system/secrets", {"json": {"name": "k", "value": "2", "namespace": body}, "params": params}),
        ("DELETE", "/system/secrets", {"json": {"name": "k", "namespace": body}, "params": params}),
        ("DELETE", "/system/functions", {"json": {"functionName": "ns", "namespace": body}, "params": params}),
    ]


def test_every_system_route_takes_openfaas_fn_and_refuses_another(daemon: Daemon) -> None:
    with daemon.client() as client:
        for query, body in (("openfaas-fn", "openfaas-fn"), ("", "")):
            for method, path, kwargs in _requests(query, body):
                answer = client.request(method, path, **kwargs)
                assert answer.status_code < 300, (query, body, method, path, answer.status_code, answer.text)
        # Deploy first, so that a refused write is told apart from one that finds nothing to change.
        daemon.deploy("ns", "cat")
        assert client.post("/system/secrets", json={"name": "k", "value": "v"}).status_code == 201
        for query, body in (("dev", "openfaas-fn"), ("openfaas-fn", "dev")):
            for method, path, kwargs in _requests(query, body):
                answer = client.request(method, path, **kwargs)
                if query == "openfaas-fn" and "json" not in kwargs:
                    assert answer.status_code == 200, (method, path, answer.text)  # No body to carry "dev".
                else:
                    assert (answer.status_code, answer.text) == (400, NO_SUCH), (query, body, method, path)
        repeated = client.get("/system/functions?namespace=openfaas-fn&namespace=dev")
        assert repeated.text == NO_SUCH
        # Nothing was changed by a refused request.
        assert [function["name"] for function in client.get("/system/functions").json()] == ["env", "ns"]
        assert daemon.status("ns")["replicas"] == 1
        assert client.get("/system/secrets").json() == [{"name": "k", "namespace": "openfaas-fn"}]


def test_answers_name_the_one_namespace(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.post("/system/secrets", json={"name": "k", "value": "v"}).status_code == 201
        assert client.get("/function/env").status_code == 200
        listed = client.get("/system/functions").json()
        assert [(function["name"], function["namespace"]) for function in listed] == [("env", "openfaas-fn")]
        assert client.get("/system/function/env").json()["namespace"] == "openfaas-fn"
        assert client.get("/system/secrets").json() == [{"name": "k", "namespace": "openfaas-fn"}]
        lines = client.get("/system/logs", params={"name": "env", "follow": "false"}).text.splitlines()
        assert lines and all('"namespace": "openfaas-fn"' in line for line in lines), lines
        assert client.get("/system/namespaces").json() == ["openfaas-fn"]
        assert client.get("/system/namespace/openfaas-fn").json() == {"name": "openfaas-fn"}
        other = client.get("/system/namespace/dev")
        assert other.status_code == 404
        assert other.text == "namespace dev not found: faasd has one namespace, openfaas-fn\n"


def test_namespaces_cannot_be_created_changed_or_removed(daemon: Daemon) -> None:
    """faas-cli's namespace create|update|remove: a 400, as any request for another namespace."""
    with daemon.client() as client:
        for method, path in [
            ("POST", "/system/namespace/"),
            ("POST", "/system/namespace/dev"),
            ("PUT", "/system/namespace/openfaas-fn"),
            ("DELETE", "/system/namespace/openfaas-fn"),
        ]:
            answer = client.request(method, path, json={"name": "dev", "labels": {"openfaas": "1"}})
            assert (answer.status_code, answer.text) == (
                400,
                "faasd has one namespace, openfaas-fn: namespaces cannot be created, changed or removed\n",
            ), (method, path)
        assert client.get("/system/namespaces").json() == ["openfaas-fn"]
