"""A snippet as a faasd function: the name, labels, settings and code of ``fob-<id>``.

Each snippet is an ordinary function in warm ``python`` mode (docs/watchdog.md), so it is deployed,
sandboxed, scaled, listed and measured like any other: ``faasd status``, ``/metrics`` and the CLI show it
as ``fob-<id>``. Its code is a handler archive of two files: ``snippet.py`` (the upload, byte for byte) and
``handler.py`` (the driver, :mod:`faasd.fob.driver`, copied from this faasd). The archive is
deterministic, so the same snippet always makes the same spec: comparing specs tells whether a stored
snippet's function is what this faasd would deploy now (after an upgrade, or a new ``snippet_timeout``).

Names: a uuid4 (36 characters) after ``fob-`` is 40 characters, inside faasd's 63 (a DNS label, and a
Marathon app id segment) and its character class (letters, digits, ``-``), with no dot (which would start
a namespace in ``/function/NAME.NAMESPACE``).

Pure: no I/O beyond reading the driver's source from this package, no trio.
"""

from __future__ import annotations

import functools
import gzip
import io
import re
import tarfile
from importlib import resources

from faasd.fob.driver import SNIPPET_FILE, TIMEOUT_VARIABLE
from faasd.providers.types import FunctionSpec

__all__ = [
    "FUNCTION_PREFIX",
    "LABEL_LANGUAGE",
    "LABEL_SNIPPET",
    "driver_source",
    "function_name",
    "is_snippet_id",
    "snippet_id_of",
    "snippet_spec",
]

FUNCTION_PREFIX = "fob-"
LABEL_SNIPPET = "com.faasd.snippet"
"""On a snippet's function: the snippet's id. Reserved: at start the daemon removes a function carrying
it whose snippet is gone (an interrupted ``DELETE /api/gen``)."""
LABEL_LANGUAGE = "com.faasd.snippet.lang"
HANDLER_FILE = "handler.py"
HARD_STOP_S = 1.0
"""The watchdog's ``exec_timeout`` is this much longer than ``snippet_timeout``: the driver's own timer
answers 408 first; the watchdog kills a worker stuck where a signal cannot reach (a C call)."""
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def function_name(snippet_id: str) -> str:
    return FUNCTION_PREFIX + snippet_id


def is_snippet_id(text: str) -> bool:
    """A snippet id as faasd makes them: a lowercase uuid4."""
    return _UUID4.fullmatch(text) is not None


def snippet_id_of(spec: FunctionSpec) -> str | None:
    """The snippet a function runs (its :data:`LABEL_SNIPPET`), when it is one."""
    return spec.labels.get(LABEL_SNIPPET)


@functools.cache
def driver_source() -> bytes:
    """The driver's source, as this faasd ships it (inside the zipapp too)."""
    return resources.files("faasd.fob").joinpath("driver.py").read_bytes()


def snippet_spec(snippet_id: str, language: str, source: bytes, *, timeout_s: float) -> FunctionSpec:
    """The function that runs the snippet ``snippet_id`` (see the module docstring).

    ``timeout_s``: how long one call may run (``snippet_timeout``); the watchdog stops it
    :data:`HARD_STOP_S` later if the driver could not.
    """
    return FunctionSpec(
        name=function_name(snippet_id),
        env_vars={
            "mode": "python",
            "handler": HANDLER_FILE,
            TIMEOUT_VARIABLE: f"{timeout_s:g}",
            "exec_timeout": f"{timeout_s + HARD_STOP_S:g}s",
        },
        labels={LABEL_SNIPPET: snippet_id, LABEL_LANGUAGE: language},
        handler_archive=_archive({HANDLER_FILE: driver_source(), SNIPPET_FILE: source}),
    )


def _archive(files: dict[str, bytes]) -> bytes:
    """A deterministic .tar.gz of ``files`` (sorted, zeroed times and owners, mode 0644)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            member = tarfile.TarInfo(name)
            member.size = len(files[name])
            member.mode = 0o644
            member.mtime = 0
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            tar.addfile(member, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)
