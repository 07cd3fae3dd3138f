"""Every ``faasd up`` configuration key is also a flag (made from faasd/config.py's table, so the two
cannot drift apart), with help, and a flag sets exactly what the same key in the environment sets."""

from __future__ import annotations

import click
import pytest

from faasd.cli.up import up
from faasd.config import ConfigKey, DaemonConfig, config_keys

KEYS = config_keys()


def _example(key: ConfigKey) -> str:
    """A valid value for ``key`` that differs from its default."""
    if key.choices:
        return key.choices[-1]
    examples = {
        "DURATION": "7s",
        "SIZE": "3k",
        "N": "9",
        "PORT": "9099",
        "HOSTS": "hooks.example.com",
        "URL": "http://marathon.example:8080",
    }
    return examples.get(key.metavar, "/tmp/x")


def _params(args: list[str]) -> dict[str, object]:
    context = up.make_context("up", args)
    return {name: value for name, value in context.params.items() if name not in ("config_file", "stack_file")}


def test_the_table_has_the_keys_the_readme_names() -> None:
    names = {key.name for key in KEYS}
    assert {"upstream_timeout", "max_upstream_timeout", "max_body_size", "swarm_route", "swarm_pull"} <= names


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_every_key_is_a_flag_with_help(key: ConfigKey) -> None:
    options = {option for param in up.params if isinstance(param, click.Option) for option in param.opts}
    assert key.flag in options
    assert key.help, f"{key.name} has no help line in faasd/config.py's _HELP"


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_a_flag_sets_what_its_environment_variable_sets(key: ConfigKey) -> None:
    if key.boolean:  # The value that is not the default: --no-X for a key on by default.
        on_by_default = DaemonConfig.load(env={"HOME": "/tmp", key.env: "false"}) != DaemonConfig.load(
            env={"HOME": "/tmp"}
        )
        args, value = ([f"--no-{key.flag[2:]}"], "false") if on_by_default else ([key.flag], "true")
    else:
        value = _example(key)
        args = [key.flag, value]
    from_flag = DaemonConfig.load(flags=_params(args), env={"HOME": "/tmp"})
    from_env = DaemonConfig.load(env={"HOME": "/tmp", key.env: value})
    assert from_flag == from_env
    assert from_flag != DaemonConfig.load(env={"HOME": "/tmp"}), f"{key.flag} {value} changed nothing"


def test_unset_flags_leave_the_environment_in_charge() -> None:
    config = DaemonConfig.load(flags=_params([]), env={"HOME": "/tmp", "FAASD_UPSTREAM_TIMEOUT": "5s"})
    assert config.upstream_timeout_s == 5.0
    assert (
        DaemonConfig.load(flags=_params(["--no-swarm-pull"]), env={"HOME": "/tmp", "FAASD_SWARM_PULL": "1"}).swarm_pull
        is False
    )
