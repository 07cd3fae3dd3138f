"""The sans-I/O request parser: framing, limits and the smuggling rules, byte by byte."""

from __future__ import annotations

import pytest

from faasd.http1 import RemoteProtocolError, RequestParser, canonical_header_name


def parse_all(data: bytes, **limits: int) -> list:
    parser = RequestParser(**limits)
    parser.feed(data)
    requests = []
    while (request := parser.next_request()) is not None:
        requests.append(request)
    return requests


def parse_error(data: bytes, **limits: int) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_all(data, **limits)
    return info.value


def test_simple_post_with_body():
    [request] = parse_all(
        b"POST /fn/x?a=1&b=2 HTTP/1.1\r\nHost: h:8080\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 5\r\nX-Custom: v\r\n\r\nhello"
    )
    assert request.method == "POST"
    assert request.path == "/fn/x"
    assert request.query == "a=1&b=2"
    assert request.body == b"hello"
    assert request.content_type == "text/plain"
    assert request.content_length == 5
    assert request.host == "h:8080"
    assert request.keep_alive and request.http11
    assert request.header("x-custom") == "v"


def test_byte_at_a_time_gives_the_same_request():
    data = b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    parser = RequestParser()
    got = None
    for index in range(len(data)):
        parser.feed(data[index : index + 1])
        request = parser.next_request()
        if request is not None:
            got = request
            assert index == len(data) - 1
    assert got is not None and got.body == b"abc"


def test_pipelined_requests_come_out_in_order():
    data = (
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert [r.path for r in parse_all(data)] == ["/a", "/b", "/c"]


def test_chunked_body_with_extensions_and_trailers():
    [request] = parse_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    assert request.body == b"hello world"
    assert request.content_length == 11


def test_chunked_body_fed_in_pieces():
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    parser = RequestParser()
    result = None
    for index in range(0, len(data), 3):
        parser.feed(data[index : index + 3])
        result = parser.next_request() or result
    assert result is not None and result.body == b"abcde"


def test_pending_head_is_visible_while_body_arrives():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert parser.next_request() is None
    assert parser.pending is not None and parser.pending.expect_continue
    parser.feed(b"body")
    assert parser.next_request().body == b"body"
    assert parser.pending is None


def test_http10_closes_unless_keep_alive():
    [plain] = parse_all(b"GET / HTTP/1.0\r\n\r\n")
    assert not plain.keep_alive and not plain.http11
    [kept] = parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert kept.keep_alive


def test_connection_close_on_http11():
    [request] = parse_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert not request.keep_alive


def test_leading_empty_lines_are_ignored():
    [request] = parse_all(b"\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.path == "/x"


def test_absolute_form_target_is_reduced_to_path():
    [request] = parse_all(b"GET http://example.com/p/q?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert request.path == "/p/q" and request.query == "x=1"


def test_percent_encoded_path_is_decoded_query_is_raw():
    [request] = parse_all(b"GET /a%20b?c=%20 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.path == "/a b"
    assert request.query == "c=%20"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\nX: bare-lf\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n", 417),
        (b"GET nohost HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_a_status(data: bytes, status: int):
    assert parse_error(data).status == status


@pytest.mark.parametrize("byte", [b for b in (*range(0x20), 0x7F) if b not in (0x0A, 0x0D)])  # CR/LF: bare CR or LF
def test_control_bytes_in_the_target_are_refused_with_their_own_reason(byte: int):
    for target in (b"/a%cb" % byte, b"/?q=%c" % byte):
        error = parse_error(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (error.status, error.reason) == (400, "Control character in request target"), target


def test_raw_utf8_in_the_target_is_tolerated():
    [request] = parse_all("GET /caf\u00e9?q=\u2713 HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert request.path.encode("latin-1").decode() == "/caf\u00e9"


def test_content_length_over_limit_is_refused_before_the_body():
    error = parse_error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n", max_body_bytes=1000)
    assert error.status == 413
    assert "max_body_bytes" in error.reason


def test_chunked_body_over_limit_is_refused_while_reading():
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"x" * 512 + b"\r\n"
    parser = RequestParser(max_body_bytes=1000)
    parser.feed(data)
    assert parser.next_request() is None
    parser.feed(b"200\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_request()
    assert info.value.status == 413


def test_head_over_limit_is_431_even_without_the_end_of_headers():
    assert parse_error(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, max_header_bytes=1024).status == 431
    assert (
        parse_error(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 2000 + b"\r\n\r\n", max_header_bytes=1024).status
        == 431
    )


def test_incomplete_head_waits_for_more():
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert parser.next_request() is None
    assert parser.has_partial_request


@pytest.mark.parametrize(
    ("lower", "canonical"),
    [
        ("x-request-id", "X-Request-Id"),
        ("content-type", "Content-Type"),
        ("user-agent", "User-Agent"),
        ("x", "X"),
        ("a--b", "A--B"),
    ],
)
def test_canonical_header_names_match_go(lower: str, canonical: str):
    assert canonical_header_name(lower) == canonical


# The parser checks byte classes with bytes.translate (no ``re`` in the watchdog's start-up). These compare it,
# over many generated lines, with the regular expressions of the grammar it implements.
_PIECES = [b"GET", b"POST", b"M-1!", b"/", b"/a?b=c", b"\xc3\xa9", b"@", b"\x00", b"\x7f", b"\x1f", b"\t", b" ", b""]
_VERSIONS = [
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/1.",
    b"http/1.1",
    b"HTTP/1.10",
    b"HTTP/1.1 ",
]


def _request_lines(count: int) -> list[bytes]:
    import random

    generator = random.Random(1234)
    lines = []
    for _ in range(count):
        weights = [8] * 7 + [1] * 6  # Mostly visible pieces, so that many lines are valid.
        method = b"".join(generator.choices(_PIECES, weights, k=generator.randint(0, 2)))
        target = generator.choice([b"/", b""]) + b"".join(
            generator.choices(_PIECES, weights, k=generator.randint(0, 3))
        )
        lines.append(method + b" " + target + b" " + generator.choice(_VERSIONS))
    return lines


def test_request_lines_are_accepted_exactly_as_the_grammar_says():
    import re

    token = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    grammar = re.compile(rb"(" + token + rb") ([\x21-\x7e\x80-\xff]+) HTTP/1\.([01])")
    lines = _request_lines(4000)
    accepted = 0
    for line in lines:
        expected = grammar.fullmatch(line)
        if expected is None or not expected.group(2).startswith(b"/"):  # Origin form only, here.
            assert parse_error(line + b"\r\nHost: h\r\n\r\n").status in (400, 505), line
            continue
        accepted += 1
        [request] = parse_all(line + b"\r\nHost: h\r\n\r\n")
        assert request.method == expected.group(1).decode("ascii"), line
        assert request.http11 == (expected.group(3) == b"1"), line
    assert 100 < accepted < len(lines) - 100  # Both sides of the grammar were exercised.


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b"HTTP/1.1 200 OK", True),
        (b"HTTP/1.0 404", True),
        (b"HTTP/1.1 204 ", True),
        (b"HTTP/1.1 200 Fine \xff", True),
        (b"HTTP/1.1 2000 OK", False),
        (b"HTTP/1.1 20 OK", False),
        (b"HTTP/1.1 2x0 OK", False),
        (b"HTTP/1.1  200 OK", False),
        (b"HTTP/1.1 200OK", False),
        (b"HTTP/1.1 200 O\rK", False),
        (b"HTTP/1.1 200 O\nK", False),
        (b"HTTP/2.0 200 OK", False),
        (b"HTTP/1.1", False),
        (b"", False),
        (b"HTTP/1.1 \xd9\xa1\xd9\xa2\xd9\xa3", False),
    ],
)
def test_a_replica_status_line_is_checked_like_the_grammar(line: bytes, ok: bool):
    from faasd.http1 import parse_response_head

    if ok:
        assert parse_response_head(line + b"\r\nContent-Length: 0", request_method="GET").status == int(line[9:12])
    else:
        with pytest.raises(RemoteProtocolError):
            parse_response_head(line + b"\r\nContent-Length: 0", request_method="GET")
