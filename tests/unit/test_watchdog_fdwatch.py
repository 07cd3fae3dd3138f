"""faasd.watchdog.fdwatch: fork mode's own epoll, with real pipes on a real asyncio loop.

What must hold: a callback runs while its fd is readable and never after :meth:`FdWatch.remove`; and a
readiness reported for an fd that an earlier callback of the same wake-up closed and reused never reaches
the new owner (a blocking ``read`` on its empty pipe would hang the watchdog).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

import pytest

from faasd.watchdog.fdwatch import FdWatch


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _spin(loop: asyncio.AbstractEventLoop) -> None:
    """Let the loop wake for whatever is ready (a few iterations)."""
    loop.run_until_complete(asyncio.sleep(0.02))


def test_callback_runs_while_readable_and_not_after_remove(loop: asyncio.AbstractEventLoop) -> None:
    watch = FdWatch(loop)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    seen: list[bytes] = []
    watch.add(read_end, lambda: seen.append(os.read(read_end, 100)))
    assert watch.watching(read_end)
    os.write(write_end, b"one")
    _spin(loop)
    assert seen == [b"one"]
    watch.remove(read_end)
    assert not watch.watching(read_end)
    os.write(write_end, b"two")
    _spin(loop)
    assert seen == [b"one"]  # removed: the data stays in the pipe
    watch.remove(read_end)  # twice: nothing
    watch.close()
    for fd in (read_end, write_end):
        os.close(fd)


def test_hang_up_is_readiness(loop: asyncio.AbstractEventLoop) -> None:
    watch = FdWatch(loop)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    seen: list[bytes] = []

    def on_read() -> None:
        data = os.read(read_end, 100)
        seen.append(data)
        if not data:
            watch.remove(read_end)

    watch.add(read_end, on_read)
    os.close(write_end)
    _spin(loop)
    assert seen == [b""]
    watch.close()
    os.close(read_end)


def test_stale_readiness_of_a_reused_fd_is_not_delivered(loop: asyncio.AbstractEventLoop) -> None:
    """Two pipes ready in one wake-up; the first callback to run closes the other's fd and a new pipe
    takes that number. The new owner's pipe is empty: its callback must not run in that batch."""
    watch = FdWatch(loop)
    first_read, first_write = os.pipe2(os.O_CLOEXEC)
    second_read, second_write = os.pipe2(os.O_CLOEXEC)
    os.write(first_write, b"x")
    os.write(second_write, b"y")
    calls: list[str] = []
    reopened: list[int] = []

    def new_owner() -> None:
        calls.append("new owner")
        with contextlib.suppress(BlockingIOError):  # (fork mode's pipes block: there it would hang)
            os.read(reopened[0], 1)

    def close_and_reuse(closing: int, other: int) -> None:
        calls.append(f"closer of {other}")
        os.read(closing, 1)
        watch.remove(closing)
        watch.remove(other)
        os.close(other)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        if read_end != other:  # the lowest free number: the one just closed, unless another thread raced
            pytest.skip("the kernel did not hand the closed fd number out again")
        os.set_blocking(read_end, False)
        reopened.extend((read_end, write_end))
        watch.add(read_end, new_owner)

    # Whichever of the two runs first closes the other one's fd and takes its number.
    watch.add(first_read, lambda: close_and_reuse(first_read, second_read))
    watch.add(second_read, lambda: close_and_reuse(second_read, first_read))
    _spin(loop)
    assert len(calls) == 1 and calls[0].startswith("closer of"), calls
    assert "new owner" not in calls
    # Data for the new owner is then delivered to it (the fd is watched, level-triggered).
    os.write(reopened[1], b"z")
    _spin(loop)
    assert calls[-1] == "new owner"
    watch.close()
    survivor = first_read if calls[0] == f"closer of {second_read}" else second_read
    for fd in (survivor, first_write, second_write, *reopened):
        os.close(fd)
