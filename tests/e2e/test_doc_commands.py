"""Every command block of README.md and docs/*.md runs as written (markers and rules: tests/doc_blocks.py).

How a block is run, and the only liberties taken with it:

* in a copy of the checkout: a temporary directory with a symlink to each top-level entry of this one
  (so ``sample-functions/stack.yml`` and ``scripts/run`` are there, and what a block creates --
  ``greet/``, ``hello/``, ``stack.yml`` -- lands in the copy), except ``dist/faasd.pyz``, which is the
  zipapp under test (``FAASD_TEST_PYZ``). The copy is readable by every user, as a checkout must be for
  ``sandbox = uid`` (docs/sandbox.md: function uids run that ``faasd.pyz``); pytest's own temporary
  directories are not;
* by ``sh -e`` (dash on Debian: aliases work in scripts), with ``PATH=/usr/bin:/bin``: ``python3`` is the
  system's, as on the README's fresh Debian;
* ``HOME`` is a fresh directory, and the daemon the blocks of a file share was started the way the README
  starts one (``faasd up``: no ``--state-dir``, no ``FAASD_PASSWORD``), so ``~/.local/state/faasd/password``
  is its generated password file, and the CLI finds it there;
* the daemon listens on a free port, not 8080 (other daemons may run on this machine): blocks get it as
  ``FAASD_URL`` and ``FAASD_PORT`` (the documented settings), and ``http://127.0.0.1:8080`` in a
  block's text is replaced by its address.

A block passes when its shell exits 0 (``sh -e``: every command succeeded; the README's ``curl`` calls
use ``--fail-with-body``) with no traceback in its output, within :data:`BLOCK_TIMEOUT_S`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.daemon_fixtures import StartDaemon
from tests.doc_blocks import Block, doc_files, parse_blocks
from tests.helpers import free_port, must_run_everything, scaled, session_members, wait_for
from tests.process_tree import Orphans, subreaper

BLOCK_TIMEOUT_S = 120.0
"""Upper bound on one block (the README's longest deploys the samples and waits for each)."""
SERVE_TIMEOUT_S = 30.0
"""A ``serves`` block must answer ``/healthz`` within this, and stop within this of SIGTERM."""
DEFAULT_URL = "http://127.0.0.1:8080"

BLOCKS = [block for path in doc_files(ROOT) for block in parse_blocks(path) if block.is_command]
FILES_TO_RUN = sorted({block.path for block in BLOCKS if block.kind == "run"})


def _id(block: Block) -> str:
    return block.where(ROOT)


@pytest.fixture
def checkout(faasd_pyz: Path) -> Iterator[Path]:
    """A directory that looks like this checkout, readable by all (see the module docstring)."""
    copy = Path(tempfile.mkdtemp(prefix="faasd-doc-test-"))
    try:
        copy.chmod(0o755)
        for entry in ROOT.iterdir():
            if entry.name not in (".git", "dist"):
                (copy / entry.name).symlink_to(entry)
        (copy / "dist").mkdir(mode=0o755)
        (copy / "dist" / "faasd.pyz").symlink_to(faasd_pyz)
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _environment(home: Path, port: int) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "FAASD_URL": f"http://127.0.0.1:{port}",
        "FAASD_PORT": str(port),
        "LANG": "C.UTF-8",
    }


def _run(block: Block, cwd: Path, env: dict[str, str]) -> str:
    """Run ``block`` with ``sh -e``; its output, or a failure saying what it printed."""
    script = block.text.replace(DEFAULT_URL, env["FAASD_URL"])
    try:
        done = subprocess.run(
            ["sh", "-e", "-c", script],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=scaled(BLOCK_TIMEOUT_S),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{_id(block)} did not finish within {scaled(BLOCK_TIMEOUT_S):g}s:\n{block.text}\n{exc.stderr!r}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{_id(block)} exited {done.returncode}:\n{block.text}\n--- output:\n{output}"
    assert "Traceback" not in output, f"{_id(block)} printed a traceback:\n{output}"
    return output


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES_TO_RUN, ids=lambda path: str(path.relative_to(ROOT)))
def test_blocks_run_as_written(path: Path, start_daemon: StartDaemon, checkout: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    # As the README starts one: the state dir and the password are the defaults, found from HOME.
    daemon = start_daemon(state_dir=home / ".local" / "state" / "faasd", port=port, HOME=str(home), FAASD_PASSWORD="")
    assert (home / ".local" / "state" / "faasd" / "password").is_file()
    env = _environment(home, port)
    for block in (block for block in BLOCKS if block.path == path and block.kind == "run"):
        output = _run(block, checkout, env)
        print(f"--- {_id(block)}\n{output}")
    assert daemon.proc.poll() is None, "the daemon died while the blocks ran"


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "serves"], ids=_id)
def test_serving_blocks_serve_then_stop(block: Block, checkout: Path, tmp_path: Path) -> None:
    available = {"root": os.geteuid() == 0, "bwrap": shutil.which("bwrap") is not None}
    lacking = sorted(need for need in block.needs if not available[need])
    if lacking:
        message = f"{_id(block)} needs {', '.join(lacking)}, which this test run lacks"
        if must_run_everything():
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = _environment(home, port)
    log_path = tmp_path / "serve.log"
    with subreaper():
        orphans = Orphans.snapshot()
        with open(log_path, "wb") as log:
            shell = subprocess.Popen(
                ["sh", "-e", "-c", block.text],
                cwd=checkout,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:

            def healthy() -> bool:
                if shell.poll() is not None and not session_members(shell.pid):
                    pytest.fail(f"{_id(block)} ended before serving:\n{log_path.read_text(errors='replace')}")
                try:
                    return httpx.get(f"{env['FAASD_URL']}/healthz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(healthy, SERVE_TIMEOUT_S, f"{_id(block)} to answer /healthz on port {port}")
            os.killpg(shell.pid, signal.SIGTERM)  # The shell and the daemon it runs (one process group).
            wait_for(lambda: not session_members(shell.pid), SERVE_TIMEOUT_S, f"{_id(block)} to stop on SIGTERM")
            shell.wait()
            left = orphans.wait_gone(scaled(10.0))
            assert not left, f"{_id(block)} left processes behind: {left}"
        finally:
            if session_members(shell.pid):
                os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
            orphans.kill()
    output = log_path.read_text(errors="replace")
    assert "event=stopped" in output and "Traceback" not in output, output


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "skip"], ids=_id)
def test_skipped_blocks_say_why(block: Block) -> None:
    pytest.skip(f"{_id(block)} is not run: {block.reason}")
