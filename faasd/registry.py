"""Ready replica endpoints per function: written by discovery, read by the invoke path.

Discovery (a provider's ``run`` task) publishes the full list of ready endpoints of a function whenever
it changes; the gateway's router reads :meth:`EndpointRegistry.get` on every call (a dict lookup) and
waits with :meth:`EndpointRegistry.wait_for` when a function has none yet (cold start, scale from
zero). One owner writes, many read, all on the trio thread: no locks.

A backend whose replica listens before it is ready (the local one: the daemon binds each slot's socket, and
connections wait in its backlog until the replica accepts) may :meth:`~EndpointRegistry.announce` the
endpoint when the replica starts: the gateway then connects ahead (:class:`Upstream`), so the first call
after the replica is published -- the one a cold start waits for -- is sent at once instead of after a
connect. :meth:`~EndpointRegistry.retire` says the endpoint's socket is closed for good: its idle
connections go too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Protocol

import trio

from faasd.providers.types import Endpoint

__all__ = ["EndpointRegistry", "Upstream"]


class Upstream(Protocol):
    """The gateway's connections to replicas (:class:`faasd.gateway.proxy.UpstreamPool`), as the registry
    hints them."""

    async def preconnect(self, endpoint: Endpoint) -> None: ...

    def forget(self, authority: str) -> None: ...


def _no_calls(name: str) -> int:
    return 0


class EndpointRegistry:
    """Function name -> tuple of ready endpoints, with change notification."""

    def __init__(self) -> None:
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}
        self._changed: dict[str, trio.Event] = {}
        self.calls_started: Callable[[str], int] = _no_calls
        """Calls the gateway has started to a function since the daemon started (the assembly sets it to
        the gateway metrics' count): what the local backend divides a function's CPU time by
        (:mod:`faasd.sandbox.cpuclass`)."""
        self.upstream: Upstream | None = None
        """Where :meth:`announce` and :meth:`retire` go (the assembly sets the gateway's pool)."""

    def __repr__(self) -> str:
        ready = sum(len(endpoints) for endpoints in self._endpoints.values())
        return f"<EndpointRegistry functions={len(self._endpoints)} ready_endpoints={ready}>"

    def get(self, name: str) -> tuple[Endpoint, ...]:
        """The ready endpoints of ``name`` now (empty when none or unknown)."""
        return self._endpoints.get(name, ())

    def publish(self, name: str, endpoints: Iterable[Endpoint]) -> None:
        """Replace the ready endpoints of ``name`` and wake whoever waits for a change."""
        new = tuple(endpoints)
        if self._endpoints.get(name) == new:
            return
        if new:
            self._endpoints[name] = new
        else:
            self._endpoints.pop(name, None)
        event = self._changed.pop(name, None)
        if event is not None:
            event.set()

    def forget(self, name: str) -> None:
        """The function is gone: drop its endpoints (waiters wake and see none)."""
        self.publish(name, ())

    async def announce(self, endpoint: Endpoint) -> None:
        """A replica is starting behind ``endpoint``, whose socket already listens: connect ahead. Not a
        publish: no call is sent there before the endpoint is published."""
        if self.upstream is not None:
            await self.upstream.preconnect(endpoint)

    def retire(self, authority: str) -> None:
        """The socket at ``authority`` is closed for good: close the connections kept to it."""
        if self.upstream is not None:
            self.upstream.forget(authority)

    def names(self) -> list[str]:
        """Functions with at least one ready endpoint."""
        return list(self._endpoints)

    async def wait_for(self, name: str, timeout_s: float = math.inf) -> tuple[Endpoint, ...]:
        """Return the ready endpoints of ``name``, waiting up to ``timeout_s`` for one to appear.

        Returns an empty tuple when the time is up (the caller decides what that means: 503).
        """
        with trio.move_on_after(timeout_s):
            while not (endpoints := self._endpoints.get(name)):
                event = self._changed.get(name)
                if event is None:
                    event = self._changed[name] = trio.Event()
                await event.wait()
            return endpoints
        return ()
