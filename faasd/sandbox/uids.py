"""Each function's own uid and gid, when the daemon runs as root. Pure bookkeeping.

Like systemd's ``DynamicUser=``, a function's uid is a number from a reserved range with no
``/etc/passwd`` entry: it owns no file outside what the backend gives it, and it is handed out only
while the function exists. The range, :data:`FUNCTION_UID_FIRST` to :data:`FUNCTION_UID_LAST`
(1900000000-1900065535), sits above every range systemd documents as used (system and regular users
below 60000, ``DynamicUser`` 61184-65519, ``nobody`` 65534, container ranges 524288-1879048191) and
below 2^31, which some tools mishandle. The gid is the same number.

Numbers are not kept across daemon restarts: a function is re-deployed at start and gets one again
(its files are re-owned then). A number that any live process still runs as -- a leftover of an
earlier daemon, or a function of another faasd daemon on the same host -- is never handed out (the
caller passes the busy uids, read from /proc), and free numbers are picked at random, so two daemons
choosing at the same moment do not pick the same one.
"""

from __future__ import annotations

import random
from collections.abc import Set

__all__ = ["FUNCTION_UID_FIRST", "FUNCTION_UID_LAST", "PROBE_UID", "UidPool", "UidsExhausted"]

FUNCTION_UID_FIRST = 1_900_000_000
FUNCTION_UID_LAST = 1_900_065_535
PROBE_UID = FUNCTION_UID_LAST
"""Kept for the start-up check that a sandboxed replica can drop its privileges; never a function's."""


class UidsExhausted(RuntimeError):
    """Every uid of the range is taken (65,535 functions, or as many leftover processes)."""


class UidPool:
    """function name -> uid, from the reserved range; a free number at random (see the module docstring)."""

    def __init__(self, first: int = FUNCTION_UID_FIRST, last: int = PROBE_UID - 1, *, seed: int | None = None) -> None:
        self._first = first
        self._last = last
        self._random = random.Random(seed)
        self._by_name: dict[str, int] = {}
        self._taken: set[int] = set()

    def __repr__(self) -> str:
        return f"<UidPool {self._first}-{self._last} assigned={len(self._by_name)}>"

    def get(self, name: str) -> int | None:
        return self._by_name.get(name)

    def acquire(self, name: str, busy: Set[int] = frozenset()) -> int:
        """The uid of ``name``: the one it has, else a free one (not taken here, not in ``busy``).

        Raises:
            UidsExhausted: no free number.
        """
        uid = self._by_name.get(name)
        if uid is not None:
            return uid
        size = self._last - self._first + 1
        start = self._random.randrange(size)
        for offset in range(size):  # From a random point: as random, and ends when the range is full.
            candidate = self._first + (start + offset) % size
            if candidate not in self._taken and candidate not in busy:
                self._by_name[name] = candidate
                self._taken.add(candidate)
                return candidate
        raise UidsExhausted(f"no free uid left in {self._first}-{self._last}")

    def release(self, name: str) -> None:
        """``name`` is gone and none of its processes runs any more: its number may be reused."""
        uid = self._by_name.pop(name, None)
        if uid is not None:
            self._taken.discard(uid)
