"""The per-replica watchdog (``faasd watchdog``): env-configured like the OpenFaaS watchdogs.

Kept free of the daemon's imports (trio, quart, docker, click): it starts once per replica.
"""

from __future__ import annotations

from faasd.watchdog.config import ConfigError as ConfigError
from faasd.watchdog.config import WatchdogConfig as WatchdogConfig

__all__ = ["ConfigError", "WatchdogConfig"]
