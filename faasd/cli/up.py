"""``faasd up``: start the daemon in the foreground (and, with ``-f stack.yml``, deploy a stack)."""

from __future__ import annotations

import os

import click

from faasd.cli.client import ClientError, GatewayClient, find_password
from faasd.cli.common import CliContext, pass_cli
from faasd.config import PROVIDERS, SANDBOXES, ConfigError, DaemonConfig


@click.command()
@click.option("--bind", help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [default: 8080; 0 picks a free one].")
@click.option("--state-dir", help="Where state lives [default: $STATE_DIRECTORY, $XDG_STATE_HOME/faasd].")
@click.option("--provider", type=click.Choice(PROVIDERS), help="Backend [default: local].")
@click.option(
    "--sandbox",
    type=click.Choice(SANDBOXES),
    help="How local functions are isolated: bwrap, uid (root), none (unsafe) [default: auto].",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[default: info]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with the same keys.")
@click.option("-f", "--yaml", "stack_file", type=click.Path(dir_okay=False), help="Deploy this stack.yml once up.")
@pass_cli
def up(
    ctx: CliContext,
    bind: str | None,
    port: int | None,
    state_dir: str | None,
    provider: str | None,
    sandbox: str | None,
    log_level: str | None,
    config_file: str | None,
    stack_file: str | None,
) -> None:
    """Run the daemon: gateway, service discovery and autoscaler, until SIGTERM/SIGINT.

    Every option is also a config file key and an env var FAASD_<KEY> (flags > env > file).
    With -f, a daemon already answering is only given the stack; otherwise one is started here and
    the stack is deployed into it as soon as it is up.
    """
    try:
        config = DaemonConfig.load(
            file=config_file,
            flags={
                "bind": bind,
                "port": port,
                "state_dir": state_dir,
                "provider": provider,
                "sandbox": sandbox,
                "log_level": log_level,
            },
        )
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
    from faasd.daemon import main_up

    code = main_up(config, deploy=specs)
    if code:
        click.get_current_context().exit(code)  # main_up logged the one error line already.


def _answers(url: str) -> bool:
    try:
        GatewayClient(url, None, timeout_s=2).request("GET", "/healthz", auth=False, ok=(200, 503))
    except ClientError:
        return False
    return True
