"""The reliability suite: hostile and random input against a real daemon (``python3 dist/faasd.pyz up``)."""

from __future__ import annotations

from tests.daemon_fixtures import faasd_cli, start_daemon  # noqa: F401 -- the daemon and CLI fixtures
