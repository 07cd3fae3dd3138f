"""Error reasons are one printable line, short, whatever the client put into them (faasd.gateway.reasons)."""

from __future__ import annotations

import pytest

from faasd.gateway.reasons import MAX_REASON_CHARS, one_line


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Function not found: echo", "Function not found: echo"),
        ("Not found: /system/x\r\nx-injected: 1", "Not found: /system/x\\r\\nx-injected: 1"),
        ("name 'a\x00b'", "name 'a\\x00b'"),
        ("tab\there", "tab\\there"),
        ("line\u2028separator", "line\\u2028separator"),
        ("héllo wörld ✓", "héllo wörld ✓"),
    ],
)
def test_control_characters_are_written_escaped(message: str, expected: str) -> None:
    assert one_line(message) == expected


def test_long_reasons_are_clipped() -> None:
    reason = one_line("Not found: /" + "x" * 10_000)
    assert len(reason) == MAX_REASON_CHARS and reason.startswith("Not found: /xxx") and reason.endswith("...")
    assert one_line("x" * MAX_REASON_CHARS) == "x" * MAX_REASON_CHARS
    assert len(one_line("\n" * 1000)) == MAX_REASON_CHARS  # Escaping first, clipping after: still bounded.
