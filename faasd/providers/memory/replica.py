"""One replica of the in-memory backend: a real HTTP/1.1 server on 127.0.0.1, in the provider's trio loop.

What it emulates of a watchdog (docs/watchdog.md), precisely:

* ``GET /_/health``: ``503 Not ready`` until ``start_delay_s`` after the replica started, then
  ``200 OK``; ``503`` again once it is stopping.
* The call token (:mod:`faasd.calltoken`): with one, any other request without the right
  ``X-Faasd-Call-Token`` is answered ``403`` with the watchdog's body, and the header never reaches the
  program.
* Any other request, whatever its method or path, runs the function's *program* once (as fork mode
  runs its process once per call): the answer is the program's status, body and content type, with
  ``X-Duration-Seconds`` (how long the program ran) as every watchdog sends it.
  A program that raises is a ``500`` naming the exception (as a process exiting non-zero is).
* ``write_debug=true`` in the spec's ``envVars``: the program's output is logged, line by line, in the
  function's log book under the replica's id; every replica also logs ``listening on HOST:PORT``.
* Keep-alive connections, ``Expect: 100-continue``, request framing and limits: faasd's own parser
  (:mod:`faasd.http1`), the one the watchdog uses. A stopping replica stops accepting, answers what
  it is working on, closes idle connections, and cancels calls still running after ``stop_grace_s``.

Programs are Python callables, not processes (:data:`PROGRAMS`: ``cat``, ``env``, ``echo``,
``sleep``, ``false``, or any a test adds). Not emulated: the watchdog's own timeouts
(``exec_timeout``...), output limits, ``mode=http|python|streaming``, the sandbox and its limits,
``max_inflight``.
"""

from __future__ import annotations

import hmac
import http
import logging
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import trio

from faasd.calltoken import CallToken
from faasd.http1 import RemoteProtocolError, Request, RequestParser, canonical_header_name
from faasd.logs import event
from faasd.providers.common.logbook import LogBook
from faasd.providers.common.probe import HEALTH_PATH

__all__ = ["PROGRAMS", "Answer", "Call", "Program", "ReplicaServer"]

log = logging.getLogger("faasd.providers.memory")

LOCALHOST = "127.0.0.1"
READ_BYTES = 64 * 1024
FORBIDDEN = b"Forbidden: this replica takes calls only from its faasd gateway\n"
"""The watchdog's 403 body (faasd/watchdog/app.py)."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a program sees it (what a fork-mode process gets: argv, environment, stdin)."""

    argv: tuple[str, ...]
    """The spec's ``envProcess``, split like a shell would."""
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    env: Mapping[str, str]
    """The spec's ``envVars``, ``fprocess``, and ``Http_*`` request metadata as fork mode sets it."""
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    """The spec's secrets by name (what a process reads under ``secret_mount_path``)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


Program = Callable[[Call], Awaitable[Answer]]
"""What a memory replica runs per call, named by the first word of the spec's ``envProcess``."""


async def _cat(call: Call) -> Answer:
    return Answer(200, call.body, dict(call.headers).get("content-type", "application/octet-stream"))


async def _env(call: Call) -> Answer:
    return Answer(200, "".join(f"{key}={value}\n" for key, value in call.env.items()).encode())


async def _echo(call: Call) -> Answer:
    return Answer(200, (" ".join(call.argv[1:]) + "\n").encode())


async def _sleep(call: Call) -> Answer:
    await trio.sleep(float(call.argv[1]) if len(call.argv) > 1 else 0.0)
    return Answer(200)


async def _false(call: Call) -> Answer:
    return Answer(500, b"exit status 1\n")


PROGRAMS: Mapping[str, Program] = {"cat": _cat, "env": _env, "echo": _echo, "sleep": _sleep, "false": _false}
"""The programs every memory provider knows (``cat`` echoes the body, ``env`` prints the call's
environment, ``echo ARGS``, ``sleep SECONDS``, ``false`` answers 500)."""


def call_env(base: Mapping[str, str], request: Request) -> dict[str, str]:
    """``base`` plus the ``Http_*`` variables fork mode gives a process (faasd/watchdog/fork.py)."""
    env = dict(base)
    for name, value in request.headers:
        env.setdefault("Http_" + canonical_header_name(name).replace("-", "_"), value)
    env["Http_Method"] = request.method
    if request.path:
        env["Http_Path"] = request.path
    if request.query:
        env["Http_Query"] = request.query
    if request.content_type is not None:
        env["Http_ContentType"] = request.content_type
    env["Http_Content_Length"] = str(request.content_length)
    env["Http_Host"] = request.host
    return env


class ReplicaServer:
    """Serves one replica until :meth:`stop` (then drains) or cancellation.

    Args:
        program: what each call runs; ``argv``, ``env`` and ``secrets`` are passed to it.
        logbook: where ``listening`` and the ``write_debug`` output go, under ``replica_id``.
        call_token: required on every call but the health check (None: nothing is checked).
        start_delay_s: how long the health check answers 503 after the start.
        stop_grace_s: how long calls in flight may run once :meth:`stop` is called.
    """

    def __init__(
        self,
        replica_id: str,
        *,
        program: Program,
        argv: tuple[str, ...],
        env: Mapping[str, str],
        secrets: Mapping[str, bytes],
        logbook: LogBook,
        call_token: CallToken | None,
        start_delay_s: float = 0.0,
        stop_grace_s: float = 2.0,
    ) -> None:
        self.replica_id = replica_id
        self.program = program
        self.argv = argv
        self.env = dict(env)
        self.secrets = dict(secrets)
        self.logbook = logbook
        self.call_token = call_token
        self.start_delay_s = start_delay_s
        self.stop_grace_s = stop_grace_s
        self.write_debug = env.get("write_debug", "").strip().lower() in ("1", "true", "yes", "on")
        self.port = 0
        self.calls = 0
        """Calls answered by the program (the health check and refused requests are not counted)."""
        self.in_flight = 0
        self._ready_at = 0.0
        self._draining = False
        self._accepting: trio.CancelScope | None = None
        self._idle: dict[int, trio.CancelScope] = {}
        self._quiet = trio.Event()

    def __repr__(self) -> str:
        return f"<ReplicaServer {self.replica_id} port={self.port} in_flight={self.in_flight}>"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind 127.0.0.1:0, report the port, serve; after :meth:`stop`, drain and return."""
        (listener,) = await trio.open_tcp_listeners(0, host=LOCALHOST)
        self.port = listener.socket.getsockname()[1]
        self._ready_at = trio.current_time() + self.start_delay_s
        self.logbook.append(self.replica_id, f"listening on {LOCALHOST}:{self.port}")
        async with trio.open_nursery() as connections:
            with trio.CancelScope() as self._accepting:
                task_status.started(self.port)
                async with listener:
                    while True:
                        stream = await listener.accept()
                        connections.start_soon(self._connection, stream)
            with trio.move_on_after(self.stop_grace_s):  # Stopped: let calls in flight finish.
                while self.in_flight:
                    self._quiet = trio.Event()
                    await self._quiet.wait()
            connections.cancel_scope.cancel()

    def stop(self) -> None:
        """Stop accepting, close idle connections; :meth:`run` returns once calls in flight are done."""
        self._draining = True
        if self._accepting is not None:
            self._accepting.cancel()
        for scope in self._idle.values():
            scope.cancel()

    async def _connection(self, stream: trio.SocketStream) -> None:
        parser = RequestParser()
        key = id(stream)
        async with stream:
            try:
                while not self._draining:
                    with trio.CancelScope() as idle:
                        self._idle[key] = idle
                        request = await self._next_request(stream, parser)
                    self._idle.pop(key, None)
                    if request is None:
                        return
                    status, body, content_type, extra = await self._answer(request)
                    keep_alive = request.keep_alive and not self._draining
                    if request.method == "HEAD":
                        body = b""  # Headers only (its Content-Length then says 0: allowed for HEAD).
                    await stream.send_all(_response(status, body, content_type, extra, keep_alive=keep_alive))
                    if not keep_alive:
                        return
            except RemoteProtocolError as exc:
                await stream.send_all(_response(exc.status, f"{exc.reason}\n".encode(), keep_alive=False))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # The peer went away.
            finally:
                self._idle.pop(key, None)

    async def _next_request(self, stream: trio.SocketStream, parser: RequestParser) -> Request | None:
        """The next complete request, or None when the peer closed (or this connection was cancelled as idle)."""
        continued = False
        while (request := parser.next_request()) is None:
            pending = parser.pending
            if pending is not None and pending.expect_continue and not continued:
                await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                continued = True
            data = await stream.receive_some(READ_BYTES)
            if not data:
                return None
            parser.feed(data)
        return request

    async def _answer(self, request: Request) -> tuple[int, bytes, str, str]:
        """(status, body, content type, extra header lines) for ``request``."""
        if request.path == HEALTH_PATH and request.method in ("GET", "HEAD"):
            if self._draining or trio.current_time() < self._ready_at:
                return 503, b"Not ready\n", "text/plain", ""
            return 200, b"OK", "text/plain", ""
        token = self.call_token
        if token is not None and not hmac.compare_digest(request.call_token or b"", token.value):
            return 403, FORBIDDEN, "text/plain", ""
        call = Call(
            argv=self.argv,
            method=request.method,
            path=request.path,
            query=request.query,
            headers=tuple(request.headers),
            body=request.body,
            env=call_env(self.env, request),
            secrets=self.secrets,
        )
        self.in_flight += 1
        started = trio.current_time()
        try:
            answer = await self.program(call)
        except Exception as exc:  # The function's failure, not the replica's: a 500, as an exit status is.
            event(log, logging.DEBUG, "program failed", replica=self.replica_id, error=repr(exc))
            answer = Answer(500, f"{type(exc).__name__}: {exc}\n".encode())
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._quiet.set()
        duration = trio.current_time() - started
        self.calls += 1
        if self.write_debug:
            for line in answer.body.decode("utf-8", "replace").splitlines():
                self.logbook.append(self.replica_id, line)
        return answer.status, answer.body, answer.content_type, f"X-Duration-Seconds: {duration:.6f}\r\n"


def _response(
    status: int, body: bytes, content_type: str = "text/plain", extra: str = "", *, keep_alive: bool
) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        + extra
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    )
    return head.encode("latin-1") + body


def split_command(fprocess: str) -> tuple[str, ...]:
    """``envProcess`` as argv (shell-like); ValueError when it cannot be split."""
    return tuple(shlex.split(fprocess))
