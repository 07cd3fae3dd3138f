"""The CLI never carries its password through a redirect: real HTTP servers on two local ports, one
redirecting to the other, and the real ``faasd`` CLI pointed at the first."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.daemon_fixtures import MakeCli

SECRET = "cli-password-that-must-stay-home"


class Recorder:
    """A server that records each request's method, path and Authorization header."""

    def __init__(self, redirect_to: str | None, status: int) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                recorder.seen.append((self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if redirect_to is not None:
                    self.send_response(status)
                    self.send_header("Location", redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"[]"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def serving(redirect_to: str | None = None, status: int = 302) -> Iterator[Recorder]:
    recorder = Recorder(redirect_to, status)
    thread = threading.Thread(target=recorder.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.server.shutdown()
        recorder.server.server_close()
        thread.join(10)


@pytest.mark.parametrize("status", [302, 308])
def test_cli_does_not_follow_redirects_with_credentials(faasd_cli: MakeCli, status: int) -> None:
    with serving() as target, serving(redirect_to=target.url, status=status) as redirector:
        cli = faasd_cli(FAASD_URL=redirector.url, FAASD_PASSWORD=SECRET)
        for args in (("list",), ("rm", "echo")):
            line = cli.run(*args).error_line()
            assert f"answered {status} redirecting" in line and target.url in line, line
            assert SECRET not in line
        # The test can see a password: the redirecting server got one on every call...
        assert redirector.seen and all(auth and auth.startswith("Basic ") for _, _, auth in redirector.seen)
        # ...and the server it pointed to got no request at all, so no password either.
        assert target.seen == []
