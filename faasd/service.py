"""Every management operation on functions: desired state in the store, applied to the provider.

The gateway's routes call this, never the provider directly, so "what should run" and "what runs" stay
in step in one place:

* deploy/update go to the provider (it validates what it can run) and to the store; a provider that
  refuses leaves no stored record behind (a deploy commits while the provider works and puts the
  record back when it refuses: :meth:`FunctionService._deploy_and_store`). Operations on one function run one at a time
  (a lock per name), so the store always ends with what the provider applied last;
* after a daemon restart :meth:`FunctionService.load` reads the store (fast: before the gateway binds,
  so every stored function is known to the first request) and :meth:`FunctionService.restore`
  re-applies each function in its own task, in the background (the local backend's replicas died with
  the old daemon). Until its restore is done a function is ``restoring``: calls to it are held like
  calls at zero replicas, a scale is recorded and applied when it is up, and a deploy, update or
  remove supersedes the restore (cancels it). A restore that fails -- an unreadable stored spec, a
  secret gone, ``pip`` failing -- marks that function ``failed`` with the reason, and nothing else;
* :meth:`exists` answers from memory: the invoke path asks it on every call that finds no replica;
* secrets live in the store; one that a function uses cannot be deleted (409 naming the functions).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from datetime import UTC, datetime

import trio

from faasd.errors import Conflict, FaasdError, FunctionNotFound, InvalidRequest, describe_exception
from faasd.logs import event
from faasd.namelocks import NameLocks
from faasd.providers.base import Provider
from faasd.providers.types import FunctionSpec, FunctionStatus, LogMessage, LogRequest, validate_name
from faasd.registry import EndpointRegistry
from faasd.store import AsyncStore, StoredFunction, UnreadableFunction

__all__ = ["MAX_REPLICAS", "FunctionService"]

log = logging.getLogger(__name__)

MAX_REPLICAS = 100
"""Upper bound on replicas per function (a typo like 1000 must not fork-bomb a small host)."""


class FunctionService:
    """Functions = store (desired) + provider (running).

    Args:
        on_removed: called with a function's name after it is removed (e.g. to drop its metrics).
        check: more deploy-time checks of a spec (raising InvalidRequest), run before anything changes:
            the daemon checks its scaling labels, its timeouts against the gateway's bound
            (:meth:`faasd.timeouts.FunctionTimeouts.check`) and its async queue labels
            (:mod:`faasd.assembly`).
    """

    def __init__(
        self,
        store: AsyncStore,
        provider: Provider,
        registry: EndpointRegistry,
        *,
        invocations: Callable[[str], int] = lambda name: 0,
        on_removed: Callable[[str], None] = lambda name: None,
        check: Callable[[FunctionSpec], None] = lambda spec: None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.registry = registry
        self._invocations = invocations
        self._on_removed = on_removed
        self._check = check
        self._functions: dict[str, StoredFunction] = {}
        self._above_zero: set[str] = set()
        """Names of the functions whose desired replicas are above zero (what the autoscaler walks)."""
        self._locks = NameLocks()
        self._restoring: dict[str, trio.CancelScope] = {}
        """Functions loaded from the store and not applied to the provider yet: the scope of each restore."""
        self._failed: dict[str, str] = {}
        """Functions the provider does not run because their restore failed: the reason."""

    def __repr__(self) -> str:
        return (
            f"<FunctionService provider={self.provider.name} functions={len(self._functions)} "
            f"restoring={len(self._restoring)} failed={len(self._failed)}>"
        )

    def exists(self, name: str) -> bool:
        return name in self._functions

    def failure(self, name: str) -> str | None:
        """Why ``name`` cannot run until it is deployed again (its restore failed), or None.

        The invoke path answers calls to such a function at once instead of holding them.
        """
        return self._failed.get(name)

    def stored(self, name: str) -> StoredFunction | None:
        return self._functions.get(name)

    def spec(self, name: str) -> FunctionSpec | None:
        """The stored spec of ``name`` (answered from memory: the invoke path asks it per call)."""
        stored = self._functions.get(name)
        return stored.spec if stored is not None else None

    def names(self) -> list[str]:
        return sorted(self._functions)

    def above_zero(self) -> list[str]:
        """The functions whose desired replicas are above zero, in no order: what the autoscaler decides on
        each tick. A function at zero stays there until a call wakes it, so walking it every second would
        only cost time (a daemon with thousands of idle functions ticked for longer than its period)."""
        return list(self._above_zero)

    def _keep(self, stored: StoredFunction) -> StoredFunction:
        """Record ``stored`` as its function's desired state (every change of ``_functions`` goes here or
        through :meth:`_drop`, so :meth:`above_zero` follows it)."""
        name = stored.spec.name
        self._functions[name] = stored
        if stored.replicas > 0:
            self._above_zero.add(name)
        else:
            self._above_zero.discard(name)
        return stored

    def _drop(self, name: str) -> None:
        self._functions.pop(name, None)
        self._above_zero.discard(name)

    async def load(self) -> None:
        """After a daemon start, before the gateway serves: read the store. For a backend that forgot
        everything (local) every stored function becomes ``restoring`` until :meth:`restore` applies
        it; a row that does not make a valid spec is a ``failed`` function (deploy it again or remove
        it). A backend that keeps its deployments (Swarm, Marathon) is read instead (one listing: the
        first request sees every function); when it cannot be reached that is logged, and the
        daemon's follower reads it once it is back.

        Raises:
            StateError: the database cannot be read.
        """
        if getattr(self.provider, "persistent", False):
            try:
                await self.sync_from_provider()
            except FaasdError as exc:
                event(log, logging.WARNING, "cannot read the backend; retrying in the background", error=exc.message)
            return
        readable, unreadable = await self.store.load_functions()
        for stored in readable:
            self._keep(stored)
            self._restoring[stored.spec.name] = trio.CancelScope()
        for row in unreadable:
            self._load_unreadable(row)

    def _load_unreadable(self, row: UnreadableFunction) -> None:
        try:
            spec = FunctionSpec(name=row.name)
        except InvalidRequest:
            event(log, logging.ERROR, "cannot restore function: invalid name", function=repr(row.name), error=row.error)
            return
        now = datetime.now(UTC)
        self._keep(StoredFunction(spec=spec, replicas=row.replicas, created_at=now, updated_at=now))
        self._failed[row.name] = f"{row.error}; deploy it again or remove it"
        event(log, logging.ERROR, "cannot restore function", function=row.name, error=row.error)

    async def restore(self) -> None:
        """Apply what :meth:`load` read, each function in its own task; returns when all are done
        (at once for a persistent backend: it runs its functions itself).

        The functions with replicas come first, all of them before any function at zero: they are the
        ones serving calls, and with thousands of idle functions restoring alongside them (each one a
        working dir to build again) they came back only when all had (10,000 functions: minutes).

        Error handling: a function whose restore fails or raises is marked failed with the reason
        and logged; the others are restored regardless.
        """
        for wanted in (self._above_zero, None):
            async with trio.open_nursery() as nursery:
                for name, scope in list(self._restoring.items()):
                    if wanted is None or name in wanted:
                        nursery.start_soon(self._restore_one, name, scope, name=f"restore {name}")

    async def _restore_one(self, name: str, scope: trio.CancelScope) -> None:
        with scope:
            async with self._locks.hold(name):
                if self._restoring.get(name) is not scope:
                    return  # Superseded by a deploy, update or remove.
                stored = self._functions[name]
                replicas = stored.replicas
                try:
                    await self.provider.deploy(stored.spec, replicas)
                    # A scale recorded meanwhile: apply it (no await between the last check and the end).
                    while (current := self._functions.get(name)) is not None and current.replicas != replicas:
                        replicas = current.replicas
                        await self.provider.scale(name, replicas)
                except FaasdError as exc:
                    self._failed[name] = exc.message
                    event(log, logging.ERROR, "cannot restore function", function=name, error=exc.message)
                except Exception as exc:  # One function's restore: a task boundary (see the docstring).
                    self._failed[name] = describe_exception(exc)
                    log.error("function=%s cannot restore function: %s", name, self._failed[name], exc_info=exc)
                else:
                    event(log, logging.INFO, "restored function", function=name, replicas=replicas)
                finally:
                    if self._restoring.get(name) is scope:
                        del self._restoring[name]

    def _supersede_restore(self, name: str) -> None:
        """A user operation on ``name`` replaces its pending restore (which is cancelled)."""
        scope = self._restoring.pop(name, None)
        if scope is not None:
            scope.cancel()

    async def sync_from_provider(self) -> None:
        """Make the store follow what a persistent backend runs: adopt functions created there (e.g. a
        Swarm service deployed by hand with the OpenFaaS labels), take their replica counts, and forget
        functions deleted there."""
        running = {status.name: status for status in await self.provider.list()}
        for name, status in running.items():
            stored = self._functions.get(name)
            if stored is None or stored.replicas != status.replicas or stored.spec != status.spec:
                if stored is None:
                    event(log, logging.INFO, "discovered function", function=name, replicas=status.replicas)
                self._keep(await self.store.put_function(status.spec, status.replicas))
        for name in [name for name in self._functions if name not in running]:
            event(log, logging.INFO, "function gone from the backend", function=name)
            await self.store.delete_function(name)
            self._drop(name)
            self.registry.forget(name)
            self._on_removed(name)

    async def deploy(self, spec: FunctionSpec) -> bool:
        """Create or replace a function; True when it was created.

        A replaced function keeps its replica count; a new one starts at ``com.openfaas.scale.min``
        (default 1).
        """
        self._check(spec)
        self._supersede_restore(spec.name)
        async with self._locks.hold(spec.name):
            existing = self._functions.get(spec.name)
            replicas = existing.replicas if existing is not None else min(spec.min_replicas, MAX_REPLICAS)
            self._keep(await self._deploy_and_store(spec, replicas, existing))
            self._failed.pop(spec.name, None)
        event(log, logging.INFO, "deployed", function=spec.name, replicas=replicas, created=existing is None)
        return existing is None

    async def _deploy_and_store(
        self, spec: FunctionSpec, replicas: int, previous: StoredFunction | None
    ) -> StoredFunction:
        """Apply ``spec`` to the provider and commit it to the store side by side (name lock held).

        Why side by side: the commit waits for the disk (``synchronous=FULL``) in a worker thread while the
        local provider builds the function's directory in another; one after the other they were two waits
        on the way to a deploy's 202 and its first answer (docs/coldstart.md). The 202 still waits for both.

        A provider that refuses (or fails) leaves the store as it was: the record committed meanwhile is
        put back to ``previous`` (deleted for a new function) before the provider's error is raised. A
        daemon killed between the two keeps the refused spec; its restore then fails the same way, and the
        function is listed ``failed`` with the reason until it is deployed again or removed (with a persistent
        backend, what the backend runs replaces it at the next start). A commit that fails raises
        :class:`~faasd.errors.StateError` once the provider is done, as it did when the commit came second.
        """
        stored: list[StoredFunction] = []
        store_error: list[Exception] = []
        provider_error: list[Exception] = []

        async def commit() -> None:
            try:
                stored.append(await self.store.put_function(spec, replicas))
            except Exception as exc:  # Raised below, after the provider's part, not as a group.
                store_error.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit)
            try:
                await self.provider.deploy(spec, replicas)
            except Exception as exc:  # Raised below, once the commit is done and undone.
                provider_error.append(exc)
        if provider_error:
            if stored:
                with trio.CancelScope(shield=True):
                    await self._put_back(spec.name, previous)
            raise provider_error[0]
        if store_error:
            raise store_error[0]
        return stored[0]

    async def _put_back(self, name: str, previous: StoredFunction | None) -> None:
        """The store as it was before a refused deploy (:meth:`_deploy_and_store`)."""
        try:
            if previous is None:
                await self.store.delete_function(name)
            else:
                await self.store.put_function(previous.spec, previous.replicas)
        except FaasdError as exc:
            event(log, logging.ERROR, "cannot undo a refused deploy in the store", function=name, error=exc.message)

    async def update(self, spec: FunctionSpec) -> None:
        """Replace an existing function's spec, keeping its replica count.

        Raises:
            FunctionNotFound: no such function (faas-cli then retries with a deploy).
        """
        self._check(spec)
        self._require(spec.name)
        self._supersede_restore(spec.name)
        async with self._locks.hold(spec.name):
            existing = self._require(spec.name)
            if spec.name in self._failed:
                await self.provider.deploy(spec, existing.replicas)
            else:
                try:
                    await self.provider.update(spec)
                except FunctionNotFound:  # Stored but not running (its restore was superseded): create it.
                    await self.provider.deploy(spec, existing.replicas)
            self._keep(await self.store.put_function(spec, existing.replicas))
            self._failed.pop(spec.name, None)
        event(log, logging.INFO, "updated", function=spec.name)

    async def remove(self, name: str) -> None:
        self._require(name)
        self._supersede_restore(name)
        async with self._locks.hold(name):
            self._require(name)
            with contextlib.suppress(FunctionNotFound):  # Already gone from the backend: forget it here too.
                await self.provider.remove(name)
            await self.store.delete_function(name)
            self._drop(name)
            self._failed.pop(name, None)
            self.registry.forget(name)
            self._on_removed(name)
        event(log, logging.INFO, "removed", function=name)

    async def scale(self, name: str, replicas: int) -> None:
        """Set the desired replicas (0 allowed).

        Raises:
            InvalidRequest: ``replicas`` outside 0..MAX_REPLICAS.
            FunctionNotFound: no such function.
        """
        if not 0 <= replicas <= MAX_REPLICAS:
            raise InvalidRequest(f"replicas must be between 0 and {MAX_REPLICAS}, got {replicas}")
        existing = self._require(name)
        if name in self._restoring or name in self._failed:
            # Not applied to the provider (yet): record the count; the restore or the next deploy
            # applies it. Memory first: a restore finishing meanwhile reads it without waiting.
            self._keep(replace(existing, replicas=replicas))
            await self.store.set_replicas(name, replicas)
            event(log, logging.INFO, "scaled", function=name, replicas=replicas, applied=False)
            return
        await self.provider.scale(name, replicas)
        await self.store.set_replicas(name, replicas)
        self._keep(replace(existing, replicas=replicas))
        event(log, logging.INFO, "scaled", function=name, replicas=replicas)

    async def list(self) -> list[FunctionStatus]:
        """Every stored function with what the backend reports about it."""
        running = {status.name: status for status in await self.provider.list()}
        return [self._merge(stored, running.get(name)) for name, stored in sorted(self._functions.items())]

    async def status(self, name: str) -> FunctionStatus:
        stored = self._require(name)
        try:
            running: FunctionStatus | None = await self.provider.status(name)
        except FunctionNotFound:
            running = None
        return self._merge(stored, running)

    def logs(self, request: LogRequest) -> AsyncGenerator[LogMessage, None]:
        self._require(request.name)
        return self.provider.logs(request)

    # -- secrets ----------------------------------------------------------------------------------
    async def list_secrets(self) -> builtins.list[str]:
        return await self.store.list_secrets()

    async def create_secret(self, name: str, value: bytes) -> None:
        """Raises: Conflict: a secret by that name exists (it is left unchanged)."""
        if not await self.store.add_secret(name, value):
            raise Conflict(f"secret {name} exists already; use PUT to change it")

    async def update_secret(self, name: str, value: bytes) -> None:
        """Change a secret's value; functions see it once deployed again.

        Raises:
            FunctionNotFound: no such secret.
        """
        if not await self.store.replace_secret(name, value):
            raise FunctionNotFound(f"No such secret: {name}")

    async def delete_secret(self, name: str) -> None:
        """Raises:
        Conflict: deployed functions use it (named in the message); remove it from them first.
        FunctionNotFound: no such secret.
        """
        users = sorted(fn for fn, stored in self._functions.items() if name in stored.spec.secrets)
        if users:
            raise Conflict(f"secret {name} is used by {', '.join(users)}: remove it from them first")
        if not await self.store.delete_secret(name):
            raise FunctionNotFound(f"No such secret: {name}")

    def _merge(self, stored: StoredFunction, running: FunctionStatus | None) -> FunctionStatus:
        name = stored.spec.name
        status = FunctionStatus(
            spec=stored.spec,
            replicas=stored.replicas,
            available_replicas=running.available_replicas if running is not None else 0,
            invocation_count=float(self._invocations(name)),
            created_at=stored.created_at,
        )
        if name in self._failed:
            return replace(status, state="failed", reason=self._failed[name])
        if name in self._restoring:
            return replace(status, state="restoring")
        if running is not None and running.state != "deployed":
            return replace(status, state=running.state, reason=running.reason)
        return status

    def _require(self, name: str) -> StoredFunction:
        validate_name(name, "function name")
        stored = self._functions.get(name)
        if stored is None:
            raise FunctionNotFound(f"No such function: {name}")
        return stored
