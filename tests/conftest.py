"""Session-wide fixtures: the built zipapp and the interpreter that runs it.

``dist/faasd.pyz`` is built once per session, and only when its inputs changed
(``scripts/build_zipapp.py --if-stale``). Set ``FAASD_TEST_PYZ=/path/to/faasd.pyz`` to test a given
artifact instead (no build), and ``FAASD_TEST_PYTHON`` to pick the interpreter that runs it; by default
that is the system ``python3`` (as in production: ``python3 faasd.pyz``), so a dependency missing from
the zipapp cannot hide behind the test venv's site-packages.

Every test has a timeout (pytest-timeout): ``timeout`` in pyproject.toml by default, :data:`SLOW_TIMEOUT_S`
for tests marked ``slow``, or the test's own ``@pytest.mark.timeout(seconds)``; each is multiplied by
``FAASD_TEST_TIME_FACTOR`` (tests/helpers.py). ``--timeout`` or ``PYTEST_TIMEOUT`` replace the default
(``--timeout 0``: none, for a debugger). Every ``subprocess.Popen`` is recorded so that the daemon
fixture can tell the processes a test started from the orphans it left (tests/process_tree.py).

The reliability ledger (tests/reliability/ledger.py) is registered here, so that any test can record
into it (the ``ledger`` fixture) and the table is printed at the end of any run that recorded something.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TIME_FACTOR, scaled
from tests.process_tree import track_popen
from tests.reliability.ledger import ledger, pytest_terminal_summary  # noqa: F401 -- for every test

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 600
SLOW_TIMEOUT_S = 600.0
"""Per-test timeout of tests marked ``slow`` (a swarm test waits for tasks, images, dockerd restarts)."""


def pytest_configure(config: pytest.Config) -> None:
    track_popen()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test its timeout, scaled by FAASD_TEST_TIME_FACTOR (see the module docstring)."""
    explicit = config.getoption("timeout", None) is not None or bool(os.environ.get("PYTEST_TIMEOUT"))
    default = getattr(config, "_env_timeout", None)  # pytest-timeout's: --timeout, PYTEST_TIMEOUT or ini
    if default is None:
        return  # pytest-timeout is not loaded (-p no:timeout): nothing to scale.
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is not None:
            base = marker.kwargs.get("timeout", marker.args[0] if marker.args else default)
        elif item.get_closest_marker("slow") is not None and not explicit:
            base = SLOW_TIMEOUT_S
        else:
            base = default
        if base and (TIME_FACTOR != 1 or marker is None):
            item.add_marker(pytest.mark.timeout(scaled(float(base))), append=False)


@pytest.fixture(scope="session")
def faasd_pyz() -> Path:
    """Path of the built ``dist/faasd.pyz`` (built when stale)."""
    override = os.environ.get("FAASD_TEST_PYZ")
    if override:
        path = Path(override).resolve()
        if not path.is_file():
            pytest.fail(f"FAASD_TEST_PYZ={override} is not a file")
        return path
    script = ROOT / "scripts" / "build_zipapp.py"
    if not script.is_file():
        pytest.fail(f"{script.relative_to(ROOT)} is missing: cannot build dist/faasd.pyz")
    try:
        result = subprocess.run(
            [sys.executable, str(script), "--if-stale"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"building dist/faasd.pyz took over {BUILD_TIMEOUT_S}s")
    if result.returncode != 0:
        pytest.fail(
            f"scripts/build_zipapp.py --if-stale failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    path = ROOT / "dist" / "faasd.pyz"
    if not path.is_file():
        pytest.fail("scripts/build_zipapp.py succeeded but dist/faasd.pyz does not exist")
    return path


@pytest.fixture(scope="session")
def pyz_python() -> str:
    """The interpreter that runs the zipapp: ``FAASD_TEST_PYTHON``, else the system ``python3``."""
    chosen = os.environ.get("FAASD_TEST_PYTHON") or shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return chosen
