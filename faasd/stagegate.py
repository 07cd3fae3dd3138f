"""When a part of the daemon's second stage may load, and whether it has: one gate for each such part.

The local backend (:mod:`faasd.providers.deferred`) and the async queue (:mod:`faasd.queue.stage`) load
after the gateway serves, when the daemon says so or as soon as a request needs them, and a request
that comes first waits for them -- but not for ever: a part whose load hangs or failed must answer 503,
not hold its callers. The three events of that rule (begun, loaded, the bounded wait) are the same for
both, so they live here once.
"""

from __future__ import annotations

import trio

__all__ = ["StageGate"]


class StageGate:
    """Begun once (:meth:`begin`), then opened once (:meth:`open`) whether the load worked or not.

    Args:
        wait_s: how long :meth:`wait` lets a request wait for the load.
    """

    __slots__ = ("_begun", "_opened", "wait_s")

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._begun = trio.Event()
        self._opened = trio.Event()

    def begin(self) -> None:
        """Let the load start (the daemon once it serves; :meth:`wait` does too)."""
        self._begun.set()

    async def begun(self) -> None:
        """Return once :meth:`begin` was called: the loader waits here."""
        await self._begun.wait()

    def open(self) -> None:
        """The load is over (it worked, or it failed and the daemon is stopping): waiters go on."""
        self._opened.set()

    @property
    def opened(self) -> bool:
        return self._opened.is_set()

    async def wait(self) -> None:
        """Begin the load if nobody has, and wait for it, at most :attr:`wait_s`; the caller then looks at
        what it needs (still missing: it answers 503)."""
        if not self._opened.is_set():
            self._begun.set()
            with trio.move_on_after(self.wait_s):
                await self._opened.wait()
