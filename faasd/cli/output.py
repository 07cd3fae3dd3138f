"""How the CLI prints: tables and colours on a terminal, tab-separated lines when piped, JSON on ``--json``.

Tables are drawn by ``tabulate`` and colours by ``click.style``; messages for people go to stderr so
stdout stays clean for data. :class:`Progress` shows a spinner on a terminal while a command waits
(deploy until ready, scale until available) and stays silent when stderr is not a terminal.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import click

__all__ = ["Output", "Progress"]

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Output:
    """Formatting choices of one CLI invocation."""

    def __init__(self, *, json_mode: bool = False, stdout_tty: bool | None = None, stderr_tty: bool | None = None):
        self.json_mode = json_mode
        self.stdout_tty = sys.stdout.isatty() if stdout_tty is None else stdout_tty
        self.stderr_tty = sys.stderr.isatty() if stderr_tty is None else stderr_tty

    def json(self, document: Any) -> None:
        click.echo(json.dumps(document, indent=2 if self.stdout_tty else None, sort_keys=True))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table on a terminal; header-less tab-separated lines when piped (for cut/awk)."""
        if not self.stdout_tty:
            for row in rows:
                click.echo("\t".join(_cell(value) for value in row))
            return
        from tabulate import tabulate

        styled = [click.style(header, bold=True) for header in headers]
        click.echo(tabulate([[_cell(value) for value in row] for row in rows], headers=styled, tablefmt="plain"))

    def fields(self, pairs: Sequence[tuple[str, object]]) -> None:
        """``Name: value`` lines (describe), aligned on a terminal, tab-separated when piped."""
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            if self.stdout_tty:
                click.echo(f"{click.style(name + ':', bold=True):<{width + 9}} {_cell(value)}")
            else:
                click.echo(f"{name}\t{_cell(value)}")

    def info(self, message: str) -> None:
        click.echo(message, err=True)

    def success(self, message: str) -> None:
        click.echo(click.style(message, fg="green") if self.stderr_tty else message, err=True)

    def warning(self, message: str) -> None:
        click.echo(
            click.style(f"warning: {message}", fg="yellow") if self.stderr_tty else f"warning: {message}", err=True
        )

    def progress(self, message: str) -> Progress:
        return Progress(message, enabled=self.stderr_tty and not self.json_mode)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


class Progress:
    """A one-line spinner on stderr: ``with output.progress("deploying") as p: ... p.update("2/3 ready")``."""

    def __init__(self, message: str, *, enabled: bool) -> None:
        self.message = message
        self.enabled = enabled
        self.detail = ""
        self._frames = itertools.cycle(_SPINNER)
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        self.update()
        return self

    def update(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        if self.enabled:
            elapsed = time.monotonic() - self._started
            line = f"{next(self._frames)} {self.message} {self.detail} ({elapsed:.1f}s)"
            click.echo(f"\r\x1b[2K{line}", nl=False, err=True)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.enabled:
            click.echo("\r\x1b[2K", nl=False, err=True)
