"""The argument list of ``GET /api/call/{id}?param1:1,param2:1``: Flock of Birds' calling convention.

In the seed the whole raw query string is the argument list: ``key:value`` pairs separated by commas,
and every value reaches ``callme`` as a string (``callme(param1="1", param2="1")``). The seed split the
still-encoded string on ``,`` and ``:`` and failed on anything else; faasd reads it by these rules,
checked in the gateway before any replica is involved (a bad list is a 400 that names the argument):

* the query is split on every ``,`` first, then each item at its **first** ``:`` -- so a value may hold
  ``:`` as it is (``url:http://x``), while a ``,`` in a value must be sent as ``%2C``;
* keys and values are then percent-decoded (``%XX`` only: a ``+`` stays a ``+``, as in a path) and must
  be UTF-8; a ``%`` not followed by two hex digits is a 400;
* a key must be an ASCII identifier (``[A-Za-z_][A-Za-z0-9_]*``): it becomes a Python keyword argument;
* an empty query is no argument at all (``callme()``); an empty item (``a:1,,b:2``, a trailing comma),
  an item without ``:``, a repeated key and a NUL in a value are each a 400; an empty value
  (``a:``) is the empty string;
* ``&`` and ``=`` have no meaning: they are part of the key or value they are in.

The gateway hands the parsed arguments to the snippet's replica as an ordinary form-encoded query
(:func:`encode_call_args`), which the snippet's driver reads back with the standard library.

Pure: no I/O, no trio.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from faasd.errors import InvalidRequest

__all__ = ["ArgumentError", "encode_call_args", "parse_call_args"]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_SHOWN_CHARS = 40


class ArgumentError(InvalidRequest):
    """The query of ``/api/call/{id}`` is not a valid argument list (400); the message names the argument."""


def parse_call_args(query: bytes) -> dict[str, str]:
    """The keyword arguments in the raw query string ``query`` (the rules are in the module docstring).

    Raises:
        ArgumentError: naming the argument (by position) and what is wrong with it.
    """
    if not query:
        return {}
    args: dict[str, str] = {}
    for position, item in enumerate(query.split(b","), 1):
        if not item:
            raise ArgumentError(
                f"argument {position} is empty (two commas in a row, or one at an end); "
                "write key:value pairs separated by commas"
            )
        raw_key, colon, raw_value = item.partition(b":")
        if not colon:
            raise ArgumentError(f"argument {position} ({_shown(item)}) has no ':'; write key:value")
        key = _decode(raw_key, position, "name")
        if not _KEY.fullmatch(key):
            raise ArgumentError(
                f"argument {position}: {_shown(key)} is not a valid name "
                "(ASCII letters, digits and _, not starting with a digit)"
            )
        if key in args:
            raise ArgumentError(f"argument {position}: {key} is given twice")
        value = _decode(raw_value, position, "value")
        if "\0" in value:
            raise ArgumentError(f"argument {position}: the value of {key} contains a NUL byte (%00)")
        args[key] = value
    return args


def encode_call_args(args: dict[str, str]) -> bytes:
    """``args`` as the query the snippet's replica reads (``key=value&...``, every reserved byte
    percent-encoded, so nothing in a value can be taken for a separator)."""
    return "&".join(f"{key}={quote(value, safe='')}" for key, value in args.items()).encode("ascii")


def _decode(raw: bytes, position: int, what: str) -> str:
    if b"%" in raw:
        if _BAD_ESCAPE.search(raw):
            raise ArgumentError(f"argument {position}: a '%' in its {what} is not followed by two hex digits")
        raw = unquote_to_bytes(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArgumentError(f"argument {position}: its {what} is not UTF-8 (once percent-decoded)") from None


def _shown(text: bytes | str) -> str:
    """``text`` quoted for a one-line message, cut short."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    shown = repr(text)
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 4] + "...'"
