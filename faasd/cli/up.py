"""``faasd up``: start the daemon in the foreground (and, with ``-f stack.yml``, deploy a stack).

Every configuration key is a flag here, made from :func:`faasd.config.config_keys` (``upstream_timeout``
-> ``--upstream-timeout``, ``swarm_pull`` -> ``--swarm-pull/--no-swarm-pull``), so a key added to the
table is a flag at once and the two cannot drift apart. Flag values are passed on as text and checked
by :meth:`DaemonConfig.load`, with the same messages as the file's and the environment's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from faasd.cli.client import ClientError, GatewayClient, find_password
from faasd.cli.common import CliContext, pass_cli
from faasd.config import ConfigError, ConfigKey, DaemonConfig, config_keys
from faasd.upargs import start_daemon

__all__ = ["up"]


def _flag(key: ConfigKey) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    help_text = f"{key.help} [env {key.env}]"
    if key.boolean:
        name = key.flag[2:]
        return click.option(f"--{name}/--no-{name}", key.name, default=None, help=help_text)
    kind: Any = click.Choice(key.choices) if key.choices else None
    metavar = None if key.choices else key.metavar
    return click.option(key.flag, key.name, type=kind, metavar=metavar, help=help_text)


def _config_flags(function: Callable[..., Any]) -> Callable[..., Any]:
    for key in reversed(config_keys()):
        function = _flag(key)(function)
    return function


@click.command()
@_config_flags
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with the same keys.")
@click.option("-f", "--yaml", "stack_file", type=click.Path(dir_okay=False), help="Deploy this stack.yml once up.")
@pass_cli
def up(ctx: CliContext, config_file: str | None, stack_file: str | None, **settings: object) -> None:
    """Run the daemon: gateway, service discovery and autoscaler, until SIGTERM/SIGINT.

    Every option but --config and -f is also a config file key and an env var FAASD_<KEY> (flags > env >
    file). With -f, a daemon already answering is only given the stack; otherwise one is started here and
    the stack is deployed into it as soon as it is up.
    """
    try:
        config = DaemonConfig.load(file=config_file, flags=settings)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    specs = []
    if stack_file:
        from faasd.cli.functions import deploy_spec, specs_from_stack

        specs = specs_from_stack(ctx, stack_file)
        host = "127.0.0.1" if config.bind in ("0.0.0.0", "::", "") else config.bind
        url = f"http://{host}:{config.port}"
        if config.port and _answers(url):
            password, _ = find_password({**os.environ, "FAASD_STATE_DIR": config.state_dir})
            ctx.gateway, ctx.password = url, password
            for spec in specs:
                deploy_spec(ctx, spec, wait=True, timeout_s=60)
            return
    start_daemon(config, specs)  # Exits the process with the daemon's status (main_up logged any error line).


def _answers(url: str) -> bool:
    try:
        GatewayClient(url, None, timeout_s=2).request("GET", "/healthz", auth=False, ok=(200, 503))
    except ClientError:
        return False
    return True
