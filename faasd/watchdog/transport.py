"""The watchdog's own loop's sockets (:mod:`faasd.watchdog.loop`): listeners, and a transport per connection.

:class:`Transport` is asyncio's selector socket transport as far as :class:`faasd.watchdog.server.HttpConnection`
uses it: it sends at once when nothing is buffered and buffers the rest (sent when the socket is writable);
pauses and resumes its protocol's writing around the same 64/16 KiB water marks; keeps the write side open
after end of file when ``eof_received`` says so; flushes before closing; and calls ``connection_lost``
exactly once, after which the socket is closed. A protocol whose ``data_received`` raises loses its
connection (logged), as with asyncio.
"""

from __future__ import annotations

import errno

from faasd.logs import LineLogger

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any

    from faasd.watchdog.loop import Loop
else:
    # The C socket type: socket.py turns its constants into enums at import (with ``enum``, ~2 ms of every
    # watchdog's start, docs/coldstart.md); its Python-level ``accept`` is all it adds that is used here.
    import _socket as socket

__all__ = ["Server", "Transport", "bind"]

MAX_READ_BYTES = 256 * 1024
"""Bytes asked for per ``recv`` (asyncio's ``max_size``)."""
HIGH_WATER_BYTES = 64 * 1024
"""Buffered output past which a protocol is told to pause writing; it resumes at a quarter (asyncio's)."""
ACCEPT_RETRY_S = 1.0
"""Out of descriptors (EMFILE...): accepting pauses this long rather than spinning (asyncio's delay)."""

log = LineLogger("faasd.watchdog")


def bind(host: str | None, port: int, reuse_address: bool) -> list[socket.socket]:
    """A listening socket per address of ``host`` (as asyncio's ``create_server``: IPv6 ones V6ONLY)."""
    name = host.encode() if host and host.isascii() else (host or None)  # bytes: no ``encodings.idna`` import
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            listener = socket.socket(family, kind, proto)
            sockets.append(listener)
            if reuse_address:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
    except OSError as exc:
        for listener in sockets:
            listener.close()
        raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: {exc.strerror}") from None
    return sockets


class Server:
    """The listening sockets of one :meth:`Loop.create_server`; :meth:`close` stops accepting (connections
    already made go on)."""

    def __init__(self, loop: Loop, sockets: list[socket.socket], factory: Callable[[], Any]) -> None:
        self._loop = loop
        self.sockets = sockets
        self._factory = factory

    def accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                fd, _address = listener._accept()  # type: ignore[attr-defined]  # socket.socket.accept's own step
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._loop.remove_reader(listener.fileno())
                    self._loop.call_later(ACCEPT_RETRY_S, self._resume, listener)
                return
            conn = socket.socket(listener.family, listener.type, listener.proto, fileno=fd)
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = Transport(self._loop, conn, self._factory())
            if not transport._closing and not transport._paused:  # As its reader would (none when paused).
                # A loopback client sends its request as soon as its connect completes, mostly before this
                # accept: read it now rather than a loop pass later (an EAGAIN costs one recv otherwise).
                transport._read_ready()

    def _resume(self, listener: socket.socket) -> None:
        if listener in self.sockets:
            self._loop.add_reader(listener.fileno(), self.accept, listener)

    def close(self) -> None:
        for listener in self.sockets:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        self.sockets = []


class Transport:
    """One connection's socket for its protocol: asyncio's selector socket transport, the parts the
    watchdog's server uses (see the module docstring)."""

    __slots__ = (
        "_buffer",
        "_closing",
        "_fd",
        "_high",
        "_loop",
        "_lost",
        "_low",
        "_paused",
        "_protocol",
        "_sock",
        "_writing_paused",
    )

    def __init__(self, loop: Loop, sock: socket.socket, protocol: Any) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buffer = bytearray()
        self._closing = False
        self._lost = False
        self._paused = False
        self._writing_paused = False
        self._high = HIGH_WATER_BYTES
        self._low = HIGH_WATER_BYTES // 4
        protocol.connection_made(self)
        if not self._closing:
            loop.add_reader(self._fd, self._read_ready)

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "socket":
            return self._sock
        if name == "peername":
            try:
                return self._sock.getpeername()
            except OSError:
                return default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(MAX_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        if not data:
            if self._protocol.eof_received():
                self._loop.remove_reader(self._fd)  # Half-closed: the answer may still go out.
            else:
                self.close()
            return
        try:
            self._protocol.data_received(data)
        except Exception as exc:  # As asyncio: a protocol that failed loses its connection.
            log.exception("data_received failed")
            self._force_close(exc)

    def pause_reading(self) -> None:
        if not self._closing and not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._closing and self._paused:
            self._paused = False
            self._loop.add_reader(self._fd, self._read_ready)

    def write(self, data: bytes) -> None:
        """Send now what the socket takes; buffer the rest (its writer sends it when it can)."""
        if not data or self._lost:
            return
        if not self._buffer:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._force_close(exc)
                return
            if sent == len(data):
                return
            self._buffer += memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        else:
            self._buffer += data
        if len(self._buffer) > self._high and not self._writing_paused:
            self._writing_paused = True
            self._protocol.pause_writing()

    def writelines(self, pieces: list[bytes]) -> None:
        self.write(b"".join(pieces))

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        del self._buffer[:sent]
        if self._writing_paused and len(self._buffer) <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()  # May write more.
        if not self._buffer:
            self._loop.remove_writer(self._fd)
            if self._closing and not self._lost:
                self._lost = True
                self._loop.call_soon(self._connection_lost, None)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER_BYTES if high is None else high
        self._low = (self._high // 4 if high is not None else HIGH_WATER_BYTES // 4) if low is None else low

    def close(self) -> None:
        """Stop reading; ``connection_lost`` once what is buffered is sent."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._buffer:
            self._lost = True
            self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        """Close now, dropping what is buffered."""
        self._force_close(None)

    def detach(self) -> socket.socket:
        """Give the socket up, open, to another owner (the daemon's invoke edge hands connections to its trio
        server): no callback comes any more, ``connection_lost`` included. Only with nothing left to write."""
        if self._buffer:
            raise RuntimeError("cannot detach a transport with unsent bytes")
        self._lost = self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        return self._sock

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._buffer.clear()
        self._loop.remove_writer(self._fd)
        self._loop.remove_reader(self._fd)
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._loop.remove_writer(self._fd)
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
