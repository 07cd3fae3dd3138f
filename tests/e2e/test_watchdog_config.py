"""Configuration errors: a missing or malformed variable stops the watchdog at start-up with exit
status 2 and one line ``faasd watchdog: invalid <var>=<value>: <reason>``, no traceback; well-formed
values in every documented syntax are accepted (docs/watchdog.md "Configuration")."""

from __future__ import annotations

import pytest

from tests.helpers import free_port

BAD_CONFIGS = [
    pytest.param({"fprocess": None}, "fprocess", id="missing-fprocess"),
    pytest.param({"fprocess": "   "}, "fprocess", id="blank-fprocess"),
    pytest.param({"fprocess": "no-such-program-4711 --flag"}, "fprocess", id="fprocess-not-on-path"),
    pytest.param({"fprocess": "cat 'unbalanced"}, "fprocess", id="fprocess-bad-quoting"),
    pytest.param({"port": "abc"}, "port", id="port-abc"),
    pytest.param({"port": "70000"}, "port", id="port-out-of-range"),
    pytest.param({"metrics_port": "-1"}, "metrics_port", id="metrics-port-negative"),
    pytest.param({"exec_timeout": "xyz"}, "exec_timeout", id="exec-timeout-xyz"),
    pytest.param({"read_timeout": "10 parsecs"}, "read_timeout", id="read-timeout-junk"),
    pytest.param({"write_timeout": "1x"}, "write_timeout", id="write-timeout-junk"),
    pytest.param({"healthcheck_interval": "soon"}, "healthcheck_interval", id="healthcheck-interval-junk"),
    pytest.param({"mode": "streaming-unknown"}, "mode", id="unknown-mode"),
    pytest.param({"max_inflight": "many"}, "max_inflight", id="max-inflight-junk"),
    pytest.param({"max_body_bytes": "lots"}, "max_body_bytes", id="max-body-bytes-junk"),
    pytest.param({"max_output_bytes": "10q"}, "max_output_bytes", id="max-output-bytes-junk"),
    pytest.param({"max_header_bytes": "big"}, "max_header_bytes", id="max-header-bytes-junk"),
    pytest.param({"combine_output": "maybe"}, "combine_output", id="combine-output-junk"),
    pytest.param({"suppress_lock": "perhaps"}, "suppress_lock", id="suppress-lock-junk"),
]


@pytest.mark.parametrize(("overrides", "variable"), BAD_CONFIGS)
def test_bad_config_exits_2_with_one_line(run_watchdog, watchdog_env, tmp_path, overrides, variable):
    env = watchdog_env(
        fprocess="cat",
        port=str(free_port()),
        metrics_port=str(free_port()),
        bind="127.0.0.1",
        lock_file=str(tmp_path / ".lock"),
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    result = run_watchdog(env)
    assert result.returncode == 2, f"exit {result.returncode}; stderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith(f"faasd watchdog: invalid {variable}="), line
    if variable in overrides and overrides[variable] is not None and overrides[variable].strip():
        assert overrides[variable] in line, f"the message should show the bad value: {line}"
    assert not (tmp_path / ".lock").exists(), "no lock file for a watchdog that never started"


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"exec_timeout": "1m30s", "read_timeout": "10", "write_timeout": "0.5"}, id="durations"),
        pytest.param({"exec_timeout": "1h", "healthcheck_interval": "250ms"}, id="more-durations"),
        pytest.param({"max_body_bytes": "512k", "max_output_bytes": "10m", "max_header_bytes": "64Ki"}, id="sizes"),
        pytest.param({"max_body_bytes": "1g", "max_output_bytes": "2MB", "max_header_bytes": "8KB"}, id="more-sizes"),
        pytest.param({"combine_output": "yes", "cgi_headers": "1", "write_debug": "true"}, id="booleans-true"),
        pytest.param({"combine_output": "no", "cgi_headers": "0", "marshal_request": "false"}, id="booleans-false"),
        pytest.param({"mode": "fork", "max_inflight": "0", "log_level": "debug"}, id="explicit-defaults"),
    ],
)
def test_well_formed_values_are_accepted(start_watchdog, settings):
    watchdog = start_watchdog("cat", **settings)
    response = watchdog.request("POST", "/", content=b"configured")
    assert response.status_code == 200
    assert response.text == "configured"


def test_size_suffix_is_binary(start_watchdog):
    watchdog = start_watchdog("wc -c", max_body_bytes="2k")
    assert watchdog.request("POST", "/", content=b"a" * 2048).text.strip() == "2048"
    assert watchdog.request("POST", "/", content=b"a" * 2049).status_code == 413


def test_fprocess_is_looked_up_on_the_watchdogs_path(run_watchdog, watchdog_env, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "my-function"
    program.write_text("#!/bin/sh\necho mine\n")
    program.chmod(0o755)
    env = watchdog_env(
        fprocess="my-function", port=str(free_port()), metrics_port="0", lock_file=str(tmp_path / ".lock")
    )
    # Not on the clean PATH: a config error naming fprocess.
    result = run_watchdog(env)
    assert result.returncode == 2
    assert result.stderr.startswith("faasd watchdog: invalid fprocess=")


def test_fprocess_found_on_an_extended_path(start_watchdog, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "my-function"
    program.write_text("#!/bin/sh\necho mine\n")
    program.chmod(0o755)
    watchdog = start_watchdog("my-function", PATH=f"{bin_dir}:/usr/bin:/bin")
    assert watchdog.request("GET", "/").text == "mine\n"


def test_port_in_use_fails_cleanly(run_watchdog, watchdog_env, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = watchdog_env(
            fprocess="cat", port=str(port), bind="127.0.0.1", metrics_port="0", lock_file=str(tmp_path / ".lock")
        )
        result = run_watchdog(env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip(), "the failure should be explained on stderr"
    assert not (tmp_path / ".lock").exists()
