"""Shared helpers for the end-to-end tests: free ports, polling, process inspection, load from threads
that records every outcome, and a tiny raw HTTP/1.1 client for the cases where byte-level control matters
(malformed requests, pipelining, chunked uploads, ``Expect: 100-continue``, HTTP/1.0).

Timing: every absolute upper bound a test puts on time (how long to wait for something, how fast an
answer must be) goes through :func:`scaled`, which multiplies it by ``FAASD_TEST_TIME_FACTOR`` (default 1;
read here and nowhere else, see tests/README.md). :func:`wait_for` applies it to its timeout itself, and
so does the per-test timeout (tests/conftest.py). Lower bounds (``a 1 s timeout fires after >= 0.9 s``)
and bounds that tell two behaviours apart (4 calls of 0.5 s in parallel take < 0.9 s, serially 2 s) are
facts about the code under test and are never scaled.

Threads: a test that calls from threads uses :class:`Load` (repeated calls, every outcome counted) or
:func:`in_thread` (one call whose result or exception the test reads); an exception that escapes any
other thread fails the test (``PytestUnhandledThreadExceptionWarning`` is an error, see pyproject.toml).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from faasd.http1 import Request, RequestParser

T = TypeVar("T")


def _time_factor() -> float:
    raw = os.environ.get("FAASD_TEST_TIME_FACTOR", "1")
    try:
        factor = float(raw)
    except ValueError:
        factor = 0.0
    if not 0 < factor < 1000:
        raise RuntimeError(f"FAASD_TEST_TIME_FACTOR={raw!r}: want a number > 0 (e.g. 3 on a slow machine)")
    return factor


TIME_FACTOR = _time_factor()
"""Multiplier for every absolute time bound in the tests (``FAASD_TEST_TIME_FACTOR``, default 1): raise it
on a slow or loaded machine instead of editing bounds. Read once, here."""


def scaled(seconds: float) -> float:
    """``seconds`` times :data:`TIME_FACTOR`: use it for every upper bound on time a test asserts."""
    return seconds * TIME_FACTOR


DURATION_RE = re.compile(r"^\d+\.\d{6}$")
"""``X-Duration-Seconds``: float seconds with 6 decimals (docs/watchdog.md)."""


def must_run_everything() -> bool:
    """True under CI (``CI`` set, as ``.ci/run`` runs) or with ``FAASD_TEST_REQUIRE_ALL=1``: a test that
    cannot run its scenario here must fail, not skip, so that nothing is silently left untested."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false") or os.environ.get("FAASD_TEST_REQUIRE_ALL") == "1"


def parse_env(text: str) -> dict[str, str]:
    """Parse ``env`` output (one NAME=value per line; values here never contain newlines)."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            env[name] = value
    return env


_HANDED_OUT: deque[int] = deque(maxlen=1024)
"""The ports :func:`free_port` gave lately: never given twice."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago, and not one this process was given lately.

    Why the memory: a port asked for and closed is free again at once, so two calls in a row can get the
    same port from the kernel; a test that then starts two servers (a watchdog and the upstream behind it
    in http mode) starts both on one port, and the watchdog's readiness probe of its upstream can reach
    the watchdog's own listener while the upstream failed to bind (the likely cause of a CI run where such
    a test's first call was answered 502, which 15 runs of that test alone did not repeat).
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.005,
) -> T:
    """Poll ``condition()`` until it returns something truthy (returned), or fail after ``timeout``
    seconds times :data:`TIME_FACTOR`."""
    timeout = scaled(timeout)
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


# -- calls from threads: every outcome recorded ---------------------------------------------------


def in_thread(function: Callable[[], T], name: str = "in-thread") -> Future[T]:
    """Run ``function()`` in a new daemon thread; the future holds its result or its exception.

    For one call that must be in flight while the test does something else (a signal, a kill). Read the
    outcome with ``future.result(timeout=scaled(...))``: it re-raises whatever the call raised, so a reset
    connection fails the test instead of vanishing with the thread.
    """
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        try:
            result = function()
        except BaseException as exc:  # Handed to the reader of the future, which re-raises it.
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def status_200(response: Any) -> bool:
    return getattr(response, "status_code", None) == 200


class Outcomes:
    """The outcome of every call of a load, counted as it comes: what :class:`Load` records, and
    :class:`tests.fault_load.ProcessLoad` (the same load from a process of its own).

    Read after (or during) the load: ``calls``, ``ok``, ``failed``, ``failures`` (one line each:
    ``"502: <body>"`` or ``"ReadError('...')"``, the first 1000 kept), ``outcomes`` (a Counter:
    ``"200"``, ``"502"``, ``"ReadError"``), ``answers`` (a Counter of the successful bodies, stripped).
    ``wait_ok(n)`` waits until ``n`` more calls succeeded -- the readiness signal that load is flowing.
    """

    MAX_FAILURE_LINES = 1000

    def __init__(self, ok: Callable[[Any], bool] = status_200) -> None:
        self.is_ok = ok
        self.ok = 0
        self.failed = 0
        self.failures: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return self.ok + self.failed

    def summary(self) -> str:
        """``"<calls> calls: <ok> ok, <failed> failed {outcomes}; first failures: [...]"``."""
        return (
            f"{self.calls} calls: {self.ok} ok, {self.failed} failed {dict(self.outcomes)}; "
            f"first failures: {self.failures[:5]}"
        )

    def wait_ok(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` more calls than now have succeeded (fails with the summary)."""
        target = self.ok + count
        wait_for(lambda: self.ok >= target, timeout, lambda: f"{count} successful calls under load: {self.summary()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the load's calls and wait for them (each finishes the call it is in); the ``with`` block's end."""
        raise NotImplementedError

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.stop()
        except AssertionError:
            if exc_type is None:  # Do not hide the failure that ended the block.
                raise

    def record_response(self, response: Any) -> None:
        """One call answered: ``response`` has a ``status_code`` and a ``text``; ``ok(response)`` judges it."""
        status = str(getattr(response, "status_code", "?"))
        text = getattr(response, "text", "")
        if self.is_ok(response):
            self._record(status, None, text.strip() if isinstance(text, str) else None)
        else:
            self._record(status, f"{status}: {str(text)[:200]}")

    def record_exception(self, name: str, detail: str) -> None:
        """One call that got no answer: the exception's class name, and its repr."""
        self._record(name, detail[:300])

    def _record(self, key: str, failure: str | None, answer: str | None = None) -> None:
        with self._lock:
            self.outcomes[key] += 1
            if failure is None:
                self.ok += 1
                if answer is not None:
                    self.answers[answer] += 1
            else:
                self.failed += 1
                if len(self.failures) < self.MAX_FAILURE_LINES:
                    self.failures.append(failure)


class Load(Outcomes):
    """Calls ``call(client)`` over and over from ``workers`` threads until the ``with`` block ends, and
    records the outcome of every call (:class:`Outcomes`) -- an exception (reset connection, timeout, a bug
    in ``call``) is a failed call, never a silently dead thread.

    ``make_client()`` gives each worker its own client (e.g. ``lambda: daemon.client(auth=False)``); it is
    closed when the worker ends. A call succeeds when ``ok(response)`` (default: status 200). Bounded:
    each worker stops after ``max_calls`` calls or ``max_seconds`` (scaled), whichever comes first, so a
    test that forgets to stop it cannot hang. ``pause`` sleeps between one worker's calls.

    The workers share the test's interpreter: a test that times other calls meanwhile, and compares
    those times with calls made without the load, measures the workers' share of the GIL too -- use
    :class:`tests.fault_load.ProcessLoad` there.

    Example::

        with Load(lambda: daemon.client(auth=False), lambda c: c.post("/function/echo", content=b"x"),
                  workers=4) as load:
            load.wait_ok(20)
            ...  # the fault under load
        assert load.failed <= 2, load.summary()
    """

    def __init__(
        self,
        make_client: Callable[[], Any],
        call: Callable[[Any], Any],
        *,
        workers: int = 1,
        ok: Callable[[Any], bool] = status_200,
        pause: float = 0.0,
        max_calls: int = 100_000,
        max_seconds: float = 120.0,
    ) -> None:
        super().__init__(ok)
        self.make_client = make_client
        self.call = call
        self.pause = pause
        self.max_calls = max_calls
        self.max_seconds = scaled(max_seconds)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._worker, name=f"load-{n}", daemon=True) for n in range(workers)]

    def _worker(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        try:
            client = self.make_client()
        except Exception as exc:
            self.record_exception(type(exc).__name__, f"make_client: {exc!r}")
            return
        try:
            for _ in range(self.max_calls):
                if self._stop.is_set() or time.monotonic() >= deadline:
                    return
                try:
                    response = self.call(client)
                except Exception as exc:
                    self.record_exception(type(exc).__name__, repr(exc))
                else:
                    self.record_response(response)
                if self.pause:
                    self._stop.wait(self.pause)
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers and wait for them (each finishes the call it is in)."""
        self._stop.set()
        deadline = time.monotonic() + scaled(timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        hung = [thread.name for thread in self._threads if thread.is_alive()]
        if hung:
            raise AssertionError(f"load workers still in a call {timeout:g}s after stop: {hung}; {self.summary()}")


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


def parsed_request(raw: bytes = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n") -> Request:
    """``raw`` through the watchdog's parser (:mod:`faasd.http1`): the request a runner is handed."""
    parser = RequestParser(65536, 65536)
    parser.feed(raw)
    request = parser.next_request()
    assert request is not None
    return request
