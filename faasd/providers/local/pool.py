"""Replicas started before they are needed: the local backend's cold starts (docs/coldstart.md).

A cold replica pays an interpreter start, bubblewrap and the watchdog's imports before it answers
(about 50-150 ms on the project's 2-core VMs). :class:`ReplicaPool` keeps ``pool_size`` (default 2) *pooled*
replicas (:mod:`faasd.sandbox.pooled`) that have paid all of that already: each is sandboxed exactly
like a replica -- the same bwrap file system, namespaces, lifeline, OOM score and scheduling group --
except for what depends on its function, which it gets when the supervisor takes it for a slot:

* its files: in ``bwrap`` mode ``/home/app`` and ``/var/openfaas/secrets`` are bound, at its start,
  from an empty directory of its own (``replicas/<id>.app``) that :meth:`ReplicaPool.assign` fills
  with hard links to the function's files -- same inodes, so the same owner, modes and read-only
  mount as a cold replica's, and nothing of another function (see :func:`link_tree`); in ``uid`` and
  ``none`` modes it changes into the function's directory, as a cold replica starts in it;
* its uid and gid, its limits and ``no_new_privs``: the very spec a cold replica would get, applied
  by :func:`faasd.sandbox.enter.enter` before it runs anything of the function; a pooled replica
  starts with the loosest limits any function may ask for (they can only be lowered);
* its control group: it starts in one of its own (named after its pool id), joined as a cold replica
  joins its own, with the loosest limits; :func:`faasd.sandbox.cgroups.relimit` writes the function's
  limits there when it is assigned -- moving processes into a cgroup then would cost the deploy a grace
  period of RCU (10-14 ms on the project's VMs);
* its environment, listening socket and call token, as a cold replica gets them.

Once assigned it tells its readiness itself: ``serving`` on its control socket, answered ``go`` by the
supervisor (:func:`wait_serving`, :func:`release`), which takes it for the health probe a cold replica
answers.

Not pooled (started cold, as before): a function with ``limits.memory`` (bwrap sizes its ``/tmp`` from
it when it starts, and its address-space cap is to hold from the interpreter's start, as for a cold
replica, not be imposed on a watchdog that imported every mode); a function asking for more processes or
open files than a pooled replica was given. A pooled replica that dies while idle
is replaced (after three failures in a row the pool stops, with a warning: cold starts still work).
Idle pooled replicas end when the daemon closes their control socket, or dies.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import resource
import shutil
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from secrets import token_hex

import trio

from faasd.logs import event
from faasd.providers.local.process import kill_session, start_replica
from faasd.providers.local.state import Host
from faasd.sandbox import cgroups as sandbox_cgroups
from faasd.sandbox.enter import ENTER_COMMAND
from faasd.sandbox.limits import Limits
from faasd.sandbox.plan import APP_DIR, BWRAP_OWN_PROCESSES, Launch, ReplicaSandbox, plan_launch
from faasd.sandbox.pooled import (
    ENV_FDS,
    GO,
    MAX_ASSIGNMENT_BYTES,
    POOLED_COMMAND,
    READY,
    SERVING,
    SPEC_FDS,
    encode_assignment,
)

__all__ = [
    "Adopted",
    "Member",
    "PoolError",
    "ReplicaPool",
    "adopt",
    "link_files",
    "link_tree",
    "release",
    "starts_without_code",
    "wait_serving",
]

log = logging.getLogger("faasd.providers.local")

MAX_FAILURES = 3
"""Pooled replicas dying before they are used, in a row, before the pool stops."""
RETRY_S = 1.0
REFILL_DELAY_S = 0.3
"""After a pooled replica is taken, how long before its replacement starts: the replica just given out and
its first calls have the CPU first (a replacement's start costs what a cold replica's does). Not where
pooled replicas start in the idle CPU class (:data:`IDLE_START_DELAY_S`)."""
FIRST_FILL_DELAY_S = 0.5
"""The pool fills this long after the backend starts: the daemon's own start (to ``/healthz`` 200) has the
CPU first, and a pooled replica is about as costly to start as a cold one. Not where pooled replicas
start in the idle CPU class."""
IDLE_START_DELAY_S = 0.05
"""Both delays where pooled replicas start in the idle CPU class (``cpu.idle`` 1, the cgroups of
:mod:`faasd.sandbox.cpuclass`): a refill then runs on CPU time nobody else wants -- any other task
preempts it at once -- so it can start soon after a pooled replica is taken, and a burst of cold starts
finds the pool refilled instead of empty. Its cgroup leaves the idle class when it is assigned
(:func:`faasd.sandbox.cgroups.relimit`).

Not at once, though: the daemon's own part of a refill is not in the idle class (its cgroup made, the
process forked in a worker thread: a few ms of the daemon's CPU), and started at once it ran alongside the
replica just given out, on its way to its first answer. Measured on a 2-vCPU VM (2026-12-01, 12 deploys a
run, deploy -> first 200 p50): 11.6-13.5 ms starting at once, 10.0-11.2 ms 30-100 ms later."""
IDLE_START_PATIENCE = 10
"""A pooled replica starting in the idle class waits for spare CPU: on a machine kept busy it may take
longer than ``ready_timeout`` to say ``ready`` without anything being wrong, so it gets this many times
that before it counts as a failure (three in a row stop the pool)."""
LIMIT_CAP = 1048576
"""The largest process and open-file limits a function may ask for (faasd.sandbox.limits' ranges)."""


class PoolError(Exception):
    """A pooled replica could not be given its function (the supervisor starts a cold one instead)."""


@dataclass(eq=False, slots=True)
class Member:
    """One pooled replica."""

    id: str
    process: trio.Process
    control: socket.socket
    log_fd: int
    """Read end of its stdout+stderr: the supervisor pumps it into its function's log once assigned."""
    app_dir: str
    """bwrap: the directory bound at its ``/home/app``; empty in the other modes."""
    taken: trio.Event = field(default_factory=trio.Event)
    promoted: bool = False
    """Taken out of the idle CPU class while it starts, a cold start waiting for it (:meth:`ReplicaPool.take_soon`)."""
    placement: sandbox_cgroups.Placement | None = None
    """Its control group (the daemon's replica cgroups in use), which it joined when it started, as a cold
    replica joins its own: given its function's limits when assigned
    (:func:`faasd.sandbox.cgroups.relimit`), so no process is moved on the deploy's path."""


@dataclass(eq=False, slots=True)
class Adopted:
    """A pooled replica taken by a deploy and readied for its function (:func:`adopt`) in the deploy's own
    worker-thread hop, right after the function's directory was built there
    (:meth:`faasd.providers.local.provider.LocalProvider.deploy`): the first slot of the new generation
    assigns it without a hop of its own. Each hop costs a cold start a thread's wake, 0.8-1.6 ms measured on
    a deploy's path on a 2-vCPU VM (docs/coldstart.md)."""

    member: Member
    cgroup: sandbox_cgroups.Placement | None
    """Its cgroup given the function's limits (:func:`faasd.sandbox.cgroups.relimit`), its files open."""


class ReplicaPool:
    """Keeps ``size`` pooled replicas ready in :meth:`run` (see the module docstring)."""

    def __init__(self, host: Host, size: int) -> None:
        self.host = host
        self.size = size
        self.limits = _pool_limits()
        self.started = 0
        """Pooled replicas started since the daemon started (the test of refills counts them)."""
        self._ready: list[Member] = []
        self._starting: list[Member] = []
        """Started, not ready yet: refills under way."""
        self._settled = trio.Event()
        """Set (and replaced) each time a starting one becomes ready or fails."""
        self._seq = itertools.count()

    @property
    def _idle_start(self) -> bool:
        """Pooled replicas start in the idle CPU class (:data:`IDLE_START_DELAY_S`)."""
        sandbox = self.host.sandbox
        return sandbox is not None and sandbox.cgroups.cpu_classes == "on"

    @property
    def ready(self) -> int:
        return len(self._ready)

    def eligible(self, limits: Limits) -> bool:
        """Whether a replica with these limits can come from the pool (see the module docstring)."""
        if self.host.sandbox is None or self.size <= 0 or limits.memory_bytes is not None:
            return False
        return limits.processes <= self.limits.processes and limits.open_files <= self.limits.open_files

    def take(self, limits: Limits) -> Member | None:
        """A ready pooled replica for a replica with ``limits`` (now the caller's), or None."""
        if not self.eligible(limits):
            return None
        while self._ready:
            member = self._ready.pop(0)
            if member.process.returncode is None:
                member.taken.set()
                return member
        return None

    async def take_soon(self, limits: Limits) -> Member | None:
        """:meth:`take`; or, when none is ready but one is starting -- a refill under way, as when cold starts
        come faster than the pool refills -- that one, once it is ready (within ``ready_timeout``).

        Why wait rather than start a cold replica: the refill has done part of a start already, so it is ready
        sooner than a new start would be, and no second replica starts beside it on the same CPUs. It leaves
        the idle CPU class at once (:meth:`_promote`): a cold start is waiting for it. None when none is ready
        or starting, or the one waited for failed (the caller starts a cold replica).
        """
        deadline = trio.current_time() + self.host.ready_timeout_s
        promoted = False
        while True:
            member = self.take(limits)
            if member is not None or not self._starting or not self.eligible(limits):
                return member
            if not promoted:
                self._promote()
                promoted = True
            settled = self._settled
            with trio.move_on_at(deadline) as waited:
                await settled.wait()
            if waited.cancelled_caught:
                return None

    def _promote(self) -> None:
        """The longest-starting pooled replica not promoted yet out of the idle CPU class, at the daemon's weight:
        a cold start waits for it. One per waiting cold start: another refill at that weight would compete with
        the replicas just given out. A write to the cgroup file system: microseconds, no worker thread's hop.
        Best effort: one left in the idle class still starts, only later."""
        sandbox = self.host.sandbox
        if sandbox is None or not sandbox.cgroups.cpu:
            return
        for member in self._starting:
            if member.promoted or member.placement is None:
                continue
            member.promoted = True
            with contextlib.suppress(OSError):
                sandbox_cgroups.set_idle(sandbox.cgroups, member.placement, False)
                sandbox_cgroups.weigh(sandbox.cgroups, member.placement, starting=True)
            return

    def assign(self, member: Member, launch: Launch) -> None:
        """Give ``member``, its files already linked (:func:`link_files`), the replica planned as ``launch`` (a cold
        start's plan, in the member's own cgroup given the function's limits:
        :func:`faasd.sandbox.cgroups.relimit`). Its control socket stays open: it says :data:`SERVING` there
        once ready (:func:`wait_serving`, :func:`release`).

        Raises:
            PoolError: it cannot be given (it is gone, the message is too large); the caller stops it and
                starts a cold replica.
        """
        argv = list(launch.argv)
        try:
            spec = argv[argv.index(ENTER_COMMAND) + 1]
        except (ValueError, IndexError):
            raise PoolError("the plan has no sandbox spec") from None
        passed = _passed_fds(spec, launch.env)
        cwd = APP_DIR if member.app_dir else launch.cwd
        message = encode_assignment(spec, cwd, launch.env, [name for name, _ in passed])
        if len(message) > MAX_ASSIGNMENT_BYTES:
            raise PoolError("the environment is too large for an assignment")
        try:
            socket.send_fds(member.control, [message], [fd for _, fd in passed])
        except OSError as exc:
            member.control.close()
            raise PoolError(f"cannot reach the pooled replica: {exc}") from None

    async def forget(self, member: Member) -> None:
        """After a pooled replica ended: its directory."""
        if member.app_dir:
            await trio.to_thread.run_sync(shutil.rmtree, member.app_dir, True)

    # -- keeping it full ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pool full until cancelled; idle pooled replicas are stopped on the way out."""
        try:
            task_status.started()
            await trio.sleep(IDLE_START_DELAY_S if self._idle_start else FIRST_FILL_DELAY_S)
            async with trio.open_nursery() as nursery:
                for _ in range(max(self.size, 0)):
                    nursery.start_soon(self._keep_one)
        finally:
            with trio.CancelScope(shield=True):
                idle, self._ready = self._ready, []
                for member in idle:
                    await self._stop_idle(member)

    async def _keep_one(self) -> None:
        failures = 0
        while failures < MAX_FAILURES:
            try:
                member = await self._start()
            except OSError as exc:
                event(log, logging.WARNING, "cannot start a pooled replica", error=exc.strerror or str(exc))
                member = None
            if member is not None and await self._wait_taken(member):
                failures = 0
                await trio.sleep(IDLE_START_DELAY_S if self._idle_start else REFILL_DELAY_S)
                continue
            failures += 1
            await trio.sleep(RETRY_S)
        event(log, logging.WARNING, "replica pool stopped: pooled replicas keep failing; cold starts only")

    async def _start(self) -> Member | None:
        """Start one pooled replica and wait for its ``ready`` (None when it died or was too slow)."""
        host = self.host
        assert host.sandbox is not None
        member_id = f"pool-{token_hex(3)}-{next(self._seq)}"
        app_dir = ""
        if host.sandbox.mode == "bwrap":
            app_dir = os.path.join(host.replicas_dir, f"{member_id}.app")
            os.makedirs(os.path.join(app_dir, ".secrets"), mode=0o700)
        placement: sandbox_cgroups.Placement | None = None
        cgroups = host.sandbox.cgroups
        if cgroups.hierarchies:
            own = BWRAP_OWN_PROCESSES if host.sandbox.mode == "bwrap" else 0
            try:
                place = functools.partial(
                    sandbox_cgroups.place, cgroups, member_id, self.limits, own, idle=self._idle_start
                )
                placement = await trio.to_thread.run_sync(place)
            except BaseException:
                if app_dir:
                    shutil.rmtree(app_dir, ignore_errors=True)
                raise
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        env = dict(host.base_env)
        replica = ReplicaSandbox(
            workdir=app_dir or host.replicas_dir,
            secrets=bool(app_dir),
            uid=None,
            limits=self.limits,
            name=member_id,
            lifeline=host.lifeline[0] if host.lifeline is not None else None,
            cgroup=placement,
        )
        launch = plan_launch(host.sandbox, replica, host.command.argv, env, (POOLED_COMMAND, str(theirs.fileno())))
        try:
            process = await start_replica(launch, write_fd, (theirs.fileno(),))
        except BaseException:
            ours.close()
            os.close(read_fd)
            with trio.CancelScope(shield=True):
                if app_dir:
                    await trio.to_thread.run_sync(shutil.rmtree, app_dir, True)
                if placement is not None:
                    await trio.to_thread.run_sync(sandbox_cgroups.remove, placement)
            raise
        finally:
            theirs.close()
            os.close(write_fd)
            if placement is not None:
                placement.close_fds()  # The pooled replica has its own copies; its assignment opens them anew.
        self.started += 1
        member = Member(member_id, process, ours, read_fd, app_dir, placement=placement)
        self._starting.append(member)
        try:
            answer = await self._read_ready(ours)
        except BaseException:
            self._settle(member)
            with trio.CancelScope(shield=True):
                await self._stop_idle(member)
            raise
        if answer != READY:
            self._settle(member)
            await self._stop_idle(member, "pooled replica did not start")
            return None
        ours.setblocking(True)
        self._ready.append(member)
        self._settle(member)
        event(log, logging.DEBUG, "pooled replica ready", replica=member_id, pid=process.pid)
        return member

    def _settle(self, member: Member) -> None:
        """``member`` is no longer starting (ready, or failed): wake what waits for one (:meth:`take_soon`)."""
        self._starting.remove(member)
        self._settled.set()
        self._settled = trio.Event()

    async def _read_ready(self, control: socket.socket) -> bytes:
        """What the pooled replica says first (``ready`` once it has imported the watchdog), bounded."""
        answer = b""
        patience = IDLE_START_PATIENCE if self._idle_start else 1
        with trio.move_on_after(self.host.ready_timeout_s * patience):
            answer = await _receive(control, len(READY))
        return answer

    async def _wait_taken(self, member: Member) -> bool:
        """True once ``member`` is taken; False when it died idle (then it is cleaned up here)."""
        async with trio.open_nursery() as nursery:

            async def died() -> None:
                await member.process.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(died)
            await member.taken.wait()
            nursery.cancel_scope.cancel()
        if member.taken.is_set():
            return True
        if member in self._ready:
            self._ready.remove(member)
        await self._stop_idle(member, "pooled replica exited while idle")
        return False

    async def discard(self, member: Member) -> None:
        """Stop a pooled replica that was taken but could not be assigned."""
        await self._stop_idle(member)

    async def discard_adopted(self, adopted: Adopted) -> None:
        """Stop a pooled replica readied by a deploy (:func:`adopt`) that no slot assigned."""
        if adopted.cgroup is not None:
            adopted.cgroup.close_fds()
        await self._stop_idle(adopted.member)

    async def _stop_idle(self, member: Member, trouble: str = "") -> None:
        """End an idle pooled replica at once: it has run nothing of any function, there is nothing to drain
        (its control socket is closed too, which alone would end it once it has finished importing). With
        ``trouble``, that is logged as a warning with the last lines it wrote (why it failed)."""
        with contextlib.suppress(OSError):
            member.control.close()
        await trio.to_thread.run_sync(kill_session, member.process.pid)
        with contextlib.suppress(ProcessLookupError):
            member.process.kill()
        await member.process.wait()
        if trouble:
            status = member.process.returncode
            event(log, logging.WARNING, trouble, replica=member.id, status=status, output=_tail(member.log_fd))
        os.close(member.log_fd)
        await self.forget(member)
        if member.placement is not None:
            await trio.to_thread.run_sync(sandbox_cgroups.remove, member.placement)


async def wait_serving(member: Member) -> bool:
    """True once the assigned pooled replica says :data:`SERVING` (its watchdog is ready and waits for
    :func:`release` before it accepts a connection); False when it says anything else or closes the socket
    (it failed: its exit tells why). The caller bounds the wait."""
    return await _receive(member.control, len(SERVING)) == SERVING


async def _receive(control: socket.socket, size: int) -> bytes:
    """``size`` bytes from a pooled replica's control socket (non-blocking from here on), or fewer when it
    closes the socket or the socket fails first: the replica is ending, and its exit says why. The
    caller bounds the wait."""
    control.setblocking(False)
    answer = b""
    while len(answer) < size:
        await trio.lowlevel.wait_readable(control)
        try:
            chunk = control.recv(size - len(answer))
        except BlockingIOError:
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
    return answer


def release(member: Member) -> None:
    """Let the assigned pooled replica accept calls (:data:`GO`), and close its control socket.

    Raises:
        OSError: it is gone (the caller treats it as not ready; its exit is reaped as any replica's).
    """
    with member.control:
        member.control.send(GO)


def _passed_fds(spec: str, env: dict[str, str]) -> list[tuple[str, int]]:
    """The descriptors a cold replica would inherit, named as the assignment names them (``env:listen_fd``,
    ``spec:pev``): its socket and call token, its cgroup's event files (:mod:`faasd.sandbox.cgroups`)."""
    passed = [(f"env:{name}", int(env[name])) for name in ENV_FDS if name in env]
    for item in spec.split(","):
        key, _, value = item.partition("=")
        if key in SPEC_FDS:
            passed.append((f"spec:{key}", int(value)))
    return passed


def _tail(fd: int, limit: int = 64 * 1024) -> str:
    """The last lines (at most three) of what is waiting in a pooled replica's output pipe, without blocking."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(OSError):
        while len(data) < limit and (chunk := os.read(fd, limit)):
            data += chunk
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-3:])


def _pool_limits() -> Limits:
    """The loosest limits a function may ask for that this daemon can give: assignments only lower them."""

    def cap(which: int) -> int:
        hard = resource.getrlimit(which)[1]
        return LIMIT_CAP if hard == resource.RLIM_INFINITY else min(hard, LIMIT_CAP)

    return Limits(processes=cap(resource.RLIMIT_NPROC), open_files=cap(resource.RLIMIT_NOFILE))


def adopt(host: Host, member: Member, workdir: str, limits: Limits, *, starting: bool) -> Adopted:
    """Ready ``member`` for a replica of the function in ``workdir``: its cgroup given ``limits``
    (:func:`faasd.sandbox.cgroups.relimit`, at the daemon's CPU weight while it starts when ``starting``)
    and its files linked (:func:`link_files`). Blocking: both in one worker thread's hop.

    Raises:
        PoolError, OSError: it cannot be readied (nothing stays open); the caller discards it
            (:meth:`ReplicaPool.discard`).
    """
    sandbox = host.sandbox
    cgroup: sandbox_cgroups.Placement | None = None
    if member.placement is not None and sandbox is not None:
        own = BWRAP_OWN_PROCESSES if sandbox.mode == "bwrap" else 0
        cgroup = sandbox_cgroups.relimit(sandbox.cgroups, member.placement, limits, own, starting=starting)
    try:
        link_files(member, workdir)
    except BaseException:
        if cgroup is not None:
            cgroup.close_fds()
        raise
    return Adopted(member, cgroup)


def starts_without_code(env_vars: Mapping[str, str]) -> bool:
    """Whether nothing of the function runs in its replica before it is ready, by the function's
    ``envVars``: fork and streaming modes start a process per call only (http starts the function's server,
    python imports its handler). Such a replica starts at the daemon's CPU weight (:func:`adopt`)."""
    mode = env_vars.get("mode", "").strip() or "fork"
    return mode in ("fork", "streaming")


def link_files(member: Member, workdir: str) -> None:
    """Fill ``member``'s own files directory with hard links to the function's ``workdir`` (bwrap mode;
    nothing to do in the others), before :meth:`ReplicaPool.assign`. Blocking: the supervisor runs it in a
    worker thread, in the same hop as the cgroup's relimit, since each hop costs the cold start a wake.

    Raises:
        PoolError: the function's files cannot be linked; the caller stops it and starts a cold replica.
    """
    if member.app_dir:
        try:
            link_tree(workdir, member.app_dir)
        except OSError as exc:
            raise PoolError(f"cannot link the function's files: {exc}") from None


def link_tree(source: str, target: str) -> None:
    """Make ``target`` (an existing directory holding only empty directories of ours) a copy of
    ``source`` made of hard links: same inodes for files (owner, modes and content are the function's),
    directories and symbolic links made anew with the source's owner and modes. Blocking.

    Only what is in ``source`` ends up in ``target``; a link that cannot be made (another file system,
    a special file) raises OSError and the caller starts a cold replica instead.
    """
    _mirror(source, target)
    for directory, dirs, files in os.walk(source):
        relative = os.path.relpath(directory, source)
        into = target if relative == "." else os.path.join(target, relative)
        for name in dirs:
            path = os.path.join(directory, name)
            made = os.path.join(into, name)
            if os.path.islink(path):
                _link(path, made)
                continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(made, 0o700)
            _mirror(path, made)
        for name in files:
            _link(os.path.join(directory, name), os.path.join(into, name))


def _link(path: str, made: str) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(path), made)
        os.lchown(made, info.st_uid, info.st_gid)
    elif stat.S_ISREG(info.st_mode):
        os.link(path, made, follow_symlinks=False)
    else:
        raise OSError(f"{path}: not a file, directory or link")


def _mirror(path: str, made: str) -> None:
    info = os.lstat(path)
    os.chown(made, info.st_uid, info.st_gid)
    os.chmod(made, stat.S_IMODE(info.st_mode))
