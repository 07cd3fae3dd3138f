"""One lock per function name: operations on one function run one at a time, while a slow one (a remove
waiting for its replicas to stop, a deploy running ``pip install``) does not hold up the others. Used by
the providers and by :class:`~faasd.service.FunctionService`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

__all__ = ["NameLocks"]


@dataclass
class _LockEntry:
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0


class NameLocks:
    """``async with locks.hold(name):`` -- the entry for a name is dropped once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._entries: dict[str, _LockEntry] = {}

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        entry = self._entries.setdefault(name, _LockEntry())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._entries[name]
