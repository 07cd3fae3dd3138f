"""``faasd _checksource``: the child process that compiles uploaded snippets for the daemon.

It serves one check after another, as long as the daemon keeps its stdin open (so an upload does not
pay an interpreter's start). A request on stdin is ``!I`` (length) then the language, a newline and the
source; the answer on stdout is ``!I`` (length) then one JSON object: ``{"ok": true}`` or ``{"error",
"line", "column"}`` (:class:`~faasd.fob.source.SourceError`), with ``"rss"``, its peak resident size in
bytes, so the daemon can replace a checker that grew. It compiles and executes nothing of a snippet
(:func:`~faasd.fob.source.check_source`).

Why a process of its own: compiling hostile source costs memory and CPU in proportion to it (and a
parser gives up only after using them), which must not grow the daemon or stall its event loop. Its
address space is capped at :data:`MEMORY_LIMIT_BYTES` (a source worse than that is a ``MemoryError``,
answered as an error); the daemon bounds each check's time and kills a checker that takes too long.

Imports nothing beyond the standard library and :mod:`faasd.fob.source` (no trio).
"""

from __future__ import annotations

import json
import resource
import struct
import sys
from typing import BinaryIO

from faasd.fob.source import DEFAULT_LANGUAGE, SourceError, check_source

__all__ = ["FRAME", "MEMORY_LIMIT_BYTES", "main", "read_frame", "write_frame"]

MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024
"""Address space of the checker (the worst 256 KiB source measured peaks near 200 MB resident)."""
FRAME = struct.Struct("!I")


def main(argv: list[str]) -> int:
    """Answer checks until stdin closes; exit 0."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (request := read_frame(stdin)) is not None:
        language, _, source = request.partition(b"\n")
        try:
            check_source(source, language.decode("ascii", "replace") or DEFAULT_LANGUAGE)
            verdict: dict[str, object] = {"ok": True}
        except SourceError as exc:
            verdict = {"error": exc.message, "line": exc.line, "column": exc.column}
        verdict["rss"] = peak_rss()
        write_frame(stdout, json.dumps(verdict).encode())
    return 0


def peak_rss() -> int:
    """This process's peak resident size in bytes (``VmHWM``; 0 when unknown). Not ``ru_maxrss``: Linux
    carries that over from the process before ``exec``, here the daemon, whose size is not ours."""
    try:
        with open("/proc/self/status", encoding="ascii") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame's payload, or None at end of input."""
    header = stream.read(FRAME.size)
    if len(header) < FRAME.size:
        return None
    (size,) = FRAME.unpack(header)
    payload = stream.read(size)
    return payload if len(payload) == size else None


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(FRAME.pack(len(payload)) + payload)
    stream.flush()
