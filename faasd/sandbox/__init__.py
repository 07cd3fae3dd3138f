"""The local backend's sandbox: what a replica may see and use (docs/sandbox.md).

Layering: ``enter.py`` runs inside the replica, first thing (stdlib only: it is on every replica's start
path, like the watchdog); so does ``pooled.py`` in a replica started before its function is known
(docs/coldstart.md), which applies the same ``enter`` when it is given one. The rest is the daemon's
side: ``limits.py`` (a spec's limits, pure), ``uids.py`` (each function's uid, pure), ``plan.py`` (mode +
replica -> command line and environment, pure), ``files.py`` (ownership and scratch directories) and
``host.py`` (what this machine supports: the mode is decided once, at start). Nothing is re-exported
here, so importing ``enter`` stays cheap.
"""

from __future__ import annotations
