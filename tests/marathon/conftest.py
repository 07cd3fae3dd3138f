"""Fixtures for the daemon on the Marathon backend: a Marathon emulator per test, the daemon and its CLI.

``marathon_daemon(emulator, **env)`` starts ``faasd up --provider marathon`` against ``emulator`` with the
zipapp as the agents' watchdog (``file://.../dist/faasd.pyz``, as the Mesos fetcher would download it).
Request ``marathon_daemon`` before ``marathon_emulator`` in a test's arguments: fixtures are torn down in
reverse, so the emulator then stops its tasks before the daemon's teardown checks for leftovers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_fixtures import Daemon, StartDaemon, faasd_cli, start_daemon  # noqa: F401 -- fixtures
from tests.marathon_emulator.fixture import MarathonEmulator, marathon_emulator  # noqa: F401 -- a fixture

MarathonDaemon = Callable[..., Daemon]


@pytest.fixture
def marathon_daemon(start_daemon: StartDaemon, faasd_pyz: Path) -> MarathonDaemon:  # noqa: F811
    def start(emulator: MarathonEmulator, state_dir: Path | None = None, **env: str) -> Daemon:
        settings = {
            "FAASD_PROVIDER": "marathon",
            "FAASD_MARATHON_URL": emulator.url,
            "FAASD_MARATHON_WATCHDOG_URI": faasd_pyz.as_uri(),
            "FAASD_MARATHON_DEPLOY_TIMEOUT": "20s",
            **env,
        }
        return start_daemon(state_dir=state_dir, **settings)

    return start
