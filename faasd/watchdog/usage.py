"""``faasd watchdog --help``: kept apart so that printing it imports nothing else.

The local backend's sandbox check (:func:`faasd.sandbox.host.resolve`) starts a test replica exactly as a
real one, confined, up to this text: it proves the sandbox runs the interpreter and faasd under the
function's uid, and it is on the daemon's start path, so it must not wait for asyncio's imports.
"""

from __future__ import annotations

HELP = """\
usage: faasd watchdog

Serve a function over HTTP; configured by environment variables (fprocess, port, exec_timeout, ...).
See docs/watchdog.md for every variable.
"""
