"""The ``/api/call/{id}?k:v,k:v`` argument list (faasd.fob.args): each rule of the module docstring, and
the round trip to the form-encoded query the snippet's driver reads back with the standard library."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from faasd.errors import InvalidRequest
from faasd.fob.args import ArgumentError, encode_call_args, parse_call_args

GOOD = [
    (b"", {}),
    (b"param1:1,param2:1", {"param1": "1", "param2": "1"}),  # The seed's call.
    (b"a:", {"a": ""}),  # An empty value is the empty string.
    (b"url:http://x:8080/p", {"url": "http://x:8080/p"}),  # Split at the first ':' only.
    (b"list:a%2Cb%2Cc", {"list": "a,b,c"}),  # A ',' in a value is %2C.
    (b"k%3Ay:1", None),  # A ':' in a key decodes to a name that is not an identifier (below, as an error).
    (b"sum:1+1", {"sum": "1+1"}),  # '+' is not a space.
    (b"q:a&b=c", {"q": "a&b=c"}),  # '&' and '=' mean nothing.
    (b"name:%C3%A9t%C3%A9", {"name": "été"}),  # Percent-decoded UTF-8.
    ("name:été".encode(), {"name": "été"}),  # Raw UTF-8 as some clients send it.
    (b"_private:1,x2:2", {"_private": "1", "x2": "2"}),
    (b"sp:%20a%20", {"sp": " a "}),
    (b"pct:100%25", {"pct": "100%"}),
]
BAD = [
    (b"a:1,,b:2", "argument 2 is empty"),
    (b"a:1,", "argument 2 is empty"),
    (b",a:1", "argument 1 is empty"),
    (b"a", "has no ':'"),
    (b"a=1", "has no ':'"),
    (b":1", "is not a valid name"),
    (b"1a:1", "is not a valid name"),
    (b"a-b:1", "is not a valid name"),
    (b"k%3Ay:1", "is not a valid name"),
    ("é:1".encode(), "is not a valid name"),  # ASCII identifiers only.
    (b"a:1,a:2", "a is given twice"),
    (b"a:1,b:2,a:3", "argument 3: a is given twice"),
    (b"a:%zz", "not followed by two hex digits"),
    (b"a:100%", "not followed by two hex digits"),
    (b"a:%ff", "not UTF-8"),
    (b"%ff:1", "not UTF-8"),
    (b"a:x%00y", "NUL"),
]


@pytest.mark.parametrize(("query", "expected"), [case for case in GOOD if case[1] is not None])
def test_valid_argument_lists(query: bytes, expected: dict[str, str]) -> None:
    assert parse_call_args(query) == expected


@pytest.mark.parametrize(("query", "reason"), BAD)
def test_invalid_argument_lists_are_400_naming_the_argument(query: bytes, reason: str) -> None:
    with pytest.raises(ArgumentError) as caught:
        parse_call_args(query)
    assert reason in caught.value.message
    assert isinstance(caught.value, InvalidRequest) and caught.value.http_status == 400
    assert "\n" not in caught.value.message


def test_a_long_bad_key_is_quoted_short() -> None:
    with pytest.raises(ArgumentError) as caught:
        parse_call_args(b"-" * 10_000 + b":1")
    assert len(caught.value.message) < 200


@pytest.mark.parametrize("query", [query for query, expected in GOOD if expected])
def test_what_the_driver_reads_back_is_what_was_parsed(query: bytes) -> None:
    """The gateway forwards ``encode_call_args``; the driver gets ``parse_qsl`` of it (pyworker's Event)."""
    args = parse_call_args(query)
    encoded = encode_call_args(args)
    assert encoded.isascii() and b"," not in encoded and b":" not in encoded
    assert dict(parse_qsl(encoded.decode(), keep_blank_values=True)) == args


def test_every_value_byte_survives_the_round_trip() -> None:
    value = "".join(chr(code) for code in range(1, 0x250))
    args = {"v": value}
    assert dict(parse_qsl(encode_call_args(args).decode(), keep_blank_values=True)) == args
