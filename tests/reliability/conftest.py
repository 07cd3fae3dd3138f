"""The reliability suite: hostile and random input, and faults, against a real daemon
(``python3 dist/faasd.pyz up``).

Every test here records what it did into the ``ledger`` fixture (tests/reliability/ledger.py, registered
for the whole suite by tests/conftest.py): load held, faults injected, bad inputs tried, requests lost.
The run ends by printing that table.
"""

from __future__ import annotations

from tests.daemon_fixtures import faasd_cli, start_daemon  # noqa: F401 -- the daemon and CLI fixtures
