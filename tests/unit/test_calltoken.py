"""faasd/calltoken.py and the parser's side of it: one token per state dir (0600), read back the same,
refused when others may have read it; the header is taken out of the request before anyone sees it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from faasd.calltoken import (
    HEADER,
    TOKEN_FILE,
    CallToken,
    TokenError,
    check_token,
    load_or_create,
    read_token_fd,
    read_token_file,
)
from faasd.http1 import RequestParser
from faasd.watchdog.config import ConfigError, WatchdogConfig


def test_made_once_per_state_dir_0600_whatever_the_umask(tmp_path: Path):
    old = os.umask(0)
    try:
        first = load_or_create(str(tmp_path))
    finally:
        os.umask(old)
    path = tmp_path / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_or_create(str(tmp_path)) == first
    assert load_or_create(str(tmp_path / ".." / tmp_path.name)) == first
    other = tmp_path / "other"
    other.mkdir()
    assert load_or_create(str(other)) != first


def test_a_token_file_others_may_read_is_refused(tmp_path: Path):
    load_or_create(str(tmp_path))
    path = tmp_path / TOKEN_FILE
    path.chmod(0o644)
    with pytest.raises(OSError, match=r"readable by others .*0644.*delete it"):
        load_or_create(str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"short\n", b"has space in it 0123456789", b"x" * 300, b"\xff" * 20])
def test_a_token_file_holding_junk_is_refused_with_the_path(tmp_path: Path, content: bytes):
    path = tmp_path / TOKEN_FILE
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(TokenError, match=TOKEN_FILE):
        load_or_create(str(tmp_path))


def test_a_symlink_is_not_followed(tmp_path: Path):
    target = tmp_path / "elsewhere"
    target.write_text("a" * 40)
    target.chmod(0o600)
    (tmp_path / TOKEN_FILE).symlink_to(target)
    with pytest.raises(OSError):
        load_or_create(str(tmp_path))


def test_read_from_an_fd_closes_it_and_from_a_file(tmp_path: Path):
    read_end, write_end = os.pipe()
    os.write(write_end, b"  0123456789abcdefXYZ-_\n")
    os.close(write_end)
    assert read_token_fd(read_end) == b"0123456789abcdefXYZ-_"
    with pytest.raises(OSError):
        os.fstat(read_end)
    path = tmp_path / "t"
    path.write_bytes(b"0123456789abcdefXYZ-_\n")
    assert read_token_file(str(path)) == b"0123456789abcdefXYZ-_"
    with pytest.raises(TokenError, match="cannot read"):
        read_token_fd(read_end)


def test_holder_makes_the_header_line_and_hides_the_value():
    token = CallToken(b"0123456789abcdef0123")
    assert token.header_line == b"\r\n" + HEADER.encode() + b": 0123456789abcdef0123"
    assert "0123456789" not in repr(token)
    token.set(b"abcdefabcdefabcdefab")
    assert token.header_line.endswith(b": abcdefabcdefabcdefab")
    with pytest.raises(TokenError):
        token.set(b"bad token with\r\nnewline")
    with pytest.raises(TokenError):
        check_token(b"a" * 15)


def _parse(raw: bytes):
    parser = RequestParser()
    parser.feed(raw)
    return parser.next_request()


@pytest.mark.parametrize("name", [b"X-Faasd-Call-Token", b"x-faasd-call-token", b"X-FAASD-CALL-TOKEN"])
def test_the_parser_takes_the_token_header_out_of_the_request(name: bytes):
    raw = b"GET /p HTTP/1.1\r\nHost: h\r\n" + name + b":  s3cret-value-0123 \r\nX-A: 1\r\n\r\n"
    request = _parse(raw)
    assert request.call_token == b"s3cret-value-0123"
    assert request.headers == [("host", "h"), ("x-a", "1")]
    assert request.raw_head == b"GET /p HTTP/1.1\r\nHost: h\r\nX-A: 1"
    assert request.forwardable


def test_without_the_header_the_request_is_untouched():
    raw = b"GET /p HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"
    request = _parse(raw)
    assert request.call_token is None
    assert request.raw_head == raw[:-4]


def test_watchdog_config_reads_the_token_sources():
    base = {"fprocess": "cat", "PATH": "/usr/bin:/bin"}
    assert WatchdogConfig.from_env(base).call_token_fd is None
    assert WatchdogConfig.from_env({**base, "call_token_fd": "7"}).call_token_fd == 7
    assert WatchdogConfig.from_env({**base, "call_token_file": "/run/t"}).call_token_file == "/run/t"
    for bad in ({"call_token_fd": "x"}, {"call_token_fd": "2"}, {"call_token_fd": "3", "listen_fd": "3"}):
        with pytest.raises(ConfigError, match="call_token_fd"):
            WatchdogConfig.from_env({**base, **bad})
    with pytest.raises(ConfigError, match="not both"):
        WatchdogConfig.from_env({**base, "call_token_fd": "7", "call_token_file": "/run/t"})


def test_every_token_header_is_cut_out_and_the_first_value_kept():
    raw = (
        b"POST /p HTTP/1.1\r\nX-Faasd-Call-Token: abcdef\r\nHost: h\r\nx-faasd-call-token: abc\r\n"
        b"X-Faasd-Call-Token-Not: kept\r\nContent-Length: 1\r\n\r\nz"
    )
    request = _parse(raw)
    assert request.call_token == b"abcdef"
    assert request.raw_head == b"POST /p HTTP/1.1\r\nHost: h\r\nX-Faasd-Call-Token-Not: kept\r\nContent-Length: 1"
    assert [name for name, _ in request.headers] == ["host", "x-faasd-call-token-not", "content-length"]
    assert request.body == b"z"
