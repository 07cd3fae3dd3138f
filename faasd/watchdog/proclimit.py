"""Ending a call that fills its replica's process limit: a fork bomb churns for a tick, not its whole
``exec_timeout``.

A fork bomb in a replica is bounded by its process limit (``pids.max``, ``RLIMIT_NPROC``) and its CPU
quota, but while it runs, its processes fork and exit as fast as the limit lets them, and that churn
goes through the kernel's global process bookkeeping: measured on a 2-CPU machine, another function's
p99 during a bomb that lasted its 1 s ``exec_timeout`` was 5.8x its p99 without, 1.4x when the bomb was
stopped after 50 ms (same run). So where the replica has a pids cgroup (:mod:`faasd.sandbox.cgroups`;
``pids.events`` kept open by :mod:`faasd.sandbox.enter`), the watchdog checks on its deadline tick
(every 50 ms while calls are in flight, one ``pread``) whether the replica refused a fork at its limit
since the last tick; if it did, the call whose process group holds the most processes -- the only call
in flight, or one holding at least a quarter of the limit: a fork bomb, not one of many ordinary calls
that together reach it -- is killed, and answered 500 with the limit named. In python mode the same
holds for a busy worker (a handler's forks stay in its worker's process group): it is killed and
replaced. (That is why such a replica has no ``RLIMIT_NPROC``: a fork it refused would not show in
``pids.events``.)

A killed call alone does not stop a client that calls a bomb in a loop: each call churns until the next
tick, and back to back they churn most of the time (measured: the other function's p99 4.4x its p99
without). So after such a kill the replica *cools down*: for :data:`COOLDOWN_FIRST_S`, doubling with
each kill up to :data:`COOLDOWN_MAX_S` (back to the start after :data:`COOLDOWN_RESET_S` without one),
new calls are answered 429 with ``Retry-After`` instead of started -- a function that fork-bombs costs
the others a tick per cooldown, not the machine.

**Processes that left their call.** A process that left its call's process group (``setsid``,
``setpgid``) is not counted for the culprit, and killing the culprit's group does not reach it: a bomb
started that way -- its call may well have answered at once -- would hold the replica's ``pids.max``
until the replica ends, every later call failing to fork. So whenever the limit was reached, the
watchdog also kills every process of its cgroup (``cgroup.procs``, kept open by
:mod:`faasd.sandbox.enter`) that is not itself, one of its ancestors (bwrap's init), nor in the process
group of a call in flight or of a python worker -- and checks on its idle tick too (every second), since
no call need be in flight. Each process is first pinned by a pidfd and checked to be in this cgroup
still (a recycled pid is never signalled), then stopped (SIGSTOP: it can fork no more, nor exit), round
after round -- the children forked meanwhile are found by the next round -- for at most
:data:`SWEEP_SLICE_S` per tick, on every fast tick (50 ms) until two rounds in a row find none left to
stop; then all are killed at once, and once a round finds none of them left (within
:data:`SWEEP_MAX_S`), the replica cools down as after a culprit's kill (new calls are answered 429
meanwhile too). Stopping first is what makes it converge: the watchdog shares the replica's CPU quota
with the bomb, and a killed process's slot would be refilled at once by the others. (cgroup v2's
``cgroup.kill`` would kill the watchdog too, and v1 has no such file; faasd uses no freezer cgroup.)

http mode's long-lived server is watched through the same class: the server's process group is its one
"call" (:mod:`faasd.watchdog.httplimit`). A process a python worker's handler forked that left the
worker's group is still the worker's child: the worker reaps it once killed (:mod:`faasd.watchdog.pyreap`).
Nothing here runs without a pids cgroup.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Collection, Mapping

from faasd.logs import WARNING, LineLogger, event
from faasd.procstat import parent_of, stat_fields
from faasd.sandbox import enter

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import signal
    from typing import TypeVar

    from faasd.watchdog.server import HttpConnection

    C = TypeVar("C")
else:
    import _signal as signal  # signal's functions without its enum wrappers: docs/coldstart.md

__all__ = [
    "CALL_NICE",
    "COOLDOWN_FIRST_S",
    "COOLDOWN_MAX_S",
    "COOLDOWN_RESET_S",
    "CULPRIT_SHARE",
    "SWEEP_MAX_S",
    "SWEEP_SLICE_S",
    "ProcessLimit",
]

log = LineLogger("faasd.watchdog")

SWEEP_SLICE_S = 0.1
"""How long one tick may spend stopping processes that left their call (it runs on the event loop)."""
SWEEP_MAX_S = 5.0
"""A sweep ends after this long even if some process it killed is still there (stuck in the kernel)."""
SWEEP_QUIET_ROUNDS = 2
"""The sweep kills once this many rounds in a row found no process left to stop."""

COOLDOWN_FIRST_S = 1.0
COOLDOWN_MAX_S = 30.0
COOLDOWN_RESET_S = 60.0
LABEL = "com.faasd.limits.processes"

CALL_NICE = 5
"""Each call's process (python mode: each worker) runs this much nicer than the watchdog, set right
after it is spawned: inside the replica's cgroup, a fork bomb's hundred processes would otherwise leave
the watchdog a hundredth of the replica's CPU, and the bomb would churn until the watchdog's tick got to
run. Calls compete with each other as before; the watchdog, which answers them all, comes first.
Under a watched limit in every mode; in fork and streaming modes always (``nice_calls``): there the
watchdog otherwise waited for a CPU behind its own calls' processes a third of the time at c16, while
the calls it would have started meanwhile could have used the CPU time left idle (docs/watchdog.md)."""

CULPRIT_SHARE = 4
"""A call is the culprit when it holds at least 1/4 of the limit: a fork bomb that churns (processes
exiting as fast as others start) has fewer alive at any instant than its limit, and ordinary calls have
one or two each."""


class ProcessLimit:
    """The replica's process limit as the watchdog watches it (see the module docstring)."""

    def __init__(self, *, nice_calls: bool = False) -> None:
        """``nice_calls``: :meth:`lower` gives every call's process :data:`CALL_NICE`, watched or not."""
        self.limit = enter.process_limit() or 0
        """The function's process limit (``com.faasd.limits.processes``); 0 when not watched."""
        self._refused = enter.pids_refused()
        self._cooldown = 0.0
        self._cool_until = 0.0
        self._last_kill = float("-inf")
        self._dying = 0
        """The process group killed last: the cooldown lasts until it is gone."""
        self.call_nice = os.getpriority(os.PRIO_PROCESS, 0) + CALL_NICE if self.active or nice_calls else None
        """Nice value of each call's process (see :data:`CALL_NICE`); None: the watchdog's own."""
        self._own = _self_and_ancestors() if self.active else frozenset()
        """Never swept: the watchdog and the processes above it in the cgroup (bwrap's)."""
        self._cgroup = _cgroup_of("self") if self.active else None
        self._stopped: dict[int, int] = {}
        """Processes that left their call, stopped by the sweep under way (:meth:`sweep`): pid -> a pidfd
        pinning that very process. Its pid may be recycled once it is gone -- within one sweep, with the
        default ``pid_max`` of 32768 and bombs forking thousands a second -- and a new process under a
        pid taken for one already stopped would never be stopped: it forked on, and the sweep never
        converged (seen in http mode's test on a shared machine: a sweep ran its full
        :data:`SWEEP_MAX_S` and left a bomb running)."""
        self._killed: set[int] = set()
        self._stops = 0
        """Processes stopped by the sweep under way (recycled pids included): what it reports killed."""
        self._sweep_until = 0.0

    def __repr__(self) -> str:
        return f"<ProcessLimit limit={self.limit} refused={self._refused} cool_until={self._cool_until}>"

    @property
    def active(self) -> bool:
        """The replica has a pids cgroup whose refusals the watchdog can read."""
        return self._refused is not None and self.limit > 0

    def lower(self, pid: int) -> None:
        """Give a call's (or python worker's) new process :attr:`call_nice`, when watched (or ``nice_calls``)."""
        if self.call_nice is not None:
            with contextlib.suppress(OSError):  # Gone already, or not allowed: the limits still hold.
                os.setpriority(os.PRIO_PROCESS, pid, self.call_nice)

    def to_kill(self, calls: Mapping[int, C], now: float, keep: Collection[int] = ()) -> C | None:
        """On the tick (also when idle): when the limit was reached since the last tick, or a sweep is
        under way, sweep the processes that left their call (any process group but ``calls``' and
        ``keep``'s: python's idle workers); then return the one of ``calls`` (by process group) to kill
        for filling the limit, or None. When anything was killed, the cooldown starts."""
        if not self.active or not (self.reached() or self._stopped):
            return None
        escaped = self.sweep({*calls, *keep})
        if self._stopped:
            return None  # Still stopping them: the next tick goes on.
        # After a sweep a lone call is not blamed unheard: the refusals were likely the escapees' doing.
        group = self.culprit(calls, count=bool(escaped)) if calls else None
        if group is None:
            if escaped:
                self.killed(now, 0)
            return None
        self.killed(now, group)
        return calls[group]

    @property
    def sweeping(self) -> bool:
        """Processes that left their call are being stopped: the tick should come back soon."""
        return bool(self._stopped)

    def sweep(self, groups: Collection[int]) -> int:
        """One tick's share of a sweep: stop, then kill, every process of the replica's cgroup that is not
        the watchdog's (:attr:`_own`) and not in one of the process groups ``groups``. Returns how many
        were killed once the sweep is over, 0 while it goes on (see "Processes that left their call").

        Each is stopped (SIGSTOP: it can fork no more, nor exit, so its pid stays its own), round after
        round -- the children forked meanwhile are found by the next round -- for at most
        :data:`SWEEP_SLICE_S` per tick (the watchdog shares the replica's CPU with the bomb); once two
        rounds in a row find none left to stop, all are killed, and the sweep is over when a round finds
        none of them left (or after :data:`SWEEP_MAX_S`)."""
        now = time.monotonic()
        if not self._stopped:
            self._sweep_until = now + SWEEP_MAX_S
        quiet = 0
        deadline = now + SWEEP_SLICE_S
        left = True
        while time.monotonic() < deadline:
            members = enter.cgroup_members()
            if members is None:
                break
            foreign = [pid for pid in members if pid not in self._own and not (groups and _pgid(str(pid)) in groups)]
            if not foreign:
                left = False
                break
            fresh = False
            for pid in foreign:
                pinned = self._stopped.get(pid)
                if pinned is not None:
                    if _alive(pinned):
                        continue
                    # The process stopped under this pid is gone: the pid is someone new's, to stop too.
                    os.close(pinned)
                    del self._stopped[pid]
                    self._killed.discard(pid)
                pinned = _stop_member(pid, self._cgroup)
                if pinned is not None:
                    self._stopped[pid] = pinned
                    self._stops += 1
                    fresh = True
            quiet = 0 if fresh else quiet + 1
            if quiet >= SWEEP_QUIET_ROUNDS:
                self._kill_stopped()
                break  # The next tick sees whether they are gone.
        if left and self._stopped and time.monotonic() < self._sweep_until:
            return 0
        self._kill_stopped()
        count = self._stops
        self._stops = 0
        for pinned in self._stopped.values():
            os.close(pinned)
        self._stopped.clear()
        self._killed.clear()
        if count:
            event(log, WARNING, "killed processes that left their call", count=count, limit=self.limit)
        return count

    def _kill_stopped(self) -> None:
        for pid, pinned in self._stopped.items():
            if pid not in self._killed:
                with contextlib.suppress(OSError):  # Gone already.
                    signal.pidfd_send_signal(pinned, signal.SIGKILL)
                self._killed.add(pid)

    def killed(self, now: float, group: int) -> None:
        """Process group ``group`` was killed for filling the limit at ``now`` (monotonic): start (or
        lengthen) the cooldown."""
        if now - self._last_kill > COOLDOWN_RESET_S:
            self._cooldown = 0.0
        self._cooldown = min(COOLDOWN_MAX_S, max(COOLDOWN_FIRST_S, self._cooldown * 2))
        self._cool_until = now + self._cooldown
        self._last_kill = now
        self._dying = group

    def answered(self, now: float) -> None:
        """The killed call was answered at ``now``: the cooldown runs from there. (Fork mode answers once
        the call's processes are gone, or a second after the kill: a hundred processes of a replica with
        a tenth of the daemon's CPU weight can take that long to die on a busy machine.)"""
        if self._cool_until:
            self._cool_until = max(self._cool_until, now + self._cooldown)

    def cooling(self, now: float) -> float:
        """Seconds of cooldown left at ``now`` (0: calls may start). It is not over while a process of the
        killed group is left: a new call would find the replica still full.

        The first time it is over, the refusals counted meanwhile are forgotten: the killed call's
        processes may have been refused forks until they were gone, and if no tick saw that while the
        killed call was still in flight, the first call after the cooldown would be blamed for it."""
        if self._stopped:
            return COOLDOWN_FIRST_S  # A sweep is under way: the replica is full.
        if not self._cool_until:
            return 0.0
        if now < self._cool_until:
            return self._cool_until - now
        if self._dying and _group_alive(self._dying):
            return COOLDOWN_FIRST_S
        self._cool_until = 0.0
        self._dying = 0
        self._refused = enter.pids_refused()
        return 0.0

    def refuse(self, connection: HttpConnection, now: float) -> bool:
        """During a cooldown, answer a new call 429 with ``Retry-After`` and return True."""
        cooling = self.cooling(now)
        if cooling:
            retry = f"Retry-After: {math.ceil(cooling)}\r\n".encode()
            connection.respond(429, self.cooling_message(), "text/plain", retry)
        return bool(cooling)

    def killed_message(self) -> bytes:
        """The 500 body of a call killed for filling the limit."""
        return f"Killed process: it filled its replica's process limit of {self.limit} ({LABEL})\n".encode()

    def full_reason(self) -> str:
        """Why a call could not start while the replica is at its limit (the kernel refused its process, or
        the thread that would have started it)."""
        return f"its replica is at its process limit of {self.limit} ({LABEL})"

    def cooling_message(self) -> bytes:
        """The 429 body of a call refused during a cooldown."""
        return f"Function cooling down: a call filled its replica's process limit of {self.limit}\n".encode()

    def reached(self) -> bool:
        """The replica refused a fork at its limit since the last time this was asked."""
        if self._refused is None:
            return False
        count = enter.pids_refused()
        if count is None or count <= self._refused:
            return False
        self._refused = count
        return True

    def culprit(self, groups: Collection[int], *, count: bool = False) -> int | None:
        """Of the process groups ``groups`` (the calls'), the one holding the most processes, when that is
        at least :data:`CULPRIT_SHARE` of the limit; else None. A lone call is the culprit without
        counting (the watchdog itself holds a process or two), unless ``count``. Otherwise reads /proc (only called when
        :meth:`reached`) -- slowly, as it runs in the replica's cgroup, which the bomb keeps at its quota."""
        if len(groups) == 1 and not count:
            return next(iter(groups))
        counts = dict.fromkeys(groups, 0)
        try:
            entries = os.listdir("/proc")
        except OSError:
            return None
        for entry in entries:
            if entry.isdigit():
                group = _pgid(entry)
                if group in counts:
                    counts[group] += 1
        if not counts:
            return None
        group, most = max(counts.items(), key=lambda item: item[1])
        return group if most * CULPRIT_SHARE >= self.limit else None


def _self_and_ancestors() -> frozenset[int]:
    """This process and its ancestors as far as they are visible (in bwrap, its init is pid 1)."""
    found = {os.getpid()}
    pid = os.getppid()
    while pid > 0 and pid not in found:
        found.add(pid)
        try:
            parent = parent_of(pid)
        except ValueError:
            break
        if parent is None:
            break
        pid = parent
    return frozenset(found)


def _cgroup_of(pid: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as file:
            return file.read()
    except OSError:
        return None


def _stop_member(pid: int, cgroup: bytes | None) -> int | None:
    """SIGSTOP ``pid`` if it is (still) in the cgroup described by ``cgroup``; returns the pidfd that pins
    it (the caller's to close), or None when it was not stopped. The pidfd pins the process before the
    check, so a pid recycled meanwhile is never signalled."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        if cgroup is not None and _cgroup_of(str(pid)) == cgroup:
            signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
            return pidfd
    except OSError:
        pass
    os.close(pidfd)
    return None


def _alive(pidfd: int) -> bool:
    """The process ``pidfd`` pins has not been reaped (a zombie counts: its pid is not free yet)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        return False
    return True


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except OSError:  # ESRCH: gone; EPERM: the number is someone else's group now.
        return False
    return True


def _pgid(pid: str) -> int:
    try:
        fields = stat_fields(int(pid))
        return int(fields[2]) if fields is not None else -1
    except (ValueError, IndexError):
        return -1
