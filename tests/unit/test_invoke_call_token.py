"""The gateway sends the call token only to replicas that were given it (faasd/gateway/invoke.py).

A Swarm service made by hand (the seed's ``docker service create --network=functions ...``) has no
token mounted, checks none, and may be any HTTP server: a token sent to it would let it call every
other function past the gateway. A replica with a token of its own (Marathon) gets that one instead.
The invoker runs in process here; its replicas are real TCP servers on
127.0.0.1 that record the request heads they get.
"""

from __future__ import annotations

from typing import Any

import trio

from faasd.calltoken import CallToken, header_line
from faasd.gateway.invoke import Invoker
from faasd.gateway.metrics import GatewayMetrics
from faasd.gateway.proxy import UpstreamPool
from faasd.providers.types import Endpoint
from faasd.registry import EndpointRegistry

TOKEN = b"t0ken-of-this-daemon-0123456789abcdef"


class Replica:
    """A one-request-per-connection HTTP server on 127.0.0.1 that keeps each request head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0]
            self.heads.append(head)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


async def _call(invoker: Invoker, name: str) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/function/{name}",
        "raw_path": f"/function/{name}".encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"0")],
        "client": ("127.0.0.1", 50000),
    }
    await invoker.function_route(scope, receive, send)
    return int(sent[0]["status"])


async def test_token_only_to_replicas_that_take_it() -> None:
    made, hand, mixed_old, mixed_new = Replica(), Replica(), Replica(), Replica()
    registry = EndpointRegistry()
    pool = UpstreamPool()
    invoker = Invoker(
        exists=lambda name: True,
        registry=registry,
        metrics=GatewayMetrics(ready_replicas=dict),
        pool=pool,
        upstream_timeout_s=10,
        ready_timeout_s=1,
        max_body_bytes=1 << 20,
        call_token=CallToken(TOKEN),
    )
    async with trio.open_nursery() as nursery:
        for replica in (made, hand, mixed_old, mixed_new):
            await nursery.start(replica.serve)
        registry.publish("made", [Endpoint("127.0.0.1", made.port, "m1")])
        registry.publish("hand", [Endpoint("127.0.0.1", hand.port, "h1", call_token=False)])
        # A service made by hand being taken over by a deploy: old task without, new task with the token.
        registry.publish(
            "mixed",
            [
                Endpoint("127.0.0.1", mixed_old.port, "o1", call_token=False),
                Endpoint("127.0.0.1", mixed_new.port, "n1"),
            ],
        )
        for name in ("made", "hand", "mixed", "mixed", "mixed", "mixed"):
            assert await _call(invoker, name) == 200
        nursery.cancel_scope.cancel()
    await pool.aclose()

    header = b"\r\nX-Faasd-Call-Token: " + TOKEN
    assert len(made.heads) == 1 and header in made.heads[0]
    assert len(hand.heads) == 1 and b"faasd-call-token" not in hand.heads[0].lower()
    assert mixed_old.heads and mixed_new.heads  # Both took calls (round robin when idle).
    assert all(b"faasd-call-token" not in head.lower() for head in mixed_old.heads)
    assert all(header in head for head in mixed_new.heads)


async def test_a_replica_with_a_token_of_its_own_gets_that_one_only() -> None:
    """Marathon: each function's replicas take their function's token (``Endpoint.token_line``), and
    must never see the daemon's."""
    own = Replica()
    registry = EndpointRegistry()
    pool = UpstreamPool()
    invoker = Invoker(
        exists=lambda name: True,
        registry=registry,
        metrics=GatewayMetrics(ready_replicas=dict),
        pool=pool,
        upstream_timeout_s=10,
        ready_timeout_s=1,
        max_body_bytes=1 << 20,
        call_token=CallToken(TOKEN),
    )
    function_token = b"token-of-this-function-only-0123456789"
    async with trio.open_nursery() as nursery:
        await nursery.start(own.serve)
        registry.publish("own", [Endpoint("127.0.0.1", own.port, "r1", token_line=header_line(function_token))])
        assert await _call(invoker, "own") == 200
        nursery.cancel_scope.cancel()
    await pool.aclose()
    (head,) = own.heads
    assert head.lower().count(b"x-faasd-call-token") == 1
    assert b"\r\nX-Faasd-Call-Token: " + function_token in head and TOKEN not in head
