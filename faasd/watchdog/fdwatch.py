"""One epoll of fork mode's own for its calls' pipes and pidfds, itself a single reader on the event loop.

Why (measured on the 2-core project machine, Python 3.11): each fork-mode call watches two or three fds
(stdout, maybe stderr, the pidfd) for a few milliseconds. asyncio's ``add_reader`` + ``remove_reader``
cost ~22 us of Python per fd (a ``Handle`` with a copied context, a ``SelectorKey``, the transport check,
the selector's mapping), where ``epoll.register`` + ``unregister`` cost ~3.5 us: ~40 us of the
watchdog's ~0.3 ms of interpreter time per call. Here an fd costs one ``epoll_ctl`` each way and a dict
entry, and one wake-up of the loop hands over every fd that is ready at once (the exit and the last
output of a call usually come together).

Safety: an fd is unregistered before it is closed (the owner's job: :meth:`FdWatch.remove` first), and
a callback is run only if it is still the one registered for its fd when its turn in the batch comes --
a callback earlier in the batch may have closed that fd and a new call reopened the same number (a
stale readiness must never make a blocking ``read`` on a pipe with nothing in it).
"""

from __future__ import annotations

import select
from collections.abc import Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the watchdog's start-up).
if TYPE_CHECKING:
    import asyncio

__all__ = ["FdWatch"]


class FdWatch:
    """Readiness callbacks for fds, on an epoll of its own that the loop watches as one fd.

    Structure: the epoll is made with the first :meth:`add` (a watchdog in another mode never opens it)
    and closed by :meth:`close`; callbacks run on the loop, each at most once per wake-up.
    """

    __slots__ = ("_callbacks", "_epoll", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll: select.epoll | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the loop whenever ``fd`` is readable (or hung up) until :meth:`remove`."""
        epoll = self._epoll
        if epoll is None:
            epoll = self._epoll = select.epoll()
            self._loop.add_reader(epoll.fileno(), self._dispatch)
        epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = callback

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it); nothing if it is not watched."""
        if self._callbacks.pop(fd, None) is not None:
            assert self._epoll is not None
            self._epoll.unregister(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._callbacks

    def _dispatch(self) -> None:
        assert self._epoll is not None
        callbacks = self._callbacks
        ready = [(fd, callbacks.get(fd)) for fd, _ in self._epoll.poll(0)]
        for fd, callback in ready:
            if callback is not None and callbacks.get(fd) is callback:
                callback()

    def close(self) -> None:
        """Stop watching everything and close the epoll."""
        epoll = self._epoll
        if epoll is not None:
            self._epoll = None
            self._callbacks.clear()
            self._loop.remove_reader(epoll.fileno())
            epoll.close()
