"""``faasd up`` without click, when its arguments are plain: the daemon's start does not pay for click.

Outside :mod:`faasd.cli` on purpose: that package's ``__init__`` imports click.

click (with ``uuid`` and ``platform``, which its types import) is about a sixth of what ``faasd up``
imported before it answered ``/healthz`` (``python -X importtime``), and the daemon never uses it once
its flags are read. :func:`parse` reads the simple shapes of :mod:`faasd.cli.up`'s flags -- every
config key as ``--key VALUE``, ``--key=VALUE``, ``--flag``/``--no-flag``, and ``--config FILE`` -- and
gives up (returns None) on anything else: ``--help``, ``-f``, an unknown or incomplete flag, a value
outside a key's choices. Then click parses the very same arguments, with its own help and messages, so
nothing a user sees changes; the test in tests/unit/test_config_flags.py holds both parsers to the same
settings. :func:`start_daemon` is what both paths run once the configuration is loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from faasd.config import ConfigError, DaemonConfig, config_keys
from faasd.providers.types import FunctionSpec

__all__ = ["parse", "start_daemon", "try_up"]


def parse(args: Sequence[str]) -> tuple[dict[str, object], str | None] | None:
    """(settings as click would pass them to ``up``, ``--config`` file), or None (see the module docstring)."""
    keys = {key.flag: key for key in config_keys()}
    negations = {f"--no-{key.flag[2:]}": key for key in keys.values() if key.boolean}
    settings: dict[str, object] = {key.name: None for key in keys.values()}
    config_file: str | None = None
    remaining = list(args)
    while remaining:
        arg = remaining.pop(0)
        flag, has_value, value = arg.partition("=")
        if flag in negations and not has_value:
            settings[negations[flag].name] = False
            continue
        key = keys.get(flag)
        if key is not None and key.boolean:
            if has_value:
                return None
            settings[key.name] = True
            continue
        if key is None and flag != "--config":
            return None
        if not has_value:
            if not remaining or remaining[0].startswith("-"):
                return None  # click says what is missing.
            value = remaining.pop(0)
        if key is None:
            config_file = value
        elif key.choices and value not in key.choices:
            return None
        else:
            settings[key.name] = value
    return settings, config_file


def try_up(args: Sequence[str]) -> None:
    """Run ``faasd up args`` here, and exit with the daemon's status, if they are plain and the
    configuration loads; return when they are not: click parses them then."""
    parsed = parse(args)
    if parsed is None:
        return
    settings, config_file = parsed
    try:
        config = DaemonConfig.load(file=config_file, flags=settings)
    except ConfigError:
        return  # click reports it, as a usage error.
    start_daemon(config, [])


def start_daemon(config: DaemonConfig, specs: list[FunctionSpec]) -> NoReturn:
    """Start the local backend's sandbox check, then import and run the daemon; exit the process with its
    status once it has stopped (:func:`exit_after_daemon`)."""
    if config.provider == "local":  # The check's test replica runs while the daemon's modules load.
        from faasd.runtime import self_command
        from faasd.sandbox.host import start_check

        start_check(config.sandbox, state_dir=config.state_dir, command=self_command())
    from faasd.daemon import main_up

    exit_after_daemon(main_up(config, deploy=specs))


def exit_after_daemon(code: int) -> NoReturn:
    """End the process the daemon ran in with ``code``, without the interpreter's teardown.

    Why: the daemon's shutdown closes what it holds itself (the gateway drains, the replicas stop, the
    store and the queue close, the ``stopped`` line is logged). What Python does after that -- ``atexit``
    handlers, then destroying every module and object of quart, hypercorn, trio, the backends -- took
    80-130 ms of a 150-190 ms stop on a 2-vCPU VM, and ``systemctl stop`` or ``restart`` waited for it.
    So: the log handlers and the standard streams are flushed, then ``os._exit``. Only a daemon that ran
    (or could not start) gets here; a bug's traceback propagates from :func:`~faasd.daemon.main_up` as
    before.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # A closed or broken stream: nothing more to say.
            stream.flush()
    os._exit(code)
