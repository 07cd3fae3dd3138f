"""How the queue treats one function: concurrency, retries, backoff. Pure: no trio, no I/O.

The daemon-wide defaults come from ``faasd up``'s ``async_*`` keys (:class:`QueueDefaults`); a function
overrides them with OpenFaaS-style labels or annotations (an annotation wins over a label of the same
name), read by :meth:`QueueSettings.for_function`:

===================================== ================ ===============================================
key                                   default          meaning
===================================== ================ ===============================================
``com.openfaas.queue.max_inflight``   ``async_concurrency`` (4) calls of the function the queue runs at once
``com.openfaas.retry.attempts``       ``async_attempts`` (10)   most invocations of one call (1: no retry)
``com.openfaas.retry.codes``          ``429,502,503``   function statuses that are retried
``com.openfaas.retry.min_wait``       ``async_retry_wait`` (1s) wait before the first retry
``com.openfaas.retry.max_wait``       ``async_retry_max_wait`` (60s) longest wait between two tries
===================================== ================ ===============================================

The ``com.openfaas.retry.*`` names and meanings are OpenFaaS Pro's queue-worker's (attempts count every
try, the first included); ``com.openfaas.queue.max_inflight`` is faasd's, named after the OpenFaaS
queue-worker's ``max_inflight``. A malformed value is a 400 at deploy, naming the key.

Backoff (:func:`backoff_s`): the n-th retry waits ``min_wait * 2**(n-1)``, capped at ``max_wait``, and
then a random share of it between half and all ("equal jitter"), so calls that failed together do not
all come back at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from faasd.errors import InvalidRequest
from faasd.units import parse_duration

__all__ = [
    "CONCURRENCY_KEY",
    "MAX_ATTEMPTS",
    "MAX_CONCURRENCY",
    "MAX_WAIT_S",
    "QueueDefaults",
    "QueueSettings",
    "backoff_s",
]

T = TypeVar("T")

CONCURRENCY_KEY = "com.openfaas.queue.max_inflight"
ATTEMPTS_KEY = "com.openfaas.retry.attempts"
CODES_KEY = "com.openfaas.retry.codes"
MIN_WAIT_KEY = "com.openfaas.retry.min_wait"
MAX_WAIT_KEY = "com.openfaas.retry.max_wait"
KEYS = (CONCURRENCY_KEY, ATTEMPTS_KEY, CODES_KEY, MIN_WAIT_KEY, MAX_WAIT_KEY)

MAX_CONCURRENCY = 100
"""Most calls of one function the queue runs at once (a typo like 10000 must not open 10000 calls)."""
MAX_ATTEMPTS = 100
"""Most tries of one call, whatever a label says: retries are bounded."""
MAX_WAIT_S = 3600.0
"""Longest wait between two tries a label may ask for."""
DEFAULT_RETRY_CODES = frozenset({429, 502, 503})


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueDefaults:
    """The daemon-wide settings (``faasd up`` keys); see the module docstring."""

    concurrency: int = 4
    attempts: int = 10
    retry_wait_s: float = 1.0
    retry_max_wait_s: float = 60.0
    callback_attempts: int = 10
    callback_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """One function's queue settings."""

    concurrency: int = 4
    attempts: int = 10
    retry_codes: frozenset[int] = DEFAULT_RETRY_CODES
    min_wait_s: float = 1.0
    max_wait_s: float = 60.0

    @classmethod
    def for_function(
        cls, labels: Mapping[str, str], annotations: Mapping[str, str], defaults: QueueDefaults
    ) -> QueueSettings:
        """Read the keys of the module docstring (annotations over labels) over ``defaults``.

        Raises:
            InvalidRequest: a malformed value, naming the key.
        """

        def read(key: str, parse: Callable[[str], T], default: T) -> T:
            raw = annotations.get(key)
            if raw is None or not raw.strip():
                raw = labels.get(key)
            if raw is None or not raw.strip():
                return default
            try:
                return parse(raw.strip())
            except ValueError as exc:
                raise InvalidRequest(f"{key}={raw[:80]!r}: {exc}") from None

        min_wait = read(MIN_WAIT_KEY, _wait, defaults.retry_wait_s)
        max_wait = read(MAX_WAIT_KEY, _wait, defaults.retry_max_wait_s)
        if max_wait < min_wait:
            raise InvalidRequest(f"{MAX_WAIT_KEY} ({max_wait:g}s) is below {MIN_WAIT_KEY} ({min_wait:g}s)")
        return cls(
            concurrency=read(CONCURRENCY_KEY, _concurrency, defaults.concurrency),
            attempts=read(ATTEMPTS_KEY, _attempts, defaults.attempts),
            retry_codes=read(CODES_KEY, _codes, DEFAULT_RETRY_CODES),
            min_wait_s=min_wait,
            max_wait_s=max_wait,
        )


def backoff_s(retry: int, min_wait_s: float, max_wait_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first): see the module docstring."""
    ceiling = min(max_wait_s, min_wait_s * 2.0 ** min(max(retry - 1, 0), 32))
    share = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
    return ceiling * share


def _concurrency(text: str) -> int:
    value = _whole(text)
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError(f"must be 1-{MAX_CONCURRENCY}")
    return value


def _attempts(text: str) -> int:
    value = _whole(text)
    if not 0 <= value <= MAX_ATTEMPTS:
        raise ValueError(f"must be 0-{MAX_ATTEMPTS} (0 and 1: no retry)")
    return max(value, 1)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


def _codes(text: str) -> frozenset[int]:
    codes = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        code = _whole(part)
        if not 100 <= code <= 599:
            raise ValueError(f"{code} is not an HTTP status")
        codes.add(code)
    return frozenset(codes)


def _wait(text: str) -> float:
    value = parse_duration(text)
    if not 0 <= value <= MAX_WAIT_S:
        raise ValueError(f"must be 0s-{MAX_WAIT_S:g}s")
    return value
