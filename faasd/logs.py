"""Structured logging: one event per line, ``key=value`` pairs (logfmt), to stderr.

Every faasd process logs the same way so that journald, ``docker service logs`` and the local backend's
log capture all get lines a human can read and a machine can split::

    2026-11-24T15:04:05.123Z level=info logger=faasd.watchdog event="listening" port=8080

Call sites pass context through ``extra={"fields": {...}}`` or, more simply, through :func:`event`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["LogfmtFormatter", "configure", "event"]

_NEEDS_QUOTES = frozenset(' "=\t\n\r')


def _format_value(value: object) -> str:
    text = str(value)
    if text == "" or any(ch in _NEEDS_QUOTES for ch in text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    return text


class LogfmtFormatter(logging.Formatter):
    """Render a record as ``time level logger event k=v ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"{stamp}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_format_value(record.getMessage())}",
        ]
        fields: Mapping[str, Any] | None = getattr(record, "fields", None)
        if fields:
            parts.extend(f"{key}={_format_value(value)}" for key, value in fields.items())
        if record.exc_info:
            parts.append(f"error={_format_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def configure(level: str = "info") -> None:
    """Send every faasd logger's records to stderr as logfmt lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger("faasd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def event(logger: logging.Logger, level: int, message: str, **fields: object) -> None:
    """Log ``message`` with ``fields`` as key=value pairs, skipping all work when the level is off."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})
