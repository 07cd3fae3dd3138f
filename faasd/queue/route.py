"""``POST /async-function/{name}[/{path}]``: accept a call for later, OpenFaaS's async route (raw ASGI).

The answer is ``202 Accepted`` with an empty body and the call's ``X-Call-Id`` (the caller's, or a new
UUID) once the call is stored durably (:meth:`~faasd.queue.queue.AsyncQueue.accept`); the function
is called later by a queue worker, with the same method, path, query, headers and body, as
``/function/{name}/{path}?{query}`` would have been. The name is read as ``/function/``'s is
(:mod:`faasd.namespace`): ``{name}.openfaas-fn`` is the same function (faas-cli's ``invoke --async``
calls that), any other part after the last dot is a namespace that does not exist (400).

Every other answer is one line of ``text/plain``: 405 for a method other than POST (as OpenFaaS, which
registers the route for POST only), 400 for a bad name, a NUL (``%00``) in the path or query, an
invalid ``X-Callback-Url`` (:mod:`faasd.queue.callback` has the rule) or ``X-Call-Id`` (at most
:data:`MAX_CALL_ID_CHARS` visible ASCII characters: it is sent on in the callback), 404 for an unknown
function, 413 for a body over ``max_body_size``, 429 when the function's queue is full, 503 when the
whole queue is (or too many request bodies are being read at once), 500 when the call cannot be stored
(without the reason, which names files of the state dir: the writer logs it).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from faasd.errors import (
    FaasdError,
    FunctionNotFound,
    InvalidRequest,
    NoReplicaAvailable,
    PayloadTooLarge,
    StateError,
)
from faasd.gateway.invoke import MAX_BUFFERED_BYTES, Invoker, content_length, send_text
from faasd.gateway.proxy import DROP_REQUEST, Receive, Scope, Send
from faasd.namespace import split_qualified_name
from faasd.providers.types import MAX_NAME_LENGTH, NAME_PATTERN
from faasd.queue.queue import AsyncQueue
from faasd.queue.store import AddCall

__all__ = ["MAX_CALL_ID_CHARS", "AsyncRoute"]

PREFIX = b"/async-function/"
MAX_CALL_ID_CHARS = 256
_CALL_ID = re.compile(rb"[\x20-\x7e]{1,%d}" % MAX_CALL_ID_CHARS)
_NOT_STORED = DROP_REQUEST - {b"host"} | {b"x-call-id"}
"""Request headers not kept with the call: this connection's, the length (the replica gets its own),
the call token; the call id is kept apart. Host is kept: the replica sees it as the sync route does."""


class AsyncRoute:
    """The route (an ASGI callable for ``/async-function/*``); see the module docstring.

    Args:
        exists: ``exists(name)`` -- is the function deployed (answered from memory).
    """

    def __init__(self, queue: AsyncQueue, invoker: Invoker, *, exists: Callable[[str], bool]) -> None:
        self.queue = queue
        self.invoker = invoker
        self.exists = exists

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started_ns = time.time_ns()
        call_id = b""
        for header, value in scope["headers"]:
            if header == b"x-call-id":
                call_id = value
                break
        answer_headers = [(b"x-start-time", str(started_ns).encode())]
        if call_id and not _CALL_ID.fullmatch(call_id):
            await send_text(
                send, 400, f"X-Call-Id must be 1-{MAX_CALL_ID_CHARS} visible ASCII characters", answer_headers
            )
            return
        call_id = call_id or str(uuid.uuid4()).encode()
        answer_headers.insert(0, (b"x-call-id", call_id))
        if scope["method"] != "POST":
            allow = [(b"allow", b"POST"), *answer_headers]
            await send_text(send, 405, f"Method {scope['method']} not allowed on /async-function/ (use POST)", allow)
            return
        try:
            call = await self._accept(scope, receive, call_id.decode("ascii"), started_ns / 1e9)
        except FaasdError as exc:
            await send_text(send, exc.http_status, exc.message, answer_headers)
            return
        if call is None:
            return  # The client left while sending its body: nobody to answer.
        headers = [(b"content-length", b"0"), *answer_headers]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _accept(self, scope: Scope, receive: Receive, call_id: str, accepted_at: float) -> AddCall | None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        name_bytes, _, rest = raw_path[len(PREFIX) :].partition(b"/")
        query: bytes = scope.get("query_string", b"")
        if b"%00" in rest or b"%00" in query or b"%00" in name_bytes:
            raise InvalidRequest("The path or query contains a NUL byte (%00)")
        name = name_bytes.decode("latin-1")
        if "." in name:
            name = split_qualified_name(name)
        if not NAME_PATTERN.fullmatch(name) or len(name) > MAX_NAME_LENGTH or name in (".", ".."):
            raise InvalidRequest(f"Invalid function name: {name[:80]!r}")
        if not self.invoker.registry.get(name) and not self.exists(name):
            raise FunctionNotFound(f"Function not found: {name}")
        callback = self._callback_url(scope)
        length = content_length(scope)
        if length > self.queue.limits.body_bytes:
            raise PayloadTooLarge(f"Request body exceeds {self.queue.limits.body_bytes} bytes")
        self.queue.check_room(name, max(length, 0))
        body = await self._read_body(receive, length)
        if body is None:
            return None
        headers = [(header, value) for header, value in scope["headers"] if header not in _NOT_STORED]
        client = scope.get("client")
        if client and not any(header == b"x-forwarded-for" for header, _ in headers):
            headers.append((b"x-forwarded-for", str(client[0]).encode()))
        call = AddCall(
            call_id=call_id,
            function=name,
            method="POST",
            target=b"/" + rest + (b"?" + query if query else b""),
            headers=headers,
            body=body,
            callback_url=callback,
            accepted_at=accepted_at,
        )
        reserved = len(body)
        self.invoker.buffered_bytes += reserved  # Held until it is on disk.
        try:
            await self.queue.accept(call)
        except StateError:  # Logged by the writer, with the file; the caller is told no more than this.
            raise StateError("The call could not be stored; it was not accepted (the daemon's log says why)") from None
        finally:
            self.invoker.buffered_bytes -= reserved
        return call

    def _callback_url(self, scope: Scope) -> str | None:
        values: list[bytes] = [value for header, value in scope["headers"] if header == b"x-callback-url"]
        if not values:
            return None
        if len(values) > 1:
            raise InvalidRequest("X-Callback-Url given more than once")
        try:
            text = values[0].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidRequest("X-Callback-Url must be visible ASCII: no spaces or control characters") from None
        self.queue.callbacks.check(text)
        return text

    async def _read_body(self, receive: Receive, length: int) -> bytes | None:
        """The whole body (None: the client left), counted against the gateway's buffered bytes."""
        invoker = self.invoker
        limit = self.queue.limits.body_bytes
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None
                chunk = message.get("body", b"")
                if total + len(chunk) > limit:
                    raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
                if invoker.buffered_bytes + len(chunk) > MAX_BUFFERED_BYTES:
                    raise NoReplicaAvailable("Too many request bodies being received; try again later")
                invoker.buffered_bytes += len(chunk)
                total += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        finally:
            invoker.buffered_bytes -= total
