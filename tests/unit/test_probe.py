"""faasd/providers/common/probe.py, the replica health probe every backend runs, against real sockets."""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio

from faasd.providers.common.probe import health_ok, wait_healthy

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve(nursery: trio.Nursery, handler: Handler) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


def answering(head: bytes) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(1024)
        assert request.startswith(b"GET /_/health HTTP/1.1\r\n"), request
        await stream.send_all(head)
        await stream.aclose()

    return handler


@pytest.mark.parametrize(
    ("head", "ready"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", True),
        (b"HTTP/1.0 200 OK\r\n\r\n", True),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", False),
        (b"SSH-2.0-OpenSSH\r\n", False),  # Not HTTP at all.
        (b"", False),  # Closed without a word.
        (b"HTTP/1.1 2", False),  # Cut short.
    ],
)
async def test_only_a_200_status_line_is_ready(nursery: trio.Nursery, head: bytes, ready: bool) -> None:
    port = await serve(nursery, answering(head))
    assert await health_ok("127.0.0.1", port) is ready


async def test_a_closed_port_is_not_ready() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # Bound, never listening: connections are refused.
        assert await health_ok("127.0.0.1", port, connect_timeout_s=1.0, timeout_s=1.0) is False


async def test_a_silent_peer_is_bounded_by_the_answer_timeout(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await serve(nursery, silent)
    started = trio.current_time()
    assert await health_ok("127.0.0.1", port, timeout_s=0.2) is False
    assert 0.19 <= trio.current_time() - started < 2


async def test_wait_healthy_returns_at_the_first_200(nursery: trio.Nursery) -> None:
    answers = iter([b"HTTP/1.1 503 x\r\n\r\n", b"HTTP/1.1 503 x\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"])
    seen = []

    async def handler(stream: trio.SocketStream) -> None:
        head = next(answers)
        seen.append(head)
        await answering(head)(stream)

    port = await serve(nursery, handler)
    with trio.fail_after(5):
        await wait_healthy("127.0.0.1", port, poll_s=0.01)
    assert len(seen) == 3
