"""The reliability suite: hostile and random input, and faults, against a real daemon
(``python3 dist/faasd.pyz up``).

Every test here records what it did into the ``ledger`` fixture (tests/reliability/ledger.py): load
held, faults injected, bad inputs tried, requests lost. The suite ends by printing that table
(``pytest_terminal_summary``). tests/conftest.py imports the same fixture and hook, so a test anywhere
in the suite can record into the same table; the table is printed once.
"""

from __future__ import annotations

from tests.daemon_fixtures import faasd_cli, start_daemon  # noqa: F401 -- the daemon and CLI fixtures
from tests.reliability.ledger import ledger, pytest_terminal_summary  # noqa: F401 -- the ledger and its table
