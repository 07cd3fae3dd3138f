"""The per-function timeout rule (faasd/timeouts.py) on its own: which settings count, the grace, the bounds."""

from __future__ import annotations

import pytest

from faasd.errors import InvalidRequest
from faasd.providers.types import FunctionSpec
from faasd.timeouts import ANSWER_GRACE_S, FunctionTimeouts, own_timeout_s


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"read_timeout": "5m"}, None),  # Bounds reading the request, not the call.
        ({"exec_timeout": "300s"}, 300.0),
        ({"exec_timeout": "2m", "write_timeout": "10s"}, 120.0),  # exec_timeout is the call's limit when set.
        ({"write_timeout": "90"}, 90.0),
        ({"exec_timeout": "0", "write_timeout": "45s"}, 45.0),  # 0: bounded by write_timeout...
        ({"exec_timeout": "0"}, 30.0),  # ...whose watchdog default is 30 s.
        ({"exec_timeout": " "}, None),
    ],
)
def test_a_functions_own_limit_is_what_its_watchdog_enforces(env: dict[str, str], expected: float | None) -> None:
    assert own_timeout_s(env) == expected


def test_a_malformed_timeout_names_its_variable() -> None:
    with pytest.raises(InvalidRequest, match="invalid exec_timeout='soon'"):
        own_timeout_s({"exec_timeout": "soon"})


def _timeouts(specs: dict[str, FunctionSpec]) -> FunctionTimeouts:
    return FunctionTimeouts(60.0, 3600.0, specs.get)


def test_the_gateway_waits_the_larger_of_the_global_and_the_functions_own_plus_grace() -> None:
    specs = {
        "plain": FunctionSpec(name="plain", env_process="cat"),
        "short": FunctionSpec(name="short", env_process="cat", env_vars={"exec_timeout": "5s"}),
        "long": FunctionSpec(name="long", env_process="cat", env_vars={"exec_timeout": "300s"}),
        "huge": FunctionSpec(name="huge", env_process="cat", env_vars={"exec_timeout": "10h"}),
        "broken": FunctionSpec(name="broken", env_process="cat", env_vars={"exec_timeout": "soon"}),
    }
    timeouts = _timeouts(specs)
    assert timeouts.for_call("plain") == 60.0
    assert timeouts.for_call("short") == 60.0  # A shorter own limit never lowers the global one.
    assert timeouts.for_call("long") == 300.0 + ANSWER_GRACE_S
    assert timeouts.for_call("huge") == 3600.0 + ANSWER_GRACE_S  # Stored before the bound was lowered.
    assert timeouts.for_call("broken") == 60.0
    assert timeouts.for_call("unknown") == 60.0


def test_a_redeployed_spec_is_read_again() -> None:
    specs = {"f": FunctionSpec(name="f", env_process="cat", env_vars={"exec_timeout": "100s"})}
    timeouts = _timeouts(specs)
    assert timeouts.for_call("f") == 100.0 + ANSWER_GRACE_S
    specs["f"] = FunctionSpec(name="f", env_process="cat", env_vars={"exec_timeout": "200s"})
    assert timeouts.for_call("f") == 200.0 + ANSWER_GRACE_S
    del specs["f"]
    assert timeouts.for_call("f") == 60.0


def test_deploy_check_refuses_more_than_the_bound() -> None:
    timeouts = _timeouts({})
    timeouts.check(FunctionSpec(name="f", env_process="cat", env_vars={"exec_timeout": "1h"}))
    with pytest.raises(InvalidRequest, match=r"above the gateway's max_upstream_timeout \(3600s\)"):
        timeouts.check(FunctionSpec(name="f", env_process="cat", env_vars={"exec_timeout": "3601s"}))
    with pytest.raises(InvalidRequest, match="write_timeout"):
        timeouts.check(FunctionSpec(name="f", env_process="cat", env_vars={"write_timeout": "-1"}))


def test_the_bound_is_never_below_the_global_timeout() -> None:
    timeouts = FunctionTimeouts(120.0, 10.0, {}.get)
    assert timeouts.max_s == 120.0
