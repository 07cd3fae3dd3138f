"""The command blocks of README.md and docs/*.md, and how tests/e2e/test_doc_commands.py runs each.

A fenced block whose language is ``sh``, ``bash``, ``shell`` or ``console`` is a command block. By
default it runs as written: with ``sh -e``, in a copy of the checkout, against a daemon the test started
for that markdown file (the blocks of one file run in their order, each in a shell of its own). A block
that cannot run that way says so in an HTML comment on the line before its fence (invisible on GitHub):

``<!-- doc-test: serves -->``
    The block runs a daemon in the foreground until it is stopped (``faasd up``): the test runs it with
    a fresh HOME and port, waits until ``/healthz`` answers, stops it with SIGTERM and checks it stopped.
    ``<!-- doc-test: serves, needs root -->`` / ``needs bwrap``: only where that is available (else
    skipped, saying so; under CI a failure).
``<!-- doc-test: skip: REASON -->``
    Not run; the test is skipped with REASON (a reason is required). For what cannot run here: a
    command that installs a system service (systemd as PID 1, root, writes to /etc), one that needs a
    Docker Swarm manager, the whole test suite, a benchmark of minutes.

Anything else after ``doc-test:`` is an error, so a typo cannot skip a block silently. Every fence must
name its language, so that no command block goes unnoticed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMMAND_LANGUAGES", "Block", "DocBlockError", "doc_files", "parse_blocks"]

COMMAND_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
NEEDS = frozenset({"root", "bwrap"})
"""What a ``serves`` block may need: a root test run, or bubblewrap installed."""

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_MARKER = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->\s*$")


class DocBlockError(ValueError):
    """A markdown file's blocks or markers are malformed; the message names the file and line."""


@dataclass(frozen=True)
class Block:
    """One fenced block of a markdown file."""

    path: Path
    line: int
    """1-based line of the opening fence."""
    language: str
    text: str
    kind: str = "run"
    """``run`` (as written), ``serves`` or ``skip``."""
    reason: str = ""
    """Why a ``skip`` block is not run."""
    needs: frozenset[str] = frozenset()

    @property
    def is_command(self) -> bool:
        return self.language in COMMAND_LANGUAGES

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def doc_files(root: Path) -> list[Path]:
    """README.md and every docs/*.md of the checkout at ``root``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def parse_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, command blocks with their marker applied.

    Raises:
        DocBlockError: a fence without a language, an unknown or misplaced marker, an unclosed fence.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    marker: tuple[int, str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        found = _MARKER.match(line)
        if found:
            if marker is not None:
                raise DocBlockError(f"{path}:{marker[0]}: doc-test marker not followed by a code block")
            marker = (index + 1, found.group(1))
            index += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if marker is not None:
                raise DocBlockError(f"{path}:{marker[0]}: a doc-test marker must be on the line before a fence")
            index += 1
            continue
        opening, language = fence.group(1), fence.group(2)
        if not language:
            raise DocBlockError(f"{path}:{index + 1}: fence without a language (use sh for commands, text for output)")
        end = index + 1
        while end < len(lines) and not lines[end].startswith(opening[:3]):
            end += 1
        if end == len(lines):
            raise DocBlockError(f"{path}:{index + 1}: code block never closed")
        block = Block(path, index + 1, language, "\n".join(lines[index + 1 : end]) + "\n")
        if marker is not None:
            if not block.is_command:
                raise DocBlockError(f"{path}:{marker[0]}: doc-test marker on a {language} block (only commands run)")
            block = _apply(block, marker[1], f"{path}:{marker[0]}")
            marker = None
        blocks.append(block)
        index = end + 1
    if marker is not None:
        raise DocBlockError(f"{path}:{marker[0]}: doc-test marker at the end of the file")
    return blocks


def _apply(block: Block, marker: str, where: str) -> Block:
    if marker.startswith("skip:"):
        reason = marker[len("skip:") :].strip()
        if not reason:
            raise DocBlockError(f"{where}: 'doc-test: skip:' needs a reason")
        return Block(block.path, block.line, block.language, block.text, "skip", reason)
    words = [word.strip() for word in marker.split(",")]
    if words[0] == "serves":
        needs = set()
        for word in words[1:]:
            need = word.removeprefix("needs ").strip()
            if not word.startswith("needs ") or need not in NEEDS:
                raise DocBlockError(f"{where}: unknown {word!r} (serves takes: {', '.join(sorted(NEEDS))})")
            needs.add(need)
        return Block(block.path, block.line, block.language, block.text, "serves", needs=frozenset(needs))
    raise DocBlockError(f"{where}: unknown doc-test marker {marker!r} (use 'serves' or 'skip: REASON')")
