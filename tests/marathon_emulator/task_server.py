"""A tiny HTTP server for the emulator's tests to run as a task's ``cmd``: ``python3 task_server.py``.

Listens on ``127.0.0.1:$PORT0`` and answers ``GET /env`` with ``{"pid": ..., "env": {...}}`` (what the task
was started with), ``GET /health`` with the status in ``$HEALTH_STATUS`` (default 200), anything else 200
``ok``. Standard library only: it runs under the system ``python3`` like any task command.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/env":
            status, body = 200, json.dumps({"pid": os.getpid(), "env": dict(os.environ)}).encode()
        elif self.path == "/health":
            status, body = int(os.environ.get("HEALTH_STATUS", "200")), b"health"
        else:
            status, body = 200, b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT0"])), Handler).serve_forever()
