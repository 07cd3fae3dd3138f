"""Checking an upload in a child process (faasd.fob.checker, faasd.fob.checkproc): the verdicts of
faasd.fob.source come back through it, hostile sources cost the daemon nothing (the child's memory and
CPU), the child is kept between checks but replaced when it grew, died or ran too long, and the
snippets' rows in the store survive a reopen."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from faasd.fob.checker import SourceChecker
from faasd.fob.source import SourceError
from faasd.store import Store
from tests.helpers import process_alive, rss_bytes

HEAVY = b"x = (" + b"a," * 120_000 + b")\ndef callme(): pass\n"
"""Compiles, at the price of ~150 MB and a second in the child."""


@pytest.fixture
async def checker() -> AsyncIterator[SourceChecker]:
    checker = SourceChecker()
    try:
        yield checker
    finally:
        await checker.aclose()


async def test_verdicts_come_back_from_the_child(checker: SourceChecker) -> None:
    checked = await checker.check(b"def callme():\n    return 42\n", None)
    assert checked.language == "python" and checked.source == b"def callme():\n    return 42\n"
    with pytest.raises(SourceError) as caught:
        await checker.check(b"x = 1\ndef callme(:\n", "python")
    assert (caught.value.line, caught.value.column) == (2, 12) and "SyntaxError" in caught.value.message
    with pytest.raises(SourceError, match="no top-level callme"):
        await checker.check(b"def other(): pass\n", "")


async def test_one_child_serves_many_checks_and_is_stopped_at_close() -> None:
    """Also when the daemon that starts it is big: Linux carries ``ru_maxrss`` over ``exec``, which once
    made every check look like a grown checker (replaced each time) under a daemon past 96 MB."""
    ballast = b"x" * (160 * 1024 * 1024)  # Resident: the bytes are written.
    checker = SourceChecker()
    await checker.warm()
    del ballast
    pid = checker._process.pid  # type: ignore[union-attr]
    for number in range(20):
        await checker.check(f"def callme():\n    return {number}\n".encode(), "python")
    assert checker._process is not None and checker._process.pid == pid
    await checker.aclose()
    assert checker._process is None and not process_alive(pid)


async def test_cheap_checks_need_no_child() -> None:
    checker = SourceChecker(timeout_s=0.001)  # A child could not even start in that time.
    for source, reason in ((b"", "empty"), (b"\x00", "NUL"), (b"\xff", "not UTF-8")):
        with pytest.raises(SourceError, match=reason):
            await checker.check(source, "python")
    with pytest.raises(SourceError, match="supported: python"):
        await checker.check(b"def callme(): pass\n", "perl")
    assert checker._process is None


async def test_hostile_sources_grow_the_child_not_the_daemon(checker: SourceChecker) -> None:
    rss_before = rss_bytes(os.getpid())
    started = time.monotonic()
    assert (await checker.check(HEAVY, "python")).source == HEAVY
    assert checker._process is None  # It grew past RECYCLE_RSS_BYTES: replaced at the next check.
    for deep in (b"x = " + b"-" * 200_000 + b"1", b"x = " + b"(" * 100_000, b"x = a" + b".b" * 100_000):
        with pytest.raises(SourceError, match=r"nested too deeply|never closed|parenthes"):
            await checker.check(deep + b"\ndef callme(): pass\n", "python")
    assert (await checker.check(b"def callme(): pass\n", "python")).language == "python"
    assert rss_bytes(os.getpid()) - rss_before < 16 * 1024 * 1024
    assert time.monotonic() - started < 60


async def test_a_check_past_its_time_is_killed_and_the_next_one_works(checker: SourceChecker) -> None:
    await checker.warm()
    pid = checker._process.pid  # type: ignore[union-attr]
    checker.timeout_s = 0.05
    started = trio.current_time()
    with pytest.raises(SourceError, match=r"did not compile within 0\.05s"):
        await checker.check(HEAVY, "python")
    assert trio.current_time() - started < 5 and not process_alive(pid)
    checker.timeout_s = 30
    assert (await checker.check(b"def callme(): pass\n", "python")).language == "python"


async def test_a_checker_that_died_is_replaced(checker: SourceChecker) -> None:
    await checker.warm()
    os.kill(checker._process.pid, signal.SIGKILL)  # type: ignore[union-attr]
    with pytest.raises(SourceError, match="the check was killed by SIGKILL"):
        await checker.check(b"def callme(): pass\n", "python")
    assert (await checker.check(b"def callme(): pass\n", "python")).language == "python"


def test_snippets_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "faasd.db")
    store = Store.open(path)
    first = store.add_snippet("id-1", "python", b"def callme(): return 1\n")
    store.add_snippet("id-2", "python", b"\xef\xbb\xbfdef callme(): return 2\n")
    store.close()
    store = Store.open(path)
    assert [(s.id, s.language, s.source) for s in store.list_snippets()] == [
        ("id-1", "python", b"def callme(): return 1\n"),
        ("id-2", "python", b"\xef\xbb\xbfdef callme(): return 2\n"),
    ]
    assert store.list_snippets()[0].created_at == first.created_at
    assert store.get_snippet_source("id-2") == b"\xef\xbb\xbfdef callme(): return 2\n"
    assert store.delete_snippet("id-1") and not store.delete_snippet("id-1")
    assert store.get_snippet_source("id-1") is None and [s.id for s in store.list_snippets()] == ["id-2"]
