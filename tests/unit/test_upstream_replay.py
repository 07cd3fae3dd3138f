"""When the gateway sends a call again on a new connection (faasd/gateway/proxy.py ``UpstreamPool.take``,
``ProxyRequest.replayable``, ``_exchange``).

A kept connection the replica closed while it was idle is dropped before use. A call whose kept connection
fails after the request was sent is sent again only if it is replayable: a POST that a killed replica
may have run gets its error and does not run twice. (The bug this guards against: a POST on a
connection made ahead of the replica's first call was sent again to the replica's restart after its
watchdog was killed mid-call, and the client waited for the second run instead of getting its 502.)

The replica here is a real trio server on 127.0.0.1 that counts the requests it reads.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from faasd.errors import InvocationError
from faasd.gateway.proxy import ProxyRequest, UpstreamPool, forward_raw
from faasd.providers.types import Endpoint

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _request(method: str, extra: bytes = b"") -> ProxyRequest:
    async def no_more() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    head = method.encode() + b" / HTTP/1.1\r\nhost: x" + extra
    return ProxyRequest(method=method, head=head, body=b"x", more_body=False, length=1, receive=no_more)


async def _forward(pool: UpstreamPool, endpoint: Endpoint, request: ProxyRequest) -> int:
    async def write(data: bytes) -> None:
        pass

    return await forward_raw(pool, endpoint, request, write, timeout_s=5.0, response_headers=[], keep_alive=True)


async def _replica(
    nursery: trio.Nursery, *, fail_first: bool = False, close_after_answer: bool = False
) -> tuple[Endpoint, list[bytes]]:
    """A replica that answers 200 to what it reads; with ``fail_first`` its first connection reads a
    request and closes without answering (its watchdog killed mid-call); with ``close_after_answer``
    each connection is closed once answered, with no ``Connection: close`` said (an idle timeout).
    Returns the endpoint and the requests read."""
    seen: list[bytes] = []

    async def serve(stream: trio.SocketStream) -> None:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            seen.append(data)
            if fail_first and len(seen) == 1:
                await stream.aclose()
                return
            await stream.send_all(ANSWER)
            if close_after_answer:
                await stream.aclose()
                return

    listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    return Endpoint("127.0.0.1", listeners[0].socket.getsockname()[1], "r1"), seen


@pytest.mark.parametrize(
    ("method", "extra", "replayed"),
    [
        ("POST", b"", False),
        ("PUT", b"", False),
        ("GET", b"", True),
        ("HEAD", b"", True),
        ("POST", b"\r\nidempotency-key: k-1", True),
    ],
)
async def test_a_call_that_failed_on_a_kept_connection_is_sent_again_only_if_replayable(
    method: str, extra: bytes, replayed: bool, nursery: trio.Nursery
) -> None:
    endpoint, seen = await _replica(nursery, fail_first=True)
    pool = UpstreamPool()
    await pool.preconnect(endpoint)  # The kept connection the call goes out on.
    request = _request(method, extra)
    if replayed:
        assert await _forward(pool, endpoint, request) == 200
        assert len(seen) == 2 and pool.connects == 2
    else:
        with pytest.raises(InvocationError, match="failed"):
            await _forward(pool, endpoint, request)
        assert len(seen) == 1 and pool.connects == 1  # It ran once; the client gets the error.
    await pool.aclose()


async def test_a_kept_connection_the_replica_closed_while_idle_is_dropped_before_use(nursery: trio.Nursery) -> None:
    """A POST is not replayable, so it must never go out on a connection known to be closed."""
    endpoint, seen = await _replica(nursery, close_after_answer=True)
    pool = UpstreamPool()
    assert await _forward(pool, endpoint, _request("POST")) == 200
    [kept] = pool._idle[endpoint.authority]
    with trio.fail_after(5):  # The replica's close (its idle timeout, or its restart) reaches the gateway.
        while not kept.stream.socket.is_readable():
            await trio.sleep(0.005)
    assert await _forward(pool, endpoint, _request("POST")) == 200
    assert len(seen) == 2 and pool.connects == 2
    assert kept.stream.socket.fileno() == -1  # Closed, not only dropped.
    await pool.aclose()
