"""The replica health probe every backend runs: is a watchdog at ``host:port`` ready for calls?

A replica is published to the endpoint registry only once ``GET /_/health`` answers 200 on a fresh
connection -- faasd's own check, not the orchestrator's (Swarm's first health check comes 2 s after a
task starts; a local replica has none). Both the OpenFaaS watchdogs and faasd's answer it; any other
answer (a 503 while the watchdog starts) means "not yet".

The probe reads only the status line, so an unexpected body (or a server that is not a watchdog) costs
nothing. The connection and the answer can be bounded separately: a new Swarm task's overlay address
drops connection attempts (no refusal) for about a second after the task starts, and a probe that
waited out the whole answer timeout there published the replica seconds late.
"""

from __future__ import annotations

import trio

from faasd.tcpconnect import open_tcp

__all__ = ["HEALTH_PATH", "health_ok", "wait_healthy"]

HEALTH_PATH = "/_/health"
"""The watchdog's readiness path (OpenFaaS's of-watchdog and classic watchdog answer it too)."""

STATUS_LINE_MAX = 256
"""The most read while looking for the status line's end: a peer sending no newline cannot hold a probe."""


async def health_ok(
    host: str, port: int, *, connect_timeout_s: float = float("inf"), timeout_s: float = float("inf")
) -> bool:
    """True when the watchdog at ``host:port`` answers ``GET /_/health`` with 200 (fresh connection).

    Args:
        connect_timeout_s: bound on opening the connection (an address that drops SYNs is retried
            by the caller sooner than ``timeout_s`` would allow).
        timeout_s: bound on sending the request and reading the status line.

    Error handling:
        A refused, reset or timed-out connection is a False, not an exception: trio reports a reset
        while reading as ``BrokenResourceError`` (a local replica being replaced closes its listener
        while a probe reads), and that counts as "not ready" like any other failure.
    """
    stream: trio.SocketStream | None = None
    with trio.move_on_after(connect_timeout_s):
        try:
            stream = await open_tcp(host, port)
        except OSError:
            return False
    if stream is None:
        return False
    request = f"GET {HEALTH_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode("ascii")
    head = b""
    with trio.move_on_after(timeout_s):
        async with stream:
            try:
                await stream.send_all(request)
                while b"\r\n" not in head and len(head) < STATUS_LINE_MAX:
                    chunk = await stream.receive_some(STATUS_LINE_MAX)
                    if not chunk:
                        break
                    head += chunk
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


async def wait_healthy(host: str, port: int, *, poll_s: float) -> None:
    """Return once :func:`health_ok` says so; other answers are retried every ``poll_s``.

    The caller bounds the wait. On a local replica's pre-bound listening socket, a probe made before
    the watchdog accepts waits in the socket's backlog and is answered the moment it does: readiness
    is seen without polling delay; ``poll_s`` only spaces the 503s of a watchdog still starting.
    """
    while not await health_ok(host, port):
        await trio.sleep(poll_s)
