"""Session-wide fixtures: the built zipapp and the interpreter that runs it.

``dist/faasd.pyz`` is built once per session, and only when its inputs changed
(``scripts/build_zipapp.py --if-stale``). Set ``FAASD_TEST_PYZ=/path/to/faasd.pyz`` to test a given
artifact instead (no build), and ``FAASD_TEST_PYTHON`` to pick the interpreter that runs it; by default
that is the system ``python3`` (as in production: ``python3 faasd.pyz``), so a dependency missing from
the zipapp cannot hide behind the test venv's site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 600


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
