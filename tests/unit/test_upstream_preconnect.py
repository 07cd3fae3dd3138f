"""Connections made ahead of a replica's first call (faasd/gateway/proxy.py ``UpstreamPool.preconnect``,
faasd/registry.py ``announce`` and ``retire``).

The replica here is a real listening socket on 127.0.0.1 that has not accepted yet, as a local slot's
socket is while its replica starts: the connection waits in its backlog, and a request sent on it is read
once the socket accepts.
"""

from __future__ import annotations

import os
import socket

import trio

from faasd.gateway.proxy import UpstreamPool
from faasd.providers.types import Endpoint
from faasd.registry import EndpointRegistry


def _listening() -> tuple[socket.socket, Endpoint]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener, Endpoint("127.0.0.1", listener.getsockname()[1], "r1")


async def test_a_connection_made_ahead_carries_a_request_once_the_replica_accepts() -> None:
    listener, endpoint = _listening()
    pool = UpstreamPool()
    registry = EndpointRegistry()
    registry.upstream = pool
    with listener:
        await registry.announce(endpoint)  # Nobody accepts yet: the connection is in the backlog.
        connection = pool.take(endpoint.authority)
        assert connection is not None and pool.connects == 1
        await connection.stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
        accepted, _ = await trio.to_thread.run_sync(listener.accept)  # The replica is ready now.
        with accepted:
            assert accepted.recv(100) == b"GET / HTTP/1.1\r\n\r\n"
            accepted.sendall(b"answer")
            assert await connection.stream.receive_some(100) == b"answer"
        await connection.stream.aclose()


async def test_it_connects_ahead_only_where_nothing_is_kept_and_a_refused_connect_is_left_to_the_call() -> None:
    listener, endpoint = _listening()
    pool = UpstreamPool()
    with listener:
        await pool.preconnect(endpoint)
        await pool.preconnect(endpoint)  # One is idle there already.
        assert pool.connects == 1
        pool.forget(endpoint.authority)
    closed = Endpoint("127.0.0.1", endpoint.port, "r2")  # The port listens no more: refused.
    await pool.preconnect(closed)
    assert pool.take(closed.authority) is None and pool.connects == 1


async def test_a_retired_endpoint_s_connections_are_closed() -> None:
    listener, endpoint = _listening()
    pool = UpstreamPool()
    registry = EndpointRegistry()
    registry.upstream = pool
    with listener:
        await registry.announce(endpoint)
        connection = pool.take(endpoint.authority)
        assert connection is not None
        pool.give_back(connection)
        registry.retire(endpoint.authority)
        assert pool.take(endpoint.authority) is None
        assert connection.stream.socket.fileno() == -1  # Closed, not merely dropped from the pool.


async def test_without_an_upstream_announce_and_retire_do_nothing() -> None:
    registry = EndpointRegistry()
    await registry.announce(Endpoint("127.0.0.1", 9, "r"))
    registry.retire("127.0.0.1:9")
    assert registry.get("r") == ()


async def test_an_address_a_name_and_a_refused_port_connect_as_they_should() -> None:
    """An IP address is connected with one socket, a name through trio's lookup; a refused connect raises
    :class:`~faasd.errors.InvocationError` naming the replica, and leaves no socket open."""
    from faasd.errors import InvocationError

    listener, endpoint = _listening()
    pool = UpstreamPool()
    with listener:
        for host in ("127.0.0.1", "localhost"):
            connection = await pool.connect(Endpoint(host, endpoint.port, "r1"))
            assert connection.stream.socket.getpeername() == ("127.0.0.1", endpoint.port)
            await connection.stream.aclose()
    fds_before = len(os.listdir("/proc/self/fd"))
    for host in ("127.0.0.1", "localhost", "::1"):
        try:
            await pool.connect(Endpoint(host, endpoint.port, "gone"))
        except InvocationError as exc:
            assert "gone" in str(exc), exc
        else:
            raise AssertionError(f"{host}: a connect to a closed port succeeded")
    assert len(os.listdir("/proc/self/fd")) == fds_before
