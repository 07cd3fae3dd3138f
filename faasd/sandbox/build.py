"""A function's build step -- ``pip install -r requirements.txt`` -- run in the function's sandbox.

A requirements file is part of the function, so it is as untrusted as the function: installing a
package runs its code (``setup.py``, build backends). The build runs like a replica of the function --
same mode, same uid, same view of the host -- with two differences: its directory is writable (pip
writes ``.packages`` there), and it has no memory cap (pip and compilers need more than a function
may; the timeout bounds it). The function's secrets are written only after it.

With a uid per function, the directory is lent to that uid for the build (``root`` stays the owner of
what was there before) and taken back afterwards: what the build created is re-owned ``root:<gid>``,
group-readable, through file descriptors opened without following links, so a process the build left
behind cannot redirect the change to a file outside (:func:`faasd.sandbox.files.reclaim`).

:class:`Build` holds one build: :meth:`Build.prepare` and :meth:`Build.finish` do the blocking file work
(run them through ``trio.to_thread``), :meth:`Build.launch` is pure. The local backend's
``install_requirements`` runs the command it plans.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from secrets import token_hex

from faasd.sandbox.files import lend, make_scratch, reclaim, share_with_group
from faasd.sandbox.limits import Limits
from faasd.sandbox.plan import Launch, ReplicaSandbox, Sandbox, plan_launch

__all__ = ["BUILD_LIMITS", "Build"]

BUILD_LIMITS = Limits()
"""Processes and open files as for a replica; no address-space cap."""


class Build:
    """One build step of the function whose directory is ``workdir`` (see the module docstring).

    Args:
        uid: the function's uid; None when functions have no uid of their own.
        faasd: the argv prefix that runs faasd (it confines the process, then executes the program).
        env: the environment the program gets (the sandbox adjusts ``HOME``/``TMPDIR``).
    """

    def __init__(
        self, sandbox: Sandbox, *, workdir: str, uid: int | None, faasd: Sequence[str], env: Mapping[str, str]
    ) -> None:
        self.sandbox = sandbox
        self.workdir = workdir
        self.uid = uid
        self._faasd = tuple(faasd)
        self._env = dict(env)
        self._scratch = ""

    def __repr__(self) -> str:
        return f"<Build {self.workdir!r} mode={self.sandbox.mode} uid={self.uid}>"

    @property
    def python(self) -> str:
        """The interpreter the program should use (in ``uid`` mode, one any user can run)."""
        return self.sandbox.python

    def prepare(self) -> None:
        """Let the function's uid read what is in the directory and write in it, make its scratch
        directory (blocking)."""
        if self.uid is None:
            return
        share_with_group(self.workdir, self.uid)  # The handler archive, unpacked under the daemon's umask.
        lend(self.workdir, self.uid)
        if self.sandbox.mode == "uid":
            replicas = os.path.join(self.sandbox.work_root, "replicas")
            self._scratch = make_scratch(replicas, f"build-{token_hex(4)}", self.uid)

    def launch(self, program: Sequence[str]) -> Launch:
        """How to start ``program`` (paths relative to the function's directory) in the sandbox."""
        replica = ReplicaSandbox(
            workdir=self.workdir,
            secrets=False,
            uid=self.uid,
            limits=BUILD_LIMITS,
            scratch=self._scratch,
            writable=True,
        )
        return plan_launch(self.sandbox, replica, self._faasd, self._env, ("--", *program))

    def finish(self) -> None:
        """Take the directory back (blocking); safe to call after a failed or cancelled build."""
        if self.uid is not None:
            reclaim(self.workdir, self.uid)
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = ""
