"""The ``faasd`` command line (everything but ``watchdog``, which ``faasd.__main__`` runs without click).

click parses and documents; each command group lives in its own module. Errors print one line and
exit non-zero; a traceback is a bug.
"""

from __future__ import annotations

import sys

import click

from faasd import __version__
from faasd.cli.build import build, build_base
from faasd.cli.common import make_context
from faasd.cli.functions import deploy, describe, invoke, list_functions, logs, rm, scale
from faasd.cli.new import new
from faasd.cli.secrets import secret
from faasd.cli.service import install_service
from faasd.cli.snippet import snippet
from faasd.cli.status import status, version
from faasd.cli.up import up

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for command in (
    status,
    version,
    up,
    deploy,
    list_functions,
    describe,
    invoke,
    rm,
    logs,
    scale,
    secret,
    new,
    install_service,
    build_base,
    build,
    snippet,
):
    cli.add_command(command)


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
