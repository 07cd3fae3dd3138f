"""Replica slots of the local backend: started, supervised, made ready, published, stopped.

A *slot* is a place for one replica: a listening socket on 127.0.0.1 bound before the replica is
spawned (passed down as ``listen_fd``), and a task in the provider's nursery that keeps one replica
running in it. The socket lives as long as the slot, so a replica that crashes is replaced on the same
port and connections queued meanwhile are served by its successor.

:meth:`Supervisor.reconcile` moves a function's slots toward its desired count
(:func:`~faasd.providers.common.rollout.plan_replicas`); each slot's task (:meth:`Supervisor._supervise`)
spawns the replica in the sandbox, probes it ready (:mod:`faasd.providers.common.probe`), publishes
it, pumps its output into the function's log book, restarts it with a backoff when it ends on its own,
and stops it (unpublished first, SIGTERM, SIGKILL to its session after the grace) when asked.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import signal
import socket
from secrets import token_hex

import trio

from faasd.errors import describe_exception
from faasd.logs import event
from faasd.providers.common.logbook import LineBuffer
from faasd.providers.common.probe import wait_healthy
from faasd.providers.common.rollout import plan_replicas
from faasd.providers.local.pool import (
    Adopted,
    Member,
    PoolError,
    ReplicaPool,
    adopt,
    release,
    starts_without_code,
    wait_serving,
)
from faasd.providers.local.process import (
    exit_fields,
    exit_text,
    kill_session,
    remove_tree,
    start_replica,
    token_pipe,
)
from faasd.providers.local.state import LOCALHOST, REPLICA_KEY, Function, Generation, Host, Replica, Slot
from faasd.providers.local.workdir import replica_env
from faasd.providers.types import Endpoint
from faasd.registry import EndpointRegistry
from faasd.sandbox import cgroups as sandbox_cgroups
from faasd.sandbox import files as sandbox_files
from faasd.sandbox import host as sandbox_host
from faasd.sandbox.limits import Limits
from faasd.sandbox.plan import BWRAP_OWN_PROCESSES, Launch, ReplicaSandbox, plan_launch

__all__ = ["Supervisor"]

log = logging.getLogger("faasd.providers.local")

LISTEN_BACKLOG = 1024
"""Backlog of each replica's listening socket: calls made during a (re)start wait there."""

READY_POLL_S = 0.015
"""Pause between two health probes that got an answer other than 200 (the watchdog is starting)."""

RESTART_BACKOFF_INITIAL_S = 0.1
RESTART_BACKOFF_MAX_S = 30.0
RESTART_BACKOFF_RESET_S = 10.0
"""A replica that ran at least this long restarts its slot's backoff from the initial delay."""

UNPUBLISH_GRACE_S = 0.05
"""Between unpublishing a replica and sending it SIGTERM: a router that picked the endpoint just
before it was unpublished still connects while the replica accepts (a zero-failure rolling update)."""

LOG_DRAIN_S = 1.0
"""After a replica exits, how long its last output may take to arrive (a leftover grandchild can hold
the pipe open for ever)."""

PIPE_READ_BYTES = 64 * 1024


class Supervisor:
    """Runs the slots of every function of one provider, in the nursery it is given (``nursery``).

    Every method runs on the trio thread; the provider calls :meth:`reconcile` under the function's
    lock, readiness calls it too (a ready replica of a new generation retires an old one).
    """

    def __init__(self, host: Host, registry: EndpointRegistry, pool: ReplicaPool | None = None) -> None:
        self.host = host
        self.registry = registry
        self.pool = pool
        """Pooled replicas a slot takes instead of starting one (:mod:`.pool`), when it can."""
        self.nursery: trio.Nursery | None = None
        """The provider's nursery while it runs; None before and after (nothing is started then)."""
        self.restarts = 0
        """Replicas replaced after exiting on their own (or not becoming ready), since the start."""
        self._replica_ids: set[str] = set()
        self._seq = itertools.count()

    # -- a function's slots -------------------------------------------------------------------------

    def reserve(self, limits: Limits) -> Member | None:
        """A pooled replica for a deploy to ready in its build's hop (:func:`~faasd.providers.local.pool.adopt`)
        and hand to :meth:`reconcile`, or None (no pool, none ready, or limits a pooled replica cannot have)."""
        return self.pool.take(limits) if self.pool is not None else None

    def reconcile(self, function: Function, adopted: Adopted | None = None) -> None:
        """Apply :func:`plan_replicas` to ``function`` (sync: called from operations and readiness).
        ``adopted``: a pooled replica readied for its current generation, given to the first slot started
        (stopped if none is)."""
        if function.removed or self.nursery is None:
            if adopted is not None:
                self.give_up(adopted)
            return
        start, stop = plan_replicas(function.slots, function.generation, function.desired)
        for slot in stop:
            self.stop_slot(slot)
        for _ in range(start):
            if not self._start_slot(function, adopted):
                break
            adopted = None
        if adopted is not None:
            self.give_up(adopted)
        self.publish(function)
        self._collect_retired(function)

    def give_up(self, adopted: Adopted) -> None:
        """Stop a pooled replica a deploy took that no slot will assign (in the background). With the
        provider stopped, its control socket is closed: a pooled replica waiting for its assignment ends at
        that end of file."""
        if self.nursery is not None and self.pool is not None:
            self.nursery.start_soon(self.pool.discard_adopted, adopted)
            return
        adopted.member.control.close()
        if adopted.cgroup is not None:
            adopted.cgroup.close_fds()

    @staticmethod
    def stop_slot(slot: Slot) -> None:
        """Mark ``slot`` stopping (it leaves the next publish) and wake its supervisor."""
        if not slot.stopping:
            slot.stopping = True
            slot.stop.set()

    def publish(self, function: Function) -> None:
        """Put the function's ready replicas, and only those, in the registry."""
        if function.removed:
            return
        self.registry.publish(
            function.name,
            [
                Endpoint(LOCALHOST, slot.port, slot.replica.id)
                for slot in function.slots
                if slot.replica and slot.published
            ],
        )

    def _start_slot(self, function: Function, adopted: Adopted | None = None) -> bool:
        assert self.nursery is not None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((LOCALHOST, 0))
            listener.listen(LISTEN_BACKLOG)
        except OSError as exc:
            listener.close()
            event(log, logging.ERROR, "cannot bind a replica port", function=function.name, error=exc.strerror)
            return False
        slot = Slot(
            seq=next(self._seq),
            generation=function.generation,
            listener=listener,
            port=listener.getsockname()[1],
            adopted=adopted,
        )
        function.slots.append(slot)
        self.nursery.start_soon(self._supervise, function, slot, name=f"replica slot {function.name}:{slot.port}")
        return True

    def _collect_retired(self, function: Function) -> None:
        """Delete old working dirs no replica runs in any more."""
        if not function.retired or self.nursery is None:
            return
        oldest = min((slot.generation.number for slot in function.slots), default=function.generation.number)
        for entry in [entry for entry in function.retired if entry[0] <= oldest]:
            function.retired.remove(entry)
            self.nursery.start_soon(remove_tree, entry[1])

    # -- one slot -----------------------------------------------------------------------------------

    async def _supervise(self, function: Function, slot: Slot) -> None:
        """Keep one replica running in ``slot`` until it is stopped (or its generation is replaced).

        Error handling:
            A replica that exits, cannot be spawned or is not ready in time is replaced after the
            backoff; a replica of an older generation is not replaced (the update is retiring it).
            Any exception while running one replica is contained here, the boundary of a function's
            own tasks: it is logged with its traceback, the function is marked failed with the
            reason (its status says it), and the slot retries after the backoff -- the daemon and
            the other functions never see it.
        """
        backoff = RESTART_BACKOFF_INITIAL_S
        try:
            while not slot.stopping:
                started = trio.current_time()
                try:
                    replica_id, returncode, trouble = await self._run_replica(function, slot)
                except Exception as exc:  # A per-function task boundary (see the docstring).
                    trouble = f"replica supervisor error: {describe_exception(exc)}"
                    log.error("function=%s %s", function.name, trouble, exc_info=exc)
                    replica_id, returncode = "", None
                if trouble and not slot.stopping:
                    self._mark_failed(function, slot, trouble)
                fields = {"function": function.name, "replica": replica_id, **exit_fields(returncode)}
                if slot.stopping or function.removed:
                    event(log, logging.INFO, "replica stopped", **fields)
                    break
                if slot.generation is not function.generation:
                    event(log, logging.INFO, "replica of a replaced spec exited; not restarted", **fields)
                    break
                if trio.current_time() - started >= RESTART_BACKOFF_RESET_S:
                    backoff = RESTART_BACKOFF_INITIAL_S
                self.restarts += 1
                event(log, logging.WARNING, "replica exited; restarting", **fields, restart_in_s=backoff)
                with trio.move_on_after(backoff):
                    await slot.stop.wait()
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
        finally:
            slot.listener.close()
            if slot.adopted is not None and self.pool is not None:  # Stopped before its first replica.
                adopted, slot.adopted = slot.adopted, None
                with trio.CancelScope(shield=True):
                    await self.pool.discard_adopted(adopted)
            self.registry.retire(f"{LOCALHOST}:{slot.port}")  # Its connections, kept or made ahead.
            if slot in function.slots:
                function.slots.remove(slot)
            slot.done.set()
            self.publish(function)
            self._collect_retired(function)

    async def _run_replica(self, function: Function, slot: Slot) -> tuple[str, int | None, str]:
        """Spawn one replica in ``slot``; once it has ended and is reaped, return (its id, exit status,
        trouble).

        The status is None when it could not be spawned, negative when a signal killed it. ``trouble``
        is empty when the replica was ready at some point, else why it never was (one line).
        """
        host = self.host
        replica_id = self._new_replica_id(function.name)
        replica_dir = os.path.join(host.replicas_dir, replica_id)
        uid = self._replica_uid(function, replica_id)
        scratch = self._scratch_dir(function, replica_id)
        env = replica_env(host, slot.generation, function.workdir, replica_dir, slot.listener.fileno())
        # The slot's socket listens already: the gateway may connect ahead of the first call, on the trio
        # thread while this replica is prepared in worker threads (a connect there is 0.3-1.7 ms of a deploy
        # otherwise, and its first call made a connection of its own when it came first).
        assert self.nursery is not None
        self.nursery.start_soon(self.registry.announce, Endpoint(LOCALHOST, slot.port, replica_id))
        read_fd = token_fd = -1
        cgroup: sandbox_cgroups.Placement | None = None
        member: Member | None = None
        try:
            os.makedirs(os.path.join(replica_dir, "tmp"), mode=0o700)
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            pass_fds = [slot.listener.fileno()]
            try:
                if host.call_token is not None:
                    token_fd = token_pipe(host.call_token.value)
                    env.pop("call_token_file", None)  # Ours, not one the spec's envVars may name.
                    env["call_token_fd"] = str(token_fd)
                    pass_fds.append(token_fd)
                member, cgroup = await self._from_pool(function, slot, replica_id, uid, scratch, env)
                if member is not None:
                    process = member.process
                    os.close(read_fd)
                    read_fd = member.log_fd
                else:
                    cgroup = await self._place(replica_id, slot.generation)
                    launch = await self._launch(function, slot.generation, replica_id, uid, scratch, env, cgroup)
                    process = await start_replica(launch, write_fd, tuple(pass_fds))
            finally:
                os.close(write_fd)
                if token_fd >= 0:
                    os.close(token_fd)
                if cgroup is not None:
                    cgroup.close_fds()  # The replica has its own copies (or was never started).
        except OSError as exc:
            if read_fd >= 0:
                os.close(read_fd)
            await self._forget_replica(replica_id, replica_dir, scratch, uid, cgroup)
            event(
                log,
                logging.ERROR,
                "cannot start replica",
                function=function.name,
                replica=replica_id,
                error=exc.strerror or str(exc),
            )
            return replica_id, None, f"cannot start replica: {exc.strerror or exc}"
        except BaseException:
            if read_fd >= 0:
                os.close(read_fd)
            with trio.CancelScope(shield=True):
                await self._forget_replica(replica_id, replica_dir, scratch, uid, cgroup)
            raise
        replica = slot.replica = Replica(
            replica_id, process.pid, trio.current_time(), pooled=member is not None, cgroup=cgroup
        )
        event(
            log,
            logging.DEBUG,
            "replica started",
            function=function.name,
            replica=replica_id,
            pid=process.pid,
            pooled=member is not None,
        )
        stream = trio.lowlevel.FdStream(read_fd)
        try:
            async with trio.open_nursery() as nursery:
                pumped = trio.Event()
                nursery.start_soon(self._pump_logs, function, replica_id, stream, pumped)
                nursery.start_soon(self._become_ready, function, slot, replica, process, member)
                nursery.start_soon(self._stop_when_asked, function, slot, replica, process)
                await process.wait()
                self._unpublish_slot(function, slot)
                with trio.move_on_after(LOG_DRAIN_S):
                    await pumped.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                self._unpublish_slot(function, slot)
                if process.returncode is None:  # Cancelled: the provider is shutting down.
                    await self._terminate(function, replica, process)
                stream.close()
                if process.returncode != 0:
                    await trio.to_thread.run_sync(kill_session, process.pid)
                await self._forget_replica(replica_id, replica_dir, scratch, uid, cgroup)
                if member is not None:
                    member.control.close()  # Closed already once it was told to serve.
                    if self.pool is not None:
                        await self.pool.forget(member)
        if replica.was_ready:
            return replica_id, process.returncode, ""
        trouble = replica.trouble or f"replica {exit_text(process.returncode)} before it was ready"
        return replica_id, process.returncode, trouble

    async def _from_pool(
        self, function: Function, slot: Slot, replica_id: str, uid: int | None, scratch: str, env: dict[str, str]
    ) -> tuple[Member | None, sandbox_cgroups.Placement | None]:
        """A pooled replica given this slot's replica -- planned as a cold one would be, in the pooled
        replica's own cgroup given the function's limits -- and that cgroup; (None, None): start one.

        The one the deploy readied for this slot (``slot.adopted``), else one taken from the pool now (or the
        refill under way, once ready: :meth:`~faasd.providers.local.pool.ReplicaPool.take_soon`) and readied
        in a worker thread (:func:`~faasd.providers.local.pool.adopt`). In fork and streaming modes
        its cgroup weighs the daemon's weight until it is ready (:func:`faasd.sandbox.cgroups.weigh`;
        :meth:`_pooled_serving` lowers it)."""
        pool = self.pool
        if pool is None:
            return None, None
        adopted, slot.adopted = slot.adopted, None
        member = adopted.member if adopted is not None else await pool.take_soon(slot.generation.limits)
        if member is None:
            return None, None
        cgroup = adopted.cgroup if adopted is not None else None
        try:
            if adopted is None:
                ready = functools.partial(
                    adopt,
                    self.host,
                    member,
                    function.workdir,
                    slot.generation.limits,
                    starting=starts_without_code(slot.generation.spec.env_vars),
                )
                cgroup = (await trio.to_thread.run_sync(ready)).cgroup
            launch = await self._launch(function, slot.generation, replica_id, uid, scratch, env, cgroup)
            pool.assign(member, launch)
        except (PoolError, OSError) as exc:
            event(log, logging.WARNING, "pooled replica not used", function=function.name, error=str(exc))
            if cgroup is not None:
                cgroup.close_fds()
            with trio.CancelScope(shield=True):
                await pool.discard(member)  # With its cgroup.
            return None, None
        except BaseException:  # Cancelled half-way: it must not stay behind, waiting.
            if cgroup is not None:
                cgroup.close_fds()
            with trio.CancelScope(shield=True):
                await pool.discard(member)
            raise
        return member, cgroup

    def _mark_failed(self, function: Function, slot: Slot, reason: str) -> None:
        """Record why the current generation cannot run (a retiring generation's trouble is not news)."""
        if slot.generation is function.generation and not function.removed:
            if function.failure != reason:
                event(log, logging.WARNING, "function failing", function=function.name, reason=reason)
            function.failure = reason

    def _replica_uid(self, function: Function, replica_id: str) -> int | None:
        """The replica's own uid, when the sandbox gives out uids: its processes are counted (the process
        limit) and cleaned up (uid mode) on their own."""
        if function.gid is None:
            return None
        return self.host.uids.acquire(REPLICA_KEY + replica_id, self.host.busy_uids.uids)

    def _scratch_dir(self, function: Function, replica_id: str) -> str:
        """uid mode: the replica's private TMPDIR/HOME outside the state dir (made by :meth:`_launch`)."""
        if self.host.sandbox_mode != "uid" or function.gid is None:
            return ""
        return os.path.join(self.host.replicas_dir, f"{replica_id}.home")

    async def _place(self, replica_id: str, generation: Generation) -> sandbox_cgroups.Placement | None:
        """The replica's control group, with its limits (None where the daemon has none)."""
        sandbox = self.host.sandbox
        if sandbox is None or not sandbox.cgroups.hierarchies:
            return None
        own = BWRAP_OWN_PROCESSES if sandbox.mode == "bwrap" else 0
        place = functools.partial(sandbox_cgroups.place, sandbox.cgroups, replica_id, generation.limits, own)
        return await trio.to_thread.run_sync(place)

    async def _launch(
        self,
        function: Function,
        generation: Generation,
        replica_id: str,
        uid: int | None,
        scratch: str,
        env: dict[str, str],
        cgroup: sandbox_cgroups.Placement | None = None,
    ) -> Launch:
        """The replica's command line, environment and directory in this daemon's sandbox."""
        host = self.host
        assert host.sandbox is not None
        if scratch and uid is not None:
            root, name = os.path.split(scratch)
            await trio.to_thread.run_sync(sandbox_files.make_scratch, root, name, uid, function.gid)
        replica = ReplicaSandbox(
            workdir=function.workdir,
            secrets=True,
            uid=uid,
            gid=function.gid,
            limits=generation.limits,
            scratch=scratch,
            name=replica_id,
            lifeline=host.lifeline[0] if host.lifeline is not None else None,
            cgroup=cgroup,
        )
        return plan_launch(host.sandbox, replica, host.command.argv, env)

    async def _forget_replica(
        self,
        replica_id: str,
        replica_dir: str,
        scratch: str,
        uid: int | None,
        cgroup: sandbox_cgroups.Placement | None = None,
    ) -> None:
        """After a replica ended (or could not start): its files, its cgroup with whatever still ran in
        it, and its uid -- in uid mode with whatever still ran as it (a process that left its session),
        since no PID namespace ended it."""
        self._replica_ids.discard(replica_id)
        await remove_tree(replica_dir)
        if scratch:
            await remove_tree(scratch)
        if cgroup is not None and not await trio.to_thread.run_sync(sandbox_cgroups.remove, cgroup):
            event(log, logging.WARNING, "replica cgroup not removed", replica=replica_id, cgroup=cgroup.directories)
        if uid is not None:
            if self.host.sandbox_mode == "uid":
                await trio.to_thread.run_sync(sandbox_host.kill_uid, uid)
            self.host.uids.release(REPLICA_KEY + replica_id)

    def _unpublish_slot(self, function: Function, slot: Slot) -> None:
        slot.ready = False
        slot.replica = None
        self.publish(function)

    async def _become_ready(
        self, function: Function, slot: Slot, replica: Replica, process: trio.Process, member: Member | None = None
    ) -> None:
        """Publish the replica once it is ready: a cold one when it answers the health probe, a pooled one
        when it says so on its control socket (its CPU weight then lowered, before it is let accept)."""
        ready_timeout_s = self.host.ready_timeout_s
        with trio.move_on_after(ready_timeout_s) as deadline:
            if member is None or not await self._pooled_serving(replica, member):
                await wait_healthy(LOCALHOST, slot.port, poll_s=READY_POLL_S)
        if deadline.cancelled_caught:
            event(
                log,
                logging.WARNING,
                "replica not ready in time; killing it",
                function=function.name,
                replica=replica.id,
                ready_timeout_s=ready_timeout_s,
            )
            replica.trouble = f"replica not ready within {ready_timeout_s:g}s"
            process.kill()  # Its session is swept once it is reaped (non-zero status).
            return
        if slot.stopping or slot.replica is not replica:
            return
        slot.ready = replica.was_ready = True
        if slot.generation is function.generation:
            function.failure = ""
        event(
            log,
            logging.INFO,
            "replica ready",
            function=function.name,
            replica=replica.id,
            port=slot.port,
            startup_ms=round((trio.current_time() - replica.started_at) * 1000, 1),
            pooled=replica.pooled,
        )
        self.reconcile(function)
        self.publish(function)

    async def _pooled_serving(self, replica: Replica, member: Member) -> bool:
        """Wait for the pooled replica's ``serving``, lower its CPU weight, let it accept: True; False when it
        failed before (then it is probed as a cold replica would be, and ends or times out as one)."""
        if not await wait_serving(member):
            return False
        sandbox = self.host.sandbox
        try:
            if sandbox is not None and sandbox.cgroups.cpu and member.placement is not None:
                # A write to the cgroup file system, microseconds: not worth a worker thread's hop.
                sandbox_cgroups.weigh(sandbox.cgroups, member.placement, starting=False)
            release(member)
        except OSError as exc:
            replica.trouble = f"cannot let the pooled replica serve: {exc.strerror or exc}"
            event(log, logging.WARNING, "pooled replica not released", replica=replica.id, error=str(exc))
            member.control.close()
            await trio.sleep_forever()  # The replica ends without its go: its exit ends this task.
        return True

    async def _stop_when_asked(self, function: Function, slot: Slot, replica: Replica, process: trio.Process) -> None:
        await slot.stop.wait()
        self._unpublish_slot(function, slot)
        await trio.sleep(UNPUBLISH_GRACE_S)
        slot.listener.close()  # Only the replica holds the socket now: it closes when the replica stops accepting.
        await self._terminate(function, replica, process)

    async def _terminate(self, function: Function, replica: Replica, process: trio.Process) -> None:
        """SIGTERM, then SIGKILL to the whole session after ``stop_grace_s``; returns once reaped.

        In bwrap mode the SIGTERM goes to the watchdog inside (bwrap does not pass signals on); the
        SIGKILL to bwrap, whose PID namespace dies with it.
        """
        stop_grace_s = self.host.stop_grace_s
        inside = self.host.sandbox_mode == "bwrap"
        if not (inside and await trio.to_thread.run_sync(_terminate_inside, process.pid, replica.cgroup)):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        with trio.move_on_after(stop_grace_s):
            await process.wait()
            return
        event(
            log,
            logging.WARNING,
            "replica did not stop in time; killing it",
            function=function.name,
            replica=replica.id,
            stop_grace_s=stop_grace_s,
        )
        await trio.to_thread.run_sync(kill_session, process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def _pump_logs(
        self, function: Function, replica_id: str, stream: trio.lowlevel.FdStream, done: trio.Event
    ) -> None:
        """Read the replica's stdout+stderr into the function's log book, line by line (capped)."""
        book = function.logbook
        lines = LineBuffer()
        try:
            while True:
                try:
                    data = await stream.receive_some(PIPE_READ_BYTES)
                except (trio.ClosedResourceError, OSError):
                    break
                if not data:
                    break
                for line in lines.feed(data):
                    book.append(replica_id, line)
            for line in lines.flush():
                book.append(replica_id, line)
        finally:
            done.set()

    def _new_replica_id(self, name: str) -> str:
        while True:
            replica_id = f"{name}-{token_hex(3)}"
            if replica_id not in self._replica_ids:
                self._replica_ids.add(replica_id)
                return replica_id


def _terminate_inside(outer: int, cgroup: sandbox_cgroups.Placement | None) -> bool:
    """SIGTERM to the watchdog inside the bwrap sandbox ``outer``; False when it is not there. Looked for among
    its cgroup's members where it has one, else among every process (:func:`faasd.sandbox.host.sandboxed_pid`).
    Blocking."""
    candidates = sandbox_cgroups.members(cgroup) if cgroup is not None else None
    return sandbox_host.signal_sandboxed(outer, signal.SIGTERM, candidates)
