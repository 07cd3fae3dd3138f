"""Slows password guessing on ``/system/*``: failed basic-auth attempts are counted per client address.

Policy (also in the README, "Management API security"):

* A request whose ``Authorization`` header carries wrong credentials is a *failure*; a request with no
  credentials at all is not (browsers and ``curl`` without ``-u`` ask first) and is answered 401.
* The first :data:`FREE_FAILURES` failures from an address cost nothing. After that the address is
  *locked* for ``2 ** (failures - FREE_FAILURES)`` seconds, capped at :data:`MAX_LOCK_S`: every
  ``/system/*`` request from it is answered 429 with ``Retry-After`` at once, without looking at its
  credentials (so a locked attacker learns nothing, and a lock costs the daemon one dict lookup).
  At the cap, an address gets one guess a minute.
* A success from an address forgets its failures; so does :data:`FORGET_S` without a failure.
* The client address is the TCP peer (``X-Forwarded-For`` is not trusted). IPv6 addresses count per /64,
  the block one host usually holds. Behind a reverse proxy every client shares the proxy's address.
* Memory is bounded: at most :data:`MAX_ADDRESSES` addresses are remembered; the one that failed
  longest ago is forgotten first (about 150 bytes each: ~1.5 MB at the bound).

The invoke routes (``/function/*``) and other addresses are never affected: nothing here sleeps or
holds a lock; a throttled request is answered as fast as a 401.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "FORGET_S",
    "FREE_FAILURES",
    "MAX_ADDRESSES",
    "MAX_LOCK_S",
    "AuthThrottle",
    "client_key",
    "retry_after_header",
]

FREE_FAILURES = 5
"""Failed attempts an address may make before it is slowed down."""
MAX_LOCK_S = 60.0
"""Longest lock: at worst one guess a minute per address."""
FORGET_S = 900.0
"""An address that has not failed for this long starts afresh."""
MAX_ADDRESSES = 10_000
"""Addresses remembered at most (least recently failed dropped first)."""


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float
    locked_until: float


def client_key(address: str | None) -> str:
    """The key an address is counted under: itself, or its /64 for IPv6 (one host often has many)."""
    if not address:
        return "?"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64)))
    return str(parsed)


class AuthThrottle:
    """Failure counts per client address, bounded; see the module docstring for the policy.

    Pure bookkeeping (no I/O, no waiting): the caller answers 429 when :meth:`retry_after` says so.
    """

    def __init__(
        self,
        *,
        free_failures: int = FREE_FAILURES,
        max_lock_s: float = MAX_LOCK_S,
        forget_s: float = FORGET_S,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.max_lock_s = max_lock_s
        self.forget_s = forget_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def retry_after(self, address: str | None) -> float:
        """Seconds until ``address`` may try again (0: it may try now)."""
        record = self._records.get(client_key(address))
        if record is None:
            return 0.0
        now = self.clock()
        if now - record.last_failure >= self.forget_s:
            del self._records[client_key(address)]
            return 0.0
        return max(0.0, record.locked_until - now)

    def failed(self, address: str | None) -> float:
        """Count a failed attempt; return the lock it earned in seconds (0 while still free)."""
        key = client_key(address)
        now = self.clock()
        record = self._records.pop(key, None)
        if record is None or now - record.last_failure >= self.forget_s:
            record = _Record(failures=0, last_failure=now, locked_until=now)
        record.failures += 1
        record.last_failure = now
        lock = 0.0
        if record.failures >= self.free_failures:
            lock = min(self.max_lock_s, 2.0 ** min(record.failures - self.free_failures, 32))
            record.locked_until = now + lock
        self._records[key] = record  # Most recently failed last: eviction takes the oldest first.
        while len(self._records) > self.max_addresses:
            self._records.popitem(last=False)
        return lock

    def succeeded(self, address: str | None) -> None:
        """A correct password from ``address``: forget its failures."""
        self._records.pop(client_key(address), None)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, rounded up (never 0 while locked)."""
    return str(max(1, math.ceil(seconds)))
