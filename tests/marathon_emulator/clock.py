"""Timestamps as Marathon writes them: ISO 8601, UTC, milliseconds, ``Z`` (``2015-09-25T15:13:48.343Z``).

Versions of app definitions are such timestamps and must be unique and increasing within one emulator
(two changes in the same millisecond would otherwise share a version), so :func:`new_version` never
returns the same value twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["iso_now", "new_version"]

_last_version: datetime | None = None


def _format(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_now() -> str:
    """Now, as Marathon writes timestamps."""
    return _format(datetime.now(UTC))


def new_version() -> str:
    """A version timestamp: now, or 1 ms after the previous version when that is not earlier."""
    global _last_version
    now = datetime.now(UTC)
    moment = now.replace(microsecond=now.microsecond // 1000 * 1000)
    if _last_version is not None and moment <= _last_version:
        moment = _last_version + timedelta(milliseconds=1)
    _last_version = moment
    return _format(moment)
