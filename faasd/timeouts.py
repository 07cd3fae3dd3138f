"""How long the gateway waits for one function's answer: the global ``upstream_timeout``, raised for a
function that sets its own limit.

OpenFaaS has no per-function gateway timeout: its docs (https://docs.openfaas.com/tutorials/expanded-timeouts/)
tell users to set ``exec_timeout`` / ``write_timeout`` in the function's ``environment`` and then to raise the
gateway's ``upstream_timeout`` above them by hand -- forget the second step and calls end in 502 while the
function is still working. faasd takes the function's own setting as the rule instead:

* a function's own limit is what its watchdog enforces: ``exec_timeout`` when set above 0, else
  ``write_timeout`` (the watchdog bounds a call by ``write_timeout`` when ``exec_timeout`` is 0) -- counted
  only when the deploy's ``envVars`` set at least one of the two (an image's own ``ENV`` is not seen);
* the gateway waits ``max(upstream_timeout, own limit + ANSWER_GRACE_S)`` for the answer to start, so the
  watchdog's own 408/504 for a call past its limit reaches the caller rather than the gateway's 502;
* a function's own limit may be at most ``max_upstream_timeout``: a deploy asking for more is a 400
  naming both keys (a function already stored -- restored after the operator lowered the bound -- is
  waited for up to the bound, plus the grace).

A function with no timeout of its own is unchanged: it gets ``upstream_timeout``.

Pure (no I/O). The invoke path asks :meth:`FunctionTimeouts.for_call` on every call: one lookup of the stored
spec and an identity check against the cached one; the environment is parsed once per deployed spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from faasd.errors import InvalidRequest
from faasd.providers.types import FunctionSpec
from faasd.units import parse_duration

__all__ = ["ANSWER_GRACE_S", "FunctionTimeouts", "own_timeout_s"]

ANSWER_GRACE_S = 2.0
"""How much longer than a function's own limit the gateway waits: its watchdog answers at the limit
(408 in fork/python modes, 504 in http mode), and that answer must still arrive in time -- also when a
process that left the call's group holds its output open, and the watchdog answers only after waiting
``FORCE_FINISH_AFTER_KILL_S`` (1 s, :mod:`faasd.watchdog.fork`) past its deadline tick. (At 1 s the two
waits ended together, and such a call got the gateway's 502 or the 408 by chance.)"""

WATCHDOG_WRITE_TIMEOUT_S = 30.0
"""The watchdog's default ``write_timeout`` (:mod:`faasd.watchdog.config`), its bound when ``exec_timeout`` is 0."""


def own_timeout_s(env_vars: Mapping[str, str]) -> float | None:
    """The limit a function's watchdog puts on one call, from its ``envVars``; None when it sets neither
    ``exec_timeout`` nor ``write_timeout``.

    Raises:
        InvalidRequest: a value that is not a duration (the watchdog would refuse to start), naming it.
    """
    exec_s = _duration(env_vars, "exec_timeout")
    write_s = _duration(env_vars, "write_timeout")
    if exec_s is None and write_s is None:
        return None
    return exec_s or write_s or WATCHDOG_WRITE_TIMEOUT_S


def _duration(env_vars: Mapping[str, str], key: str) -> float | None:
    raw = env_vars.get(key)
    if raw is None or not raw.strip():
        return None
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise InvalidRequest(f"envVars: invalid {key}={raw[:40]!r}: {exc}") from None


class FunctionTimeouts:
    """The gateway's upstream timeout per function (see the module docstring).

    Args:
        default_s: ``upstream_timeout``, for functions without a limit of their own (and unknown names).
        max_s: ``max_upstream_timeout``, the longest own limit a function may have.
        spec_of: the stored spec of a function by name (None when there is none).
    """

    def __init__(self, default_s: float, max_s: float, spec_of: Callable[[str], FunctionSpec | None]) -> None:
        self.default_s = default_s
        self.max_s = max(max_s, default_s)
        self._spec_of = spec_of
        self._cache: dict[str, tuple[FunctionSpec, float]] = {}

    def __repr__(self) -> str:
        return f"<FunctionTimeouts default={self.default_s:g}s max={self.max_s:g}s cached={len(self._cache)}>"

    def check(self, spec: FunctionSpec) -> None:
        """At deploy: refuse a function whose own limit the gateway would not wait for.

        Raises:
            InvalidRequest: a malformed timeout, or one above ``max_upstream_timeout``.
        """
        own = own_timeout_s(spec.env_vars)
        if own is not None and own > self.max_s:
            raise InvalidRequest(
                f"envVars: the function's own timeout ({own:g}s, from exec_timeout/write_timeout) is above the "
                f"gateway's max_upstream_timeout ({self.max_s:g}s): lower it, or start faasd with a larger "
                "max_upstream_timeout (or use /async-function for long work)"
            )

    def for_call(self, name: str) -> float:
        """Seconds the gateway waits for ``name``'s answer to start."""
        spec = self._spec_of(name)
        if spec is None:
            self._cache.pop(name, None)
            return self.default_s
        cached = self._cache.get(name)
        if cached is not None and cached[0] is spec:
            return cached[1]
        timeout = self._compute(spec)
        self._cache[name] = (spec, timeout)
        return timeout

    def _compute(self, spec: FunctionSpec) -> float:
        try:
            own = own_timeout_s(spec.env_vars)
        except InvalidRequest:
            own = None  # Stored before this check existed; its watchdog reports the value itself.
        if own is None:
            return self.default_s
        return max(self.default_s, min(own, self.max_s) + ANSWER_GRACE_S)
