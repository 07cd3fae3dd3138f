"""Every management operation on functions: desired state in the store, applied to the provider.

The gateway's routes call this, never the provider directly, so "what should run" and "what runs" stay
in step in one place:

* deploy/update go to the provider first (it validates what it can run), then to the store; a
  provider that refuses leaves no stored record behind;
* after a daemon restart :meth:`FunctionService.restore` re-applies every stored function at its
  desired replica count (the local backend's replicas died with the old daemon);
* :meth:`exists` answers from memory: the invoke path asks it on every call that finds no replica.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from faasd.errors import FaasdError, FunctionNotFound, InvalidRequest
from faasd.logs import event
from faasd.providers.base import Provider
from faasd.providers.types import FunctionSpec, FunctionStatus, LogMessage, LogRequest, validate_name
from faasd.registry import EndpointRegistry
from faasd.scaler.settings import ScaleSettings
from faasd.store import AsyncStore, StoredFunction

__all__ = ["MAX_REPLICAS", "FunctionService"]

log = logging.getLogger(__name__)

MAX_REPLICAS = 100
"""Upper bound on replicas per function (a typo like 1000 must not fork-bomb a small host)."""


class FunctionService:
    """Functions = store (desired) + provider (running).

    Args:
        on_removed: called with a function's name after it is removed (e.g. to drop its metrics).
    """

    def __init__(
        self,
        store: AsyncStore,
        provider: Provider,
        registry: EndpointRegistry,
        *,
        invocations: Callable[[str], int] = lambda name: 0,
        on_removed: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.registry = registry
        self._invocations = invocations
        self._on_removed = on_removed
        self._functions: dict[str, StoredFunction] = {}

    def __repr__(self) -> str:
        return f"<FunctionService provider={self.provider.name} functions={len(self._functions)}>"

    def exists(self, name: str) -> bool:
        return name in self._functions

    def stored(self, name: str) -> StoredFunction | None:
        return self._functions.get(name)

    def names(self) -> list[str]:
        return sorted(self._functions)

    async def restore(self) -> None:
        """After a daemon start: re-apply the store to a backend that forgot everything (local), or
        rebuild the store from a backend that kept its deployments (Swarm, Marathon)."""
        if getattr(self.provider, "persistent", False):
            await self.sync_from_provider()
            return
        for stored in await self.store.list_functions():
            self._functions[stored.spec.name] = stored
            try:
                await self.provider.deploy(stored.spec, stored.replicas)
            except FaasdError as exc:
                event(
                    log,
                    logging.ERROR,
                    "cannot restore function",
                    function=stored.spec.name,
                    error=exc.message,
                )
            else:
                event(
                    log,
                    logging.INFO,
                    "restored function",
                    function=stored.spec.name,
                    replicas=stored.replicas,
                )

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
                self._functions[name] = await self.store.put_function(status.spec, status.replicas)
        for name in [name for name in self._functions if name not in running]:
            event(log, logging.INFO, "function gone from the backend", function=name)
            await self.store.delete_function(name)
            self._functions.pop(name, None)
            self.registry.forget(name)
            self._on_removed(name)

    async def deploy(self, spec: FunctionSpec) -> bool:
        """Create or replace a function; True when it was created.

        A replaced function keeps its replica count; a new one starts at ``com.openfaas.scale.min``
        (default 1).
        """
        _check_namespace(spec.namespace)
        ScaleSettings.from_labels(spec.labels)  # A malformed scaling label is a 400 now, not a surprise later.
        existing = self._functions.get(spec.name)
        replicas = existing.replicas if existing is not None else min(spec.min_replicas, MAX_REPLICAS)
        await self.provider.deploy(spec, replicas)
        self._functions[spec.name] = await self.store.put_function(spec, replicas)
        event(log, logging.INFO, "deployed", function=spec.name, replicas=replicas, created=existing is None)
        return existing is None

    async def update(self, spec: FunctionSpec) -> None:
        """Replace an existing function's spec, keeping its replica count.

        Raises:
            FunctionNotFound: no such function (faas-cli then retries with a deploy).
        """
        _check_namespace(spec.namespace)
        ScaleSettings.from_labels(spec.labels)
        existing = self._require(spec.name)
        await self.provider.update(spec)
        self._functions[spec.name] = await self.store.put_function(spec, existing.replicas)
        event(log, logging.INFO, "updated", function=spec.name)

    async def remove(self, name: str) -> None:
        self._require(name)
        with contextlib.suppress(FunctionNotFound):  # Already gone from the backend: forget it here too.
            await self.provider.remove(name)
        await self.store.delete_function(name)
        self._functions.pop(name, None)
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
        await self.provider.scale(name, replicas)
        await self.store.set_replicas(name, replicas)
        self._functions[name] = replace(existing, replicas=replicas)
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

    def logs(self, request: LogRequest) -> AsyncIterator[LogMessage]:
        self._require(request.name)
        return self.provider.logs(request)

    def _merge(self, stored: StoredFunction, running: FunctionStatus | None) -> FunctionStatus:
        return FunctionStatus(
            spec=stored.spec,
            replicas=stored.replicas,
            available_replicas=running.available_replicas if running is not None else 0,
            invocation_count=float(self._invocations(stored.spec.name)),
            created_at=stored.created_at,
        )

    def _require(self, name: str) -> StoredFunction:
        validate_name(name, "function name")
        stored = self._functions.get(name)
        if stored is None:
            raise FunctionNotFound(f"No such function: {name}")
        return stored


def _check_namespace(namespace: str) -> None:
    if namespace:
        raise InvalidRequest(f"namespace {namespace!r}: faasd has a single namespace; leave it empty")
