"""How this faasd process can start another copy of itself: from ``faasd.pyz`` or from a source tree.

The local backend starts every replica as ``python faasd.pyz watchdog``: the same file, so a replica
never runs a different version than its daemon. From a checkout (``python -m faasd``) the equivalent
imports faasd from that checkout.
"""

from __future__ import annotations

import os
import sys
import zipfile
from dataclasses import dataclass

import faasd

__all__ = ["SelfCommand", "self_command"]


@dataclass(frozen=True, slots=True)
class SelfCommand:
    """argv prefix and extra environment that run faasd again."""

    argv: tuple[str, ...]
    env: dict[str, str]
    zipapp: str | None
    """Path of the running ``faasd.pyz``, or None when running from source."""


def self_command(*, no_site: bool = True) -> SelfCommand:
    """The command that runs this faasd again (append a subcommand such as ``watchdog``).

    Args:
        no_site: add ``-S``: skip site-packages. Everything faasd needs is inside the zipapp (or on
            the checkout's path) and a site-packages ``.pth`` can cost tens of milliseconds
            per start (performance.md), which every replica start would pay.
    """
    flags = ("-S",) if no_site else ()
    package_dir = os.path.dirname(os.path.abspath(faasd.__file__))
    root = os.path.dirname(package_dir)
    if os.path.isfile(root) and zipfile.is_zipfile(root):
        return SelfCommand(argv=(sys.executable, *flags, root), env={}, zipapp=root)
    # From a checkout: put the checkout on sys.path in the command itself, not through PYTHONPATH,
    # which the watchdog would pass on to every function process.
    bootstrap = f"import sys; sys.path.insert(0, {root!r}); from faasd.__main__ import main; sys.exit(main())"
    return SelfCommand(argv=(sys.executable, *flags, "-c", bootstrap), env={}, zipapp=None)
