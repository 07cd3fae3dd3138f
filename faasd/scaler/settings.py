"""Per-function autoscaling settings, read from OpenFaaS-style labels. Pure.

=================================== ========== =============================================================
label                               default    meaning
=================================== ========== =============================================================
``com.openfaas.scale.min``          1          fewest replicas while the function has traffic
``com.openfaas.scale.max``          20         most replicas (faasd caps every function at 100)
``com.openfaas.scale.type``         capacity   ``capacity``: in-flight calls per replica; ``rps``: calls/s
``com.openfaas.scale.target``       10 / 50    load one replica should carry (capacity / rps)
``com.openfaas.scale.target-proportion`` 0.9   scale when load reaches this share of the target
``com.openfaas.scale.zero``         false      scale to zero when idle
``com.openfaas.scale.zero-duration`` 5m        idle time before scaling to zero
=================================== ========== =============================================================

``min == max`` turns autoscaling off for the function (as in OpenFaaS). A malformed label value is an
error at deploy time, naming the label.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from faasd.errors import InvalidRequest
from faasd.units import parse_bool, parse_duration

__all__ = ["LABEL_PREFIX", "MAX_REPLICAS_CAP", "ScaleSettings"]

T = TypeVar("T")

LABEL_PREFIX = "com.openfaas.scale."
MAX_REPLICAS_CAP = 100
DEFAULT_TARGETS = {"capacity": 10.0, "rps": 50.0}
"""Per-replica targets: a fork-mode replica serves many calls at once (one process each), so 10 in
flight is a moderate load for it; 50 calls/s is OpenFaaS Pro's rps default."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleSettings:
    min_replicas: int = 1
    max_replicas: int = 20
    type: Literal["capacity", "rps"] = "capacity"
    target: float = DEFAULT_TARGETS["capacity"]
    target_proportion: float = 0.9
    zero: bool = False
    zero_duration_s: float = 300.0
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    """Enter panic when the short window asks for this many times the ready replicas."""
    max_scale_down_rate: float = 2.0
    """At most divide the replicas by this per decision."""

    @property
    def enabled(self) -> bool:
        return self.min_replicas != self.max_replicas

    @property
    def per_replica(self) -> float:
        """Load one replica should carry before another is added."""
        return self.target * self.target_proportion

    @property
    def floor(self) -> int:
        """Fewest replicas the autoscaler keeps while the function is in use."""
        return self.min_replicas

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> ScaleSettings:
        """Read the ``com.openfaas.scale.*`` labels.

        Raises:
            InvalidRequest: a malformed value, naming the label.
        """

        def read(key: str, parse: Callable[[str], T], default: T) -> T:
            raw = labels.get(LABEL_PREFIX + key)
            if raw is None or raw.strip() == "":
                return default
            try:
                return parse(raw.strip())
            except ValueError as exc:
                raise InvalidRequest(f"label {LABEL_PREFIX}{key}={raw!r}: {exc}") from None

        kind: Literal["capacity", "rps"] = read("type", _kind, "capacity")
        minimum = read("min", _count, 1)
        maximum = read("max", _count, 20)
        if minimum > maximum:
            raise InvalidRequest(f"label {LABEL_PREFIX}min={minimum} is above {LABEL_PREFIX}max={maximum}")
        return cls(
            min_replicas=min(minimum, MAX_REPLICAS_CAP),
            max_replicas=min(maximum, MAX_REPLICAS_CAP),
            type=kind,
            target=read("target", _positive, DEFAULT_TARGETS[kind]),
            target_proportion=read("target-proportion", _proportion, 0.9),
            zero=read("zero", parse_bool, False),
            zero_duration_s=read("zero-duration", _duration, 300.0),
        )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not a whole number") from None
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a number > 0")
    return value


def _proportion(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError("must be in (0, 1]")
    return value


def _duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _kind(text: str) -> Literal["capacity", "rps"]:
    if text == "capacity":
        return "capacity"
    if text == "rps":
        return "rps"
    raise ValueError("use capacity or rps (cpu and queue are not supported)")
