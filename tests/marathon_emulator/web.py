"""A minimal ASGI layer: requests, JSON answers, a route table, authentication, Server-Sent Events.

Kept apart from the routes (:mod:`.routes`) so those read as the API's table. Bodies are read whole
(at most :data:`MAX_BODY_BYTES`, an emulator limit: 413) before any answer, so no answer is sent while
a client is still sending.

Authentication (`SSL and Basic Access Authentication
<https://mesosphere.github.io/marathon/docs/ssl-basic-access-authentication.html>`_, and DC/OS's
``Authorization: token=<token>`` header, literally ``token=``): when credentials or a token are
configured, every request but ``GET /ping`` must carry one of them, else **401**
``{"message": "Invalid username or password."}`` (with ``WWW-Authenticate: Basic`` when basic auth is
configured). No authorisation (403) is emulated: an authenticated caller may do everything.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import trio

from tests.marathon_emulator.errors import ApiError

__all__ = ["MAX_BODY_BYTES", "Auth", "Request", "Response", "Router", "Stream", "parse_json"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client: str
    params: dict[str, str] = field(default_factory=dict)
    """The route's path parameters."""

    @property
    def uri(self) -> str:
        return self.path

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str, default: bool) -> bool:
        """A boolean query parameter as Marathon reads one: ``true`` (any case) is true, anything else
        given is false."""
        value = self.arg(name)
        return default if value is None else value.strip().lower() == "true"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200, **headers: str) -> Response:
        return cls(status, json.dumps(value, separators=(",", ":")).encode(), headers=dict(headers))


@dataclass
class Stream:
    """A streamed answer (Server-Sent Events): ``chunks`` are sent as they come."""

    chunks: AsyncIterator[bytes]
    close: Callable[[], None] = lambda: None
    """Called once the stream ends, however it ends."""
    content_type: str = "text/event-stream"


Handler = Callable[[Request], Awaitable["Response | Stream"]]


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def parse_json(body: bytes) -> Any:
    """The request body as JSON, or the 400 Marathon answers.

    Raises:
        ApiError: 400 empty body or unparsable JSON (``NaN``/``Infinity`` included, as Jackson).
    """
    if not body.strip():
        raise ApiError(400, "Please specify data in JSON format", details="No content to map due to end-of-input")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Invalid JSON", details=str(exc)) from None
    except RecursionError:
        raise ApiError(400, "Invalid JSON", details="nesting too deep") from None


@dataclass(frozen=True)
class Auth:
    """The configured credentials (all None: no authentication)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    @property
    def enabled(self) -> bool:
        return self.username is not None or self.token is not None

    def allows(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        if header is None:
            return False
        scheme, _, value = header.strip().partition(" ")
        if self.token is not None and header.strip().startswith("token="):
            return hmac.compare_digest(header.strip()[len("token=") :].encode(), self.token.encode())
        if self.username is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return hmac.compare_digest(user.encode(), self.username.encode()) and hmac.compare_digest(
                password.encode(), (self.password or "").encode()
            )
        return False


class Router:
    """``(method, path regex) -> handler``; the first matching path wins, its other methods give 405."""

    def __init__(self, auth: Auth) -> None:
        self.auth = auth
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler], bool]] = []
        self.extra_headers: dict[str, str] = {}

    def add(self, pattern: str, methods: dict[str, Handler], *, public: bool = False) -> None:
        self.routes.append((re.compile(pattern), methods, public))

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"Request body over {MAX_BODY_BYTES} bytes (an emulator limit)")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            headers[key] = f"{headers[key]}, {value.decode('latin-1')}" if key in headers else value.decode("latin-1")
        client = (scope.get("client") or ("", 0))[0]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        try:
            body = await self._read_body(receive)
        except ConnectionError:
            return
        except ApiError as exc:
            await self._send(send, Response.json(exc.body, exc.status, Connection="close"))
            return
        request = Request(scope["method"], scope["path"], query, headers, body, client)
        try:
            answer = await self._dispatch(request)
        except ApiError as exc:
            answer = self._error(exc)
        except Exception as exc:  # A request boundary: a bug answers 500 and the emulator carries on.
            log.exception("%s %s failed", request.method, request.path)
            answer = self._error(ApiError(500, f"emulator error: {exc!r}"))
        if isinstance(answer, Stream):
            await self._stream(answer, receive, send)
        else:
            await self._send(send, answer)

    def _error(self, error: ApiError) -> Response:
        answer = Response.json(error.body, error.status)
        if error.status == 401 and self.auth.username is not None:
            answer.headers["WWW-Authenticate"] = 'Basic realm="Marathon"'
        return answer

    async def _dispatch(self, request: Request) -> Response | Stream:
        for pattern, methods, public in self.routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if not public and not self.auth.allows(request.headers.get("authorization")):
                raise ApiError(401, "Invalid username or password.")
            handler = methods.get(request.method) or (methods.get("GET") if request.method == "HEAD" else None)
            if handler is None:
                raise ApiError(405, "Method Not Allowed")
            request.params = {key: value for key, value in match.groupdict().items() if value is not None}
            return await handler(request)
        if not self.auth.allows(request.headers.get("authorization")):
            raise ApiError(401, "Invalid username or password.")
        raise ApiError(500, "URI not found")

    async def _send(self, send: Send, response: Response) -> None:
        headers = [(b"content-length", str(len(response.body)).encode())]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type.encode()))
        for name, value in {**self.extra_headers, **response.headers}.items():
            headers.append((name.lower().encode(), value.encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _stream(self, stream: Stream, receive: Receive, send: Send) -> None:
        try:
            await self._stream_chunks(stream, receive, send)
        finally:
            stream.close()

    async def _stream_chunks(self, stream: Stream, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", stream.content_type.encode()), (b"cache-control", b"no-cache")]
        headers += [(name.lower().encode(), value.encode()) for name, value in self.extra_headers.items()]
        async with trio.open_nursery() as nursery:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_disconnect)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            async for chunk in stream.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            nursery.cancel_scope.cancel()
