"""The local backend's build step: a function's ``requirements.txt`` installed into its own directory.

Each function gets its dependencies apart from the others and from faasd's, in ``<function dir>/
.packages`` (python-mode workers put it on ``sys.path``; other modes set ``PYTHONPATH``).

Why a trio subprocess and not ``subprocess.run`` in a thread: an install can take minutes, or hang on
an index that never answers. Run on a worker thread it could not be cancelled, so a daemon stopping
(or a function removed while it was being restored) waited for pip. Here cancelling the caller stops
pip (SIGTERM, then SIGKILL: trio's ``run_process`` policy) and returns at once.

Installing a package runs its code, so pip runs in the function's sandbox when there is one
(:class:`faasd.sandbox.build.Build`): as the function, seeing what it sees. Its paths are relative to
the function's directory, its working directory, which is mounted elsewhere in a bwrap sandbox.
"""

from __future__ import annotations

import os
import sys

import trio

from faasd.errors import InvalidRequest
from faasd.providers.local.pip_env import pip_environment
from faasd.sandbox.build import Build

__all__ = ["REQUIREMENTS_TIMEOUT_S", "install_requirements"]

REQUIREMENTS_TIMEOUT_S = 600
"""Longest a ``pip install`` may take before the deploy fails with a 400."""

OUTPUT_LINES = 3
"""Last lines of pip's output quoted in the error of a failed install."""


async def install_requirements(function_dir: str, build: Build | None = None) -> None:
    """Install ``function_dir/requirements.txt`` (if it names anything) into ``function_dir/.packages``.

    Args:
        build: the function's sandbox to run pip in; None: as the daemon.

    Raises:
        InvalidRequest: pip is missing, failed (its last output lines say why), or took longer than
            ``REQUIREMENTS_TIMEOUT_S``.

    Resource handling:
        pip runs as a child of the daemon; cancelling this call stops it and waits until it is reaped.
    """
    requirements = os.path.join(function_dir, "requirements.txt")
    try:
        with open(requirements, encoding="utf-8") as file:
            wanted = [line for line in file if line.strip() and not line.lstrip().startswith("#")]
    except FileNotFoundError:
        return
    if not wanted:
        return
    command = [
        (build.python if build is not None else "") or sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-cache-dir",
        "--target",
        ".packages",
        "-r",
        "requirements.txt",
    ]
    if build is None:
        argv, env, cwd = command, pip_environment(os.environ), function_dir
    else:
        await trio.to_thread.run_sync(build.prepare)
        launch = build.launch(command)
        argv, env, cwd = list(launch.argv), launch.env, launch.cwd
    try:
        with trio.move_on_after(REQUIREMENTS_TIMEOUT_S) as deadline:
            result = await trio.run_process(
                argv,
                cwd=cwd,
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                start_new_session=True,  # In a sandbox it sets its session's nice value: not the daemon's.
            )
    except OSError as exc:
        raise InvalidRequest(f"requirements.txt: cannot run pip: {exc.strerror or exc}") from None
    finally:
        if build is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(build.finish)
    if deadline.cancelled_caught:
        raise InvalidRequest(f"requirements.txt: pip did not finish within {REQUIREMENTS_TIMEOUT_S}s")
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace")
        output = (stderr or result.stdout.decode("utf-8", "replace")).strip().splitlines()
        if "No module named pip" in stderr:
            raise InvalidRequest("requirements.txt needs pip for the daemon's python3 (apt-get install python3-pip)")
        raise InvalidRequest("requirements.txt: pip install failed: " + " | ".join(output[-OUTPUT_LINES:]))
