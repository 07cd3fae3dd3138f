"""The ``faasd`` command line (everything but ``watchdog``, which ``faasd.__main__`` runs without click).

click parses and documents; each command group lives in its own module. Errors print one line and
exit non-zero; a traceback is a bug.
"""

from __future__ import annotations

import importlib
import sys

import click

from faasd import __version__
from faasd.cli.common import make_context

__all__ = ["COMMANDS", "cli", "main"]

COMMANDS = {
    "build": "faasd.cli.build:build",
    "build-base": "faasd.cli.build:build_base",
    "deploy": "faasd.cli.functions:deploy",
    "describe": "faasd.cli.functions:describe",
    "install-service": "faasd.cli.service:install_service",
    "invoke": "faasd.cli.functions:invoke",
    "list": "faasd.cli.functions:list_functions",
    "logs": "faasd.cli.functions:logs",
    "new": "faasd.cli.new:new",
    "rm": "faasd.cli.functions:rm",
    "scale": "faasd.cli.functions:scale",
    "secret": "faasd.cli.secrets:secret",
    "snippet": "faasd.cli.snippet:snippet",
    "status": "faasd.cli.status:status",
    "up": "faasd.cli.up:up",
    "version": "faasd.cli.status:version",
}
"""Each command and where it is defined: imported when it runs (or ``--help`` lists them), so ``faasd up``
does not pay for the HTTP client, YAML or Docker's SDK that other commands use."""


class _LazyGroup(click.Group):
    """A group whose commands are imported by name when needed (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, name = where.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="faasd", message="%(prog)s %(version)s")
@click.option(
    "--gateway",
    "-g",
    metavar="URL",
    help="Gateway URL [env FAASD_URL or OPENFAAS_URL; default http://127.0.0.1:8080].",
)
@click.pass_context
def cli(ctx: click.Context, gateway: str | None) -> None:
    """faasd: Functions as a Service in one file.

    Start the daemon with 'faasd up'; deploy with 'faasd deploy NAME --fprocess CMD' or
    'faasd deploy -f stack.yml'; call with 'faasd invoke NAME' or curl /function/NAME.
    """
    ctx.obj = make_context(gateway)


def main(argv: list[str]) -> int:
    """Run the CLI on ``argv``; return the exit status (never a traceback for a usage error)."""
    try:
        result = cli.main(args=argv, prog_name="faasd", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("Aborted.", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0  # e.g. `faasd logs f | head`.
    # Without standalone mode, click returns ctx.exit(code)'s code instead of raising Exit.
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
