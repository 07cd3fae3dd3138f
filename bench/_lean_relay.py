"""The gateway benchmark's estimate for a gateway on a lean loop (docs/gateway.md, option 3): faasd's own parts.

``python3 bench/_lean_relay.py PORT UPSTREAM_PORT [FAASD_PATH]`` listens on 127.0.0.1:PORT and relays each call
to 127.0.0.1:UPSTREAM_PORT over one kept-alive connection per client connection, on the watchdog's event loop
(``faasd/watchdog/loop.py``) with faasd's sans-I/O HTTP/1.1 parser (``faasd/http1.py``), imported from
FAASD_PATH (the zipapp or a source tree; default: this repository). Per call it does the gateway's header work:
the strict parse of the request and of the replica's answer head, the hop-by-hop headers dropped,
``X-Forwarded-For``/``X-Forwarded-Host``, ``X-Call-Id`` (the client's or a new one), ``X-Start-Time``, the call
token (``RELAY_HEADER``, ``Name: value``, from the environment), ``Date`` and the answer's framing; the header
sets, the call id and the date are the gateway's own (``faasd.gateway.proxy``, ``faasd.gateway.invoke``, which
bring trio into the process: imported, never run). It has no
function registry, limits, deadlines, metrics, failover or error answers: it is not a gateway, and a gateway on
this loop would cost a little more. Between ``bench/_relay.py`` (the floor: any Python hop) and faasd's gateway
(trio), it says how much of the gateway's cost is its loop. Bodies are ``Content-Length`` framed only, as the
benchmark's are.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else str(Path(__file__).resolve().parent.parent))

from faasd.gateway.invoke import _DROP_REQUEST_TEXT as DROP_REQUEST  # the fast path's own set
from faasd.gateway.invoke import new_call_id
from faasd.gateway.proxy import DROP_ANSWER, http_date
from faasd.http1 import FRAMING_LENGTH, RequestParser, ResponseHead, parse_response_head
from faasd.watchdog.loop import Loop
from faasd.watchdog.transport import Transport


class _Protocol:
    """What :class:`~faasd.watchdog.transport.Transport` calls that both ends here answer alike: end of file
    closes the connection, and the writes are small enough never to pause."""

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class Upstream(_Protocol):
    """The kept connection to the replica: reads one answer (head, then its ``Content-Length`` body)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.buffer = b""
        self.head: ResponseHead | None = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if self.head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            self.head = parse_response_head(buffer[:end], request_method="POST")
            buffer = buffer[end + 4 :]
        head = self.head
        length = max(head.content_length, 0) if head.framing == FRAMING_LENGTH else 0
        if len(buffer) < length:
            self.buffer = buffer
            return
        self.buffer, self.head = b"", None
        self.client.answer(head, buffer[:length])

    def connection_lost(self, exc: BaseException | None) -> None:
        self.client.transport.close()


class Client(_Protocol):
    """One client connection: each whole request goes to the replica with the gateway's headers."""

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.parser = RequestParser()
        self.call_headers = b""
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if isinstance(peer, tuple) else b""
        sock = socket.create_connection(("127.0.0.1", UPSTREAM_PORT))
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = Upstream(self)
        Transport(LOOP, sock, self.upstream)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        request = self.parser.next_request()
        if request is None:
            return
        _, _, rest = request.target.encode("latin-1")[len("/function/") :].partition(b"/")
        parts = [request.method.encode(), b" /", rest, b" HTTP/1.1"]
        forwarded_for = forwarded_host = False
        call_id = b""
        for key, value in request.headers:
            if key in DROP_REQUEST:
                if key == "x-call-id":
                    call_id = value.encode("latin-1")
                continue
            forwarded_for |= key == "x-forwarded-for"
            forwarded_host |= key == "x-forwarded-host"
            parts += (b"\r\n", key.encode(), b": ", value.encode("latin-1"))
        host = request.host.encode("latin-1")
        parts += (b"\r\nHost: ", host or b"localhost")
        if not forwarded_for:
            parts += (b"\r\nX-Forwarded-For: ", self.peer)
        if not forwarded_host and host:
            parts += (b"\r\nX-Forwarded-Host: ", host)
        self.call_headers = b"x-call-id: %s\r\nx-start-time: %d\r\n" % (call_id or new_call_id(), time.time_ns())
        body = request.body
        parts += (b"\r\n", self.call_headers, TOKEN_LINE, b"Content-Length: %d\r\n\r\n" % len(body), body)
        self.upstream.transport.write(b"".join(parts))

    def answer(self, head: ResponseHead, body: bytes) -> None:
        out = [b"HTTP/1.1 %d OK\r\n" % head.status]
        for name, value in head.headers:
            if name not in DROP_ANSWER:
                out += (name, b": ", value, b"\r\n")
        out += (self.call_headers, b"date: ", http_date(), b"\r\ncontent-length: %d\r\n\r\n" % len(body), body)
        self.transport.write(b"".join(out))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.upstream.transport.close()


async def serve(port: int) -> None:
    await LOOP.create_server(Client, host="127.0.0.1", port=port)
    print(f"lean relay: 127.0.0.1:{port} -> 127.0.0.1:{UPSTREAM_PORT}", flush=True)
    await LOOP.create_future()  # Until the benchmark stops it.


UPSTREAM_PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
TOKEN_LINE = (os.environ["RELAY_HEADER"] + "\r\n").encode() if os.environ.get("RELAY_HEADER") else b""
LOOP = Loop()

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: _lean_relay.py PORT UPSTREAM_PORT [FAASD_PATH]")
    LOOP.run_until_complete(LOOP.create_task(serve(int(sys.argv[1]))))
