"""A lean, strict, sans-I/O HTTP/1.1 request parser for faasd's hot paths.

Why not h11: measured on these machines h11 costs ~38 µs to parse one small request and serialise the
answer, against ~2 µs for this parser; the whole fork-mode watchdog spends ~100 µs of its own CPU per
call, so h11 alone would cost a third of it. This module keeps h11's shape (bytes in, events out, no
sockets; see ``h11/_connection.py``) but does only what a function endpoint needs:

* request line and headers, with the framing rules that prevent request smuggling: ``Content-Length``
  and ``Transfer-Encoding`` together are rejected, differing ``Content-Length`` values are rejected,
  only ``chunked`` transfer coding is accepted, obsolete line folding and bare CR/LF are rejected;
* bodies by ``Content-Length`` or chunked (trailers are read and dropped);
* limits: the head (:data:`DEFAULT_MAX_HEADER_BYTES`) and the body (:data:`DEFAULT_MAX_BODY_BYTES`).
  A body over the limit is refused as soon as ``Content-Length`` says so, before it is read.

Every error is a :class:`RemoteProtocolError` carrying the status to answer (h11's
``error_status_hint``); after one, the connection must be closed.
"""

from __future__ import annotations

from faasd.calltoken import HEADER_LOWER as _CALL_TOKEN

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:  # Type checkers see dataclasses; the watchdog's start does not import them.
    from dataclasses import dataclass as record
else:
    from faasd.record import record

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "ChunkedDecoder",
    "RemoteProtocolError",
    "Request",
    "RequestParser",
    "ResponseHead",
    "canonical_header_name",
    "parse_response_head",
]

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
"""Largest request line + headers accepted; more is answered 431."""

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body accepted; more is answered 413."""

MAX_CHUNK_LINE_BYTES = 4096
"""Longest chunk-size line (size plus extensions) accepted in a chunked body."""

# Byte classes, checked with ``bytes.translate(None, allowed)`` (what is left is what is not allowed) rather
# than regular expressions: the same checks, a little faster per call, and no ``re`` import or pattern
# compilation in the watchdog's start-up (about 3 ms of its exec -> first 200; docs/coldstart.md).
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"""RFC 9110 ``tchar``: what a method or a header name is made of."""
_TARGET_BYTES = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
"""A request target is visible ASCII (raw UTF-8 bytes tolerated): never a control byte, which would
reach the function as a NUL it cannot be given or an escape sequence in a log."""
_CONTROL_BYTES = bytes(range(0x20)) + b"\x7f"
_HEX_BYTES = b"0123456789ABCDEFabcdef"
_HTTP_VERSIONS = {b"HTTP/1.0": False, b"HTTP/1.1": True}
"""The versions accepted, and whether each is HTTP/1.1."""


def _is_token(data: bytes) -> bool:
    """``data`` is one or more ``tchar``. The usual method or header name is letters, digits and ``-``:
    ``bytes.isalnum`` answers that in a few ns (ASCII only, False when empty); the rest gets the byte-class
    check."""
    return data.replace(b"-", b"").isalnum() or (bool(data) and not data.translate(None, _TOKEN_BYTES))


def _is_digits(data: bytes, longest: int = 19) -> bool:
    """``data`` is 1 to ``longest`` ASCII digits (``bytes.isdigit`` looks at ASCII only)."""
    return 0 < len(data) <= longest and data.isdigit()


def _is_target(data: bytes) -> bool:
    """``data`` is a request target's bytes: visible ASCII or raw UTF-8, at least one."""
    return bool(data) and not data.translate(None, _TARGET_BYTES)


def _is_hex(data: bytes) -> bool:
    """``data`` is 1 to 16 hex digits: a chunk size that fits in 64 bits."""
    return 0 < len(data) <= 16 and not data.translate(None, _HEX_BYTES)


class RemoteProtocolError(Exception):
    """The peer sent something that is not acceptable HTTP/1.1; answer ``status`` and close.

    Attributes:
        status: the HTTP status to answer with (400, 413, 431, 501, 505).
        reason: one line for the response body and the log.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@record(slots=True)
class Request:
    """One parsed request. ``headers`` keeps arrival order; names are lower-cased ``str``."""

    method: str
    target: str
    path: str
    query: str
    http11: bool
    headers: list[tuple[str, str]]
    keep_alive: bool
    expect_continue: bool
    content_type: str | None
    content_length: int
    """Declared length, or -1 for a chunked body whose length was unknown up front."""
    host: str
    body: bytes = b""
    raw_head: bytes = b""
    """The request line and headers as received (no final blank line), for proxies that can forward
    them untouched."""
    forwardable: bool = False
    """True when ``raw_head`` can go to an upstream as is: no connection-specific header (RFC 9110
    7.6.1), no ``Expect``/``X-Timeout``, and the body framed by ``Content-Length`` (or absent)."""
    call_token: bytes | None = None
    """The value of faasd's call token header (:mod:`faasd.calltoken`), taken out of ``headers`` and
    ``raw_head``: it is the watchdog's to check, never the function's to see."""

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


_canonical_cache: dict[str, str] = {}


def canonical_header_name(lower_name: str) -> str:
    """Return the Go-canonical form of a header name: ``x-request-id`` -> ``X-Request-Id``.

    The OpenFaaS watchdogs build ``Http_<Name>`` env vars from this form, so functions written for
    them find the same variable names here. Results are cached: header names repeat on every call.
    """
    canonical = _canonical_cache.get(lower_name)
    if canonical is None:
        canonical = "-".join(part[:1].upper() + part[1:] for part in lower_name.split("-"))
        if len(_canonical_cache) < 1024:
            _canonical_cache[lower_name] = canonical
    return canonical


# Parser states.
_HEAD = 0
_BODY_LENGTH = 1
_CHUNKED = 2

# ChunkedDecoder states.
_CHUNK_SIZE = 0
_CHUNK_DATA = 1
_CHUNK_CRLF = 2
_TRAILERS = 3


class ChunkedDecoder:
    """Incremental decoder of a ``Transfer-Encoding: chunked`` body (requests and responses).

    :meth:`feed` returns the data decoded from the bytes given; once :attr:`done`, :attr:`leftover`
    holds what followed the body. Trailer fields are read and dropped.

    Raises (from feed):
        RemoteProtocolError: malformed framing (``error_status``), or the body passes ``max_bytes``
            (413) or the trailers pass ``max_trailer_bytes`` (431).
    """

    __slots__ = (
        "_buffer",
        "_remaining",
        "_state",
        "done",
        "error_status",
        "leftover",
        "max_bytes",
        "max_trailer_bytes",
        "total",
    )

    def __init__(self, max_bytes: int, max_trailer_bytes: int, *, error_status: int) -> None:
        self.max_bytes = max_bytes
        self.max_trailer_bytes = max_trailer_bytes
        self.error_status = error_status
        self.total = 0
        self.done = False
        self.leftover = b""
        self._buffer = b""
        self._state = _CHUNK_SIZE
        self._remaining = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Decode what ``data`` completes; keeps any partial size line or CRLF for the next call."""
        buffer = self._buffer + data if self._buffer else data
        pieces: list[bytes] = []
        while not self.done:
            state = self._state
            if state == _CHUNK_DATA:
                if not buffer:
                    break
                take = buffer[: self._remaining]
                pieces.append(take)
                self._remaining -= len(take)
                buffer = buffer[len(take) :]
                if not self._remaining:
                    self._state = _CHUNK_CRLF
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_CHUNK_LINE_BYTES:
                        raise RemoteProtocolError(self.error_status, "Chunk size line too long")
                    break
                size_text = buffer[:end].split(b";", 1)[0].strip(b" \t")
                if not _is_hex(size_text):
                    raise RemoteProtocolError(self.error_status, "Invalid chunk size")
                size = int(size_text, 16)
                buffer = buffer[end + 2 :]
                if size == 0:
                    self._state = _TRAILERS
                    continue
                self.total += size
                if self.total > self.max_bytes:
                    raise RemoteProtocolError(413, _too_large(self.max_bytes))
                self._remaining = size
                self._state = _CHUNK_DATA
            elif state == _CHUNK_CRLF:
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise RemoteProtocolError(self.error_status, "Chunk data not followed by CRLF")
                buffer = buffer[2:]
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS: read and drop trailer fields up to the empty line.
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > self.max_trailer_bytes:
                        raise RemoteProtocolError(431, "Trailer fields too large")
                    break
                buffer = buffer[end + 2 :]
                if end == 0:
                    self.done = True
                    self.leftover = buffer
                    buffer = b""
        self._buffer = buffer
        return pieces


class RequestParser:
    """Turn the bytes of one connection into :class:`Request` objects, one at a time.

    Usage: :meth:`feed` what the socket delivers, then call :meth:`next_request` until it returns None
    (more bytes needed). :attr:`pending` is the request whose head is parsed but whose body is still
    arriving (to answer ``Expect: 100-continue`` and to tell an idle connection from a slow client).
    """

    __slots__ = (
        "_buffer",
        "_chunks",
        "_decoder",
        "_remaining",
        "_state",
        "max_body_bytes",
        "max_header_bytes",
        "pending",
    )

    def __init__(
        self,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.pending: Request | None = None
        self._buffer = b""
        self._state = _HEAD
        self._chunks: list[bytes] = []
        self._remaining = 0
        self._decoder: ChunkedDecoder | None = None

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buffer = self._buffer + data if self._buffer else data

    def take_buffered(self) -> bytes:
        """Hand back the bytes received after the last complete request (the start of a pipelined next
        one), emptying the parser's buffer: for a caller that parses one request and serves the rest
        elsewhere (the gateway's invoke fast path)."""
        rest = self._buffer
        self._buffer = b""
        return rest

    @property
    def has_partial_request(self) -> bool:
        """True when some bytes of a request not yet complete have arrived."""
        return self.pending is not None or bool(self._buffer.strip(b"\r\n"))

    def next_request(self) -> Request | None:
        """Return the next complete request, or None when more bytes are needed.

        Raises:
            RemoteProtocolError: the bytes are not an acceptable request; answer its status and close.
        """
        if self._state == _HEAD:
            buffer = self._buffer
            if buffer[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request line.
                buffer = self._buffer = buffer.lstrip(b"\r\n")
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self.max_header_bytes:
                    raise RemoteProtocolError(431, "Request header fields too large")
                return None
            if end > self.max_header_bytes:
                raise RemoteProtocolError(431, "Request header fields too large")
            request, framing, length = _parse_head(buffer[:end])
            self._buffer = buffer[end + 4 :]
            if framing == _HEAD:
                return request
            if length > self.max_body_bytes:
                raise RemoteProtocolError(413, _too_large(self.max_body_bytes))
            self.pending = request
            self._state = framing
            self._remaining = length
            if framing == _CHUNKED:
                self._decoder = ChunkedDecoder(self.max_body_bytes, self.max_header_bytes, error_status=400)
            # Fast path: the whole body came with the head.
            if framing == _BODY_LENGTH and len(self._buffer) >= length:
                request.body = self._buffer[:length]
                self._buffer = self._buffer[length:]
                self.pending = None
                self._state = _HEAD
                return request
        return self._continue_body()

    def _continue_body(self) -> Request | None:
        request = self.pending
        assert request is not None
        buffer = self._buffer
        if self._state == _BODY_LENGTH:
            if not buffer:
                return None
            take = buffer[: self._remaining]
            self._chunks.append(take)
            self._remaining -= len(take)
            self._buffer = buffer[len(take) :]
            return None if self._remaining else self._finish(request)
        decoder = self._decoder
        assert decoder is not None
        self._buffer = b""
        self._chunks.extend(decoder.feed(buffer))
        if not decoder.done:
            return None
        self._buffer = decoder.leftover
        self._decoder = None
        return self._finish(request)

    def _finish(self, request: Request) -> Request:
        request.body = b"".join(self._chunks)
        if request.content_length < 0:
            request.content_length = len(request.body)
        self._chunks = []
        self.pending = None
        self._state = _HEAD
        return request


_NOT_FORWARDABLE = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "x-timeout",
    }
)


def _too_large(limit: int) -> str:
    return f"Request body exceeds max_body_bytes ({limit} bytes)"


def _parse_head(head: bytes) -> tuple[Request, int, int]:
    """Parse a request head (without the final blank line); return the request, its framing state
    (``_HEAD`` for no body, ``_BODY_LENGTH`` or ``_CHUNK_SIZE``) and the declared length."""
    # Bare CR or LF inside the head would let a proxy and us disagree on where headers end.
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise RemoteProtocolError(400, "Bare CR or LF in request head")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise RemoteProtocolError(400, "Malformed request line")
    method_bytes, target_bytes, version = parts
    http11 = _HTTP_VERSIONS.get(version)
    target = target_bytes.decode("latin-1")
    # The usual target is printable text: str.isprintable answers that in a few ns (of the latin-1 text, a
    # subset of what a target may hold); the byte-class check is for the rest.
    if (
        http11 is None
        or not _is_token(method_bytes)
        or not ((target and target.isprintable()) or _is_target(target_bytes))
    ):
        if version.startswith(b"HTTP/") and version not in _HTTP_VERSIONS:
            raise RemoteProtocolError(505, "HTTP version not supported")
        if len(target_bytes.translate(None, _CONTROL_BYTES)) != len(target_bytes):
            raise RemoteProtocolError(400, "Control character in request target")
        raise RemoteProtocolError(400, "Malformed request line")
    headers: list[tuple[str, str]] = []
    content_length = -1
    chunked = False
    has_transfer_encoding = False
    connection = ""
    expect_continue = False
    content_type: str | None = None
    host: str | None = None
    forwardable = True
    call_token: bytes | None = None
    token_lines: list[bytes] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _is_token(name):
            if line[:1] in (b" ", b"\t"):
                raise RemoteProtocolError(400, "Obsolete header line folding is not accepted")
            raise RemoteProtocolError(400, "Malformed header line")
        key = name.decode("ascii").lower()
        if key == _CALL_TOKEN:
            if call_token is None:
                call_token = value.strip(b" \t")
            token_lines.append(line)
            continue
        if key in _NOT_FORWARDABLE:
            forwardable = False
        text = value.strip(b" \t").decode("latin-1")
        if "\x00" in text:
            raise RemoteProtocolError(400, "NUL byte in header value")
        headers.append((key, text))
        if key == "content-length":
            if not _is_digits(value.strip(b" \t")):
                raise RemoteProtocolError(400, "Invalid Content-Length")
            length = int(text)
            if content_length >= 0 and length != content_length:
                raise RemoteProtocolError(400, "Conflicting Content-Length headers")
            content_length = length
        elif key == "transfer-encoding":
            has_transfer_encoding = True
            codings = [coding.strip().lower() for coding in text.split(",")]
            if codings != ["chunked"] or chunked:
                raise RemoteProtocolError(501, "Only Transfer-Encoding: chunked is supported")
            chunked = True
        elif key == "connection":
            connection = text.lower()
        elif key == "expect":
            if text.lower() != "100-continue":
                raise RemoteProtocolError(417, "Only Expect: 100-continue is supported")
            expect_continue = http11
        elif key == "content-type":
            if content_type is None:
                content_type = text
        elif key == "host":
            if host is not None:
                raise RemoteProtocolError(400, "More than one Host header")
            host = text
    if has_transfer_encoding and content_length >= 0:
        raise RemoteProtocolError(400, "Both Content-Length and Transfer-Encoding given")
    if http11 and host is None:
        raise RemoteProtocolError(400, "Missing Host header")
    if target[:1] != "/":
        target = _origin_form(target, method_bytes)
    path, _, query = target.partition("?")
    if "%" in path:
        from urllib.parse import unquote  # Here: urllib.parse (and ipaddress) cost every watchdog's start.

        path = unquote(path, errors="surrogateescape")
    keep_alive = "close" not in connection if http11 else "keep-alive" in connection
    if token_lines:  # Cut out of the head a proxy may forward as is (the gateway sends it last).
        for line in token_lines:
            head = head.replace(b"\r\n" + line, b"", 1)
    request = Request(
        method=method_bytes.decode("ascii"),
        target=target,
        path=path,
        query=query,
        http11=http11,
        headers=headers,
        keep_alive=keep_alive,
        expect_continue=expect_continue,
        content_type=content_type,
        content_length=content_length if not chunked else -1,
        host=host or "",
        raw_head=head,
        forwardable=forwardable and not chunked and http11,
        call_token=call_token,
    )
    if chunked:
        return request, _CHUNKED, 0
    if content_length > 0:
        return request, _BODY_LENGTH, content_length
    request.content_length = 0
    return request, _HEAD, 0


def _origin_form(target: str, method: bytes) -> str:
    """Reduce an absolute-form target (``http://host/p?q``) to ``/p?q``; accept ``*`` for OPTIONS."""
    if target == "*" and method == b"OPTIONS":
        return "*"
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise RemoteProtocolError(400, "Malformed request target")
    slash = rest.find("/")
    question = rest.find("?")
    if slash < 0 or (0 <= question < slash):
        return "/" + (rest[question:] if question >= 0 else "")
    return rest[slash:]


# Body framing of a response, decided from its head (RFC 9112 section 6.3).
FRAMING_NONE = 0
"""No body (HEAD, 1xx, 204, 304, or Content-Length: 0)."""
FRAMING_LENGTH = 1
FRAMING_CHUNKED = 2
FRAMING_UNTIL_CLOSE = 3


@record(slots=True)
class ResponseHead:
    """An upstream response's status line and headers (names lower-cased bytes, as ASGI wants)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    framing: int
    content_length: int
    keep_alive: bool


def parse_response_head(head: bytes, *, request_method: str) -> ResponseHead:
    """Parse a response head (without the final blank line) from a function replica.

    Raises:
        RemoteProtocolError: status 502 -- the replica answered something that is not HTTP/1.x.
    """
    lines = head.split(b"\r\n")
    status_line = lines[0]
    http11 = _HTTP_VERSIONS.get(status_line[:8])
    code = status_line[9:12]
    reason = status_line[12:]
    if (
        http11 is None
        or status_line[8:9] != b" "
        or not _is_digits(code)
        or len(code) != 3
        or (reason and (reason[:1] != b" " or b"\r" in reason or b"\n" in reason))
    ):
        raise RemoteProtocolError(502, "Upstream sent a malformed status line")
    status = int(code)
    headers: list[tuple[bytes, bytes]] = []
    content_length = -1
    chunked = False
    connection = b""
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _is_token(name):
            raise RemoteProtocolError(502, "Upstream sent a malformed header line")
        key = name.lower()
        value = value.strip(b" \t")
        if key == b"content-length":
            if not _is_digits(value) or (content_length >= 0 and int(value) != content_length):
                raise RemoteProtocolError(502, "Upstream sent an invalid Content-Length")
            content_length = int(value)
        elif key == b"transfer-encoding":
            chunked = value.lower() == b"chunked"
            if not chunked:
                raise RemoteProtocolError(502, "Upstream used a transfer coding other than chunked")
        elif key == b"connection":
            connection = value.lower()
        headers.append((key, value))
    keep_alive = (b"close" not in connection) if http11 else (b"keep-alive" in connection)
    if request_method == "HEAD" or status < 200 or status in (204, 304):
        framing = FRAMING_NONE
    elif chunked:
        framing = FRAMING_CHUNKED
    elif content_length >= 0:
        framing = FRAMING_LENGTH if content_length else FRAMING_NONE
    else:
        framing = FRAMING_UNTIL_CLOSE
        keep_alive = False
    return ResponseHead(status, headers, framing, content_length, keep_alive)
