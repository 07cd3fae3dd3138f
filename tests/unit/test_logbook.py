"""The local backend's log book: lines cut from replica output, kept in a ring bounded by bytes."""

from __future__ import annotations

import pytest
import trio

from faasd.providers.common.logbook import LINE_OVERHEAD_BYTES, MAX_LOG_LINE_BYTES, LineBuffer, LogBook
from faasd.providers.types import LogRequest


def test_line_buffer_splits_and_caps_lines() -> None:
    lines = LineBuffer(limit=8)
    assert lines.feed(b"one\ntw") == ["one"]
    assert lines.feed(b"o\r\n\n") == ["two", ""]
    assert lines.feed(b"x" * 20) == ["x" * 8, "x" * 8]
    assert lines.feed(b"yy\n") == ["xxxxyy"]
    assert lines.feed(b"12345678\n") == ["12345678"]  # Exactly the limit: one line.
    assert lines.feed(b"\xff\xfe tail") == []
    assert lines.flush() == ["\ufffd\ufffd tail"]
    assert lines.flush() == []
    assert MAX_LOG_LINE_BYTES == 16 * 1024


async def test_log_book_filters_and_slow_followers() -> None:
    book = LogBook("fn", max_bytes=3 * (len("line 0") + LINE_OVERHEAD_BYTES))
    for number in range(5):
        book.append(f"r{number % 2}", f"line {number}")
    assert [m.text for m in book.select(LogRequest(name="fn"))] == ["line 2", "line 3", "line 4"]  # bounded
    assert [m.text for m in book.select(LogRequest(name="fn", tail=1))] == ["line 4"]
    assert [m.text for m in book.select(LogRequest(name="fn", instance="r1"))] == ["line 3"]

    follower = book.follow("")
    for number in range(1030):  # More than the follower's queue (1024)
        book.append("r0", f"new {number}")
    received = [follower.receive.receive_nowait() for _ in range(1024)]
    assert received[-1].text == "new 1023"
    book.append("r0", "after the gap")
    marker = follower.receive.receive_nowait()
    assert marker.instance == "faasd" and "6 log lines dropped" in marker.text
    assert follower.receive.receive_nowait().text == "after the gap"
    book.close()
    with pytest.raises(trio.EndOfChannel):
        await follower.receive.receive()


@pytest.mark.parametrize("line_bytes", [0, 100, MAX_LOG_LINE_BYTES])
def test_log_book_is_bounded_by_bytes_whatever_the_lines(line_bytes: int) -> None:
    """Long lines and tiny lines alike: the book never holds more than its bytes (the newest kept)."""
    limit = 256 * 1024
    book = LogBook("fn", max_bytes=limit)
    for number in range(5000):
        book.append("r0", f"{number:05d}" + "x" * line_bytes)
    kept = book.select(LogRequest(name="fn"))
    assert book.size <= limit
    assert book.size == sum(len(m.text) + LINE_OVERHEAD_BYTES for m in kept)
    assert kept[-1].text.startswith("04999") and len(kept) == limit // (5 + line_bytes + LINE_OVERHEAD_BYTES)


def test_a_line_longer_than_the_book_is_still_kept() -> None:
    book = LogBook("fn", max_bytes=10)
    book.append("r0", "first")
    book.append("r0", "a line longer than the whole book")
    assert [m.text for m in book.select(LogRequest(name="fn"))] == ["a line longer than the whole book"]
