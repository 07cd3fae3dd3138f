"""Raw HTTP/1.1 against the daemon's real server, in process (test_fastpath.py, test_edge.py).

The parts are assembled as ``faasd up`` does (tests/gateway/conftest.py, memory replicas behind real
sockets, the real call token); :func:`start_served` serves them with :class:`faasd.gateway.HttpServer` on
127.0.0.1 with the fast path on, optionally with the invoke edge (faasd/gateway/edge.py) in front as in
``faasd up``; :class:`Conn` sends bytes exactly as a test gives them and reads whole answers.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from faasd.gateway.edge import Edge
from faasd.gateway.edgerun import run_edge
from faasd.gateway.fastpath import FastInvokeRoute
from faasd.gateway.server import HttpServer, ServerLimits
from faasd.http1 import FRAMING_CHUNKED, FRAMING_LENGTH, ChunkedDecoder, parse_response_head
from tests.gateway.conftest import Gateway
from tests.helpers import scaled

MakeGateway = Callable[..., Awaitable[Gateway]]

HEADER_TIMEOUT_S = 0.5


@dataclass
class Served:
    gateway: Gateway
    server: HttpServer
    port: int
    edge: Edge | None = None
    """The invoke edge in front of the server, or None."""
    edge_done: trio.Event = field(default_factory=trio.Event)

    @property
    def fast_calls(self) -> int:
        """Calls answered without hypercorn: by the trio server's fast path, or by the edge."""
        return self.server.fast_calls + (self.edge.calls if self.edge is not None else 0)

    def working(self) -> int:
        return self.server.working() + (self.edge.working() if self.edge is not None else 0)

    async def connect(self) -> Conn:
        return Conn(await trio.open_tcp_stream("127.0.0.1", self.port))

    async def metric(self, name: str, **labels: str) -> float | None:
        text = (await self.gateway.client.get("/metrics")).text
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else None


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Conn:
    """A raw client connection: send bytes as given, read whole answers."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reply(self, method: str = "POST") -> Reply:
        with trio.fail_after(scaled(10)):
            while b"\r\n\r\n" not in self.buffer:
                await self._more()
            end = self.buffer.index(b"\r\n\r\n")
            head = parse_response_head(self.buffer[:end], request_method=method)
            self.buffer = self.buffer[end + 4 :]
            body = b""
            if head.framing == FRAMING_LENGTH:
                while len(self.buffer) < head.content_length:
                    await self._more()
                body, self.buffer = self.buffer[: head.content_length], self.buffer[head.content_length :]
            elif head.framing == FRAMING_CHUNKED:
                decoder = ChunkedDecoder(1 << 30, 4096, error_status=502)
                pieces = decoder.feed(self.buffer)
                self.buffer = b""
                while not decoder.done:
                    await self._more()
                    pieces += decoder.feed(self.buffer)
                    self.buffer = b""
                body, self.buffer = b"".join(pieces), decoder.leftover
        return Reply(head.status, dict(head.headers), body)

    async def closed(self) -> bool:
        """True when the server closes the connection (within a few seconds)."""
        with trio.move_on_after(scaled(5)):
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return True
        return False

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    async def aclose(self) -> None:
        await self.stream.aclose()


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: faasd.test", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def start_served(
    make_gateway: MakeGateway,
    nursery: trio.Nursery,
    stop: trio.Event,
    *,
    edge: bool,
    limits: dict[str, Any] | None = None,
    **settings: object,
) -> Served:
    """A gateway (``settings``: its config) served on 127.0.0.1 until ``stop``; with ``edge``, the invoke
    edge in front, accepting every connection (``served.edge_done`` is set once it has stopped)."""
    gateway = await make_gateway(**settings)
    server_limits = {"header_timeout_s": HEADER_TIMEOUT_S, "read_timeout_s": HEADER_TIMEOUT_S, **(limits or {})}
    server = HttpServer(
        gateway.parts.app,
        bind=["127.0.0.1:0"],
        limits=ServerLimits(**server_limits),
        graceful_timeout_s=1.0,
        fast_route=FastInvokeRoute(gateway.parts.invoker),
    )
    binds = await nursery.start(partial(server.serve, shutdown_trigger=stop.wait))
    served = Served(gateway, server, int(binds[0].rsplit(":", 1)[1]))
    if edge:
        accepting = trio.Event()

        def hook(edge: Edge) -> None:
            served.edge = edge
            accepting.set()

        async def run() -> None:
            try:
                await run_edge(server, gateway.parts.invoker, 1.0, stop, answered, hook)
            finally:
                served.edge_done.set()

        answered = trio.Event()
        answered.set()
        nursery.start_soon(run)
        with trio.fail_after(scaled(10)):
            await accepting.wait()
    return served
