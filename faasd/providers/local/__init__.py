"""The ``local`` backend: every replica is a ``faasd watchdog`` process on 127.0.0.1 (see :mod:`.provider`)."""

from __future__ import annotations

from faasd.providers.local.provider import (
    BASE_ENV_KEYS,
    LocalProvider,
    LocalStatistics,
    ReplicaInfo,
    plan_replicas,
)

__all__ = ["BASE_ENV_KEYS", "LocalProvider", "LocalStatistics", "ReplicaInfo", "plan_replicas"]
