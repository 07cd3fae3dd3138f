"""The warm-mode benchmark's function server: a stdlib ``ThreadingHTTPServer`` echo (the reference upstream).

``python3 bench/_upstream.py PORT`` answers every request with its body, HTTP/1.1 keep-alive, one write per
answer on a TCP_NODELAY socket, backlog 128, and accepts chunked request bodies (of-watchdog's http mode
forwards bodies chunked) -- the server reference/performance.md measured as "Python upstream alone". It is
both the baseline (loaded directly) and the ``fprocess`` that faasd's http mode and of-watchdog's http mode
start and proxy to, so the ratios isolate what each watchdog adds.
"""

from __future__ import annotations

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _echo(self) -> None:
        body = self._body()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        self.wfile.write(head.encode() + body)

    do_GET = do_POST = do_PUT = _echo

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would measure the terminal


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
