"""The contract between the daemon and a backend, in the spirit of OpenFaaS's faas-provider.

A provider runs functions somewhere (local processes, Swarm services, Marathon apps) and reports what
runs. It never sees HTTP: the gateway maps routes to these calls in one place. It publishes the ready
replicas of each function into the :class:`~faasd.registry.EndpointRegistry` it is given, which is all
the invoke path reads. An operation a backend cannot do raises :class:`~faasd.errors.NotSupported`.

Desired state (specs, replica counts) lives in the daemon's store; the daemon calls ``deploy``/``scale``
to apply it and ``list`` to see what really runs. Errors from the backend's SDK or HTTP client are
translated into :mod:`faasd.errors` types inside the provider.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

import trio

from faasd.providers.types import FunctionSpec, FunctionStatus, LogMessage, LogRequest

__all__ = ["Provider", "ProviderInfo", "SecretLookup"]

SecretLookup = Callable[[str], Awaitable[bytes | None]]
"""The daemon's secret store as a backend sees it: name -> value, None when there is no such secret."""


class ProviderInfo(Protocol):
    name: str
    """``local``, ``swarm`` or ``marathon``."""
    orchestration: str
    """What ``/system/info`` reports as the orchestration."""


class Provider(Protocol):
    """One backend. Every method may raise :class:`~faasd.errors.FaasdError` subclasses only."""

    name: str
    orchestration: str
    persistent: bool
    """True when the backend keeps deployments itself (Swarm services, Marathon apps): the daemon then
    rebuilds its view from the backend after a restart, adopts functions created there by hand, and
    forgets ones deleted there. False (local): the backend loses everything with the daemon, so the
    daemon re-applies its store."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch (and for ``local``, supervise) what runs until cancelled.

        Calls ``task_status.started()`` once the first view of the backend is published, so the daemon
        can reconcile against it. Must survive the backend being down: report it through
        :meth:`health` and recover by itself.
        """
        ...

    def health(self) -> tuple[bool, str]:
        """(backend reachable, one-line reason) for ``/healthz`` and ``faasd status``."""
        ...

    async def deploy(self, spec: FunctionSpec, replicas: int) -> None:
        """Create the function with ``replicas`` replicas; an existing one is replaced by ``spec``."""
        ...

    async def update(self, spec: FunctionSpec) -> None:
        """Replace a function's spec (rolling its replicas), keeping its replica count.

        Raises:
            FunctionNotFound: no such function.
        """
        ...

    async def remove(self, name: str) -> None:
        """Delete a function and stop its replicas.

        Raises:
            FunctionNotFound: no such function.
        """
        ...

    async def scale(self, name: str, replicas: int) -> None:
        """Set the number of replicas (0 allowed).

        Raises:
            FunctionNotFound: no such function.
        """
        ...

    async def list(self) -> list[FunctionStatus]:
        """Every function the backend runs, with desired and ready replica counts."""
        ...

    async def status(self, name: str) -> FunctionStatus:
        """One function's status.

        Raises:
            FunctionNotFound: no such function.
        """
        ...

    def logs(self, request: LogRequest) -> AsyncGenerator[LogMessage, None]:
        """Log lines of a function's replicas, oldest first; with ``follow`` it never ends by itself.

        Resource handling: a follower is released when the iterator is closed; callers that may stop
        early wrap it in ``contextlib.aclosing``.

        Raises:
            FunctionNotFound: no such function (raised when iteration starts).
        """
        ...

    async def aclose(self) -> None:
        """Release clients and stop what must not outlive the daemon (local replicas)."""
        ...
