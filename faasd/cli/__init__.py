"""The ``faasd`` command line (everything but ``watchdog``, which ``faasd.__main__`` runs without click).

click does the parsing and help; each command group lives in its own module and is imported here.
"""

from __future__ import annotations

import sys

import click

from faasd import __version__
from faasd.cli.up import up

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="faasd", message="%(prog)s %(version)s")
def cli() -> None:
    """faasd: Functions as a Service in one file.

    Run the daemon with 'faasd up'; a function replica runs 'faasd watchdog' (configured by env).
    """


cli.add_command(up)


def main(argv: list[str]) -> int:
    """Run the CLI on ``argv``; return the exit status (never a traceback for a usage error)."""
    try:
        cli.main(args=argv, prog_name="faasd", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("Aborted.", file=sys.stderr)
        return 1
    return 0
