"""A TCP connection from the daemon's trio loop to a replica, a health probe's target or a callback URL.

Why not always :func:`trio.open_tcp_stream`: even for an address (which trio's ``getaddrinfo`` answers
without a thread) it runs a resolution and Happy Eyeballs in a nursery of its own. Every local and Swarm
replica is reached by an IP address, and for one the daemon needs one socket and its ``connect``: about a
third of the CPU (40-50 us against 110-130 us a connect on loopback, more with cold caches), and these
connects run on the trio thread that also serves calls and deploys (docs/coldstart.md). A name still goes
through trio.
"""

from __future__ import annotations

import socket

import trio

__all__ = ["ip_family", "open_tcp"]


async def open_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP connection to ``host:port`` (``TCP_NODELAY`` set, as :func:`trio.open_tcp_stream` sets it).

    Raises:
        OSError: the connection was refused or failed (the socket is closed), or the host is not a name or
            an address that can be resolved (a host from a backend's answer is not trusted to be one: the
            resolver's codec raises ``UnicodeError`` for a label over 63 characters, for one).
    """
    family = ip_family(host)
    if family is None:
        try:
            return await trio.open_tcp_stream(host, port)
        except ValueError as exc:  # UnicodeError from the IDNA codec, or a NUL the resolver refuses.
            raise OSError(f"cannot connect to {host[:80]!r}: {exc}") from exc
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)  # It sets TCP_NODELAY.


def ip_family(host: str) -> int | None:
    """``AF_INET`` or ``AF_INET6`` when ``host`` is an address of that family, None for a name (or an IPv6
    address with a zone, which only the resolver understands)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):  # ValueError: a NUL in the text.
            continue
        return family
    return None
