"""The environment this process was started with, as ``execve`` gave it.

Not ``os.environ``: Python started in the C locale adds ``LC_CTYPE=C.UTF-8`` to it (PEP 538 locale
coercion), so a watchdog that passed ``os.environ`` on would give every function a variable nobody set,
and make each one's libc load a locale (measured ~8 % more CPU per fork-mode ``cat`` call).
``/proc/self/environ`` holds the environment as exec'd -- but only while this process may open it. Once
a process started as root becomes another uid (the sandbox's entry, :mod:`faasd.sandbox.enter`; the
watchdog's ``run_as``) the kernel marks it non-dumpable, its ``/proc/self`` files belong to root (mode
0400 for ``environ``), and the read fails with EACCES. So those entry points call :func:`remember`
before they change uid, and :func:`exec_environ` returns what was read then.

Standard library only, and cheap: it runs at every replica's start.
"""

from __future__ import annotations

import os

__all__ = ["exec_environ", "remember"]

_remembered: dict[bytes, bytes] | None = None


def _read() -> dict[bytes, bytes] | None:
    try:
        with open("/proc/self/environ", "rb") as file:
            data = file.read()
    except OSError:
        return None
    env: dict[bytes, bytes] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key] = value
    return env


def remember() -> None:
    """Read the exec'd environment now, while this process can (before it gives up root); idempotent."""
    global _remembered
    if _remembered is None:
        _remembered = _read()


def exec_environ() -> dict[str, str]:
    """The environment as exec'd: remembered, else read now, else (no ``/proc``) ``os.environ``."""
    raw = _remembered if _remembered is not None else _read()
    if raw is None:
        return dict(os.environ)
    return {os.fsdecode(key): os.fsdecode(value) for key, value in raw.items()}
