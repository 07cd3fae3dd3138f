"""The uids live processes run as, read ahead of need: a new function's uid is picked without reading /proc
on its deploy's path.

Why: a function's uid (:mod:`faasd.sandbox.uids`) must not be one a live process still runs as -- a leftover
of an earlier daemon, or a function of another faasd daemon on the host -- and finding those means reading
``/proc/<pid>/status`` of every process (:func:`faasd.sandbox.host.busy_uids`): 10-35 ms with 240 processes
on the project's 2-core VMs, which was the largest single step of a new function's deploy -> first 200
(docs/coldstart.md). So the provider reads them at its start and again, in the background, half a second
after a snapshot was used (once for all the uses within that half second); a deploy uses the last snapshot
when it is at most :data:`MAX_AGE_S` old, and reads /proc on its own path only when it is older (the first
deploy after a quiet minute).

What that changes: a number is checked against the processes alive at a read at most a minute old instead
of a few milliseconds old. Leftovers of an earlier daemon were alive at this daemon's start, so the first
read sees them. Another daemon's functions that started since the last read could be missed; but numbers
are picked at random among 65,535 on both sides, and a number this daemon has picked is not visible to the
other daemon's reads either until its replicas run -- cross-daemon exclusion was already by chance, not by
the read. Replica uids were already picked from the last read, however old.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from faasd.sandbox import host as sandbox_host

__all__ = ["MAX_AGE_S", "READ_AGAIN_DELAY_S", "BusyUids"]

MAX_AGE_S = 60.0
"""A snapshot older than this is read again before a new function's uid is picked from it."""
READ_AGAIN_DELAY_S = 0.5
"""After a snapshot was used, how long before it is read again: the read holds the interpreter's lock for
most of its 10-35 ms, which the deploy that used the snapshot needs first (its replica's assignment, the
readiness probe, its held calls)."""


class BusyUids:
    """The last snapshot of the uids live processes run as (see the module docstring).

    Args:
        scan: reads them (blocking; run in a worker thread).
        max_age_s: how old a snapshot :meth:`fresh` may return.
    """

    def __init__(self, scan: Callable[[], set[int]] = sandbox_host.busy_uids, max_age_s: float = MAX_AGE_S) -> None:
        self.uids: set[int] = set()
        """The last snapshot (empty before the first read)."""
        self.read_at: float | None = None
        """When the read that gave :attr:`uids` started (trio's clock), None before the first."""
        self._scan = scan
        self._max_age_s = max_age_s
        self._reading: trio.Event | None = None
        self._read_due = False
        """A :meth:`read_later` is waiting for its delay."""

    async def fresh(self) -> set[int]:
        """The last snapshot if it is at most ``max_age_s`` old, else one read now."""
        if self.read_at is None or trio.current_time() - self.read_at > self._max_age_s:
            await self.read()
        return self.uids

    async def read_later(self) -> None:
        """:meth:`read`, :data:`READ_AGAIN_DELAY_S` from now (the snapshot was just used); when a read is
        already due by then, none more: a burst of new functions' deploys makes one read, not one each."""
        if self._read_due:
            return
        self._read_due = True
        try:
            await trio.sleep(READ_AGAIN_DELAY_S)
        finally:
            self._read_due = False
        await self.read()

    async def read(self) -> None:
        """Read /proc now; a read already under way is waited for instead of a second one."""
        if self._reading is not None:
            await self._reading.wait()
            return
        self._reading = reading = trio.Event()
        try:
            started = trio.current_time()
            uids = await trio.to_thread.run_sync(self._scan)
            self.uids, self.read_at = uids, started
        finally:
            self._reading = None
            reading.set()
