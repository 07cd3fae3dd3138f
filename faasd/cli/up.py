"""``faasd up``: start the daemon in the foreground."""

from __future__ import annotations

import click

from faasd.config import PROVIDERS, ConfigError, DaemonConfig


@click.command()
@click.option("--bind", help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [default: 8080; 0 picks a free one].")
@click.option("--state-dir", help="Where state lives [default: $STATE_DIRECTORY, $XDG_STATE_HOME/faasd].")
@click.option("--provider", type=click.Choice(PROVIDERS), help="Backend [default: local].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[default: info]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with the same keys.")
def up(
    bind: str | None,
    port: int | None,
    state_dir: str | None,
    provider: str | None,
    log_level: str | None,
    config_file: str | None,
) -> None:
    """Run the daemon: gateway, service discovery and autoscaler, until SIGTERM/SIGINT.

    Every option is also a config file key and an env var FAASD_<KEY> (flags > env > file).
    """
    try:
        config = DaemonConfig.load(
            file=config_file,
            flags={"bind": bind, "port": port, "state_dir": state_dir, "provider": provider, "log_level": log_level},
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from faasd.daemon import main_up

    raise SystemExit(main_up(config))
