"""The per-replica watchdog (``faasd watchdog``): env-configured like the OpenFaaS watchdogs.

Kept free of the daemon's imports (trio, quart, docker, click): it starts once per replica. The names
below load on first use (PEP 562), so ``faasd watchdog --help`` (:mod:`.usage`) imports nothing more.
"""

from __future__ import annotations

__all__ = ["ConfigError", "WatchdogConfig"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from faasd.watchdog import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
