"""The invoke fast path (faasd/gateway/fastpath.py) behind the daemon's real HTTP server, in process.

The parts are assembled as ``faasd up`` does and served on 127.0.0.1 with the fast path on
(tests/gateway/raw.py); each test runs on the trio server alone and with the invoke edge in front of it.
The tests talk raw HTTP/1.1, so they choose how the bytes arrive: whole (the fast path, or the edge) or
in pieces (hypercorn's protocol). ``served.fast_calls`` says which path answered: each test checks it,
or it would pass just as well with the fast path off.
"""

from __future__ import annotations

import json
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import pytest
import trio

from faasd.gateway.fastpath import FastInvokeRoute, Verdict, classify
from faasd.gateway.proxy import ProxyRequest, UpstreamClosed, UpstreamPool, forward_raw
from faasd.providers.memory import Answer, Call
from faasd.providers.types import Endpoint
from tests.gateway.raw import HEADER_TIMEOUT_S, Conn, MakeGateway, Served, post, start_served
from tests.helpers import scaled


@pytest.fixture(params=["trio", "edge"])
async def serve(
    make_gateway: MakeGateway, nursery: trio.Nursery, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Each test runs twice: the trio server alone, and with the invoke edge (faasd/gateway/edge.py) in
    front of it, accepting every connection as in ``faasd up``: the same bytes must get the same answers."""
    stop = trio.Event()
    yield partial(start_served, make_gateway, nursery, stop, edge=request.param == "edge")
    stop.set()


async def test_a_whole_call_is_answered_by_the_fast_path_as_the_asgi_route_answers_it(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve()
    await served.gateway.deploy("echo", "cat")
    await served.gateway.wait_available("echo", 1)
    conn = await served.connect()
    request = post("/function/echo", b"whole", "Content-Type: text/plain", "X-Call-Id: call-1")
    await conn.send(request)
    fast = await conn.reply()
    assert served.fast_calls == 1
    # The same request with its body in a second write: hypercorn's protocol and the ASGI route.
    await conn.send(request[:-3])
    await trio.sleep(0.05)
    await conn.send(request[-3:])
    slow = await conn.reply()
    assert served.fast_calls == 1
    assert (fast.status, fast.body) == (slow.status, slow.body) == (200, b"whole")
    assert fast.headers[b"x-call-id"] == slow.headers[b"x-call-id"] == b"call-1"
    assert set(fast.headers) == set(slow.headers), (fast.headers, slow.headers)
    assert fast.headers[b"content-type"] == b"text/plain"
    assert int(fast.headers[b"x-start-time"]) > 0
    # Keep-alive works both ways: the next call on the same connection goes fast again (once hypercorn's
    # protocol has finished its cycle: a request arriving before that is its own).
    await trio.sleep(0.05)
    await conn.send(post("/function/echo.openfaas-fn", b"again"))
    assert (await conn.reply()).body == b"again"
    assert served.fast_calls == 2
    await conn.aclose()


async def test_pipelined_and_mixed_requests_keep_their_order(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    await served.gateway.deploy("echo", "cat")
    await served.gateway.wait_available("echo", 1)
    conn = await served.connect()
    await conn.send(
        post("/function/echo", b"one")
        + b"GET /healthz HTTP/1.1\r\nHost: faasd.test\r\n\r\n"
        + post("/function/echo", b"three")
        + post("/", b"four", "X-Function: echo")
    )
    assert (await conn.reply()).body == b"one"
    healthz = await conn.reply("GET")
    assert (healthz.status, healthz.body) == (200, b"OK\n")
    assert (await conn.reply()).body == b"three"
    assert (await conn.reply()).body == b"four"
    assert served.fast_calls >= 1  # The first; the rest were already hypercorn's, pipelined behind /healthz.
    before = served.fast_calls
    await trio.sleep(0.05)  # hypercorn's protocol ends its cycle after its last write.
    await conn.send(post("/", b"five", "X-Function: echo") + post("/function/echo", b"six"))
    assert [(await conn.reply()).body for _ in range(2)] == [b"five", b"six"]
    assert served.fast_calls == before + 2
    await conn.aclose()


async def test_a_head_in_pieces_is_held_then_served_and_a_stalled_one_times_out(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve()
    await served.gateway.deploy("echo", "cat")
    await served.gateway.wait_available("echo", 1)
    conn = await served.connect()
    request = post("/function/echo", b"pieces")
    for piece in (request[:6], request[6:20], request[20:]):
        await conn.send(piece)
        await trio.sleep(0.02)
    assert (await conn.reply()).body == b"pieces"
    assert served.fast_calls == 1
    # A head that stops coming is cut off after header_timeout with a 408, as on the ASGI route.
    started = trio.current_time()
    await conn.send(b"POST /function/echo HTTP/1.1\r\nHost: x")
    timed_out = await conn.reply()
    assert timed_out.status == 408
    assert HEADER_TIMEOUT_S * 0.9 <= trio.current_time() - started < scaled(HEADER_TIMEOUT_S + 2)
    assert await conn.closed()
    # A head cut short by the client's close is answered 400 (the bytes held go to the protocol).
    conn = await served.connect()
    await conn.send(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Le")
    await trio.sleep(0.05)
    await conn.stream.send_eof()
    assert (await conn.reply()).status == 400
    await conn.aclose()


async def test_errors_on_the_fast_path(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve(max_body_bytes=1024)
    await served.gateway.deploy("echo", "cat")
    await served.gateway.wait_available("echo", 1)
    conn = await served.connect()
    cases = [
        (post("/function/nope", b"x"), 404, b"Function not found: nope\n"),
        (post("/function/echo/a%00b", b"x"), 400, b"The path or query contains a NUL byte (%00)\n"),
        (post("/function/echo?x=%00", b"x"), 400, b"The path or query contains a NUL byte (%00)\n"),
        (post("/function/bad%20name", b"x"), 400, b"Invalid function name: 'bad%20name'\n"),
        (post("/function/echo.other", b"x"), 400, None),
        (post("/function/echo", b"x" * 2000), 413, b"Request body exceeds 1024 bytes\n"),
        (post("/", b"x", "X-Function: nope"), 404, b"Function not found: nope\n"),
    ]
    for request, status, body in cases:
        await conn.send(request)
        reply = await conn.reply()
        assert reply.status == status, (request[:40], reply)
        if body is not None:
            assert reply.body == body
        assert reply.headers[b"x-content-type-options"] == b"nosniff"
        assert reply.headers[b"content-type"] == b"text/plain; charset=utf-8"
        assert b"x-call-id" in reply.headers and b"date" in reply.headers
    assert served.fast_calls == len(cases)
    # The connection survived every error; Connection: close is honoured, and then the server closes.
    await conn.send(post("/function/echo", b"last", "Connection: close"))
    last = await conn.reply()
    assert (last.body, last.headers.get(b"connection")) == (b"last", b"close")
    assert await conn.closed()


async def test_head_and_options(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    await served.gateway.deploy("echo", "cat")
    await served.gateway.wait_available("echo", 1)
    conn = await served.connect()
    await conn.send(b"HEAD /function/echo/_/health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await conn.reply("HEAD")
    # The memory replica answers HEAD with Content-Length: 0; the gateway relays the replica's length.
    assert (head.status, head.body, head.headers[b"content-length"]) == (200, b"", b"0")
    await conn.send(b"OPTIONS /function/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await conn.reply("OPTIONS")).status == 200
    await conn.send(b"GET /function/echo/_/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await conn.reply("GET")).body == b"OK"
    assert served.fast_calls == 3


async def test_metrics_and_load_count_every_call_once(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    await served.gateway.deploy("echo", "cat")
    await served.gateway.wait_available("echo", 1)
    conn = await served.connect()
    for i in range(20):
        await conn.send(post("/function/echo", b"%d" % i))
        assert (await conn.reply()).body == b"%d" % i
    for i in range(5):  # Through hypercorn: the body in a second write.
        request = post("/function/echo", b"slow%d" % i)
        await conn.send(request[:-2])
        await trio.sleep(0.01)
        await conn.send(request[-2:])
        assert (await conn.reply()).status == 200
    assert served.fast_calls == 20
    labels = {"function_name": "echo"}
    # A call is counted once its answer is written: the last one may be a moment behind its client.
    with trio.fail_after(scaled(2)):
        while await served.metric("gateway_function_invocation_total", code="200", **labels) != 25:
            await trio.sleep(0.01)
    assert await served.metric("gateway_function_invocation_started_total", **labels) == 25
    assert await served.metric("faasd_function_inflight", **labels) == 0
    meter = served.gateway.parts.invoker.meter
    await trio.sleep(1.05)  # The meter's current second closes.
    assert sum(meter.window("echo").requests) == 25


async def test_the_call_token_is_the_gateways_never_the_clients(serve: Callable[..., Awaitable[Served]]) -> None:
    async def headers(call: Call) -> Answer:
        return Answer(200, json.dumps(dict(call.headers)).encode())

    served = await serve(programs={"headers": headers})
    await served.gateway.deploy("show", "headers")
    await served.gateway.wait_available("show", 1)
    conn = await served.connect()
    await conn.send(post("/function/show", b"", "X-Faasd-Call-Token: forged-by-the-client-0123456789"))
    reply = await conn.reply()
    assert reply.status == 200 and served.fast_calls == 1  # The replica refuses calls without the token.
    seen = json.loads(reply.body)
    assert "x-faasd-call-token" not in seen, seen  # The replica takes it out; the forged one never reached it.
    assert seen["x-forwarded-host"] == "faasd.test" and seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-call-id"] == reply.headers[b"x-call-id"].decode()


async def test_each_call_gets_a_new_version_4_uuid_as_its_call_id(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    await served.gateway.deploy("echo", "cat")
    await served.gateway.wait_available("echo", 1)
    conn = await served.connect()
    ids = []
    for _ in range(50):
        await conn.send(post("/function/echo", b"x"))
        reply = await conn.reply()
        assert reply.status == 200
        call_id = reply.headers[b"x-call-id"].decode()
        parsed = uuid.UUID(call_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, call_id)
        ids.append(call_id)
    assert len(set(ids)) == len(ids) and served.fast_calls == 50


async def test_a_client_that_leaves_during_its_call_is_counted_as_499(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    await served.gateway.deploy("slow", "sleep 0.3")
    await served.gateway.wait_available("slow", 1)
    conn = await served.connect()
    await conn.send(post("/function/slow", b""))
    with trio.fail_after(scaled(5)):
        while not served.working():
            await trio.sleep(0.01)
    assert served.fast_calls == 1
    await conn.aclose()
    with trio.fail_after(scaled(5)):
        while await served.metric("gateway_function_invocation_total", code="499", function_name="slow") != 1:
            await trio.sleep(0.05)
    assert served.working() == 0


async def test_what_the_fast_path_leaves_to_hypercorn(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    await served.gateway.deploy("echo", "cat")
    await served.gateway.deploy("HostnameIntent", "echo intent-answer")
    await served.gateway.wait_available("echo", 1)
    await served.gateway.wait_available("HostnameIntent", 1)
    conn = await served.connect()
    alexa = json.dumps(
        {
            "session": {"sessionId": "s-1", "application": {"applicationId": "app-1"}},
            "request": {"type": "IntentRequest", "intent": {"name": "HostnameIntent"}},
        }
    ).encode()
    await conn.send(post("/", alexa, "Content-Type: application/json"))
    assert (await conn.reply()).body == b"intent-answer\n"
    big = b"b" * 300_000  # More than one read: streamed through the ASGI route.
    await conn.send(post("/function/echo", big))
    assert (await conn.reply()).body == big
    await conn.send(post("/function/echo", b"ten bytes.", "Expect: 100-continue"))
    reply = await conn.reply()
    while reply.status == 100:
        reply = await conn.reply()
    assert reply.body == b"ten bytes."
    await conn.send(b"POST /function/echo HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nold")
    assert (await conn.reply()).body == b"old"
    await conn.aclose()
    # A head over max_header_size (16 KiB here), whole in one write: hypercorn's 431, as before.
    conn = await served.connect()
    await conn.send(post("/function/echo", b"x", "X-Long: " + "a" * 20_000))
    assert (await conn.reply()).status == 431
    assert served.fast_calls == 0
    await conn.aclose()


def test_classify() -> None:
    """The decision alone, on the bytes of a connection between requests."""
    route = FastInvokeRoute(None)  # type: ignore[arg-type]  # classify only asks about request lines.
    whole = post("/function/f", b"abc")
    assert classify(whole, route, 16384)[0] is Verdict.FAST
    verdict, request, target, rest = classify(whole + b"GET /", route, 16384)
    assert (verdict, target, rest) == (Verdict.FAST, b"/function/f", b"GET /")
    assert request is not None and request.body == b"abc"
    for start in (b"P", b"POST", b"POST /fun", b"POST /function/f HTTP/1.1\r\nHost: x"):
        assert classify(start, route, 16384)[0] is Verdict.MORE, start
    slow = [
        whole[:-1],  # the body is not all here
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /system/functions",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello's first bytes
        b"get /function/f",
        b"POST /function/f HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        b"POST /function/f HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
        b"POST /function/f HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        b"POST /function/f HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nx",
        b"POST /function/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",  # no X-Function: maybe Alexa
        b"POST /function/f HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000,
    ]
    for data in slow:
        assert classify(data, route, 16384)[0] is Verdict.SLOW, data[:60]


@pytest.mark.parametrize(
    ("answer", "body", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Fn: a\r\n\r\nhello", b"hello", True),
        (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"until the end", False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
        (b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\nRetry-After: 1\r\n\r\nslow", b"slow", True),
    ],
)
async def test_forward_raw_relays_every_framing(
    answer: bytes, body: bytes, reusable: bool, nursery: trio.Nursery
) -> None:
    """A replica's answer by Content-Length, chunked, until it closes (the first bytes with the head, or
    none), without a body, and a status of its own: the client gets it whole, re-framed where needed."""

    async def replica(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        head, _, rest = answer.partition(b"\r\n\r\n")
        await stream.send_all(head + b"\r\n\r\n")  # The head alone first, then the body separately.
        await trio.sleep(0.01)
        await stream.send_all(rest)
        if not reusable:
            await stream.aclose()
        else:
            await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, replica, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    pool = UpstreamPool()
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(bytes(data))

    async def no_more() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    head = b"POST / HTTP/1.1\r\nHost: x"
    request = ProxyRequest(method="POST", head=head, body=b"", more_body=False, length=0, receive=no_more)
    status = await forward_raw(
        pool,
        Endpoint("127.0.0.1", port, "r1"),
        request,
        write,
        timeout_s=5.0,
        response_headers=[(b"x-call-id", b"c-1")],
        keep_alive=True,
    )
    assert status == int(answer[9:12])
    conn = Conn(None)  # type: ignore[arg-type]  # reads only from its buffer here
    conn.buffer = b"".join(written)
    reply = await conn.reply()
    assert (reply.status, reply.body, reply.headers[b"x-call-id"]) == (status, body, b"c-1")
    assert b"date" in reply.headers and b"connection" not in reply.headers
    assert conn.buffer == b""  # Nothing after the answer: the client's framing is exact.
    assert (repr(pool).count("idle=1") == 1) is reusable, repr(pool)
    await pool.aclose()


@pytest.mark.parametrize("reset", [False, True])
async def test_a_replica_failing_mid_answer_is_not_taken_for_the_client_leaving(
    reset: bool, nursery: trio.Nursery
) -> None:
    """The answer started and the replica closes (or resets) its connection: forward_raw raises what
    the invoke path counts as a failed call (500, the answer cut short), never an OSError, which it
    would count as the client gone (499)."""

    async def replica(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await trio.sleep(0.05)
        if reset:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, replica, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(bytes(data))

    async def no_more() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    head = b"POST / HTTP/1.1\r\nHost: x"
    request = ProxyRequest(method="POST", head=head, body=b"", more_body=False, length=0, receive=no_more)
    pool = UpstreamPool()
    with pytest.raises(Exception) as caught:
        await forward_raw(
            pool,
            Endpoint("127.0.0.1", port, "r1"),
            request,
            write,
            timeout_s=5.0,
            response_headers=[],
            keep_alive=True,
        )
    assert isinstance(caught.value, (UpstreamClosed, trio.BrokenResourceError)), repr(caught.value)
    assert not isinstance(caught.value, OSError)
    assert b"".join(written).endswith(b"only part")  # The head and what came went out; the rest never will.
    assert "idle=0" in repr(pool)
