"""Inside a replica, before anything else: apply its limits and become the function's user.

The local backend starts each replica as ``python faasd.pyz _sandbox SPEC watchdog`` (inside bwrap in
``bwrap`` mode). ``faasd.__main__`` calls :func:`enter` with ``SPEC`` before it imports the watchdog, so
no code of the function -- and nothing the function controls -- runs before the replica is confined:

0. with ``mev`` (cgroup v2 ``memory.events`` of the replica's cgroup), ``pev`` (its ``pids.events``)
   and ``pprc`` (that cgroup's ``cgroup.procs``), read-only descriptors -- the replica joined that
   cgroup before this step, :mod:`faasd.sandbox.cgroups`: kept open for the watchdog
   (:func:`oom_kills`, :func:`pids_refused`, :func:`cgroup_members`), close-on-exec;
1. ``oom_score_adj`` raised to 1000: when memory runs out, the kernel kills function processes first,
   never the daemon (raising it needs no privilege; lowering does, so a function cannot undo it);
   and the nice value of the replica's autogroup raised (``nice``): every replica is a session of its
   own, which the scheduler treats as one group, so a busy function -- a fork bomb -- gets less CPU
   than the daemon serving everyone's calls (again, a function cannot lower it). The daemon leaves
   ``nice`` out when the replica has a CPU cgroup: autogroups apply only to the root CPU cgroup. The
   kernel lets a process without ``CAP_SYS_ADMIN`` change an autogroup's nice value once per 100 ms
   across the whole system (EAGAIN otherwise): replicas starting together retry, for up to
   :data:`NICE_RETRY_S`;
2. ``RLIMIT_NOFILE``, ``RLIMIT_AS``, ``RLIMIT_NPROC`` set, soft = hard (inherited by every process the
   replica starts; a function can lower them, never raise them);
3. with ``uid``: ``no_new_privs`` (unless bwrap set it already), no supplementary groups, then the real,
   effective and saved gid and uid all set to the function's -- which drops every capability. Checked
   afterwards; any failure ends the process (exit 126) rather than run a function with the daemon's
   rights;
4. with ``life``: the replica dies with the daemon. ``life`` is the read end of a pipe whose only write
   end the daemon holds: it reads end-of-file once the daemon is gone, however it ended, and a thread
   waiting on it then kills this process (bwrap's PID namespace takes everything else with it). The
   watchdog's own ``parent_pid`` watch cannot do this in bwrap: the daemon's pid is not visible there.
   The descriptor is close-on-exec from here on: function processes never hold it.

``SPEC`` is ``key=value`` pairs separated by commas, integers only (:func:`format_spec`); it travels on
the command line, not in the environment, so the function's environment is the one the backend built.
Stdlib only: this runs on every replica start.
"""

from __future__ import annotations

import errno
import os
import sys

from faasd.execenv import remember

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import signal
else:
    import _signal as signal  # signal's functions without its enum wrappers: docs/coldstart.md

__all__ = [
    "ENTER_COMMAND",
    "SandboxSpecError",
    "cgroup_members",
    "enter",
    "format_spec",
    "memory_max",
    "oom_kills",
    "parse_spec",
    "pids_refused",
    "process_limit",
]

ENTER_COMMAND = "_sandbox"
"""The ``faasd`` argument that introduces a spec: ``faasd _sandbox SPEC <role> ...``."""

KEYS = ("mev", "mmax", "pev", "plim", "pprc", "uid", "gid", "as", "nproc", "nofile", "nnp", "oom", "nice", "life")
"""mev: the replica cgroup's memory.events (a descriptor); mmax: its memory.max (bytes, for messages);
pev: its pids.events (a descriptor); plim: the function's process limit (for messages); pprc: that
cgroup's cgroup.procs (a descriptor);
uid/gid: become them; as/nproc/nofile: RLIMIT_AS/NPROC/NOFILE; nnp=1: set no_new_privs; oom: the
replica's oom_score_adj; nice: its autogroup's nice value; life: the daemon's lifeline pipe (a file
descriptor)."""

NICE_RETRY_S = 0.5
"""How long a replica retries setting its autogroup's nice value while the kernel's rate limit refuses."""
NICE_RETRY_PAUSE_S = 0.02

_kept: dict[str, int] = {}
"""``mev``, ``mmax``, ``pev``, ``plim`` and ``pprc`` of the spec once :func:`enter` applied it: read by
:func:`oom_kills`, :func:`memory_max`, :func:`pids_refused`, :func:`process_limit` and
:func:`cgroup_members` (the watchdog runs in this same process)."""

EXIT_CONFINE_FAILED = 126

PR_SET_NO_NEW_PRIVS = 38


class SandboxSpecError(ValueError):
    """A spec that does not parse (a bug in the backend, never user input)."""


def format_spec(**values: int | None) -> str:
    """``uid=5,gid=5,as=...``: the values that are not None, in :data:`KEYS` order."""
    unknown = set(values) - set(KEYS)
    if unknown:
        raise SandboxSpecError(f"unknown sandbox keys: {', '.join(sorted(unknown))}")
    return ",".join(f"{key}={int(value)}" for key in KEYS if (value := values.get(key)) is not None)


def parse_spec(text: str) -> dict[str, int]:
    """The inverse of :func:`format_spec`.

    Raises:
        SandboxSpecError: an unknown key, a value that is not a whole number >= 0, or uid without gid.
    """
    values: dict[str, int] = {}
    for item in text.split(",") if text else ():
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS or key in values or not value.isdigit():
            raise SandboxSpecError(f"bad sandbox spec item {item!r}")
        values[key] = int(value)
    if ("uid" in values) != ("gid" in values):
        raise SandboxSpecError("a sandbox spec names both uid and gid, or neither")
    return values


def enter(text: str, *, follow_daemon: bool = True) -> None:
    """Apply the spec to this process (see the module docstring); exit 126 on any failure.

    ``follow_daemon=False`` leaves ``life`` for later (a pooled replica, :mod:`faasd.sandbox.pooled`,
    applies it with its assignment): its thread would be there when the assignment changes uid, and
    glibc makes every thread of the process take part in each ``set*id`` call (a signal to each, waited
    for: 0.1 ms for the three calls with one thread more, measured here; more on a busy machine).
    The descriptor stays open meanwhile; nothing is exec'd before the assignment.
    """
    remember()  # The environment as exec'd, while this process may still read it (faasd.execenv).
    try:
        values = parse_spec(text)
        if not follow_daemon:
            values.pop("life", None)
        _confine(values)
    except (OSError, SandboxSpecError) as exc:
        print(f"faasd sandbox: cannot confine the replica: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFINE_FAILED) from None


def _confine(values: dict[str, int]) -> None:
    for fd_key, others in (("mev", ("mmax",)), ("pev", ("plim",)), ("pprc", ())):
        if fd_key in values:
            os.set_inheritable(values[fd_key], False)  # The watchdog's, not the function's.
            _kept.update({key: values[key] for key in (fd_key, *others) if key in values})
    if "oom" in values:
        _write_proc("/proc/self/oom_score_adj", values["oom"])
    if "nice" in values:
        _set_autogroup_nice(values["nice"])
    if {"as", "nproc", "nofile"} & values.keys():
        import resource

        for key, which in (("nofile", resource.RLIMIT_NOFILE), ("as", resource.RLIMIT_AS)):
            if key in values:
                resource.setrlimit(which, (values[key], values[key]))
        if "nproc" in values:
            resource.setrlimit(resource.RLIMIT_NPROC, (values["nproc"], values["nproc"]))
    if "uid" in values:
        _become(values["uid"], values["gid"], no_new_privs=bool(values.get("nnp")))
    if "life" in values:
        _follow_daemon(values["life"])


def _write_proc(path: str, value: int) -> None:
    try:
        with open(path, "w", encoding="ascii") as file:
            file.write(str(value))
    except OSError:
        pass  # No /proc, no autogroups: the limits still hold; these are preferences.


def _set_autogroup_nice(value: int) -> None:
    """Set this session's autogroup nice value, retrying while the kernel's rate limit says EAGAIN."""
    import time

    deadline = time.monotonic() + NICE_RETRY_S
    while True:
        try:
            with open("/proc/self/autogroup", "w", encoding="ascii") as file:
                file.write(str(value))
            return
        except OSError as exc:
            if exc.errno != errno.EAGAIN or time.monotonic() >= deadline:
                return  # No autogroups (or still refused): a preference, not a limit.
        time.sleep(NICE_RETRY_PAUSE_S)


def oom_kills() -> int | None:
    """How many processes of this replica the kernel killed at its cgroup's memory limit so far (the
    ``oom_kill`` count of cgroup v2 ``memory.events``); None without such a limit or when unreadable."""
    return _event_count("mev", b"oom_kill")


def pids_refused() -> int | None:
    """How many forks this replica's cgroup refused at its ``pids.max`` so far (the ``max`` count of
    ``pids.events``); None without a pids cgroup or when unreadable."""
    return _event_count("pev", b"max")


def cgroup_members() -> list[int] | None:
    """The processes in this replica's pids cgroup (``cgroup.procs``, pids as this process sees them:
    in a PID namespace, those outside it are left out), or None without that descriptor or when
    unreadable."""
    kept = _kept.get("pprc")
    if kept is None:
        return None
    # Opened anew each time (through /proc, as the sandbox may not see the cgroup file system): cgroup
    # v1 keeps the list it built for an open file and hands it out again while it is read at least once
    # a second -- a stale list, missing every process forked since.
    chunks: list[bytes] = []
    try:
        fd = os.open(f"/proc/self/fd/{kept}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            while data := os.read(fd, 65536):
                chunks.append(data)
        finally:
            os.close(fd)
    except OSError:
        return None
    return [pid for pid in map(int, b"".join(chunks).split()) if pid > 0]


def process_limit() -> int | None:
    """The function's process limit, where :func:`pids_refused` can tell when it was reached."""
    return _kept.get("plim") if "pev" in _kept else None


def _event_count(fd_key: str, name: bytes) -> int | None:
    if fd_key not in _kept:
        return None
    try:
        data = os.pread(_kept[fd_key], 4096, 0)
    except OSError:
        return None
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return None


def memory_max() -> int | None:
    """The replica cgroup's ``memory.max`` in bytes, when :func:`oom_kills` can tell."""
    return _kept.get("mmax") or None if "mev" in _kept else None


def _become(uid: int, gid: int, *, no_new_privs: bool) -> None:
    if no_new_privs:
        _set_no_new_privs()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise OSError(f"still uid {os.getresuid()} gid {os.getresgid()} groups {os.getgroups()} after the switch")


def _follow_daemon(fd: int) -> None:
    """Kill this process once the daemon's end of the lifeline pipe is closed (see the module docstring).

    A bare ``_thread`` rather than :class:`threading.Thread`, whose ``start()`` waits until the new thread
    has run: that wait was 0.2-0.6 ms on a pooled replica's path from its assignment to its first answer
    (the new thread needs a CPU, often a halted vCPU woken). Nothing is lost meanwhile: a daemon gone
    before the thread first runs is seen then, as its first read returns end of file at once."""
    os.set_inheritable(fd, False)
    import _thread

    _thread.start_new_thread(_wait_for_eof, (fd,))


def _wait_for_eof(fd: int) -> None:
    try:
        while os.read(fd, 64):
            pass  # The daemon never writes; anything read is ignored.
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _set_no_new_privs() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(error)}")
