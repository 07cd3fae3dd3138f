"""Shared helpers for the end-to-end tests: free ports, polling, process inspection and a tiny raw
HTTP/1.1 client for the cases where byte-level control matters (malformed requests, pipelining,
chunked uploads, ``Expect: 100-continue``, HTTP/1.0).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DURATION_RE = re.compile(r"^\d+\.\d{6}$")
"""``X-Duration-Seconds``: float seconds with 6 decimals (docs/watchdog.md)."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.005,
) -> T:
    """Poll ``condition()`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g}s: {text}")
        time.sleep(interval)


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (``Z`` for a zombie), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # pid (comm) S ... -- comm may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(b")") + 2 :].split(b" ", 1)[0].decode()


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has finished running)."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def session_members(sid: int) -> list[tuple[int, str]]:
    """Live (non-zombie) processes in session ``sid``, as (pid, command line)."""
    members: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                data = file.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split(b" ")
        # fields: state ppid pgrp session ...
        if int(fields[3]) != sid or fields[0] in (b"Z", b"X"):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = "?"
        members.append((pid, cmdline.strip()))
    return members


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def read_pid_file(path: Path, timeout: float = 5.0) -> int:
    """Wait until a function wrote its pid (one line) to ``path`` and return it."""

    def read() -> int | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None

    return wait_for(read, timeout, f"the function never wrote its pid to {path}")


def port_refuses(port: int) -> bool:
    """True when a TCP connect to 127.0.0.1:``port`` is refused (nothing listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


# -- a raw HTTP/1.1 client -----------------------------------------------------------------------


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class RawConnection:
    """One TCP connection to the watchdog; send bytes, read responses one at a time."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        return self.sock.recv(256 * 1024)

    def _fill(self, need: Callable[[], bool], what: str) -> None:
        while not need():
            try:
                data = self._recv()
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}; got so far: {self.buffer[:300]!r}") from None
            if not data:
                raise AssertionError(f"connection closed while waiting for {what}; got: {self.buffer[:300]!r}")
            self.buffer += data

    def read_response(self, *, head_request: bool = False) -> RawResponse:
        """Read one response (an interim ``100 Continue`` counts as one); body framed by
        Content-Length, chunked encoding, or the connection's end."""
        self._fill(lambda: b"\r\n\r\n" in self.buffer, "a response head")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        response = RawResponse(version=version, status=int(status), reason=reason[0] if reason else "")
        for line in lines[1:]:
            name, _, value = line.partition(":")
            response.headers.append((name.strip(), value.strip()))
        if response.status < 200 or response.status in (204, 304) or head_request:
            return response
        length = response.header("Content-Length")
        if length is not None:
            size = int(length)
            self._fill(lambda: len(self.buffer) >= size, f"a {size}-byte body")
            response.body, self.buffer = self.buffer[:size], self.buffer[size:]
        elif (response.header("Transfer-Encoding") or "").lower() == "chunked":
            response.body = self._read_chunked()
        else:
            response.body = self.read_until_eof()
        return response

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            self._fill(lambda: b"\r\n" in self.buffer, "a chunk size line")
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self._fill(lambda: b"\r\n\r\n" in b"\r\n" + self.buffer, "the chunked trailer")
                _, _, self.buffer = (b"\r\n" + self.buffer).partition(b"\r\n\r\n")
                return body
            self._fill(lambda size=size: len(self.buffer) >= size + 2, "a chunk")
            body += self.buffer[:size]
            self.buffer = self.buffer[size + 2 :]

    def read_until_eof(self) -> bytes:
        while True:
            data = self._recv()
            if not data:
                out, self.buffer = self.buffer, b""
                return out
            self.buffer += data

    def at_eof(self, timeout: float = 2.0) -> bool:
        """True when the peer closes (or resets) the connection within ``timeout`` with nothing more
        sent; False when it stays open that long. Fails if unexpected bytes arrive."""
        self.sock.settimeout(timeout)
        try:
            data = self._recv()
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if data:
            raise AssertionError(f"unexpected bytes after the response: {data[:200]!r}")
        return True


def http_request(
    method: str,
    target: str = "/",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    version: str = "HTTP/1.1",
) -> bytes:
    """Serialise one request with a Content-Length body (when there is a body or the method sends one)."""
    lines = [f"{method} {target} {version}"]
    all_headers = {"Host": host} if host else {}
    all_headers.update(headers or {})
    if body or method in ("POST", "PUT", "PATCH"):
        all_headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_duration_header(value: str | None) -> float:
    """Check an ``X-Duration-Seconds`` value and return it as seconds."""
    assert value is not None, "response has no X-Duration-Seconds header"
    assert DURATION_RE.match(value), f"X-Duration-Seconds {value!r} is not float seconds with 6 decimals"
    return float(value)


# -- streamed bodies and memory sampling (warm-mode tests) ---------------------------------------


class BodyTruncated(Exception):
    """The connection ended before the body did (no final chunk, or fewer bytes than Content-Length)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"connection ended after {received} body bytes, before the end of the body")
        self.received = received


def read_head(conn: RawConnection) -> RawResponse:
    """Read only the head of the next response (status and headers); the body stays on the wire for
    :func:`iter_body`."""
    conn._fill(lambda: b"\r\n\r\n" in conn.buffer, "a response head")
    head, _, conn.buffer = conn.buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    response = RawResponse(version=version, status=int(status), reason=reason[0] if reason else "")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        response.headers.append((name.strip(), value.strip()))
    return response


def iter_body(conn: RawConnection, response: RawResponse, recv_bytes: int = 256 * 1024) -> Iterator[bytes]:
    """Yield the body of ``response`` (head read by :func:`read_head`) piece by piece as it arrives,
    framed by Content-Length, chunked encoding or the connection's end; nothing is accumulated.

    Raises:
        BodyTruncated: the connection closed (or was reset) before the body's end.
        AssertionError: nothing arrived within the connection's timeout, or the chunked framing is wrong.
    """
    received = 0

    def more() -> bytes:
        try:
            return conn.sock.recv(recv_bytes)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for the body after {received} bytes") from None
        except ConnectionResetError:
            return b""

    length = response.header("Content-Length")
    if length is not None:
        left = int(length)
        buf, conn.buffer = conn.buffer, b""
        while left:
            if not buf:
                buf = more()
                if not buf:
                    raise BodyTruncated(received)
            piece, buf = buf[:left], buf[left:]
            left -= len(piece)
            received += len(piece)
            yield piece
        conn.buffer = buf
        return
    if (response.header("Transfer-Encoding") or "").lower() != "chunked":
        if conn.buffer:
            piece, conn.buffer = conn.buffer, b""
            yield piece
        while data := more():
            yield data
        return
    buf, conn.buffer = conn.buffer, b""
    while True:
        while b"\r\n" not in buf:
            data = more()
            if not data:
                raise BodyTruncated(received)
            buf += data
        line, _, buf = buf.partition(b"\r\n")
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            raise AssertionError(f"bad chunk size line {line[:80]!r} after {received} bytes") from None
        if size == 0:
            while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf):
                data = more()
                if not data:
                    raise BodyTruncated(received)
                buf += data
            conn.buffer = buf[2:] if buf.startswith(b"\r\n") else buf.partition(b"\r\n\r\n")[2]
            return
        left = size
        while left:
            if not buf:
                buf = more()
                if not buf:
                    raise BodyTruncated(received)
            piece, buf = buf[:left], buf[left:]
            left -= len(piece)
            received += len(piece)
            yield piece
        while len(buf) < 2:
            data = more()
            if not data:
                raise BodyTruncated(received)
            buf += data
        if buf[:2] != b"\r\n":
            raise AssertionError(f"chunk not followed by CRLF after {received} bytes: {buf[:20]!r}")
        buf = buf[2:]


class RssSampler:
    """Samples a process's resident size (VmRSS) in a background thread; ``peak`` is the largest seen.

    Use as a context manager around the part of a test whose memory matters.
    """

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_bytes(self.pid))
            except (OSError, AssertionError):
                return  # The process is gone.
            self._stop.wait(self.interval)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
