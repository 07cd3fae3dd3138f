"""What a new function's deploy no longer reads from /proc on its own path (docs/coldstart.md): the busy uids
come from a snapshot read ahead (faasd.providers.local.busyuids). (A pooled replica's processes are no
longer moved into a cgroup when it is assigned: it starts in its own, tests/e2e/test_pool.py.)"""

from __future__ import annotations

import os

import trio

from faasd.providers.local.busyuids import BusyUids
from faasd.sandbox.host import busy_uids


class CountingScan:
    """A real /proc read that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> set[int]:
        self.calls += 1
        return busy_uids()


async def test_a_snapshot_is_reused_until_it_is_too_old_then_read_again() -> None:
    scan = CountingScan()
    busy = BusyUids(scan, max_age_s=0.3)
    first = await busy.fresh()
    assert scan.calls == 1 and os.getuid() in first  # This very process runs as us.
    assert await busy.fresh() is first and scan.calls == 1
    await trio.sleep(0.35)
    await busy.fresh()
    assert scan.calls == 2


async def test_reads_asked_for_together_share_one() -> None:
    scan = CountingScan()
    busy = BusyUids(scan)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(busy.read)
    assert scan.calls == 1 and busy.read_at is not None


async def test_reads_later_asked_for_within_the_delay_share_one() -> None:
    """Each new function's deploy asks for a read half a second later: a burst of deploys makes one read, not one
    each (a read holds the interpreter's lock for most of its 10-35 ms, on the next deploys' path)."""
    scan = CountingScan()
    busy = BusyUids(scan)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(busy.read_later)
            await trio.sleep(0.05)
    assert scan.calls == 1
    await busy.read_later()  # Asked for after that read: read again.
    assert scan.calls == 2
