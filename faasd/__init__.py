"""faasd: Functions as a Service in one Python file.

One codebase, three roles, all reached through ``python faasd.pyz <command>``:

* ``watchdog`` -- each replica's entrypoint (``faasd.watchdog``); kept free of the daemon's
  heavy imports because it starts once per replica;
* ``up`` -- the daemon (gateway, discovery, autoscaler);
* the CLI commands that talk to a running daemon.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
