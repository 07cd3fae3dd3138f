"""The OpenFaaS JSON forms of the wire types are pinned here: clients depend on the exact names."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from faasd.errors import InvalidRequest
from faasd.providers.types import (
    MAX_ENV_VAR_BYTES,
    MAX_ENV_VARS_BYTES,
    FunctionSpec,
    FunctionStatus,
    LogMessage,
    Resources,
    validate_function_name,
    validate_name,
)

FULL = {
    "service": "nodeinfo",
    "image": "functions/nodeinfo:latest",
    "envProcess": "node main.js",
    "envVars": {"write_timeout": "10s"},
    "constraints": ["node.platform.os == linux"],
    "secrets": ["api-key"],
    "labels": {"com.openfaas.scale.min": "2"},
    "annotations": {"topic": "cron"},
    "limits": {"memory": "128M", "cpu": "0.5"},
    "requests": {"memory": "64M"},
    "readOnlyRootFilesystem": True,
}


def test_full_deployment_round_trips():
    spec = FunctionSpec.from_json(FULL)
    assert spec.env_process == "node main.js"
    assert spec.limits == Resources(memory="128M", cpu="0.5")
    assert spec.min_replicas == 2
    assert spec.to_json() == FULL


def test_minimal_deployment_omits_empty_fields():
    spec = FunctionSpec.from_json({"service": "echo", "envProcess": "cat"})
    assert spec.to_json() == {"service": "echo", "image": "", "envProcess": "cat"}
    assert spec.min_replicas == 1


def test_handler_archive_is_base64_in_json():
    archive = b"\x1f\x8b binary"
    spec = FunctionSpec.from_json({"service": "f", "handlerArchive": base64.b64encode(archive).decode()})
    assert spec.handler_archive == archive
    assert "handlerArchive" not in spec.to_json(include_archive=False)
    assert FunctionSpec.from_json(spec.to_json()) == spec


def test_status_json_uses_openfaas_names():
    spec = FunctionSpec.from_json({"service": "echo", "envProcess": "cat", "handlerArchive": "AAAA"})
    status = FunctionStatus(
        spec=spec,
        replicas=3,
        available_replicas=2,
        invocation_count=7,
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert status.to_json() == {
        "name": "echo",
        "namespace": "openfaas-fn",
        "image": "",
        "envProcess": "cat",
        "invocationCount": 7,
        "replicas": 3,
        "availableReplicas": 2,
        "createdAt": "2026-01-02T03:04:05Z",
        "faasd": {"state": "deployed"},
    }
    assert FunctionStatus(spec=spec).to_json()["createdAt"] == "0001-01-01T00:00:00Z"
    failed = FunctionStatus(spec=spec, state="failed", reason="cannot start replica: No such file or directory")
    assert failed.to_json()["faasd"] == {"state": "failed", "reason": "cannot start replica: No such file or directory"}


def test_log_message_json():
    message = LogMessage(name="f", instance="f-1", timestamp=datetime(2026, 1, 2, tzinfo=UTC), text="hi")
    assert message.to_json() == {
        "name": "f",
        "namespace": "openfaas-fn",
        "instance": "f-1",
        "timestamp": "2026-01-02T00:00:00.000000Z",
        "text": "hi",
    }


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "FunctionDeployment"),
        ({}, "service"),
        ({"service": ""}, "service"),
        ({"service": "a b"}, "service"),
        ({"service": "x" * 64}, "service"),
        ({"service": "../etc"}, "service"),
        ({"service": "f", "envVars": {"a": 1}}, "envVars"),
        ({"service": "f", "envVars": "x=y"}, "envVars"),
        ({"service": "f", "secrets": "s"}, "secrets"),
        ({"service": "f", "labels": [1]}, "labels"),
        ({"service": "f", "limits": "128M"}, "limits"),
        ({"service": "f", "limits": {"memory": 128}}, "limits.memory"),
        ({"service": "f", "readOnlyRootFilesystem": "yes"}, "readOnlyRootFilesystem"),
        ({"service": "f", "envProcess": 5}, "envProcess"),
        ({"service": "f", "handlerArchive": "not base64!"}, "handlerArchive"),
        ({"service": "a.b"}, "service 'a.b' may not contain '.'"),
        ({"service": "f.openfaas-fn"}, "service"),
        ({"service": "f", "namespace": "dev"}, "namespace 'dev' does not exist: faasd has one namespace, openfaas-fn"),
        ({"service": "f", "namespace": 7}, "namespace must be a string"),
    ],
)
def test_invalid_deployments_name_the_field(document, field):
    with pytest.raises(InvalidRequest) as info:
        FunctionSpec.from_json(document)
    assert field in info.value.message


@pytest.mark.parametrize(
    ("env_vars", "mention"),
    [
        ({"A=B": "x"}, "'A=B'"),
        ({"=": "x"}, "'='"),
        ({"A\0B": "x"}, "'A\\x00B'"),
        ({"GOOD": "x\0y"}, "'GOOD'"),
        ({"": "x"}, "empty"),
        ({"\ud800": "x"}, "'\\ud800'"),
        ({"LONE": "\udfff"}, "'LONE'"),
        ({"BIG": "x" * MAX_ENV_VAR_BYTES}, "'BIG'"),
        ({f"K{i}": "v" * 60_000 for i in range(5)}, f"limit is {MAX_ENV_VARS_BYTES}"),
        ({"NUMBER": 5}, "'NUMBER'"),
        ({"NONE": None}, "'NONE'"),
    ],
)
def test_env_vars_a_process_cannot_have_are_refused_naming_the_key(env_vars, mention):
    """Every route and backend builds a FunctionSpec: JSON and direct construction both refuse them."""
    with pytest.raises(InvalidRequest) as info:
        FunctionSpec.from_json({"service": "f", "envProcess": "cat", "envVars": env_vars})
    assert "envVars" in info.value.message and mention in info.value.message, info.value.message
    assert "\n" not in info.value.message and len(info.value.message) < 300
    with pytest.raises(InvalidRequest):
        FunctionSpec(name="f", env_vars=env_vars)


def test_env_vars_at_the_limits_are_accepted():
    name_and_sign = len("BIG=")
    FunctionSpec(name="f", env_vars={"BIG": "x" * (MAX_ENV_VAR_BYTES - name_and_sign)})
    FunctionSpec(name="f", env_vars={"UNICODE": "é ✓", "with space": "", "lower.dots-ok": "1"})
    per = MAX_ENV_VARS_BYTES // 4 - len("K0=")
    FunctionSpec(name="f", env_vars={f"K{i}": "v" * per for i in range(4)})


def test_env_process_and_secrets_are_checked_too():
    with pytest.raises(InvalidRequest, match="envProcess"):
        FunctionSpec(name="f", env_process="cat\0")
    with pytest.raises(InvalidRequest, match="secret"):
        FunctionSpec(name="f", secrets=("../password",))


def test_names():
    assert validate_name("a-b_c.d9") == "a-b_c.d9"
    for bad in ("", ".", "..", "a/b", "é", "a" * 64):
        with pytest.raises(InvalidRequest):
            validate_name(bad)


def test_a_function_name_has_no_dot_and_the_namespace_is_openfaas_fn_or_nothing():
    """In /function/NAME.NAMESPACE a dot starts the namespace, so a function deployed as 'a.b' could never be
    called by its name: deploys refuse it (secrets keep their dots). The deployment's namespace is checked and
    not kept (there is one); the status document always names it."""
    assert validate_function_name("a-b_c9") == "a-b_c9"
    for bad in ("a.b", "echo.openfaas-fn", ".hidden", "a" * 64, ""):
        with pytest.raises(InvalidRequest):
            validate_function_name(bad)
    assert FunctionSpec(name="f", secrets=("aws.key",)).secrets == ("aws.key",)
    for namespace in (None, "", "openfaas-fn"):
        spec = FunctionSpec.from_json({"service": "f", "envProcess": "cat", "namespace": namespace})
        assert spec == FunctionSpec(name="f", env_process="cat")
        assert "namespace" not in spec.to_json()
        assert FunctionStatus(spec=spec).to_json()["namespace"] == "openfaas-fn"


def test_an_error_message_is_one_line_whatever_it_quotes() -> None:
    """Found by the API fuzzer: tarfile's multi-line ReadError made a 400 span several lines."""
    from faasd.errors import InvalidRequest

    error = InvalidRequest("handlerArchive is not a readable tar archive: first line\nsecond\r\n  third\t")
    assert error.message == "handlerArchive is not a readable tar archive: first line second third"
    assert str(error) == error.message
