"""The in-memory backend's :class:`MemoryProvider`: functions and replicas held in this process.

Each replica is a :class:`~.replica.ReplicaServer` task in the provider's nursery, serving real HTTP on
127.0.0.1; it is published once the shared probe (:mod:`faasd.providers.common.probe`) gets a 200 from
it, like a local replica. Scaling and rolling updates follow the same plan as the local backend
(:func:`~faasd.providers.common.rollout.plan_replicas`): an update never lowers the number of ready
replicas. A replica is unpublished before it is stopped.
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from secrets import token_hex

import trio

from faasd.calltoken import CallToken
from faasd.errors import BackendUnavailable, FunctionNotFound, InvalidRequest
from faasd.logs import event
from faasd.namelocks import NameLocks
from faasd.providers.base import SecretLookup
from faasd.providers.common.logbook import DEFAULT_LOG_BYTES, LogBook
from faasd.providers.common.probe import wait_healthy
from faasd.providers.common.rollout import plan_replicas
from faasd.providers.memory.replica import LOCALHOST, PROGRAMS, Program, ReplicaServer, split_command
from faasd.providers.types import Endpoint, FunctionSpec, FunctionStatus, LogMessage, LogRequest, validate_name
from faasd.registry import EndpointRegistry

__all__ = ["MemoryProvider"]

log = logging.getLogger("faasd.providers.memory")

READY_POLL_S = 0.005
UNPUBLISH_GRACE_S = 0.05
"""Between unpublishing a replica and stopping it: a router that picked it just before still connects."""


@dataclass(frozen=True, slots=True)
class _Generation:
    number: int
    spec: FunctionSpec
    fprocess: str
    argv: tuple[str, ...]
    program: Program
    secrets: Mapping[str, bytes]


@dataclass(eq=False, slots=True)
class _Slot:
    seq: int
    generation: _Generation
    server: ReplicaServer
    ready: bool = False
    stopping: bool = False
    stop: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


@dataclass(eq=False, slots=True)
class _Function:
    name: str
    generation: _Generation
    desired: int
    created_at: datetime
    logbook: LogBook
    slots: list[_Slot] = field(default_factory=list)
    removed: bool = False


class MemoryProvider:
    """Runs functions as in-process HTTP replicas (see the package docstring for what they emulate).

    Args:
        registry: where ready replicas are published.
        secrets: the daemon's secret store; a spec naming a secret it lacks is refused (400).
        programs: more programs by name, beside :data:`~.replica.PROGRAMS` (a test's own behaviours).
        call_token: replicas refuse calls without it (403), as watchdogs do.
        start_delay_s: how long a new replica's health check answers 503 (a slow start).
        stop_grace_s: how long a stopping replica's calls in flight may run.
        log_bytes: log kept per function.

    Resource handling:
        Every replica is a task in the nursery opened by :meth:`run`; cancelling it (or :meth:`aclose`)
        unpublishes and ends every replica, and closes their sockets, before ``run`` returns.
    """

    name = "memory"
    orchestration = "memory"
    persistent = False

    def __init__(
        self,
        *,
        registry: EndpointRegistry,
        secrets: SecretLookup | None = None,
        programs: Mapping[str, Program] | None = None,
        call_token: CallToken | None = None,
        start_delay_s: float = 0.0,
        stop_grace_s: float = 2.0,
        log_bytes: int = DEFAULT_LOG_BYTES,
    ) -> None:
        self._registry = registry
        self._secrets = secrets
        self._programs = {**PROGRAMS, **(programs or {})}
        self._call_token = call_token
        self._start_delay_s = start_delay_s
        self._stop_grace_s = stop_grace_s
        self._log_bytes = log_bytes
        self._functions: dict[str, _Function] = {}
        self._locks = NameLocks()
        self._seq = itertools.count()
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        replicas = sum(len(function.slots) for function in self._functions.values())
        return f"<MemoryProvider functions={len(self._functions)} replicas={replicas}>"

    def health(self) -> tuple[bool, str]:
        return True, "in-memory replicas in this process"

    def servers(self, name: str) -> builtins.list[ReplicaServer]:
        """The live replicas of ``name`` (not stopping), oldest first: for tests to look inside.

        Raises:
            FunctionNotFound: no such function.
        """
        return [slot.server for slot in self._get(name).slots if not slot.stopping]

    # -- lifecycle ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every replica until cancelled; ready at once (there is nothing to discover)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for function in self._functions.values():
                self._registry.forget(function.name)
                function.logbook.close()

    async def aclose(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- operations ---------------------------------------------------------------------------------

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        """Create or replace (rolling) the function with ``replicas`` replicas; returns at once.

        Raises:
            InvalidRequest: a program this provider does not have, a missing secret, ``replicas`` < 0.
            BackendUnavailable: the provider is not running.
        """
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        self._require_running()
        async with self._locks.hold(spec.name):
            await self._apply(spec, replicas)

    async def update(self, spec: FunctionSpec) -> None:
        self._require_running()
        async with self._locks.hold(spec.name):
            await self._apply(spec, self._get(spec.name).desired)

    async def remove(self, name: str) -> None:
        """Unpublish the function and stop its replicas (waiting for them)."""
        async with self._locks.hold(name):
            function = self._get(name)
            del self._functions[name]
            function.removed = True
            self._registry.forget(name)
            for slot in function.slots:
                _stop(slot)
            with trio.CancelScope(shield=True):
                for slot in list(function.slots):
                    await slot.done.wait()
            function.logbook.close()
        event(log, logging.INFO, "function removed", function=name)

    async def scale(self, name: str, replicas: int) -> None:
        if replicas < 0:
            raise InvalidRequest(f"replicas must be 0 or more, got {replicas}")
        async with self._locks.hold(name):
            function = self._get(name)
            function.desired = replicas
            self._reconcile(function)

    async def list(self) -> builtins.list[FunctionStatus]:
        return [self._status(function) for _, function in sorted(self._functions.items())]

    async def status(self, name: str) -> FunctionStatus:
        return self._status(self._get(name))

    async def logs(self, request: LogRequest) -> AsyncGenerator[LogMessage, None]:
        """As the local backend's: kept lines, then with ``follow`` new ones until closed or removed."""
        book = self._get(request.name).logbook
        async with contextlib.aclosing(book.read(request)) as messages:
            async for message in messages:
                yield message

    # -- internals ----------------------------------------------------------------------------------

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise BackendUnavailable("the memory provider is not running")
        return self._nursery

    def _get(self, name: str) -> _Function:
        validate_name(name, "function name")
        function = self._functions.get(name)
        if function is None:
            raise FunctionNotFound(f"No such function: {name}")
        return function

    async def _apply(self, spec: FunctionSpec, replicas: int) -> None:
        """Check ``spec``, then record it as the function's new generation and reconcile (lock held)."""
        fprocess = spec.env_process or spec.env_vars.get("fprocess", "")
        try:
            argv = split_command(fprocess)
        except ValueError as exc:
            raise InvalidRequest(f"envProcess {fprocess!r} cannot be split like a shell would: {exc}") from None
        program = self._programs.get(argv[0]) if argv else None
        if program is None:
            known = ", ".join(sorted(self._programs))
            raise InvalidRequest(f"envProcess {fprocess!r}: the memory backend runs only its programs: {known}")
        if len(set(spec.secrets)) != len(spec.secrets):
            raise InvalidRequest("secrets: a secret is listed twice")
        secrets: dict[str, bytes] = {}
        for secret in spec.secrets:
            value = await self._secrets(secret) if self._secrets is not None else None
            if value is None:
                raise InvalidRequest(f"secret {secret!r} does not exist: create it before deploying")
            secrets[secret] = value
        spec = replace(spec, handler_archive=b"")
        function = self._functions.get(spec.name)
        number = 1 if function is None else function.generation.number + 1
        generation = _Generation(number, spec, fprocess, argv, program, secrets)
        if function is None:
            function = _Function(
                spec.name, generation, replicas, datetime.now(UTC), LogBook(spec.name, self._log_bytes)
            )
            self._functions[spec.name] = function
        else:
            function.generation, function.desired = generation, replicas
        event(log, logging.INFO, "function deployed", function=spec.name, generation=number, replicas=replicas)
        self._reconcile(function)

    def _status(self, function: _Function) -> FunctionStatus:
        current = function.generation
        return FunctionStatus(
            spec=current.spec,
            replicas=function.desired,
            available_replicas=sum(
                1 for slot in function.slots if slot.ready and not slot.stopping and slot.generation is current
            ),
            created_at=function.created_at,
        )

    def _reconcile(self, function: _Function) -> None:
        if function.removed or self._nursery is None:
            return
        start, stop = plan_replicas(function.slots, function.generation, function.desired)
        for slot in stop:
            _stop(slot)
        for _ in range(start):
            generation = function.generation
            server = ReplicaServer(
                f"{function.name}-{token_hex(3)}",
                program=generation.program,
                argv=generation.argv,
                env={**generation.spec.env_vars, "fprocess": generation.fprocess},
                secrets=generation.secrets,
                logbook=function.logbook,
                call_token=self._call_token,
                start_delay_s=self._start_delay_s,
                stop_grace_s=self._stop_grace_s,
            )
            slot = _Slot(next(self._seq), generation, server)
            function.slots.append(slot)
            self._nursery.start_soon(self._run_slot, function, slot, name=f"memory replica {server.replica_id}")
        self._publish(function)

    def _publish(self, function: _Function) -> None:
        if function.removed:
            return
        self._registry.publish(
            function.name,
            [
                Endpoint(LOCALHOST, slot.server.port, slot.server.replica_id)
                for slot in function.slots
                if slot.ready and not slot.stopping
            ],
        )

    async def _run_slot(self, function: _Function, slot: _Slot) -> None:
        """One replica: serve, become ready (probed), and when asked, unpublish, then stop and drain.

        Error handling: a replica that cannot serve (no port to bind) is logged and its slot ends; it
        is not replaced (an in-process server does not crash on its own; a bind failure would repeat).
        """
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(slot.server.run)
                readiness = trio.CancelScope()
                nursery.start_soon(self._become_ready, function, slot, readiness)
                await slot.stop.wait()
                readiness.cancel()
                self._publish(function)
                await trio.sleep(UNPUBLISH_GRACE_S)
                slot.server.stop()
        except OSError as exc:
            event(log, logging.ERROR, "replica cannot serve", function=function.name, error=str(exc))
        finally:
            slot.ready = False
            if slot in function.slots:
                function.slots.remove(slot)
            slot.done.set()
            self._publish(function)

    async def _become_ready(self, function: _Function, slot: _Slot, scope: trio.CancelScope) -> None:
        with scope:
            await wait_healthy(LOCALHOST, slot.server.port, poll_s=READY_POLL_S)
            if slot.stopping:
                return
            slot.ready = True
            event(log, logging.DEBUG, "replica ready", function=function.name, replica=slot.server.replica_id)
            self._reconcile(function)
            self._publish(function)


def _stop(slot: _Slot) -> None:
    if not slot.stopping:
        slot.stopping = True
        slot.stop.set()
