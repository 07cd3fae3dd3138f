"""Shared helpers for faasd's benchmarks (stdlib only: the benchmarks must run with a plain ``python3``).

Every benchmark here compares faasd with a peer or a baseline measured *in the same run*, because absolute
numbers on the small shared VMs we use move 5-30 % between rounds.
This module holds the parts that do not depend on what is being measured:

* starting a server (a :class:`Target`) with a clean, identical environment, timing exec → first good answer,
  and stopping its whole process group so nothing is left behind;
* CPU accounting of a server's process tree from ``/proc``;
* driving ``wrk`` with a Lua script and parsing its ``--latency`` output;
* a raw process-spawn baseline, medians / ratios and plain-text tables.

All traffic goes to 127.0.0.1 and every loop is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOCALHOST = "127.0.0.1"
CLEAN_PATH = "/usr/bin:/bin"
#: The OpenFaaS Go watchdogs always bind Prometheus metrics on this port (and panic when it is taken):
#: never hand it to anything else.
GO_METRICS_PORT = 8081
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchError(Exception):
    """A benchmark step failed in a way worth reporting (not a bug in the harness)."""


# --------------------------------------------------------------------------------------------- environment


def clean_env(**config: str | int | float) -> dict[str, str]:
    """Return ``PATH=/usr/bin:/bin`` plus ``config`` and nothing else.

    Fork-per-request watchdogs hand their whole environment to every child, and on these VMs the size of that
    environment changes the cost of a spawn a lot (a 40-variable env made ``cat`` spawns ~25 % slower). So every
    server under test, and the spawn baseline, must get the same small environment, never the caller's.
    """
    env = {"PATH": CLEAN_PATH}
    env.update({key: str(value) for key, value in config.items()})
    return env


def env_size(env: dict[str, str]) -> tuple[int, int]:
    """(variables, bytes as ``KEY=VALUE\\0``): printed so a reader can check the targets' envs are alike."""
    return len(env), sum(len(k) + len(v) + 2 for k, v in env.items())


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    When a server is SIGKILLed, its in-flight children are reparented. In the firecracker VMs PID 1 reaps them
    only lazily, so they linger as zombies in the server's process group; as a subreaper we get them and can
    reap them at once, which lets :meth:`Running.stop` prove the group is gone. Best effort.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # 36 = PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------- ports


def port_is_free(port: int) -> bool:
    """True when a listener could bind ``port`` on all interfaces (with SO_REUSEADDR, as Go and asyncio do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def free_port(avoid: Iterable[int] = ()) -> int:
    """A port the kernel considers free right now, never :data:`GO_METRICS_PORT` nor one in ``avoid``.

    Binding on all interfaces (not only 127.0.0.1) because the Go peers listen on ``0.0.0.0``.
    """
    avoid = {GO_METRICS_PORT, *avoid}
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise BenchError("could not find a free TCP port")


def wait_port_free(port: int, timeout: float = 5.0) -> bool:
    """Poll until ``port`` is bindable (a peer that was just killed may hold it a moment); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        if port_is_free(port):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------- HTTP probe


@dataclass(frozen=True)
class Probe:
    """One HTTP request used to decide that a server is ready (and that it answers correctly).

    Readiness is "answers this request with ``expect_status``", not "accepts TCP": a fork watchdog that listens
    but cannot run its function is not ready. ``expect_body`` (when set) is checked once, as a sanity check that
    the server really echoes (wrk itself never looks at bodies).
    """

    method: str = "POST"
    path: str = "/"
    body: bytes = b""
    content_type: str | None = "text/plain"
    expect_status: int = 200
    expect_body: bytes | None = None
    #: Extra request headers (e.g. ``Authorization`` for a management API), sent as given.
    headers: tuple[tuple[str, str], ...] = ()

    def request(self, port: int) -> bytes:
        """The raw request, ``Connection: close`` so the answer ends at EOF."""
        head = [f"{self.method} {self.path} HTTP/1.1", f"Host: {LOCALHOST}:{port}", "Connection: close"]
        if self.content_type:
            head.append(f"Content-Type: {self.content_type}")
        head += [f"{name}: {value}" for name, value in self.headers]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body

    def once(self, port: int, timeout: float) -> tuple[int, bytes] | None:
        """Send the request once: ``(status, body)``, or None when nothing usable came back (refused, reset,
        timeout, garbage) — the caller just tries again.

        The answer is delimited by Content-Length or chunked framing, not only by EOF, so a server that keeps
        the connection open despite ``Connection: close`` is still measured correctly.
        """
        try:
            with socket.create_connection((LOCALHOST, port), timeout=timeout) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(self.request(port))
                raw = b""
                while len(raw) < 1 << 20 and not _response_complete(raw):
                    data = sock.recv(65536)
                    if not data:
                        break
                    raw += data
        except OSError:
            return None
        return _parse_response(raw)


def _response_complete(raw: bytes) -> bool:
    """True once ``raw`` holds a whole response framed by Content-Length or chunked encoding."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    headers = _headers(head)
    if headers.get(b"transfer-encoding") == b"chunked":
        return body.startswith(b"0\r\n\r\n") or b"\r\n0\r\n\r\n" in body
    if b"content-length" in headers:
        try:
            return len(body) >= int(headers[b"content-length"])
        except ValueError:
            return False
    return False  # delimited by EOF


def _headers(head: bytes) -> dict[bytes, bytes]:
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    return headers


def _parse_response(raw: bytes) -> tuple[int, bytes] | None:
    """Status and (de-chunked) body of a complete HTTP/1.x response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not match:
        return None
    headers = _headers(head)
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _dechunk(body)
    elif b"content-length" in headers:
        with contextlib.suppress(ValueError):
            body = body[: int(headers[b"content-length"])]
    return int(match.group(1)), body


def _dechunk(data: bytes) -> bytes:
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        if end < 0:
            break
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out.append(data[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


# --------------------------------------------------------------------------------------------- targets


@dataclass
class Target:
    """A server under test: everything needed to start it fresh, know when it is ready, and load it.

    Kept small and generic on purpose: fork-mode watchdogs today, warm modes (a proxy in front of an upstream,
    an in-process Python worker) later, all driven by the same start / measure / stop code.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    probe: Probe
    #: Ports the target binds that we cannot choose (the Go peers' :8081): checked free before start, so two such
    #: targets never run at once and a leftover never makes the next one panic.
    fixed_ports: tuple[int, ...] = ()
    log_path: Path | None = None
    cwd: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}{self.probe.path}"


@dataclass
class Running:
    """A started :class:`Target`: its process (leader of its own session / process group) and start-up time."""

    target: Target
    proc: subprocess.Popen[bytes]
    startup_s: float
    echo_ok: bool | None = None

    def cpu_seconds(self) -> float:
        """CPU (user + system) used so far by the server's process tree, reaped children included."""
        return tree_cpu_seconds(self.proc.pid)

    def stop(self, grace: float = 0.5) -> None:
        """SIGTERM the whole group, SIGKILL it after ``grace`` seconds, reap, and check nothing is left."""
        stop_process_group(self.proc, grace)


def start(target: Target, *, ready_timeout: float = 10.0, poll_interval: float = 0.003) -> Running:
    """Start ``target`` in a new session and poll its probe every ``poll_interval`` s until it answers.

    The returned ``startup_s`` runs from just before fork/exec to the first good answer, so it includes the
    interpreter start, imports, binding and one function call: what a cold start costs a caller. The probe is
    polled fast (a few ms) so the figure is not rounded up by the poll. On failure the process group is killed
    and :class:`BenchError` carries the tail of the target's log.
    """
    for port in target.fixed_ports:
        if not wait_port_free(port, timeout=5.0):
            raise BenchError(f"{target.name}: port {port} is taken (it binds it unconditionally); free it first")
    log = open(target.log_path, "ab") if target.log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            target.argv,
            env=target.env,
            cwd=target.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise BenchError(f"{target.name}: cannot start {target.argv[0]}: {exc}") from exc
    finally:
        if log is not subprocess.DEVNULL:
            log.close()
    running = Running(target, proc, 0.0)
    try:
        deadline = t0 + ready_timeout
        last: tuple[int, bytes] | None = None
        while True:
            now = time.perf_counter()
            if proc.poll() is not None:
                raise BenchError(f"{target.name}: exited with status {proc.returncode} before it was ready")
            if now >= deadline:
                seen = f"last answer: HTTP {last[0]}" if last else "never answered"
                raise BenchError(f"{target.name}: not ready within {ready_timeout:g} s ({seen})")
            last = target.probe.once(target.port, timeout=max(0.05, min(2.0, deadline - now)))
            if last is not None and last[0] == target.probe.expect_status:
                running.startup_s = time.perf_counter() - t0
                if target.probe.expect_body is not None:
                    running.echo_ok = last[1] == target.probe.expect_body
                return running
            time.sleep(poll_interval)
    except BaseException as exc:
        running.stop()
        if isinstance(exc, BenchError) and target.log_path:
            raise BenchError(f"{exc}\n{log_tail(target.log_path)}") from None
        raise


def log_tail(path: Path, lines: int = 8) -> str:
    """Last lines of a target's log, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join("    | " + line for line in text) or "    (empty log)"


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 0.5) -> None:
    """End ``proc``, its process group and all its descendants; bounded, safe to call twice.

    Not just the pid: a fork watchdog killed mid-request leaves ``cat`` children behind (faasd puts each one in
    its own process group, so killing the server's group is not enough), and a leftover Go peer would keep
    :data:`GO_METRICS_PORT` and make the next one panic.
    """
    pgid = proc.pid  # leader of its own session (start_new_session=True)
    if proc.poll() is None:
        _killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    procs = _proc_table()
    doomed = set(_descendants(proc.pid, procs)) | _group_members(pgid, procs)
    _killpg(pgid, signal.SIGKILL)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)
    doomed.discard(proc.pid)
    deadline = time.monotonic() + 3.0
    while True:
        for pid in doomed:  # orphans reparented to us (see become_subreaper): reap them
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        doomed = {pid for pid in doomed if os.path.exists(f"/proc/{pid}")}
        left = doomed | _group_members(pgid, _proc_table())
        if proc.poll() is not None and not left:
            return
        if time.monotonic() >= deadline:
            print(f"warning: processes of {proc.args!r} still present: {sorted(left)}", file=sys.stderr)
            return
        _killpg(pgid, signal.SIGKILL)
        time.sleep(0.02)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass(frozen=True)
class _Proc:
    ppid: int
    pgrp: int
    ticks: int  # utime + stime + cutime + cstime
    state: str = "?"  # R, S, D, Z (zombie), ...


def _proc_table() -> dict[int, _Proc]:
    """One pass over /proc: every process's parent, process group, CPU ticks and state (fields 3-5, 14-17)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue  # exited meanwhile
        table[int(entry)] = _parse_stat(raw)
    return table


def _parse_stat(raw: bytes) -> _Proc:
    """Fields after the parenthesised command name (which may contain spaces) are split from the last ')'."""
    fields = raw[raw.rfind(b")") + 2 :].split()  # fields[0] is field 3 (state)
    ticks = sum(int(x) for x in fields[11:15])
    return _Proc(int(fields[1]), int(fields[2]), ticks, fields[0].decode("ascii", "replace"))


def _descendants(root: int, procs: dict[int, _Proc]) -> list[int]:
    """``root`` and every live process below it (zombies included: they still count as left behind)."""
    children: dict[int, list[int]] = {}
    for pid, info in procs.items():
        children.setdefault(info.ppid, []).append(pid)
    out, todo = [], [root] if root in procs else []
    while todo and len(out) < 100_000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _group_members(pgid: int, procs: dict[int, _Proc]) -> set[int]:
    return {pid for pid, info in procs.items() if info.pgrp == pgid}


def tree_cpu_seconds(root: int) -> float:
    """utime+stime+cutime+cstime (/proc/<pid>/stat fields 14-17) summed over ``root`` and its live descendants.

    A reaped child's CPU is in exactly one live ancestor's cutime/cstime, and a live process is in nobody's,
    so the sum counts each process once; differences between two calls give the tree's CPU for the interval
    (per-request ``cat`` children included, which is most of a fork watchdog's cost). Walking parent links,
    not the session or process group, because faasd starts each child in its own process group.
    Resolution: 1/CLK_TCK (10 ms), fine for thousands of requests.
    """
    procs = _proc_table()
    return sum(procs[pid].ticks for pid in _descendants(root, procs)) / _CLK_TCK


# --------------------------------------------------------------------------------------------- process trees


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far (``/proc/stat``: user, nice, system, irq, softirq).

    Minus :func:`tree_cpu_seconds` of the benchmark's own pid over the same interval, this is what *other*
    processes burnt meanwhile: on a shared VM a test suite started by someone else halves a throughput figure
    and the result looks like a regression. Interrupt time is counted as busy because our loopback traffic's
    softirq work partly lands there (idle, iowait and steal are not). Resolution: 1/CLK_TCK.
    """
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / _CLK_TCK


class OthersMeter:
    """CPU used by processes *outside* the benchmark's tree while it measures, in % of one core.

    ``start()`` then ``stop()`` around a measurement; a figure above a few tens of % means someone else was
    using the machine and the numbers measured meanwhile are suspect (the report flags them).
    """

    def __init__(self) -> None:
        self._t0 = self._busy0 = self._ours0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = machine_busy_seconds()
        self._ours0 = tree_cpu_seconds(os.getpid())

    def stop(self) -> float:
        wall = time.monotonic() - self._t0
        busy = machine_busy_seconds() - self._busy0
        ours = tree_cpu_seconds(os.getpid()) - self._ours0
        return max(0.0, (busy - ours) * 100.0 / wall) if wall > 0 else 0.0


def descendants(root: int) -> list[int]:
    """``root`` (when alive) and every process below it, by parent links, zombies included."""
    return _descendants(root, _proc_table())


def process_cpu_seconds(pid: int) -> float | None:
    """utime+stime (/proc/<pid>/stat fields 14-15) of one process, all its threads, *not* its children.

    For a server that forks helpers (the faasd daemon runs its replicas as children) this is the server's own
    cost; :func:`tree_cpu_seconds` is the whole tree's. None when the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cmdline(pid: int) -> list[str]:
    """argv of a live process ([] when gone or a kernel thread)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_state(pid: int) -> str | None:
    """State letter of a process (``Z`` = zombie), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return _parse_stat(fh.read()).state
    except OSError:
        return None


def alive(pid: int) -> bool:
    """The process exists and still runs (a zombie, ``Z``, or a dying ``X`` has finished)."""
    return process_state(pid) not in (None, "Z", "X")


def listening_ports(pid: int) -> list[int]:
    """TCP ports (IPv4 and IPv6) on which ``pid`` holds a listening socket, sorted; [] when gone.

    Matches the socket inodes of ``/proc/<pid>/fd`` against the LISTEN rows of ``/proc/<pid>/net/tcp{,6}``
    (the process's own network namespace). Unlike parsing ``ss -ltnp`` this needs no external tool and finds a
    socket the process *inherited* (a replica served on a ``listen_fd`` its parent bound) just the same.
    """
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return []
    inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:  # 0A = TCP_LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


@dataclass
class StopReport:
    """How a supervisor took its SIGTERM: seconds until it exited (None: it did not, within the grace) and the
    descendants it left alive, as ``(pid, state, command line)``."""

    exit_s: float | None
    left: list[tuple[int, str, str]]


def stop_leader_first(proc: subprocess.Popen[bytes], grace: float = 10.0, *, settle: float = 2.0) -> StopReport:
    """SIGTERM ``proc`` alone, wait for it to exit on its own, then report what it left behind and clean up.

    For a supervisor (the faasd daemon stops its replicas on SIGTERM): signalling the whole group, as
    :func:`stop_process_group` does, would stop the children itself and hide a supervisor that does not. The
    tree is snapshotted *before* the signal because orphans are reparented (to us, see :func:`become_subreaper`)
    and no longer appear under ``proc``; children started later (a replica restarted during shutdown) are found
    among our own descendants. Descendants still alive (not zombies) ``settle`` seconds after ``proc`` exited are
    returned with the time ``proc`` took to exit, then everything is killed by :func:`stop_process_group`.
    Bounded: ``grace + settle`` seconds plus the clean-up's own bound.
    """
    before = set(descendants(proc.pid))
    ours_before = set(descendants(os.getpid()))
    exit_s: float | None = 0.0
    if proc.poll() is None:
        t0 = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            exit_s = time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            exit_s = None
    suspects = (before | (set(descendants(os.getpid())) - ours_before)) - {proc.pid, os.getpid()}
    deadline = time.monotonic() + (settle if proc.poll() is not None else 0.0)
    left: list[tuple[int, str, str]] = []
    while True:
        for pid in suspects:  # reap the orphans that were reparented to us and have exited
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        left = []
        for pid in sorted(suspects):
            state = process_state(pid)
            if state is not None and state not in ("Z", "X"):
                left.append((pid, state, " ".join(cmdline(pid)) or "?"))
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    stop_process_group(proc, grace=0.5)
    for pid, _, _ in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in suspects:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0 if process_state(pid) == "Z" else os.WNOHANG)
    return StopReport(exit_s, left)


# --------------------------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class Load:
    """The request wrk sends over and over (keep-alive); rendered to a Lua script."""

    method: str = "POST"
    path: str = "/"
    body: bytes = b""
    content_type: str | None = "text/plain"
    #: Extra request headers (e.g. faasd's call token for a replica called directly), sent as given.
    headers: tuple[tuple[str, str], ...] = ()

    def lua(self) -> str:
        """wrk script: method, body and header (wrk adds Host and Content-Length itself)."""
        lines = [f"wrk.method = {_lua_str(self.method.encode())}", f"wrk.path = {_lua_str(self.path.encode())}"]
        if self.body:
            lines.append(f"wrk.body = {_lua_str(self.body)}")
        if self.content_type:
            lines.append(f'wrk.headers["Content-Type"] = {_lua_str(self.content_type.encode())}')
        for name, value in self.headers:
            lines.append(f"wrk.headers[{_lua_str(name.encode())}] = {_lua_str(value.encode())}")
        return "\n".join(lines) + "\n"

    def write_script(self, directory: Path, name: str = "load.lua") -> Path:
        path = directory / name
        path.write_text(self.lua())
        return path


def _lua_str(data: bytes) -> str:
    return '"' + "".join(f"\\{b:03d}" if b < 32 or b > 126 or b in b'"\\' else chr(b) for b in data) + '"'


@dataclass(frozen=True)
class Level:
    """One load level: wrk threads and connections (= concurrency, closed loop)."""

    threads: int
    connections: int

    @property
    def label(self) -> str:
        return f"c{self.connections}"


@dataclass
class WrkResult:
    """What we keep from one wrk run (latencies in ms)."""

    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p75_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    bytes_read: float = 0.0
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    cpu_ms_per_req: float | None = None
    own_cpu_ms_per_req: float | None = None
    """The server process's own CPU per request (utime + stime, children excluded): for a fork watchdog, its
    share without the ``cat`` children's, the least noisy figure on a shared machine."""

    @property
    def errors(self) -> int:
        """Non-2xx/3xx responses plus socket errors (connect, read, write, timeout)."""
        return self.non_2xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["errors"] = self.errors
        return data


_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_wrk_time_ms(text: str) -> float | None:
    """``'6.89ms'`` → 6.89, ``'812.00us'`` → 0.812, ``'1.02s'`` → 1020; None for nan/garbage."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        return None
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output. Missing lines leave defaults (wrk omits the error lines when zero)."""
    result = WrkResult()
    if m := re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h), ([0-9.]+)([KMGT]?B) read", text, re.M):
        result.requests = int(m.group(1))
        result.seconds = float(m.group(2)) * _TIME_UNITS[m.group(3)] / 1000.0
        result.bytes_read = float(m.group(4)) * _SIZE_UNITS[m.group(5)]
    if m := re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M):
        result.rps = float(m.group(1))
    for pct, attr in (("50", "p50_ms"), ("75", "p75_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", text, re.M):
            setattr(result, attr, parse_wrk_time_ms(m.group(1)))
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text):
        result.non_2xx = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        result.socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    return result


def find_wrk() -> str | None:
    """wrk on PATH, else where the Debian package puts it (the caller's PATH may be minimal)."""
    candidates = ("/usr/bin/wrk", "/usr/local/bin/wrk")
    return shutil.which("wrk") or next((p for p in candidates if os.access(p, os.X_OK)), None)


def wrk_version(wrk: str) -> str:
    """First line of ``wrk -v`` (it prints usage and exits 1; the version is on the first line)."""
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, env=clean_env())
    return (proc.stdout or proc.stderr).splitlines()[0].strip() if (proc.stdout or proc.stderr) else "unknown"


def run_wrk(
    wrk: str, url: str, level: Level, duration_s: int, script: Path, *, timeout: str = "5s"
) -> tuple[WrkResult, str]:
    """Run wrk once (``--latency``) and return the parsed result and the raw output (kept for the JSON file).

    Bounded: wrk is killed if it overruns its duration by 30 s; raises :class:`BenchError` if it fails.
    """
    argv = [wrk, f"-t{level.threads}", f"-c{level.connections}", f"-d{duration_s}s", f"--timeout={timeout}"]
    argv += ["--latency", "-s", str(script), url]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, env=clean_env())
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk overran its {duration_s} s duration: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_wrk(proc.stdout), proc.stdout


# --------------------------------------------------------------------------------------------- spawn baseline

_SPAWN_CODE = r"""
import json, subprocess, sys, threading, time
threads, seconds, cap = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
argv = sys.argv[4:]
counts = [0] * threads
errors = []
stop = time.perf_counter() + seconds
def loop(i):
    n = 0
    try:
        while n < cap and time.perf_counter() < stop:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
            n += 1
    except Exception as exc:  # a failed spawn must fail the baseline, not quietly count as fewer spawns
        errors.append(repr(exc))
    counts[i] = n
subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)  # warm the page cache
t0 = time.perf_counter()
workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
elapsed = time.perf_counter() - t0
if errors:
    sys.exit(f"spawn failed: {errors[0]} ({len(errors)} threads)")
print(json.dumps({"threads": threads, "spawns": sum(counts), "seconds": elapsed}))
"""


@dataclass
class SpawnResult:
    """Raw spawn baseline: ``threads`` threads each running ``subprocess.run(argv)`` in a loop."""

    threads: int
    spawns: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.spawns / self.seconds if self.seconds else 0.0

    @property
    def ms_each(self) -> float:
        """Wall time of one spawn as seen by one thread (meaningful with 1 thread)."""
        return self.seconds * 1000.0 * self.threads / self.spawns if self.spawns else 0.0


def spawn_rate(
    python: str, threads: int, seconds: float, env: dict[str, str], argv: Sequence[str] = ("cat",), cap: int = 100_000
) -> SpawnResult:
    """How fast this machine can fork/exec ``argv`` (stdin/stdout to /dev/null) right now.

    The ceiling for any fork-per-request server: run in a child interpreter with the same clean environment
    the servers get (the environment size changes the cost of every spawn), in every round, because it drifts
    with the VM. Bounded by ``seconds`` and by ``cap`` spawns per thread.
    """
    cmd = [python, "-I", "-c", _SPAWN_CODE, str(threads), str(seconds), str(cap), *argv]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BenchError("spawn baseline overran its time") from exc
    if proc.returncode != 0:
        raise BenchError(f"spawn baseline failed: {proc.stderr.strip()[-500:]}")
    data = json.loads(proc.stdout)
    return SpawnResult(data["threads"], data["spawns"], data["seconds"])


# --------------------------------------------------------------------------------------------- statistics


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that exist; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def spread(values: Iterable[float | None]) -> tuple[float, float] | None:
    present = [v for v in values if v is not None]
    return (min(present), max(present)) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def percentile(values: Iterable[float | None], pct: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least ``pct`` % of the values at or below it).

    With few samples (a dozen cold starts) p99 is simply the maximum, which is what a reader should see, not an
    interpolation between the two slowest.
    """
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(present)))
    return present[min(rank, len(present)) - 1]


def paired_differences(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    """Per-round differences a[i] - b[i] (e.g. latency added by a proxy in front of the same server)."""
    return [x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None]


def paired_ratios(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    """Per-round ratios a[i]/b[i]: pairs measured seconds apart cancel most of the VM's drift between rounds."""
    return [r for x, y in zip(a, b, strict=True) if (r := ratio(x, y)) is not None]


# --------------------------------------------------------------------------------------------- formatting


def fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_ratio(values: Sequence[float]) -> str:
    """``0.87x [0.81-0.93]`` (median of per-round ratios, then their range)."""
    if not values:
        return "-"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.2f}x"
    return f"{mid:.2f}x [{min(values):.2f}-{max(values):.2f}]"


def fmt_delta(values: Sequence[float], unit: str = " ms") -> str:
    """``+0.42 ms [+0.31-+0.57]`` (median of per-round differences, then their range)."""
    if not values:
        return "-"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:+.2f}{unit}"
    return f"{mid:+.2f}{unit} [{min(values):+.2f}..{max(values):+.2f}]"


def fmt_range(values: Sequence[float | None], fmt=fmt_int) -> str:
    """``1,748 [1,727-1,899]`` (median, then min-max) or ``-``."""
    mid, rng = median(values), spread(values)
    if mid is None or rng is None:
        return "-"
    if rng[0] == rng[1]:
        return fmt(mid)
    return f"{fmt(mid)} [{fmt(rng[0])}-{fmt(rng[1])}]"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> str:
    """A plain monospace table; columns listed in ``right`` are right-aligned (numbers)."""
    right = set(right)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def machine_info() -> dict[str, object]:
    """Enough to tell two runs' machines apart (numbers from different machines are not comparable)."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
    }
