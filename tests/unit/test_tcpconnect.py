"""faasd/tcpconnect.py: an address is connected without the resolver, a name through it, against real sockets."""

from __future__ import annotations

import functools
import socket

import pytest
import trio

from faasd import tcpconnect
from faasd.tcpconnect import ip_family, open_tcp


async def _echo_once(stream: trio.SocketStream) -> None:
    await stream.send_all(await stream.receive_some(64))
    await stream.aclose()


async def _listen(nursery: trio.Nursery, host: str) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _echo_once, 0, host=host))
    port: int = listeners[0].socket.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("host", "family"),
    [
        ("127.0.0.1", socket.AF_INET),
        ("::1", socket.AF_INET6),
        ("10.0.0.7", socket.AF_INET),
        ("localhost", None),
        ("fe80::1%eth0", None),  # A zone only the resolver understands.
        ("", None),
        ("127.0.0.1\x00", None),
    ],
)
def test_ip_family_tells_addresses_from_names(host: str, family: int | None) -> None:
    assert ip_family(host) == family


async def test_an_address_is_connected_without_a_lookup(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    port = await _listen(nursery, "127.0.0.1")

    async def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError("an address must not go through trio.open_tcp_stream")

    monkeypatch.setattr(tcpconnect.trio, "open_tcp_stream", no_lookup)
    stream = await open_tcp("127.0.0.1", port)
    async with stream:
        assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await stream.send_all(b"ping")
        assert await stream.receive_some(64) == b"ping"


async def test_a_name_is_resolved(nursery: trio.Nursery) -> None:
    port = await _listen(nursery, "127.0.0.1")
    async with await open_tcp("localhost", port) as stream:
        await stream.send_all(b"name")
        assert await stream.receive_some(64) == b"name"


@pytest.mark.parametrize("host", ["a" * 300, "x" * 64 + ".example", "127.0.0.1\x00", "\x00"])
async def test_a_host_that_is_neither_name_nor_address_is_an_oserror(host: str) -> None:
    with pytest.raises(OSError):
        await open_tcp(host, 9)


async def test_a_refused_connection_raises_and_leaves_no_socket_open() -> None:
    with socket.socket() as probe:  # A port nobody listens on: bound, then released.
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    opened: list[trio.socket.SocketType] = []
    real_socket = trio.socket.socket

    def tracking_socket(*args: object, **kwargs: object) -> trio.socket.SocketType:
        sock = real_socket(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(sock)
        return sock

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tcpconnect.trio.socket, "socket", tracking_socket)
        with pytest.raises(OSError):
            await open_tcp("127.0.0.1", port)
    assert len(opened) == 1 and opened[0].fileno() == -1
