"""Parsing of the value forms users write in env vars and config files: durations, sizes, booleans.

Pure functions, no I/O. They accept what OpenFaaS users already write (``10``, ``10s``, ``1m30s``,
``500ms``; ``true``/``false``) and raise :class:`ValueError` with a reason short enough to be shown
after the variable's name in a one-line error.
"""

from __future__ import annotations

__all__ = ["NANOS_PER_CPU", "parse_bool", "parse_cpus", "parse_duration", "parse_size"]

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Patterns as text, compiled by ``re``'s own cache on first use: the watchdog imports this module at start,
# and most of its settings are plain numbers or absent, so ``re`` stays unimported there (docs/coldstart.md).
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_SIZE = r"(?i)(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)"
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_CPUS = r"(\d+(?:\.\d*)?|\.\d+)(m?)"
NANOS_PER_CPU = 1_000_000_000
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def parse_duration(text: str) -> float:
    """Return seconds for ``text``: a bare number of seconds or a Go duration (``1h2m3.5s``).

    Raises:
        ValueError: negative, empty, or not of either form.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise ValueError("must be a finite number of seconds >= 0")
        return seconds
    position = 0
    total = 0.0
    import re

    for match in re.finditer(_DURATION_PART, value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        raise ValueError("not a duration (use seconds like 10, or 500ms, 10s, 1m30s, 1h)")
    return total


def parse_size(text: str) -> int:
    """Return a byte count for ``text``: digits with an optional k/m/g/t suffix (powers of 1024).

    ``512k``, ``10m``, ``10Mi``, ``10MB`` and ``10MiB`` all mean multiples of 1024: memory limits in
    the container world use binary units, and nobody sizing a buffer means 1000.

    Raises:
        ValueError: not of that form.
    """
    text = text.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    import re

    match = re.fullmatch(_SIZE, text)
    if match is None:
        raise ValueError("not a size (use bytes like 1048576, or 512k, 10m, 1g)")
    number, power, _suffix = match.groups()
    return int(float(number) * 1024 ** _SIZE_POWERS[power.lower()])


def parse_cpus(text: str) -> int:
    """Return nano-CPUs (Docker's ``NanoCPUs``) for ``text``: ``0.5`` and ``2`` are CPUs, ``500m``
    millicores (Kubernetes), and an integer of 1000 or more is already nano-CPUs (the faas-swarm form,
    ``100000000`` = 0.1 CPU).

    Raises:
        ValueError: not of those forms.
    """
    import re

    match = re.fullmatch(_CPUS, text.strip())
    if match is None:
        raise ValueError("not a CPU amount (use 0.5, 500m or 500000000)")
    number, milli = match.groups()
    if milli:
        return int(float(number) * 1_000_000)
    if "." not in number and int(number) >= 1000:
        return int(number)
    return int(float(number) * NANOS_PER_CPU)


def parse_bool(text: str) -> bool:
    """Return the boolean for ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case).

    Raises:
        ValueError: any other text; a typo must not silently mean "false".
    """
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("not a boolean (use true or false)")
