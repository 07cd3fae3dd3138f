"""Entry point of ``python faasd.pyz`` and ``python -m faasd``.

The first argument picks the role. Each branch imports only what its role needs: the watchdog starts on
every replica, so it must never pay for the daemon's or the CLI's imports (quart, hypercorn, docker, click).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a role and return its exit status."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command == "_sandbox":  # A local replica: confine this process first, then take the role.
        from faasd.sandbox.enter import enter

        # A pooled replica (faasd.sandbox.pooled, "_pooled") follows the daemon's lifeline from its assignment on.
        enter(args[1] if len(args) > 1 else "", follow_daemon=args[2:3] != ["_pooled"])
        args = args[2:]
        command = args[0] if args else ""
        if command == "--" and len(args) > 1:  # Confined, now run another program (a function's build step).
            import os

            try:
                os.execv(args[1], args[1:])
            except OSError as exc:
                print(f"faasd sandbox: cannot run {args[1]}: {exc.strerror}", file=sys.stderr)
                return 127
    if command == "watchdog" and args[1:] in (["-h"], ["--help"]):  # The sandbox check: nothing more.
        from faasd.watchdog.usage import HELP

        print(HELP, end="")
        return 0
    if command == "watchdog":
        _without_ssl()
        from faasd.watchdog.main import main as watchdog_main

        return watchdog_main(args[1:])
    if command == "_marathon-task":  # A Marathon command task on a Mesos agent, before its watchdog.
        from faasd.watchdog.marathon import main as task_main

        return task_main(args[1:])
    if command == "_pooled":  # A replica started before its function is known (faasd.sandbox.pooled).
        from faasd.sandbox.pooled import main as pooled_main

        return pooled_main(args[1:])
    if command == "_pyworker":  # A python-mode worker process (started by the watchdog).
        from faasd.watchdog.pyworker import main as worker_main

        return worker_main(args[1:])
    if command == "_checksource":  # Compiles an uploaded snippet for the daemon (never runs it).
        from faasd.fob.checkproc import main as check_main

        return check_main(args[1:])
    if command == "--version":
        from faasd import __version__

        print(f"faasd {__version__}")
        return 0
    if command == "up":  # The daemon: plain arguments skip click (faasd.upargs).
        from faasd.codecache import install

        install()  # Before the imports that build dataclasses and attrs classes.
        from faasd.upargs import try_up

        try_up(args[1:])  # Returns only when click must parse these arguments.
    from faasd.cli import main as cli_main

    return cli_main(args)


def _without_ssl() -> None:
    """Keep ``ssl`` out of a watchdog: asyncio imports it only to offer TLS (and does without it, guarded by
    ``except ImportError``), which the watchdog never uses -- it serves and proxies plain HTTP on loopback.
    ``ssl`` with ``_ssl``, ``base64`` and ``struct`` is about a sixth of the watchdog's imports, paid at
    every replica start. Only this process: the function's processes (fork mode's commands, python mode's
    workers) are new interpreters that import ``ssl`` as usual. A None entry in ``sys.modules`` is the
    documented way to make an import fail (ModuleNotFoundError)."""
    if "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]


if __name__ == "__main__":
    sys.exit(main())
