"""The local backend's :class:`LocalProvider`: the operations and the lifecycle (the package docstring
says what the backend does; the parts are in the modules beside this one).

Each operation holds the function's lock (:class:`~faasd.namelocks.NameLocks`) while it changes the
function's bookkeeping (:mod:`.state`) and asks the :class:`~.supervisor.Supervisor` to reconcile its
slots; building a working dir (:mod:`.workdir`) happens before the new generation is recorded, so a
deploy that fails changes nothing.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import os
import shutil
from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import UTC, datetime
from secrets import token_hex

import trio

from faasd.calltoken import CallToken
from faasd.errors import BackendUnavailable, FunctionNotFound, InvalidRequest, StateError
from faasd.logs import event
from faasd.namelocks import NameLocks
from faasd.providers.base import SecretLookup
from faasd.providers.common.logbook import DEFAULT_LOG_BYTES, LogBook
from faasd.providers.local.cpuwatch import watch_cpu
from faasd.providers.local.pool import Adopted, PoolError, ReplicaPool, adopt, starts_without_code
from faasd.providers.local.process import remove_tree
from faasd.providers.local.requirements import install_requirements
from faasd.providers.local.state import (
    FUNCTION_KEY,
    Function,
    Generation,
    Host,
    LocalStatistics,
    ReplicaInfo,
)
from faasd.providers.local.supervisor import Supervisor
from faasd.providers.local.workdir import (
    BASE_ENV_KEYS,
    build_sandbox,
    build_workdir,
    check_spec,
    check_workdir,
    install_workdir,
    write_secrets,
)
from faasd.providers.types import FunctionSpec, FunctionStatus, LogMessage, LogRequest
from faasd.registry import EndpointRegistry
from faasd.runtime import self_command
from faasd.sandbox import cgroups as sandbox_cgroups
from faasd.sandbox import cpuclass
from faasd.sandbox import files as sandbox_files
from faasd.sandbox import host as sandbox_host
from faasd.sandbox.limits import limits_from_spec

__all__ = ["LocalProvider"]

log = logging.getLogger("faasd.providers.local")


def _setup_cgroups(state_dir: str, cpu_classes: bool) -> sandbox_cgroups.Cgroups:
    """The replicas' cgroups (:func:`faasd.sandbox.cgroups.setup`) and whether CPU classes work with them."""
    cgroups = sandbox_cgroups.setup(state_dir)
    problem = cpuclass.available(cgroups) if cpu_classes else "turned off (cpu_classes = false)"
    return replace(cgroups, cpu_classes=f"off: {problem}" if problem else "on")


class LocalProvider:
    """Runs functions as local ``faasd watchdog`` processes (see the package docstring).

    Args:
        state_dir: the daemon's state directory (``functions/``, ``replicas/``, ``staging/`` go there).
        registry: where ready replicas are published.
        secrets: the daemon's secret store (name -> value, None when missing). Without one, a spec that
            names a secret is refused.
        ready_timeout_s: longest a replica may take to answer its health check before it is killed
            and replaced.
        stop_grace_s: between SIGTERM and SIGKILL when a replica is stopped.
        log_bytes: log kept per function for :meth:`logs` (see :mod:`faasd.providers.common.logbook`).
        call_token: replicas refuse calls without it (:mod:`faasd.calltoken`); each gets it on a pipe
            (``call_token_fd``), never in its environment.
        sandbox: ``auto``, ``bwrap``, ``uid`` or ``none`` (docs/sandbox.md); decided when :meth:`run`
            starts, which raises :class:`~faasd.sandbox.host.SandboxUnavailable` for an explicit mode
            this machine cannot provide.
        pool_size: replicas kept started and sandboxed for cold starts (:mod:`.pool`); 0: none.
        cpu_classes: CPU-heavy functions in the idle CPU class, where the cgroups allow
            (:mod:`faasd.sandbox.cpuclass`); False: never.

    Resource handling:
        Every replica belongs to a task in the nursery opened by :meth:`run`; when that is cancelled
        (daemon shutdown) or :meth:`aclose` is called, every replica is unpublished, stopped (SIGTERM,
        SIGKILL after ``stop_grace_s``) and reaped before ``run`` returns. Replicas also watch the
        daemon's pid (``parent_pid``) and stop by themselves if it dies without cleaning up.
    """

    name = "local"
    orchestration = "local"
    persistent = False

    def __init__(
        self,
        *,
        state_dir: str,
        registry: EndpointRegistry,
        secrets: SecretLookup | None = None,
        ready_timeout_s: float = 30.0,
        stop_grace_s: float = 10.0,
        log_bytes: int = DEFAULT_LOG_BYTES,
        call_token: CallToken | None = None,
        sandbox: str = "none",
        pool_size: int = 0,
        cpu_classes: bool = True,
    ) -> None:
        self._state_dir = state_dir = os.path.abspath(state_dir)
        self._host = Host(
            state_dir=state_dir,
            functions_dir=os.path.join(state_dir, "functions"),
            replicas_dir=os.path.join(state_dir, "replicas"),
            staging_dir=os.path.join(state_dir, "staging"),
            command=self_command(),
            base_env={key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ},
            call_token=call_token,
            ready_timeout_s=ready_timeout_s,
            stop_grace_s=stop_grace_s,
        )
        self._registry = registry
        self._secrets = secrets
        self._log_bytes = log_bytes
        self._sandbox_request = sandbox
        self._cpu_classes = cpu_classes
        self._pool = ReplicaPool(self._host, pool_size) if pool_size > 0 else None
        self._supervisor = Supervisor(self._host, registry, self._pool)
        self._functions: dict[str, Function] = {}
        self._locks = NameLocks()
        self._run_scope: trio.CancelScope | None = None
        self._finished: trio.Event | None = None

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<LocalProvider state_dir={self._state_dir!r} running={self._supervisor.nursery is not None} "
            f"functions={stats.functions} replicas={stats.replicas} ready={stats.ready_replicas}>"
        )

    def statistics(self) -> LocalStatistics:
        slots = [slot for function in self._functions.values() for slot in function.slots]
        return LocalStatistics(
            functions=len(self._functions),
            replicas=sum(1 for slot in slots if not slot.stopping),
            ready_replicas=sum(1 for slot in slots if slot.published),
            restarts=self._supervisor.restarts,
        )

    def health(self) -> tuple[bool, str]:
        return True, "local processes"

    def sandbox_info(self) -> dict[str, object]:
        """How replicas are sandboxed (``/system/info``); ``mode`` is ``pending`` until :meth:`run` starts."""
        if self._host.sandbox is None:
            return {"mode": "pending", "requested": self._sandbox_request, "isolated": False}
        return self._host.sandbox.describe()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every replica until cancelled (or :meth:`aclose`); ready at once.

        Leftovers of a previous daemon (replica scratch dirs, half-built working dirs) are removed
        first: their processes ended with it.
        """
        if self._finished is not None:
            raise RuntimeError("LocalProvider.run can only be called once")
        self._finished = finished = trio.Event()
        host = self._host
        try:
            started = trio.current_time()
            sandbox = await trio.to_thread.run_sync(
                functools.partial(
                    sandbox_host.resolve, self._sandbox_request, state_dir=self._state_dir, command=host.command
                )
            )
            cgroups = await trio.to_thread.run_sync(_setup_cgroups, self._state_dir, self._cpu_classes)
            host.sandbox = sandbox = replace(sandbox, cgroups=cgroups)
            fell_back = sandbox.requested == "auto" and sandbox.mode != "bwrap"
            level = logging.WARNING if fell_back or not sandbox.isolated else logging.INFO
            decided_ms = round((trio.current_time() - started) * 1000)  # Mostly the test replica's start.
            event(
                log,
                level,
                "sandbox",
                mode=sandbox.mode,
                requested=sandbox.requested,
                reason=sandbox.reason,
                cgroups=cgroups.kind,
                cgroup_controllers=",".join(sorted(cgroups.controllers)) or "-",
                cgroups_reason=cgroups.reason,
                cpu_classes=cgroups.cpu_classes,
                ms=decided_ms,
            )
            if sandbox.mode == "bwrap":
                host.lifeline = os.pipe()  # Both ends close-on-exec; the read end is passed to each replica.
            await trio.to_thread.run_sync(self._prepare_state_dirs)
            with trio.CancelScope() as self._run_scope:
                async with trio.open_nursery() as nursery:
                    self._supervisor.nursery = nursery
                    if self._pool is not None:
                        nursery.start_soon(self._pool.run, name="replica pool")
                    if cgroups.cpu_classes == "on":
                        functions = self._functions.values
                        nursery.start_soon(watch_cpu, cgroups, functions, self._registry.calls_started)
                    if sandbox.per_function_uid:  # Ahead of the first deploy, after the daemon's own start.
                        nursery.start_soon(host.busy_uids.read_later)
                    event(log, logging.INFO, "local provider running", state_dir=self._state_dir)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._supervisor.nursery = None
            event(log, logging.INFO, "local provider stopped", functions=len(self._functions))
            for function in self._functions.values():
                self._registry.forget(function.name)
                function.logbook.close()
            if host.lifeline is not None:  # Every replica is reaped by now.
                for end in host.lifeline:
                    os.close(end)
                host.lifeline = None
            finished.set()

    async def aclose(self) -> None:
        """Stop every replica and wait until they are reaped (a no-op once :meth:`run` has returned)."""
        if self._run_scope is not None and self._finished is not None and not self._finished.is_set():
            self._run_scope.cancel()
            await self._finished.wait()

    def _prepare_state_dirs(self) -> None:
        host = self._host
        if host.sandbox is not None and host.sandbox.work_root:  # uid mode: outside the state dir.
            root = host.sandbox.work_root  # Emptied and laid out by sandbox.files.prepare_work_root.
            host.functions_dir, host.staging_dir, host.replicas_dir = (
                os.path.join(root, name) for name in sandbox_files.WORK_DIRS
            )
            return
        os.makedirs(host.functions_dir, mode=0o700, exist_ok=True)
        os.chmod(host.functions_dir, 0o700)
        for scratch in (host.replicas_dir, host.staging_dir):
            shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch, mode=0o700, exist_ok=True)

    def _require_running(self) -> trio.Nursery:
        if self._supervisor.nursery is None:
            raise BackendUnavailable("the local provider is not running (the daemon is starting or stopping)")
        return self._supervisor.nursery

    # -- operations ---------------------------------------------------------------------------------

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        """Create the function, or replace it (rolling, like :meth:`update`) with ``replicas`` replicas.

        Returns once the replicas are starting, not when they are ready (watch :meth:`status` or the
        registry).

        Raises:
            InvalidRequest: no ``envProcess`` (nor ``fprocess`` env var), a command not found, a bad
                watchdog setting in ``envVars``, a missing secret, an unsafe or corrupt handler archive,
                or ``replicas`` < 0. Nothing changes then.
        """
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        self._require_running()
        async with self._locks.hold(spec.name):
            await self._apply(spec, replicas)

    async def update(self, spec: FunctionSpec) -> None:
        """Replace the function's spec, rolling its replicas; the replica count is kept.

        Raises:
            FunctionNotFound: no such function.
            InvalidRequest: as :meth:`deploy`.
        """
        self._require_running()
        async with self._locks.hold(spec.name):
            function = self._get(spec.name)
            await self._apply(spec, function.desired)

    async def remove(self, name: str) -> None:
        """Unpublish the function, stop its replicas, wait for them, delete its working directory.

        Raises:
            FunctionNotFound: no such function.
        """
        async with self._locks.hold(name):
            function = self._get(name)
            del self._functions[name]
            function.removed = True
            self._registry.forget(name)
            for slot in function.slots:
                self._supervisor.stop_slot(slot)
            # Shielded: the replicas are stopping anyway; finish so the directories can go.
            with trio.CancelScope(shield=True):
                for slot in list(function.slots):
                    await slot.done.wait()
                function.logbook.close()
                for path in [function.workdir, *(path for _, path in function.retired)]:
                    await remove_tree(path)
                if function.gid is not None:  # Whatever still runs as its number is its own leftover.
                    await trio.to_thread.run_sync(sandbox_host.kill_uid, function.gid)
                    self._host.uids.release(FUNCTION_KEY + name)
        event(log, logging.INFO, "function removed", function=name)

    async def scale(self, name: str, replicas: int) -> None:
        """Start or stop replicas to have ``replicas`` (0 allowed); stops not-ready then newest first.

        Raises:
            FunctionNotFound: no such function.
            InvalidRequest: ``replicas`` < 0.
        """
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        async with self._locks.hold(name):
            function = self._get(name)
            function.desired = replicas
            self._supervisor.reconcile(function)

    async def list(self) -> list[FunctionStatus]:
        return [self._status(function) for _, function in sorted(self._functions.items())]

    async def status(self, name: str) -> FunctionStatus:
        """``replicas`` is the desired count; ``available_replicas`` counts ready replicas of the
        current spec (during an update, old replicas still serving are not counted). The spec is the
        deployed one without its handler archive (unpacked on disk, not kept in memory).

        Raises:
            FunctionNotFound: no such function.
        """
        return self._status(self._get(name))

    def replicas(self, name: str) -> builtins.list[ReplicaInfo]:
        """Snapshot of a function's replicas, oldest first.

        Raises:
            FunctionNotFound: no such function.
        """
        function = self._get(name)
        return [
            ReplicaInfo(
                replica=slot.replica.id if slot.replica else "",
                pid=slot.replica.pid if slot.replica else None,
                port=slot.port,
                ready=slot.published,
                generation=slot.generation.number,
            )
            for slot in function.slots
            if not slot.stopping
        ]

    async def logs(self, request: LogRequest) -> AsyncGenerator[LogMessage, None]:
        """Kept lines (filtered by ``instance``, ``since``, then ``tail``), then with ``follow`` new
        lines as they come, until the consumer stops iterating or the function is removed
        (:meth:`~faasd.providers.common.logbook.LogBook.read`).

        Raises:
            FunctionNotFound: no such function (when iteration starts).
        """
        book = self._get(request.name).logbook
        async with contextlib.aclosing(book.read(request)) as messages:
            async for message in messages:
                yield message

    # -- applying a spec ----------------------------------------------------------------------------

    async def _apply(self, spec: FunctionSpec, replicas: int) -> None:
        """Validate and build the new working dir, swap it in, start the new generation (lock held).

        A pooled replica is taken first and readied for the new generation in the same worker thread's hop
        that builds the directory (:func:`~faasd.providers.local.pool.adopt`), so the first replica is
        assigned without a hop of its own (docs/coldstart.md)."""
        host = self._host
        fprocess, values = await check_spec(spec, self._secrets)
        limits = limits_from_spec(spec)
        staging = os.path.join(host.staging_dir, f"{spec.name}.{token_hex(4)}")
        workdir = os.path.join(host.functions_dir, spec.name)
        starting = starts_without_code(spec.env_vars)
        member = self._supervisor.reserve(limits) if replicas > 0 else None
        adopted: Adopted | None = None

        def ready_member() -> Adopted | None:
            """The pooled replica readied once the directory is in place; None when it cannot be (it is
            stopped then, and the slot takes another or starts a cold one)."""
            if member is None:
                return None
            try:
                return adopt(host, member, workdir, limits, starting=starting)
            except (PoolError, OSError) as exc:
                event(log, logging.WARNING, "pooled replica not used", function=spec.name, error=str(exc))
                return None

        try:
            gid = await self._function_gid(spec.name)

            def build() -> tuple[bool, str | None, Adopted | None]:
                """The directory built, checked and swapped in, and the pooled replica readied, in one worker
                thread's hop when there is no ``requirements.txt`` (each hop waits for a core on a busy host;
                this is a cold start's path): (swapped, the retired directory, the readied replica)."""
                build_workdir(staging, spec)
                if os.path.lexists(os.path.join(staging, "requirements.txt")):
                    return False, None, None
                write_secrets(staging, values)
                check_workdir(host, staging, spec, fprocess, gid)
                return True, install_workdir(host, spec.name, staging), ready_member()

            def install() -> tuple[str | None, Adopted | None]:
                return install_workdir(host, spec.name, staging), ready_member()

            try:
                with trio.CancelScope(shield=True):  # Once swapped, the bookkeeping below must follow.
                    swapped, retired, adopted = await trio.to_thread.run_sync(build)
                if not swapped:
                    # Cancellable: a daemon stopping does not wait for pip. In the function's sandbox, as the function.
                    await install_requirements(staging, build_sandbox(host, staging, gid))
                    await trio.to_thread.run_sync(write_secrets, staging, values)
                    await trio.to_thread.run_sync(check_workdir, host, staging, spec, fprocess, gid)
                    with trio.CancelScope(shield=True):  # Once swapped, the bookkeeping below must follow.
                        retired, adopted = await trio.to_thread.run_sync(install)
            except OSError as exc:  # The state directory: removed under the daemon, read-only, full.
                where = exc.filename or host.staging_dir
                raise StateError(f"cannot build the function's directory: {where}: {exc.strerror or exc}") from exc
        except BaseException:
            if spec.name not in self._functions:
                host.uids.release(FUNCTION_KEY + spec.name)
            with trio.CancelScope(shield=True):
                await remove_tree(staging)
                if member is not None and self._pool is not None:
                    await self._pool.discard(member)
            raise
        if member is not None and adopted is None:
            self._supervisor.give_up(Adopted(member, None))
        spec = replace(spec, handler_archive=b"")  # Unpacked on disk now; no need to keep it in memory.
        function = self._functions.get(spec.name)
        if function is None:
            function = Function(
                name=spec.name,
                generation=Generation(1, spec, fprocess, limits),
                desired=replicas,
                created_at=datetime.now(UTC),
                workdir=workdir,
                logbook=LogBook(spec.name, self._log_bytes),
                gid=gid,
            )
            self._functions[spec.name] = function
        else:
            function.generation = Generation(function.generation.number + 1, spec, fprocess, limits)
            function.desired = replicas
            function.failure = ""
        if retired is not None:
            function.retired.append((function.generation.number, retired))
        event(
            log,
            logging.INFO,
            "function deployed",
            function=spec.name,
            generation=function.generation.number,
            replicas=replicas,
        )
        self._supervisor.reconcile(function, adopted)

    async def _function_gid(self, name: str) -> int | None:
        """The function's own number when the sandbox gives out uids (a new one on its first deploy)."""
        host = self._host
        if host.sandbox is None or not host.sandbox.per_function_uid:
            return None
        gid = host.uids.get(FUNCTION_KEY + name)
        if gid is None:
            gid = host.uids.acquire(FUNCTION_KEY + name, await host.busy_uids.fresh())
            self._require_running().start_soon(host.busy_uids.read_later)  # The next new function's.
        return gid

    def _get(self, name: str) -> Function:
        function = self._functions.get(name)
        if function is None:
            raise FunctionNotFound(f"No such function: {name}")
        return function

    def _status(self, function: Function) -> FunctionStatus:
        current = function.generation
        return FunctionStatus(
            spec=current.spec,
            replicas=function.desired,
            available_replicas=sum(1 for slot in function.slots if slot.published and slot.generation is current),
            created_at=function.created_at,
            state="failed" if function.failure else "deployed",
            reason=function.failure,
        )
