"""``faasd _checksource LANG``: the child process that compiles one snippet for the daemon.

The source comes on stdin; one JSON object goes to stdout: ``{"ok": true}``, or ``{"error", "line",
"column"}`` (:class:`~faasd.fob.source.SourceError`). It compiles and executes nothing of the snippet
(:func:`~faasd.fob.source.check_source`). Why a process of its own: compiling hostile source costs
memory and CPU in proportion to it (and a parser gives up only after using them), which must not grow
the daemon or stall its event loop. Its own limits (:data:`MEMORY_LIMIT_BYTES` of address space,
:data:`CPU_LIMIT_S` of CPU) end it if the source is worse than that; the daemon answers 400 then.

Imports nothing beyond the standard library and :mod:`faasd.fob.source` (no trio): it starts per upload.
"""

from __future__ import annotations

import json
import resource
import sys

from faasd.fob.source import DEFAULT_LANGUAGE, SourceError, check_source

__all__ = ["CPU_LIMIT_S", "MEMORY_LIMIT_BYTES", "main"]

MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024
"""Address space of the checker (the worst 256 KiB source measured peaks near 200 MB resident)."""
CPU_LIMIT_S = 20


def main(argv: list[str]) -> int:
    """Check stdin as a snippet in ``argv[0]``'s language; print the verdict as JSON; exit 0."""
    for limit, value in ((resource.RLIMIT_AS, MEMORY_LIMIT_BYTES), (resource.RLIMIT_CPU, CPU_LIMIT_S)):
        _, hard = resource.getrlimit(limit)
        resource.setrlimit(limit, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))
    language = argv[0] if argv else DEFAULT_LANGUAGE
    source = sys.stdin.buffer.read()
    try:
        check_source(source, language)
        verdict: dict[str, object] = {"ok": True}
    except SourceError as exc:
        verdict = {"error": exc.message, "line": exc.line, "column": exc.column}
    sys.stdout.write(json.dumps(verdict))
    sys.stdout.flush()
    return 0
