"""The reason an error answer gives: one printable line, short, whatever went into it.

Every error the gateway writes itself is one line of ``text/plain`` saying why (docs: README, "Errors").
Many reasons quote what the client sent -- a path, a name, a number -- and a client can send a CR, an
LF, a NUL or ten thousand characters there, which would make the answer several lines (or a copy of
the request). :func:`one_line` is applied to every such answer (``send_text`` on the invoke path, the
management API's ``_text``), so no message has to be written with that in mind.
"""

from __future__ import annotations

__all__ = ["MAX_REASON_CHARS", "one_line"]

MAX_REASON_CHARS = 300
"""Longer reasons are clipped: a reason says why, it does not echo the request back."""


def one_line(message: str, limit: int = MAX_REASON_CHARS) -> str:
    """``message`` with every character that is not printable (CR, LF, NUL, other controls, line and
    paragraph separators) written as Python writes it in a string literal (``\\r``, ``\\x00``), then
    clipped to ``limit`` characters (ending ``...``)."""
    if message.isprintable() and len(message) <= limit:
        return message  # Nearly every reason: no copy made.
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
    return text if len(text) <= limit else text[: limit - 3] + "..."
