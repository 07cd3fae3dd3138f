"""The invoke edge (faasd/gateway/edge.py): what it does beyond the answers test_fastpath.py checks on both
paths -- its connections' deadlines, its hand-overs to the trio server, its limits, its stop, its failure.

Served as in ``faasd up`` (tests/gateway/raw.py): the trio server on 127.0.0.1, the edge in front of it
accepting every connection, memory replicas behind real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import pytest
import trio

from faasd.providers.types import Endpoint
from tests.gateway.raw import Conn, MakeGateway, Served, post, start_served
from tests.helpers import scaled

Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def stop() -> trio.Event:
    return trio.Event()


@pytest.fixture
async def serve(make_gateway: MakeGateway, nursery: trio.Nursery, stop: trio.Event) -> AsyncIterator[Serve]:
    yield partial(start_served, make_gateway, nursery, stop, edge=True)
    stop.set()


async def echo(served: Served, name: str = "echo", program: str = "cat") -> None:
    await served.gateway.deploy(name, program)
    await served.gateway.wait_available(name, 1)


async def test_what_the_edge_does_not_answer_reaches_the_trio_server_with_its_bytes(serve: Serve) -> None:
    served = await serve()
    assert served.edge is not None
    await echo(served)
    conn = await served.connect()
    await conn.send(post("/function/echo", b"edge"))
    assert (await conn.reply()).body == b"edge"
    assert (served.edge.calls, served.server.adopted) == (1, 0)
    # Another route on the same connection: the connection, with that request, goes to the trio server...
    await conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    healthz = await conn.reply("GET")
    assert (healthz.status, healthz.body) == (200, b"OK\n")
    assert served.server.adopted == 1 and served.edge.handed_over == 1
    # ...which serves it from then on, its calls included (on its own fast path).
    await conn.send(post("/function/echo", b"trio"))
    assert (await conn.reply()).body == b"trio"
    assert (served.edge.calls, served.server.fast_calls) == (1, 1)
    # A new connection starts on the edge again.
    other = await served.connect()
    await other.send(post("/function/echo", b"edge again"))
    assert (await other.reply()).body == b"edge again"
    assert served.edge.calls == 2


async def test_a_call_at_zero_replicas_is_held_by_the_trio_server(serve: Serve) -> None:
    served = await serve()
    assert served.edge is not None
    await echo(served)
    await served.gateway.client.post("/system/scale-function/echo", json={"replicas": 0}, headers=served.gateway.admin)
    with trio.fail_after(scaled(10)):
        while served.gateway.registry.get("echo"):
            await trio.sleep(0.01)
    conn = await served.connect()
    await conn.send(post("/function/echo", b"woken"))
    assert (await conn.reply()).body == b"woken"  # Scale from zero: the trio path holds it, wakes the function.
    assert served.server.adopted == 1 and served.edge.calls == 0


async def test_deadlines_keep_alive_and_function_timeout(serve: Serve) -> None:
    served = await serve(limits={"keep_alive_timeout_s": 0.3}, upstream_timeout_s=0.4)
    assert served.edge is not None
    await echo(served)
    await echo(served, "hang", "sleep 3")
    conn = await served.connect()
    started = trio.current_time()
    await conn.send(post("/function/hang", b""))
    late = await conn.reply()
    took = trio.current_time() - started
    assert late.status == 502 and b"did not answer within 0.4s" in late.body, late
    assert 0.35 <= took < scaled(0.4 + 1.0), took
    # The connection survived the 502; idle past keep_alive_timeout, the edge closes it.
    await conn.send(post("/function/echo", b"still here"))
    assert (await conn.reply()).body == b"still here"
    idle_from = trio.current_time()
    assert await conn.closed()
    assert 0.25 <= trio.current_time() - idle_from < scaled(0.3 + 1.0)
    assert served.server.adopted == 0


async def test_over_max_connections_the_next_one_gets_the_503(serve: Serve) -> None:
    served = await serve(limits={"max_connections": 2})
    assert served.edge is not None
    await echo(served)
    kept = [await served.connect() for _ in range(2)]
    for conn in kept:
        await conn.send(post("/function/echo", b"in"))
        assert (await conn.reply()).status == 200
    extra = await served.connect()
    await extra.send(post("/function/echo", b"one too many"))
    refused = await extra.reply()
    assert refused.status == 503 and b"max_connections = 2" in refused.body
    await kept[0].aclose()
    with trio.fail_after(scaled(5)):
        while len(served.edge.connections) > 1:
            await trio.sleep(0.01)
    again = await served.connect()
    await again.send(post("/function/echo", b"room again"))
    assert (await again.reply()).body == b"room again"


async def test_stop_lets_the_call_in_flight_finish_and_closes_idle_connections(serve: Serve, stop: trio.Event) -> None:
    served = await serve()
    assert served.edge is not None
    await echo(served, "slow", "sleep 0.4")
    idle = await served.connect()
    await idle.send(post("/function/slow", b""))
    assert (await idle.reply()).status == 200
    taken = served.edge.calls
    busy = await served.connect()
    await busy.send(post("/function/slow", b""))
    with trio.fail_after(scaled(5)):
        # The busy call taken, not only a call in flight: the idle connection's answer can reach the client
        # before the edge's thread has marked its call done (its send lets go of the GIL).
        while served.edge.calls == taken or not served.edge.working():
            await trio.sleep(0.01)
    stop.set()
    assert await idle.closed()
    assert (await busy.reply()).status == 200
    assert await busy.closed()
    with trio.fail_after(scaled(5)):
        await served.edge_done.wait()


async def test_an_idle_edge_stops_at_once(serve: Serve, stop: trio.Event) -> None:
    served = await serve()
    stop.set()
    with trio.fail_after(scaled(1)):
        await served.edge_done.wait()


async def test_if_the_edge_fails_the_trio_server_accepts_again(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    served = await serve()
    edge = served.edge
    assert edge is not None
    await echo(served)

    # A bug that ends the edge's loop (not one call: the loop logs those and goes on).
    def fail() -> None:
        edge._done.set_exception(RuntimeError("a bug in the edge"))

    edge.loop.call_soon_threadsafe(fail)
    with trio.fail_after(scaled(5)):
        await served.edge_done.wait()
    conn = await served.connect()
    await conn.send(post("/function/echo", b"trio takes over"))
    assert (await conn.reply()).body == b"trio takes over"
    assert served.server.fast_calls == 1


async def test_many_pipelined_errors_do_not_recurse(serve: Serve) -> None:
    served = await serve()
    assert served.edge is not None
    conn: Conn = await served.connect()
    count = 1500  # Each answered at once: a recursive "next request" would overflow the stack.
    await conn.send(post("/function/nope", b"") * count)
    for _ in range(count):
        assert (await conn.reply()).status == 404
    assert served.edge.calls == count


async def test_a_head_begun_late_on_a_new_connection_still_has_header_timeout_from_the_accept(serve: Serve) -> None:
    """The edge hands a head in pieces to the trio server: its header_timeout keeps counting from the accept
    (a slow client does not get the edge's wait and the trio server's one after the other)."""
    served = await serve(limits={"header_timeout_s": 1.0})
    assert served.edge is not None
    conn = await served.connect()
    accepted = trio.current_time()
    await trio.sleep(0.7)
    await conn.send(b"POST /function/echo HTTP/1.1\r\nHost: x")
    assert (await conn.reply()).status == 408
    assert 0.9 <= trio.current_time() - accepted < 1.65  # From the handover on, it would be 1.7 s or more.
    assert served.server.adopted == 1


@pytest.mark.parametrize(
    ("method", "answer", "body", "length"),
    [
        ("POST", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Fn: a\r\n\r\nhello", b"hello", b"5"),
        (
            "POST",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"abcde",
            None,
        ),
        ("POST", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"until the end", None),
        ("POST", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"", None),
        ("POST", b"HTTP/1.1 204 No Content\r\n\r\n", b"", b"0"),
        ("POST", b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\nRetry-After: 1\r\n\r\nslow", b"slow", b"4"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"", b"5"),
        ("POST", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", b"2"),
    ],
)
async def test_every_framing_of_a_replica_answer_is_relayed_by_the_edge(
    serve: Serve, nursery: trio.Nursery, method: str, answer: bytes, body: bytes, length: bytes | None
) -> None:
    """A replica's answer by Content-Length, chunked, until it closes, without a body, with a status of its
    own, to HEAD (the declared length kept), after a 100: the head and the body in separate writes."""

    async def replica(stream: trio.SocketStream) -> None:
        interim = answer.startswith(b"HTTP/1.1 100")  # Both heads first, then the body.
        head, _, rest = answer.rpartition(b"\r\n\r\n") if interim else answer.partition(b"\r\n\r\n")
        while await stream.receive_some(65536):  # One request per read (small, whole).
            await stream.send_all(head + b"\r\n\r\n")
            await trio.sleep(0.01)
            await stream.send_all(rest)
            if b"Connection: close" in answer:
                await stream.aclose()
                return

    served = await serve()
    assert served.edge is not None
    await echo(served)
    listeners = await nursery.start(partial(trio.serve_tcp, replica, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    served.gateway.registry.publish("echo", [Endpoint("127.0.0.1", port, "raw-1", call_token=False)])
    conn = await served.connect()
    request = b"%s /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % method.encode()
    await conn.send(request)
    reply = await conn.reply(method)
    assert (reply.status, reply.body) == (int(answer.rpartition(b"HTTP/1.1 ")[2][:3]), body), reply
    assert reply.headers.get(b"content-length") == length, reply.headers
    assert b"x-call-id" in reply.headers and b"date" in reply.headers and b"connection" not in reply.headers
    assert served.edge.calls == 1 and served.server.adopted == 0
    # The connection is kept for the next call, whatever the replica's framing was.
    await conn.send(request)
    assert (await conn.reply(method)).status == reply.status


async def test_the_edges_calls_in_flight_are_the_autoscalers_load(serve: Serve) -> None:
    """Four calls of 0.4 s at once, twice: the load meter's concurrency (the area under the calls-in-flight
    curve, per second) adds up to 4 x 0.4 x 2 = 3.2 call-seconds, as on the trio path -- each call's start
    counted when it starts, not with its end (which left about 0.5)."""
    served = await serve()
    assert served.edge is not None
    await echo(served, "slow", "sleep 0.4")
    conns = [await served.connect() for _ in range(4)]

    async def call(conn: Conn) -> None:
        await conn.send(post("/function/slow", b""))
        assert (await conn.reply()).status == 200

    for _ in range(2):
        async with trio.open_nursery() as calls:
            for conn in conns:
                calls.start_soon(call, conn)
    await trio.sleep(1.05)  # The meter's current second closes.
    window = served.gateway.parts.invoker.meter.window("slow")
    assert sum(window.requests) == 8
    assert 2.8 <= sum(window.concurrency) <= 3.6, window.concurrency
