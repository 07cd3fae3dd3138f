"""What a new function's deploy no longer reads from /proc on its own path (docs/coldstart.md): the busy uids
come from a snapshot read ahead (faasd.providers.local.busyuids), and a pooled replica's processes are
moved into their cgroup from the list read when it became ready (faasd.providers.local.pool), checked
first against what runs now."""

from __future__ import annotations

import os
import subprocess
import time

import trio

from faasd.providers.local.busyuids import BusyUids
from faasd.providers.local.pool import _descendant_links, _unchanged
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


def test_a_recorded_process_tree_is_used_while_it_is_unchanged() -> None:
    """A shell with a child: the recorded (pid, parent) links hold until the child is gone."""
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    try:
        assert shell.stdout is not None
        child = int(shell.stdout.readline())
        deadline = time.monotonic() + 5
        links = _descendant_links(shell.pid)
        while (child, shell.pid) not in links and time.monotonic() < deadline:  # sh forks before it echoes
            links = _descendant_links(shell.pid)
        assert (child, shell.pid) in links, links
        assert _unchanged(shell.pid, tuple(links)) == [pid for pid, _ in links]
        os.kill(child, 9)
        while _unchanged(shell.pid, tuple(links)) is not None and time.monotonic() < deadline:
            time.sleep(0.01)  # Until the shell has reaped it.
        assert _unchanged(shell.pid, tuple(links)) is None  # Gone: everything is read again.
        assert _unchanged(shell.pid, ((child, os.getpid()),)) is None  # A parent outside the tree.
    finally:
        shell.kill()
        shell.wait()
