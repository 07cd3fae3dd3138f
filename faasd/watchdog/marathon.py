"""``python3 faasd.pyz _marathon-task``: a command task's start on a Mesos agent, before the watchdog.

Marathon runs a function without an image as a command task: the Mesos fetcher puts ``faasd.pyz`` in the
task's sandbox and ``cmd`` runs this (see :mod:`faasd.providers.marathon.appdef`). It:

1. unpacks the handler archive, if the app carries one (``FAASD_HANDLER_ARCHIVE_0``, ``_1``... in the
   environment, base64), into ``function/`` in the sandbox with the local backend's safe extractor, and
   works there (the function's code is its working directory, as on the local backend);
2. makes the environment the watchdog's: ``port`` = ``$PORT0`` (the host port Marathon gave the task;
   there is no network namespace, so the watchdog listens there), ``metrics_port=0`` unless set (a
   fixed metrics port would clash between replicas on one agent), ``TMPDIR`` inside the sandbox (the
   watchdog's lock file is per replica), ``bind`` = ``$HOST`` when that is an IP address (Marathon
   reports the task at its agent's ``HOST``: the gateway calls that address, nothing else need reach
   the replica; a host name binds every interface), the archive pieces removed;
3. becomes ``python3 faasd.pyz watchdog`` (``exec``: Mesos signals the watchdog itself).

A problem is one line on stderr (in the sandbox's ``stderr``) and exit status 2: Marathon records the
task as failed, and a deploy waiting for it reports that.

Stdlib only, plus the archive extractor (:mod:`faasd.archive`, imported only when there is an archive):
it runs before every replica of such a function. It lives beside the watchdog, not in the Marathon
backend's package, whose imports (httpx, trio) a replica must not pay for.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Mapping

__all__ = ["main", "watchdog_environment"]

ARCHIVE_ENV_PREFIX = "FAASD_HANDLER_ARCHIVE_"
"""As :data:`faasd.providers.marathon.appdef.ARCHIVE_ENV_PREFIX` (not imported: this stays light;
tests/unit/test_marathon_backend.py checks they agree)."""
FUNCTION_DIR = "function"


class TaskError(Exception):
    """Why the task cannot start (one line)."""


def read_archive(env: Mapping[str, str]) -> bytes:
    """The handler archive in ``env``'s pieces, or b"" when there is none.

    Raises:
        TaskError: the pieces are not base64.
    """
    pieces: list[str] = []
    while (piece := env.get(f"{ARCHIVE_ENV_PREFIX}{len(pieces)}")) is not None:
        pieces.append(piece)
    if not pieces:
        return b""
    try:
        return base64.b64decode("".join(pieces), validate=True)
    except (binascii.Error, ValueError):
        raise TaskError(f"{ARCHIVE_ENV_PREFIX}0..{len(pieces) - 1} are not base64") from None


def watchdog_environment(env: Mapping[str, str], sandbox: str) -> dict[str, str]:
    """The watchdog's environment for a task started with ``env`` in ``sandbox`` (see the docstring).

    Raises:
        TaskError: no ``PORT0`` (not started by Marathon with a port).
    """
    port = env.get("PORT0", "").strip()
    if not port.isdigit():
        raise TaskError("PORT0 is not set: run by Marathon with one port (portDefinitions)")
    result = {key: value for key, value in env.items() if not key.startswith(ARCHIVE_ENV_PREFIX)}
    result["port"] = port
    result.setdefault("metrics_port", "0")
    host = env.get("HOST", "").strip()
    if "bind" not in env and _is_address(host):
        result["bind"] = host
    result["TMPDIR"] = os.path.join(sandbox, "tmp")
    return result


def _is_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def main(argv: list[str]) -> int:
    """Prepare and exec the watchdog; returns only on error (exit status 2)."""
    if argv:
        print(f"faasd _marathon-task: unexpected argument {argv[0]!r}", file=sys.stderr)
        return 2
    sandbox = os.getcwd()
    zipapp = os.path.abspath(sys.argv[0])
    try:
        env = watchdog_environment(os.environ, sandbox)
        archive = read_archive(os.environ)
        os.makedirs(env["TMPDIR"], mode=0o700, exist_ok=True)
        if archive:
            from faasd.archive import extract_archive
            from faasd.errors import InvalidRequest

            workdir = os.path.join(sandbox, FUNCTION_DIR)
            os.makedirs(workdir, mode=0o755, exist_ok=False)
            try:
                extract_archive(archive, workdir)
            except InvalidRequest as exc:
                raise TaskError(exc.message) from None
            os.chdir(workdir)
        os.execve(sys.executable, [sys.executable, zipapp, "watchdog"], env)
    except TaskError as exc:
        print(f"faasd _marathon-task: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"faasd _marathon-task: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
    return 2
