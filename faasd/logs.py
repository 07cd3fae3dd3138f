"""Structured logging: one event per line, ``key=value`` pairs (logfmt), to stderr.

Every faasd process logs the same way so that journald, ``docker service logs`` and the local backend's
log capture all get lines a human can read and a machine can split::

    2026-11-24T15:04:05.123Z level=info logger=faasd.watchdog event="listening" port=8080

Call sites pass context through ``extra={"fields": {...}}`` or, more simply, through :func:`event`.

Two loggers write these lines: the :mod:`logging` module's (the daemon and the CLI, :func:`configure`), and
:class:`LineLogger` (the watchdog, :func:`configure_lines`), which writes the same lines without importing
:mod:`logging` -- with ``traceback``, ``weakref``, ``string`` and ``threading``'s locks about 15 % of a
watchdog's start-up imports, paid at every replica start (docs/coldstart.md). This module imports
:mod:`logging` only when :func:`configure` runs.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Mapping
    from types import TracebackType

__all__ = ["DEBUG", "ERROR", "INFO", "WARNING", "LineLogger", "configure", "configure_lines", "event", "line"]

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
"""The :mod:`logging` levels, for :class:`LineLogger`'s callers."""
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error", 50: "critical"}
_NEEDS_QUOTES = frozenset(' "=\t\n\r')


def _format_value(value: object) -> str:
    text = str(value)
    if text == "" or any(ch in _NEEDS_QUOTES for ch in text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    return text


def line(created: float, level: str, logger: str, message: str, fields: Mapping[str, object] | None, error: str) -> str:
    """One logfmt line: ``time level logger event k=v ... [error=...]`` (``created``: seconds since the epoch)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    parts = [
        f"{stamp}.{int(created * 1000) % 1000:03d}Z",
        f"level={level}",
        f"logger={logger}",
        f"event={_format_value(message)}",
    ]
    if fields:
        parts.extend(f"{key}={_format_value(value)}" for key, value in fields.items())
    if error:
        parts.append(f"error={_format_value(error)}")
    return " ".join(parts)


def configure(level: str = "info") -> None:
    """Send every faasd :mod:`logging` logger's records to stderr as logfmt lines at ``level``."""
    import logging

    class LogfmtFormatter(logging.Formatter):
        """Render a record as :func:`line` does."""

        def format(self, record: logging.LogRecord) -> str:
            fields: Mapping[str, object] | None = getattr(record, "fields", None)
            error = self.formatException(record.exc_info) if record.exc_info else ""
            return line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields, error)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger("faasd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


_line_level = WARNING


def configure_lines(level: str = "info") -> None:
    """Set the level of every :class:`LineLogger` (``debug``, ``info``, ``warning`` or ``error``)."""
    global _line_level
    _line_level = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}[level.lower()]


class LineLogger:
    """The part of :class:`logging.Logger` faasd's watchdog uses, writing :func:`line` to stderr."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def isEnabledFor(self, level: int) -> bool:
        return level >= _line_level

    def log(
        self,
        level: int,
        message: str,
        *args: object,
        extra: Mapping[str, Mapping[str, object]] | None = None,
        exc_info: bool | tuple[type[BaseException], BaseException, TracebackType | None] | None = None,
    ) -> None:
        if level < _line_level:
            return
        error = ""
        if exc_info is not None and exc_info is not False:
            import traceback

            kind, value, trace = sys.exc_info() if exc_info is True else exc_info
            if kind is not None:
                error = "".join(traceback.format_exception(kind, value, trace)).rstrip("\n")
        fields = extra.get("fields") if extra else None
        text = message % args if args else message
        stream = sys.stderr
        stream.write(line(time.time(), _NAMES.get(level, str(level)), self.name, text, fields, error) + "\n")
        stream.flush()

    def exception(self, message: str, *args: object) -> None:
        self.log(ERROR, message, *args, exc_info=True)

    def error(self, message: str, *args: object, exc_info: bool = False) -> None:
        self.log(ERROR, message, *args, exc_info=exc_info)

    def warning(self, message: str, *args: object) -> None:
        self.log(WARNING, message, *args)

    def info(self, message: str, *args: object) -> None:
        self.log(INFO, message, *args)


def event(logger: logging.Logger | LineLogger, level: int, message: str, **fields: object) -> None:
    """Log ``message`` with ``fields`` as key=value pairs, skipping all work when the level is off."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})
