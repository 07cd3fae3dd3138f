"""The gateway benchmark's floor for a proxy hop: the least a Python process can do to relay a call.

``python3 bench/_relay.py PORT UPSTREAM_PORT`` listens on 127.0.0.1:PORT and relays each request of a
connection to 127.0.0.1:UPSTREAM_PORT over one kept-alive connection of its own, the answer back as it came:
blocking sockets, a thread per client connection, TCP_NODELAY both ways, the request line's target replaced
by ``/`` and one header added (``RELAY_HEADER``, ``Name: value``, from the environment: the replica's call
token). It parses no more than the head's end and ``Content-Length`` and checks nothing, so it is not a
gateway: no name lookup, no limits, no deadlines, no metrics. What it measures is what any Python hop costs
on this machine -- two more loopback sends, two more wake-ups and an interpreter's few steps between them --
which faasd's gateway-added latency can approach but not go under.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

READ_BYTES = 65536


def read_message(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """One message with a ``Content-Length`` body (or none): (head, body, what followed it); None at EOF."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        data = sock.recv(READ_BYTES)
        if not data:
            return None
        buffer += data
    head, rest = buffer[:end], buffer[end + 4 :]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = sock.recv(READ_BYTES)
        if not data:
            return None
        rest += data
    return head, rest[:length], rest[length:]


def relay(client: socket.socket, upstream_port: int, extra: bytes) -> None:
    """Relay the client's requests one by one until either side closes."""
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending, answers = b"", b""
    try:
        while (request := read_message(client, pending)) is not None:
            head, body, pending = request
            line, _, fields = head.partition(b"\r\n")
            method, _, version = line.split(b" ", 2)
            upstream.sendall(b"%s / %s\r\n%s%s\r\n\r\n%s" % (method, version, fields, extra, body))
            answer = read_message(upstream, answers)
            if answer is None:
                return
            answer_head, answer_body, answers = answer
            client.sendall(answer_head + b"\r\n\r\n" + answer_body)
    except (OSError, ValueError):
        return
    finally:
        client.close()
        upstream.close()


def main() -> None:
    port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    header = os.environ.get("RELAY_HEADER", "")
    extra = b"\r\n" + header.encode() if header else b""
    server = socket.create_server(("127.0.0.1", port), backlog=128)
    while True:
        client, _ = server.accept()
        threading.Thread(target=relay, args=(client, upstream_port, extra), daemon=True).start()


if __name__ == "__main__":
    main()
