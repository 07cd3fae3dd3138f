"""``handler_archive``: the watchdog unpacks a function's code into its working directory before it starts.

A function deployed with a handler archive (``faasd deploy --handler DIR``, every Flock-of-Birds
snippet) needs its files beside the watchdog. The local backend unpacks the archive itself; a Swarm task
has only its image, so the Swarm backend mounts the archive into the task read-only (a Docker config)
and names it in ``handler_archive``: the watchdog unpacks it into its working directory -- the place a
``faasd build`` image has the same files (``/home/app``) -- before it reads the rest of its settings
(``fprocess`` and python mode's ``handler`` may name a file of the archive).

The archive is hostile input like any upload: it goes through the same extractor as on the local
backend (:mod:`faasd.archive`: no escaping names or links, no devices, bounded size). A problem is a
:class:`~faasd.watchdog.config.ConfigError` naming the variable: one line on stderr, exit status 2,
before any function code runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from faasd.archive import Extracted, extract_archive
from faasd.errors import InvalidRequest
from faasd.watchdog.config import ConfigError

__all__ = ["HANDLER_ARCHIVE_VARIABLE", "MAX_ARCHIVE_FILE_BYTES", "unpack_handler"]

HANDLER_ARCHIVE_VARIABLE = "handler_archive"
MAX_ARCHIVE_FILE_BYTES = 64 * 1024 * 1024
"""Largest archive file read (a Docker config holds at most 500 KB; this only bounds other uses)."""


def unpack_handler(env: Mapping[str, str], directory: str = ".") -> Extracted | None:
    """Unpack the archive named by ``handler_archive`` in ``env`` into ``directory``; None when unset.

    Files already in ``directory`` with a member's name are replaced (as ``COPY`` over an image's
    directory would); directories are merged.

    Raises:
        ConfigError: the file cannot be read, is too large, is not a tar archive, breaks a rule of
            :mod:`faasd.archive`, or cannot be written (read-only or full file system).
    """
    path = env.get(HANDLER_ARCHIVE_VARIABLE, "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_ARCHIVE_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(HANDLER_ARCHIVE_VARIABLE, path, f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_ARCHIVE_FILE_BYTES:
        raise ConfigError(HANDLER_ARCHIVE_VARIABLE, path, f"larger than {MAX_ARCHIVE_FILE_BYTES} bytes")
    try:
        return extract_archive(data, directory)
    except InvalidRequest as exc:
        raise ConfigError(HANDLER_ARCHIVE_VARIABLE, path, exc.message) from None
    except OSError as exc:
        where = os.path.abspath(directory)
        raise ConfigError(
            HANDLER_ARCHIVE_VARIABLE, path, f"cannot unpack into {where}: {exc.strerror or exc}"
        ) from None
