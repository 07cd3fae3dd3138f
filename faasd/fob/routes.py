"""The Flock-of-Birds API (``/api/*``), served as raw ASGI beside the invoke fast path.

================================  ======  ==============================================================
route                             method  answer
================================  ======  ==============================================================
``/api/gen[?lang=python]``        POST    200 ``{"id": "<uuid4>"}`` once callable; 400 ``{"error", "line",
                                          "column"}``; 413; 503 not ready in time (loopback, or admin)
``/api/gen/{id}``                 DELETE  200 ``{"deleted": "<id>"}``; 404 (admin credentials)
``/api/call/{id}?k:v,k:v``        GET     200 ``{"result": value}``; 400 bad arguments; 404 unknown id;
                                          408 timeout; 500 the snippet raised (``type``, ``message``) or
                                          its result is not JSON; 502/503 as ``/function/*`` (public)
``/api/stats``                    GET     200 ``{"functions": [id, ...]}`` oldest first (public)
``/api/meta/{id}``                GET     200 ``{"host", "port"}`` of a ready replica; 404; 503 none ready
``/api/cs/{id}``                  GET     200 the source, ``text/plain``; 404
================================  ======  ==============================================================

Every answer of these routes is JSON (but ``/api/cs``); an error is ``{"error": "<one line>"}`` plus the
fields above. ``/api/call`` is the hot path: an id lookup, the argument list parsed
(:mod:`faasd.fob.args`), then :meth:`Invoker.invoke <faasd.gateway.invoke.Invoker.invoke>` on the
snippet's function exactly as ``/function/fob-<id>`` -- held while it scales from zero, counted in the
metrics under ``fob-<id>`` -- with an error answer that is not JSON already (the gateway's own, a
watchdog's) rewritten as ``{"error": "<its text>"}``.

**Who may upload.** ``/api/gen`` runs uploaded code (in the sandbox, but on this host and its network),
as do ``/api/cs`` and ``/api/meta`` show code and replica addresses: they are open without credentials
only while the gateway binds a loopback address (``bind = 127.0.0.1``, ``::1``, ``localhost``) *and* the
request does not come through a proxy (no ``Forwarded``, ``X-Forwarded-For`` or ``X-Real-IP`` header);
otherwise they need the admin credentials (basic auth, slowed per address after failures exactly like
``/system/*``). Credentials that are sent are always checked. ``DELETE /api/gen/{id}`` always needs them.
A request a browser sends for another site (an ``Origin`` that is not this gateway, or
``Sec-Fetch-Site: cross-site``) is refused with 403 on these routes: a web page must not be able to make
a visitor's browser upload code to a gateway on their loopback.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from faasd.errors import FaasdError, InvalidRequest
from faasd.fob.args import encode_call_args, parse_call_args
from faasd.fob.snippets import SnippetService
from faasd.fob.source import SourceError
from faasd.gateway.auth import BasicAuth
from faasd.gateway.invoke import NOSNIFF, Invoker, content_length, read_body
from faasd.gateway.proxy import Receive, Scope, Send
from faasd.gateway.reasons import one_line
from faasd.gateway.throttle import AuthThrottle, retry_after_header

__all__ = ["FobRoutes", "is_loopback_bind"]

JSON_TYPE = b"application/json"
_CALL = b"/api/call/"
_GEN = b"/api/gen"
_META = b"/api/meta/"
_SOURCE = b"/api/cs/"
_STATS = b"/api/stats"
_PROXY_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
_KEPT_HEADERS = frozenset({b"x-call-id", b"x-start-time"})
MAX_ERROR_TEXT = 4096
"""Of a non-JSON error answer rewritten as JSON, at most this much is read (it becomes one line)."""


def is_loopback_bind(bind: str) -> bool:
    """True when the gateway's ``bind`` address is only reachable from this host."""
    host = bind.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FobRoutes:
    """``/api/*`` (see the module docstring); the daemon hands it every request whose path starts so.

    Args:
        open_gen: the gateway binds a loopback address, so ``/api/gen`` may be open (see "Who may upload").
        max_snippet_bytes: the largest upload (413 above).
    """

    def __init__(
        self,
        *,
        snippets: SnippetService,
        invoker: Invoker,
        auth: BasicAuth,
        throttle: AuthThrottle,
        open_gen: bool,
        max_snippet_bytes: int,
    ) -> None:
        self.snippets = snippets
        self.invoker = invoker
        self.auth = auth
        self.throttle = throttle
        self.open_gen = open_gen
        self.max_snippet_bytes = max_snippet_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        if path.startswith(_CALL):
            await self.call(scope, receive, send, path[len(_CALL) :])
            return
        method: str = scope["method"]
        try:
            if path == _GEN:
                if method != "POST":
                    await _not_allowed(send, method, path, "POST")
                elif await self._guarded(scope, send, always=False):
                    await self.gen(scope, receive, send)
            elif path.startswith(_GEN + b"/"):
                if method != "DELETE":
                    await _not_allowed(send, method, path, "DELETE")
                elif await self._guarded(scope, send, always=True):
                    await self.delete(send, path[len(_GEN) + 1 :])
            elif path == _STATS:
                if method != "GET":
                    await _not_allowed(send, method, path, "GET")
                else:
                    await send_json(send, 200, {"functions": self.snippets.ids()})
            elif path.startswith(_META) or path.startswith(_SOURCE):
                if method != "GET":
                    await _not_allowed(send, method, path, "GET")
                elif await self._guarded(scope, send, always=False):
                    await (self.meta if path.startswith(_META) else self.source)(send, path)
            else:
                await send_json(send, 404, {"error": one_line(f"Not found: {path.decode('latin-1')}")})
        except FaasdError as exc:
            await send_error(send, exc)

    # -- the hot path -----------------------------------------------------------------------------
    async def call(self, scope: Scope, receive: Receive, send: Send, raw_id: bytes) -> None:
        """``GET /api/call/{id}?k:v,...``: as ``/function/fob-<id>?k=v&...``, answers in JSON."""
        name = self.snippets.function_of(raw_id.decode("latin-1"))
        if name is None:
            await send_json(send, 404, {"error": one_line(f"no snippet with id {raw_id.decode('latin-1')}")})
            return
        if scope["method"] != "GET":
            await _not_allowed(send, scope["method"], b"/api/call/" + raw_id, "GET")
            return
        query: bytes = scope.get("query_string", b"")
        target = b"/"
        if query:
            try:
                args = parse_call_args(query)
            except InvalidRequest as exc:
                await send_error(send, exc)
                return
            if args:
                target = b"/?" + encode_call_args(args)
        await self.invoker.invoke(scope, receive, JsonErrors(send), name, target)

    # -- the rest ---------------------------------------------------------------------------------
    async def gen(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /api/gen[?lang=]``: the body is the source as it is."""
        languages = {value for key, value in _query(scope) if key == "lang"}
        if len(languages) > 1:
            raise InvalidRequest("lang is given more than once")
        limit = self.max_snippet_bytes
        too_large = f"the snippet exceeds max_snippet_size ({limit} bytes)"
        source = await read_body(receive, limit, content_length(scope), too_large)
        try:
            snippet_id = await self.snippets.create(source, languages.pop() if languages else None)
        except SourceError as exc:
            document: dict[str, Any] = {"error": one_line(exc.message)}
            if exc.line is not None:
                document["line"] = exc.line
            if exc.column is not None:
                document["column"] = exc.column
            await send_json(send, exc.http_status, document)
            return
        await send_json(send, 200, {"id": snippet_id})

    async def delete(self, send: Send, raw_id: bytes) -> None:
        snippet_id = raw_id.decode("latin-1")
        await self.snippets.remove(snippet_id)
        await send_json(send, 200, {"deleted": snippet_id})

    async def meta(self, send: Send, path: bytes) -> None:
        endpoint = self.snippets.endpoint(path[len(_META) :].decode("latin-1"))
        if endpoint is None:
            await send_json(send, 503, {"error": "the snippet has no ready replica now"})
            return
        await send_json(send, 200, {"host": endpoint.host, "port": endpoint.port})

    async def source(self, send: Send, path: bytes) -> None:
        body = await self.snippets.source(path[len(_SOURCE) :].decode("latin-1"))
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            NOSNIFF,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _guarded(self, scope: Scope, send: Send, *, always: bool) -> bool:
        """May this request upload, delete or read snippets? If not, answer it (403, 401 or 429) and
        return False. See "Who may upload" in the module docstring."""
        origin = site = authorization = None
        proxied = False
        host = b""
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"sec-fetch-site":
                site = value
            elif name == b"authorization":
                authorization = value
            elif name == b"host":
                host = value
            elif name in _PROXY_HEADERS:
                proxied = True
        if (origin is not None and origin not in (b"http://" + host, b"https://" + host)) or site == b"cross-site":
            await send_json(send, 403, {"error": "a cross-site request may not upload, delete or read snippets"})
            return False
        if authorization is None and self.open_gen and not always and not proxied:
            return True
        address = scope["client"][0] if scope.get("client") else None
        wait = self.throttle.retry_after(address)
        if wait > 0:
            seconds = retry_after_header(wait)
            error = f"too many failed logins from {address}; retry in {seconds}s"
            await send_json(send, 429, {"error": error}, [(b"retry-after", seconds.encode())])
            return False
        if not self.auth.check(authorization.decode("latin-1") if authorization is not None else None):
            if authorization is not None:
                self.throttle.failed(address)
            await send_json(
                send, 401, {"error": "invalid credentials"}, [(b"www-authenticate", b'Basic realm="Restricted"')]
            )
            return False
        self.throttle.succeeded(address)
        return True


class JsonErrors:
    """Wraps ``send`` for ``/api/call``: an error answer that is not JSON -- the gateway's own one-line
    text (503 no replica, 502, 413), a watchdog's (a worker that crashed, a call killed at
    ``exec_timeout``) -- is sent as ``{"error": "<its text>"}`` with the same status. Answers below 400
    and JSON ones (the driver's) pass through untouched."""

    __slots__ = ("buffered", "chunks", "headers", "send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.buffered = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if not self.buffered:
            if message["type"] != "http.response.start" or message["status"] < 400 or _is_json(message):
                await self.send(message)
                return
            self.buffered = True
            self.status = message["status"]
            self.headers = [(name, value) for name, value in message.get("headers", ()) if name in _KEPT_HEADERS]
            return
        body = message.get("body", b"")
        kept = sum(len(chunk) for chunk in self.chunks)
        if body and kept < MAX_ERROR_TEXT:
            self.chunks.append(body[: MAX_ERROR_TEXT - kept])
        if not message.get("more_body", False):
            text = b"".join(self.chunks).decode("utf-8", "replace").strip()
            await send_json(self.send, self.status, {"error": one_line(text) or f"HTTP {self.status}"}, self.headers)


async def send_json(
    send: Send, status: int, document: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with ``document`` as JSON and a newline (these routes' own answers)."""
    body = json.dumps(document).encode() + b"\n"
    start = [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode()), NOSNIFF, *(headers or ())]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, exc: FaasdError) -> None:
    await send_json(send, exc.http_status, {"error": one_line(exc.message)})


async def _not_allowed(send: Send, method: str, path: bytes, allow: str) -> None:
    error = one_line(f"Method {method} not allowed on {path.decode('latin-1')}")
    await send_json(send, 405, {"error": error}, [(b"allow", allow.encode())])


def _is_json(message: MutableMapping[str, Any]) -> bool:
    for name, value in message.get("headers", ()):
        if name == b"content-type":
            return bool(value.startswith(JSON_TYPE))
    return False


def _query(scope: Scope) -> list[tuple[str, str]]:
    try:
        return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    except ValueError:
        raise InvalidRequest("the query string cannot be read") from None
