"""Entry point of ``python faasd.pyz`` and ``python -m faasd``.

The first argument picks the role. Each branch imports only what its role needs: the watchdog starts on
every replica, so it must never pay for the daemon's or the CLI's imports (quart, hypercorn, docker, click).
"""

from __future__ import annotations

import sys

USAGE = """\
usage: faasd <command> [options]

Functions as a Service in one file.

commands:
  watchdog      run a function replica (configured by environment, see docs/watchdog.md)
  version       print the version

options:
  -h, --help    show this help
  --version     print the version
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a role and return its exit status."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "--help"
    if command == "watchdog":
        from faasd.watchdog.main import main as watchdog_main

        return watchdog_main(args[1:])
    if command in ("--version", "version"):
        from faasd import __version__

        print(f"faasd {__version__}")
        return 0
    if command in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    print(f"faasd: unknown command {command!r}; run 'faasd --help'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
