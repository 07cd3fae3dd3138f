"""The invoke fast path: a whole function call read off the socket and answered without h11 or ASGI.

Why: behind hypercorn, a proxied call cost the daemon ~0.8-1.1 ms of CPU, as much as a hypercorn
hello world, most of it per-request machinery (h11 parsing and serialising, an ASGI task, its receive
queue, the event dicts) rather than the proxying itself, so the gateway saturated one core near
1,000 calls/s and took the CPU the replicas needed. The watchdog had shown the cure: the sans-I/O
parser in :mod:`faasd.http1` costs a few microseconds per request.

How: the daemon's server (:mod:`faasd.gateway.server`) still owns every connection, its deadlines and
limits. When a connection is between requests, it looks at the bytes that came in
(:func:`classify`): a request for an invoke route (``/function/*``, and ``POST /`` with
``X-Function``) that is **whole in what was received** -- head and body in hand, HTTP/1.1, nothing
:mod:`faasd.http1` or the checks here refuse -- is answered here, on the connection's own task, by
:meth:`faasd.gateway.invoke.Invoker.invoke_raw`. Anything else -- another route, a body still to come
(large or slow uploads), ``Expect``, ``Upgrade``, HTTP/1.0, a control byte, a head that does not
parse -- goes to hypercorn's protocol exactly as before, from its first byte, so every hostile-input
answer stays the one the reliability suite pins. Memory: what is held per connection is at most one
read (64 KiB) plus an unfinished head (``max_header_bytes``).

A call answered here still runs the same checks (name, namespace, NUL in the path), metrics, load
meter, routing, call token, hold at zero replicas, failover and error answers as the ASGI route.
"""

from __future__ import annotations

import enum
import re

from faasd.errors import InvalidRequest
from faasd.gateway.invoke import NUL_MESSAGE, Invoker, raw_call_headers, text_answer
from faasd.gateway.proxy import Write
from faasd.http1 import RemoteProtocolError, Request, RequestParser

__all__ = ["FastInvokeRoute", "Verdict", "classify", "split_call"]

_FUNCTION = b"/function/"
_UNSAFE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control bytes h11 refuses in a head (CR and LF are checked by :mod:`faasd.http1`): such a request
goes to hypercorn, which answers it as before."""
_ASCII_TARGET = re.compile(rb"[\x21-\x7e]+")
_METHOD = re.compile(rb"[A-Z]{1,16}")
_METHOD_START = re.compile(rb"[A-Z]{0,16}")
PREREAD_LIMIT = 1024 * 1024
"""Largest body the fast path takes (it must also have come in whole with its head)."""


class Verdict(enum.Enum):
    FAST = "fast"
    """A whole invoke request: serve it here."""
    SLOW = "slow"
    """Give these bytes (and what follows) to hypercorn's protocol."""
    MORE = "more"
    """Could be an invoke request whose head is not complete yet: keep the bytes and read on."""


class FastInvokeRoute:
    """The invoke routes on the fast path; see the module docstring."""

    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker

    def accepts_line(self, method: bytes, target: bytes) -> bool:
        """Could a request with this request line be served here?"""
        return target.startswith(_FUNCTION) or (target == b"/" and method == b"POST")

    async def serve(self, request: Request, target: bytes, client: str, write: Write) -> bool:
        """Answer ``request`` (the raw ``target`` of its request line); True when the connection may be
        kept for another request."""
        name, upstream, nul = split_call(request, target)
        if nul:
            headers = raw_call_headers(request)
            await write(text_answer(InvalidRequest.http_status, NUL_MESSAGE, headers, request.keep_alive))
            return request.keep_alive
        return await self.invoker.invoke_raw(request, name, upstream, client, write)


def split_call(request: Request, target: bytes) -> tuple[str, bytes, bool]:
    """The function a fast call is for, the target to send its replica, and whether that target's path or
    query carries an encoded NUL (answered 400: the replica would decode it into Http_Path/Http_Query).
    ``target``: the raw target of a request :func:`classify` found FAST (``/function/...`` or ``POST /``
    with ``X-Function``). Shared by the trio server's fast path and the invoke edge."""
    if target[:10] == _FUNCTION:
        path, _, query = target[10:].partition(b"?")
        name_bytes, _, rest = path.partition(b"/")
        nul = b"%00" in rest or b"%00" in query
        return name_bytes.decode("latin-1"), b"/" + rest + (b"?" + query if query else b""), nul
    return (request.header("x-function") or "").strip(), b"/", False  # POST / with X-Function.


def classify(
    buffer: bytes, route: FastInvokeRoute, max_header_bytes: int
) -> tuple[Verdict, Request | None, bytes, bytes]:
    """Decide what to do with ``buffer``, the bytes of a connection between requests.

    Returns (verdict, request, target, rest): for FAST the parsed request, its raw target and the bytes
    after it (a pipelined next request); otherwise None, b"", b"".
    """
    line_end = buffer.find(b"\r\n")
    if line_end < 0:
        if len(buffer) > max_header_bytes or not _may_be_fast(buffer):
            return Verdict.SLOW, None, b"", b""
        return Verdict.MORE, None, b"", b""
    method, _, rest = buffer[:line_end].partition(b" ")
    target, space2, version = rest.partition(b" ")
    if (
        not space2
        or version != b"HTTP/1.1"
        or not _METHOD.fullmatch(method)
        or not _ASCII_TARGET.fullmatch(target)
        or not route.accepts_line(method, target)
    ):
        return Verdict.SLOW, None, b"", b""
    end = buffer.find(b"\r\n\r\n", line_end)
    if end < 0:
        return (Verdict.SLOW if len(buffer) > max_header_bytes else Verdict.MORE), None, b"", b""
    if end > max_header_bytes or _UNSAFE.search(buffer, 0, end):
        return Verdict.SLOW, None, b"", b""
    parser = RequestParser(max_header_bytes=max_header_bytes, max_body_bytes=PREREAD_LIMIT)
    parser.feed(buffer)
    try:
        request = parser.next_request()
    except RemoteProtocolError:
        return Verdict.SLOW, None, b"", b""
    if request is None:  # The body is still to come: hypercorn streams or reads it.
        return Verdict.SLOW, None, b"", b""
    for key, _ in request.headers:
        if key in ("upgrade", "expect"):
            return Verdict.SLOW, None, b"", b""
    if target == b"/" and request.header("x-function") is None:  # An Alexa request: parsed by the ASGI route.
        return Verdict.SLOW, None, b"", b""
    return Verdict.FAST, request, target, parser.take_buffered()


def _may_be_fast(start: bytes) -> bool:
    """Could a request line beginning with ``start`` (no CRLF yet) be one for the fast path? (Anything
    else, a TLS handshake say, goes to hypercorn's protocol at once.)"""
    method, space, rest = start.partition(b" ")
    if not _METHOD_START.fullmatch(method):
        return False
    if not space:
        return True
    target = rest.partition(b" ")[0]
    if method == b"POST" and b"/".startswith(target):
        return True
    return _FUNCTION.startswith(target[:10]) if len(target) < 10 else target.startswith(_FUNCTION)
