"""The ``swarm`` backend: every function is a Docker Swarm service (see :mod:`.provider`)."""

from __future__ import annotations

from faasd.providers.swarm.provider import DEFAULT_IMAGE, SwarmProvider, SwarmStatistics, map_exceptions

__all__ = ["DEFAULT_IMAGE", "SwarmProvider", "SwarmStatistics", "map_exceptions"]
