"""Every ``faasd up`` configuration key is also a flag (made from faasd/config.py's table, so the two
cannot drift apart), with help, and a flag sets exactly what the same key in the environment sets."""

from __future__ import annotations

import click
import pytest

from faasd import upargs
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
        "ENGINES": "unix:///run/faasd-node2.sock",
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


# -- faasd up without click (faasd.upargs): the same settings from the same arguments, or click's turn --


def _both(args: list[str]) -> tuple[object, object]:
    context = up.make_context("up", list(args))
    clicked = (
        {name: value for name, value in context.params.items() if name not in ("config_file", "stack_file")},
        context.params["config_file"],
    )
    return upargs.parse(args), clicked


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_the_plain_parser_reads_every_flag_as_click_does(key: ConfigKey) -> None:
    if key.boolean:
        shapes = [[key.flag], [f"--no-{key.flag[2:]}"]]
    else:
        shapes = [[key.flag, _example(key)], [f"{key.flag}={_example(key)}"]]
    for args in shapes:
        fast, clicked = _both([*args, "--config", "/tmp/c.toml", "--port", "9"])
        assert fast == clicked, args


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-f", "stack.yml"],
        ["--yaml", "stack.yml"],
        ["--nonsense"],
        ["--port"],
        ["--port", "--bind", "x"],
        ["--sandbox", "chroot"],
        ["--provider=moon"],
        [f"{next(k.flag for k in KEYS if k.boolean)}=yes"],
        ["stray"],
    ],
)
def test_the_plain_parser_leaves_anything_else_to_click(args: list[str]) -> None:
    assert upargs.parse(args) is None


def test_a_configuration_that_does_not_load_goes_to_click_for_its_message() -> None:
    assert upargs.try_up(["--port", "not-a-port"]) is None
