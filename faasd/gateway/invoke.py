"""The invoke routes: raw ASGI before Quart sees the request, and :meth:`Invoker.invoke_raw` for the
server's fast path (:mod:`faasd.gateway.fastpath`), which answers whole calls without ASGI.

* ``/function/{name}[/{path}]``, any method: the OpenFaaS route; the replica sees ``/{path}?{query}``.
* ``POST /`` with ``X-Function: name``: the 2016 gateway's header routing.
* ``POST /`` with an Alexa Skills request body: routed to the function named after
  ``request.intent.name``.

Wherever a name comes from, ``name.openfaas-fn`` is the same function as ``name`` (faas-cli and the
OpenFaaS Go SDK always call ``/function/<name>.<namespace>``); any other part after the last dot is a
namespace that does not exist: 400 (:mod:`faasd.namespace`).

Per call: find a ready replica (waiting up to ``ready_timeout_s`` if the function has none yet),
forward with :func:`faasd.gateway.proxy.forward`, count it in the metrics. Every error is a one-line
``text/plain`` answer: 404 unknown function, 503 no ready replica in time, 502 replica failed or timed
out, 413 body too large, 400 bad name or namespace, a NUL (``%00``) in the path or query, or
unroutable ``POST /``.
Every answer carries ``X-Call-Id`` (the caller's, or a new UUID) and ``X-Start-Time`` (Unix time in
ns), as the OpenFaaS gateway does.

Bodies announced up to :data:`PREREAD_BYTES` are read whole before a replica is picked, so a client
trickling its body holds no replica and is no load for the autoscaler; larger ones (and those arriving
while :data:`MAX_BUFFERED_BYTES` are held already) are streamed. Alexa requests must be parsed to be
routed: they are read up to ``max_json_bytes`` (413 above, at once when the Content-Length says so),
and answered 503 when the buffers are full. Buffered bodies are held for their call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from faasd.calltoken import CallToken
from faasd.errors import FaasdError, FunctionNotFound, InvalidRequest, NoReplicaAvailable, PayloadTooLarge
from faasd.gateway.jsonbody import parse_json
from faasd.gateway.metrics import GatewayMetrics
from faasd.gateway.proxy import (
    DROP_REQUEST,
    ProxyRequest,
    Receive,
    ReplicaUnreachable,
    Scope,
    Send,
    UpstreamPool,
    Write,
    forward,
    forward_raw,
    http_date,
)
from faasd.gateway.reasons import one_line
from faasd.http1 import Request
from faasd.logs import event
from faasd.namespace import split_qualified_name
from faasd.providers.types import NAME_PATTERN, Endpoint
from faasd.registry import EndpointRegistry
from faasd.scaler.meter import LoadMeter
from faasd.timeouts import FunctionTimeouts

__all__ = ["NOSNIFF", "Invoker", "Router", "raw_call_headers", "send_text", "text_answer"]

log = logging.getLogger(__name__)

NOSNIFF = (b"x-content-type-options", b"nosniff")
"""On every answer the gateway writes itself; a function's answers carry only the headers it sets."""
_ALEXA_HINT = b"sessionId"
_NO_ROUTE = "Provide an x-function header or a valid Alexa SDK request."
MAX_FAILOVER = 3
"""Replicas tried for one call when earlier ones refuse the connection."""
MAX_HELD_CALLS = 1000
"""Calls held per function while it starts (scale from zero); more get 503 at once."""
NUL_MESSAGE = "The path or query contains a NUL byte (%00)"
"""The 400's text for an encoded NUL in a call's path or query, on every invoke path."""
CLIENT_CLOSED_STATUS = 499
"""Recorded in the metrics for a call whose client closed its connection before the answer was complete
(nginx's code for it): the function's own status was not delivered."""
PREREAD_BYTES = 1024 * 1024
"""A body announced this small is read whole before a replica is picked."""
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
"""Request bodies held in memory at once (pre-read and Alexa), all calls together."""


_NONE: frozenset[str] = frozenset()
_DROP_REQUEST_TEXT = frozenset(name.decode() for name in DROP_REQUEST) | {"x-call-id", "x-start-time"}
"""Request headers the fast path does not copy (as :meth:`Invoker._proxy_request`): names as
:mod:`faasd.http1` gives them, lower-case text."""


async def _no_body() -> MutableMapping[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def log_failure(name: str, exc: FaasdError, call_headers: list[tuple[bytes, bytes]]) -> None:
    if exc.http_status >= 500:
        event(
            log,
            logging.WARNING,
            "invoke failed",
            function=name,
            status=exc.http_status,
            error=exc.message,
            call_id=call_headers[0][1].decode(),
        )


async def _no_wake(name: str) -> bool:
    return False


def _no_failure(name: str) -> str | None:
    return None


class Router:
    """Picks the replica for a call: the least busy, rotating among equals (round-robin when idle)."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}
        self._turn: dict[str, int] = {}

    def pick(self, function: str, endpoints: tuple[Endpoint, ...], exclude: frozenset[str] = frozenset()) -> Endpoint:
        count = len(endpoints)
        if count == 1 and not exclude:
            return endpoints[0]
        turn = self._turn.get(function, 0)
        self._turn[function] = turn + 1
        in_flight = self.in_flight
        best: Endpoint | None = None
        best_load = 0
        for offset in range(count):
            endpoint = endpoints[(turn + offset) % count]
            if endpoint.authority in exclude:
                continue
            load = in_flight.get(endpoint.authority, 0)
            if best is None or load < best_load:
                best, best_load = endpoint, load
                if load == 0:
                    break
        if best is None:
            raise NoReplicaAvailable(f"No reachable replica for function: {function}")
        return best


class Invoker:
    """Everything the invoke routes need, and the routes themselves."""

    def __init__(
        self,
        *,
        exists: Callable[[str], bool],
        registry: EndpointRegistry,
        metrics: GatewayMetrics,
        pool: UpstreamPool,
        upstream_timeout_s: float,
        ready_timeout_s: float,
        max_body_bytes: int,
        max_json_bytes: int = 1024 * 1024,
        meter: LoadMeter | None = None,
        wake: Callable[[str], Awaitable[bool]] | None = None,
        max_held: int = MAX_HELD_CALLS,
        failure: Callable[[str], str | None] | None = None,
        call_token: CallToken | None = None,
        timeouts: FunctionTimeouts | None = None,
    ) -> None:
        self.exists = exists
        """``exists(name) -> bool``: is the function deployed (answered from memory)."""
        self.meter = meter or LoadMeter()
        self.wake = wake or _no_wake
        """``wake(name) -> bool``: a call waits for a function without a ready replica (scale from zero)."""
        self.max_held = max_held
        self.failure = failure or _no_failure
        """``failure(name) -> reason | None``: the function cannot run until deployed again (a failed
        restore); its calls are answered 503 at once instead of held."""
        self.registry = registry
        self.metrics = metrics
        self.pool = pool
        self.router = Router()
        self.upstream_timeout_s = upstream_timeout_s
        self.timeouts = timeouts
        """Per-function upstream timeouts (a function's own exec_timeout raises it); None: always
        ``upstream_timeout_s``."""
        self.ready_timeout_s = ready_timeout_s
        self.max_body_bytes = max_body_bytes
        self.max_json_bytes = max_json_bytes
        self.buffered_bytes = 0
        """Request bodies held now (bounded by MAX_BUFFERED_BYTES)."""
        self.call_token = call_token
        """Added to every call forwarded to a replica that has it (:mod:`faasd.calltoken`), which refuses
        calls without it."""

    # -- routes -----------------------------------------------------------------------------------
    async def function_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/function/{name}[/{path}]``."""
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        name_bytes, _, rest = raw_path[len(b"/function/") :].partition(b"/")
        name = name_bytes.decode("latin-1")
        query: bytes = scope.get("query_string", b"")
        if b"%00" in rest or b"%00" in query:
            # The replica decodes them into its Http_Path/Http_Query: no process takes a NUL in there.
            await send_text(send, 400, NUL_MESSAGE, _call_headers(scope))
            return
        target = b"/" + rest + (b"?" + query if query else b"")
        await self.invoke(scope, receive, send, name, target)

    async def root_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /``: X-Function header, else an Alexa intent, else 400."""
        for header, value in scope["headers"]:
            if header == b"x-function":
                await self.invoke(scope, receive, send, value.decode("latin-1").strip(), b"/")
                return
        call_headers = _call_headers(scope)
        limit = self.max_json_bytes
        try:
            declared = content_length(scope)
            if declared > limit:
                raise PayloadTooLarge(f"Request body exceeds max_json_size ({limit} bytes) for an Alexa request")
            reserved = declared if declared >= 0 else limit
            if self.buffered_bytes + reserved > MAX_BUFFERED_BYTES:
                raise NoReplicaAvailable("Too many Alexa requests in flight; try again later")
        except FaasdError as exc:
            await send_text(send, exc.http_status, exc.message, call_headers)
            return
        self.buffered_bytes += reserved
        try:
            try:
                body = await read_body(receive, limit, declared)
            except FaasdError as exc:
                await send_text(send, exc.http_status, exc.message, call_headers)
                return
            intent = _alexa_intent(body)
            if intent is None:
                await send_text(send, 400, _NO_ROUTE, call_headers)
                return
            await self.invoke(scope, _replay(body), send, intent, b"/", preread=True)
        finally:
            self.buffered_bytes -= reserved

    # -- the call ---------------------------------------------------------------------------------
    def resolve(self, name: str) -> tuple[str, tuple[Endpoint, ...]]:
        """The function's canonical name and its ready endpoints now (none: it may be held).

        Raises:
            InvalidRequest: a bad name or namespace (400).
            FunctionNotFound: no such function (404; not counted in the metrics: label values must stay
                bounded whatever names clients try).
        """
        if "." in name:
            name = split_qualified_name(name)
        if not NAME_PATTERN.fullmatch(name) or len(name) > 63:
            raise InvalidRequest(f"Invalid function name: {name[:80]!r}")
        endpoints = self.registry.get(name)
        if not endpoints and not self.exists(name):
            raise FunctionNotFound(f"Function not found: {name}")
        return name, endpoints

    async def invoke(
        self, scope: Scope, receive: Receive, send: Send, name: str, target: bytes, *, preread: bool = False
    ) -> None:
        started_ns = time.time_ns()
        started = time.monotonic()
        call_headers = _call_headers(scope, started_ns)
        try:
            name, endpoints = self.resolve(name)
        except FaasdError as exc:
            await send_text(send, exc.http_status, exc.message, call_headers)
            return
        metrics = self.metrics
        metrics.started(name)
        status = 500
        try:
            status = await self._call(scope, receive, send, name, endpoints, target, call_headers, preread)
        except FaasdError as exc:
            # Never raised once the answer started: forward() raises these only before its first send.
            status = exc.http_status
            log_failure(name, exc, call_headers)
            await send_text(send, status, exc.message, call_headers)
        except OSError:  # The server's ClientGone: the client left before its answer was complete.
            status = CLIENT_CLOSED_STATUS
            raise
        finally:
            metrics.finished(name, status, time.monotonic() - started)

    async def invoke_raw(self, request: Request, name: str, target: bytes, client: str, write: Write) -> bool:
        """The invoke fast path (:mod:`faasd.gateway.fastpath`): ``request`` is whole in hand (parsed by
        :mod:`faasd.http1`), the answer goes out through ``write`` as bytes. Same checks, metrics, load,
        routing, call token and errors as :meth:`invoke`; returns whether the connection may be kept.

        Raises:
            OSError: the client is gone.
        """
        started_ns = time.time_ns()
        started = time.monotonic()
        keep_alive = request.keep_alive
        call_headers = raw_call_headers(request, started_ns)
        try:
            name, endpoints = self.resolve(name)
        except FaasdError as exc:
            await write(text_answer(exc.http_status, exc.message, call_headers, keep_alive))
            return keep_alive
        metrics = self.metrics
        metrics.started(name)
        status = 500
        try:
            if not endpoints:
                endpoints = await self._hold(name)
            proxy_request = self.raw_proxy_request(request, target, call_headers, client)
            meter = self.meter
            meter.started(name)
            try:
                status = await self._dispatch(
                    name, endpoints, proxy_request, call_headers, write=write, keep_alive=keep_alive
                )
            finally:
                meter.finished(name)
            return keep_alive
        except FaasdError as exc:
            status = exc.http_status
            log_failure(name, exc, call_headers)
            await write(text_answer(status, exc.message, call_headers, keep_alive))
            return keep_alive
        except OSError:
            status = CLIENT_CLOSED_STATUS
            raise
        finally:
            metrics.finished(name, status, time.monotonic() - started)

    async def _call(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        endpoints: tuple[Endpoint, ...],
        target: bytes,
        call_headers: list[tuple[bytes, bytes]],
        preread: bool,
    ) -> int:
        if not endpoints:
            endpoints = await self._hold(name)
        length = -1 if preread else content_length(scope)
        reserved = 0
        if 0 <= length <= PREREAD_BYTES and self.buffered_bytes + length <= MAX_BUFFERED_BYTES:
            reserved = length
        self.buffered_bytes += reserved
        try:
            request = await self._proxy_request(scope, receive, target, call_headers, length, reserved > 0)
            meter = self.meter
            meter.started(name)
            try:
                return await self._dispatch(name, endpoints, request, call_headers, send)
            finally:
                meter.finished(name)
        finally:
            self.buffered_bytes -= reserved

    async def _hold(self, name: str) -> tuple[Endpoint, ...]:
        """No ready replica: wake the function (scale from zero) and hold the call until one is ready.

        A function still being restored after a daemon start is held the same way.

        Held calls wait in arrival order, up to ``max_held`` per function and ``ready_timeout_s`` each;
        they are not load for the autoscaler until a replica takes them.
        """
        if not self.exists(name):
            raise FunctionNotFound(f"Function not found: {name}")
        reason = self.failure(name)
        if reason:
            raise NoReplicaAvailable(f"Function {name} cannot run: {reason}")
        metrics = self.metrics
        if metrics.held.get(name, 0) >= self.max_held:
            raise NoReplicaAvailable(f"Too many calls ({self.max_held}) waiting for function {name} to start")
        started = time.monotonic()
        metrics.hold(name, +1)
        try:
            woke = await self.wake(name)
            endpoints = await self.registry.wait_for(name, self.ready_timeout_s)
        finally:
            metrics.hold(name, -1)
        if not endpoints:
            raise NoReplicaAvailable(
                f"No ready replica for function {name} within {self.ready_timeout_s:g}s; see 'faasd logs {name}'"
            )
        if woke:
            metrics.cold_start(time.monotonic() - started)
        return endpoints

    async def _dispatch(
        self,
        name: str,
        endpoints: tuple[Endpoint, ...],
        request: ProxyRequest,
        call_headers: list[tuple[bytes, bytes]],
        send: Send | None = None,
        *,
        write: Write | None = None,
        keep_alive: bool = True,
    ) -> int:
        """Forward to the least busy replica; on a refused connection try another (up to MAX_FAILOVER).

        The answer goes to the ASGI ``send``, or as bytes to the fast path's ``write`` (with
        ``keep_alive``: whether the client's connection stays open after it).
        The call token goes only to a replica that was given it (``Endpoint.call_token``): one that was
        not could use it to call every other function past the gateway. A replica with a token of its
        own (``Endpoint.token_line``, Marathon) gets that one instead.
        """
        tried: set[str] = set()
        in_flight = self.router.in_flight
        head = request.head
        token = self.call_token
        timeout_s = self.timeout_for(name)
        while True:
            endpoint = self.router.pick(name, endpoints, frozenset(tried) if tried else _NONE)
            if endpoint.token_line:
                request.head = head + endpoint.token_line
            else:
                request.head = head + token.header_line if token is not None and endpoint.call_token else head
            authority = endpoint.authority
            in_flight[authority] = in_flight.get(authority, 0) + 1
            try:
                if write is None:
                    assert send is not None
                    return await forward(
                        self.pool, endpoint, request, send, timeout_s=timeout_s, response_headers=call_headers
                    )
                return await forward_raw(
                    self.pool,
                    endpoint,
                    request,
                    write,
                    timeout_s=timeout_s,
                    response_headers=call_headers,
                    keep_alive=keep_alive,
                )
            except ReplicaUnreachable:
                tried.add(authority)
                self.pool.forget(authority)
                if len(tried) >= min(len(endpoints), MAX_FAILOVER):
                    raise
            finally:
                in_flight[authority] -= 1

    def timeout_for(self, name: str) -> float:
        """How long a call to ``name`` may wait for its answer to start (:mod:`faasd.timeouts`)."""
        return self.timeouts.for_call(name) if self.timeouts is not None else self.upstream_timeout_s

    async def _proxy_request(
        self,
        scope: Scope,
        receive: Receive,
        target: bytes,
        call_headers: list[tuple[bytes, bytes]],
        length: int,
        read_whole: bool,
    ) -> ProxyRequest:
        """The request for the replica; with ``read_whole``, its body (``length`` bytes) in hand."""
        method: str = scope["method"]
        if length > self.max_body_bytes:
            raise PayloadTooLarge(f"Request body exceeds {self.max_body_bytes} bytes")
        host = b""
        parts = [method.encode(), b" ", target, b" HTTP/1.1"]
        forwarded_for = forwarded_host = False
        for name, value in scope["headers"]:
            if name in DROP_REQUEST:
                if name == b"host":
                    host = value
                continue
            if name == b"x-call-id" or name == b"x-start-time":
                continue
            if name == b"x-forwarded-for":
                forwarded_for = True
            elif name == b"x-forwarded-host":
                forwarded_host = True
            parts += (b"\r\n", name, b": ", value)
        parts += (b"\r\nHost: ", host or b"localhost")
        if not forwarded_for and scope.get("client"):
            parts += (b"\r\nX-Forwarded-For: ", scope["client"][0].encode())
        if not forwarded_host and host:
            parts += (b"\r\nX-Forwarded-Host: ", host)
        for name, value in call_headers:
            parts += (b"\r\n", name, b": ", value)
        message = await receive()
        body: bytes = message.get("body", b"")
        more_body = bool(message.get("more_body", False))
        if more_body and read_whole:
            body = await _read_rest(receive, body, length)
            more_body = False
        if len(body) > self.max_body_bytes:
            raise PayloadTooLarge(f"Request body exceeds {self.max_body_bytes} bytes")
        if more_body and length < 0:
            receive = _limited(receive, self.max_body_bytes - len(body))
        return ProxyRequest(
            method=method,
            head=b"".join(parts),
            body=body,
            more_body=more_body,
            length=length,
            receive=receive,
        )

    def raw_proxy_request(
        self, request: Request, target: bytes, call_headers: list[tuple[bytes, bytes]], client: str
    ) -> ProxyRequest:
        """:meth:`_proxy_request` for a request parsed by :mod:`faasd.http1` (whole, body in hand)."""
        body = request.body
        if len(body) > self.max_body_bytes:
            raise PayloadTooLarge(f"Request body exceeds {self.max_body_bytes} bytes")
        parts = [request.method.encode(), b" ", target, b" HTTP/1.1"]
        forwarded_for = forwarded_host = False
        for key, value in request.headers:
            if key in _DROP_REQUEST_TEXT:
                continue
            if key == "x-forwarded-for":
                forwarded_for = True
            elif key == "x-forwarded-host":
                forwarded_host = True
            parts += (b"\r\n", key.encode(), b": ", value.encode("latin-1"))
        host = request.host.encode("latin-1")
        parts += (b"\r\nHost: ", host or b"localhost")
        if not forwarded_for and client:
            parts += (b"\r\nX-Forwarded-For: ", client.encode())
        if not forwarded_host and host:
            parts += (b"\r\nX-Forwarded-Host: ", host)
        for header, header_value in call_headers:
            parts += (b"\r\n", header, b": ", header_value)
        return ProxyRequest(
            method=request.method, head=b"".join(parts), body=body, more_body=False, length=len(body), receive=_no_body
        )


def _call_headers(scope: Scope, started_ns: int | None = None) -> list[tuple[bytes, bytes]]:
    """X-Call-Id (the caller's or a new UUID) and X-Start-Time for the request and the answer."""
    call_id = None
    for name, value in scope["headers"]:
        if name == b"x-call-id":
            call_id = value
            break
    if call_id is None:
        call_id = new_call_id()
    return [(b"x-call-id", call_id), (b"x-start-time", str(started_ns or time.time_ns()).encode())]


def new_call_id() -> bytes:
    """A new X-Call-Id: a random (version 4) UUID as text, like the one OpenFaaS's gateway sets. The same
    value as ``str(uuid.uuid4())``, formatted from the 16 random bytes without a ``UUID`` object, which
    took twice as long, on every call."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}".encode()


def raw_call_headers(request: Request, started_ns: int | None = None) -> list[tuple[bytes, bytes]]:
    """:func:`_call_headers` for a request parsed by :mod:`faasd.http1`."""
    call_id = b""
    for key, value in request.headers:
        if key == "x-call-id":
            call_id = value.encode("latin-1")
            break
    return [
        (b"x-call-id", call_id or new_call_id()),
        (b"x-start-time", str(started_ns or time.time_ns()).encode()),
    ]


def content_length(scope: Scope) -> int:
    """The request's Content-Length, -1 when it has none; a malformed one is a 400."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise InvalidRequest("Invalid Content-Length") from None
    return -1


async def read_body(receive: Receive, limit: int, declared: int, too_large: str = "") -> bytes:
    """The whole request body, refused with 413 (``too_large``, else a generic reason) once it passes
    ``limit`` -- at once when its Content-Length (``declared``) says so."""
    too_large = too_large or f"Request body exceeds {limit} bytes"
    if declared > limit:
        raise PayloadTooLarge(too_large)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise InvalidRequest("Client disconnected")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(too_large)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _read_rest(receive: Receive, first: bytes, length: int) -> bytes:
    """The rest of a body announced as ``length`` bytes, after ``first``."""
    chunks = [first]
    total = len(first)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise InvalidRequest("Client disconnected")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > length:
            raise InvalidRequest("Request body longer than its Content-Length")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _limited(receive: Receive, remaining: int) -> Receive:
    """Wrap ``receive`` so a chunked upload stops with 413 once it passes the limit."""
    budget = [remaining]

    async def limited() -> MutableMapping[str, Any]:
        message = await receive()
        budget[0] -= len(message.get("body", b""))
        if budget[0] < 0:
            raise PayloadTooLarge("Request body exceeds the gateway's max_body_size")
        return message

    return limited


def _alexa_intent(body: bytes) -> str | None:
    """The intent name of an Alexa Skills request, or None when ``body`` is not one.

    As the 2016 gateway: the body must mention ``sessionId``, and ``session.sessionId``,
    ``session.application.applicationId`` and ``request.intent.name`` must all be non-empty.
    """
    if _ALEXA_HINT not in body:
        return None
    try:
        document = parse_json(body)
        session = document["session"]
        intent = document["request"]["intent"]["name"]
        if session["sessionId"] and session["application"]["applicationId"] and isinstance(intent, str) and intent:
            return intent
    except (InvalidRequest, KeyError, TypeError):
        return None
    return None


async def send_text(send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer with one line of text/plain (the gateway's own answers, never a function's)."""
    body = one_line(message).encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                NOSNIFF,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


_TEXT_REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    413: b"Payload Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def text_answer(status: int, message: str, headers: Sequence[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """:func:`send_text`'s answer as the bytes the fast path writes (with ``Date``, as hypercorn adds)."""
    body = one_line(message).encode() + b"\n"
    parts = [
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"x-content-type-options: nosniff\r\n" % (status, _TEXT_REASONS.get(status, b""), len(body))
    ]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"date: ", http_date(), b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)
