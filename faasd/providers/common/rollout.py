"""How a backend that runs replicas itself moves a function toward its desired count: scale and roll.

Used by the backends that supervise their replicas (``local``: processes; ``memory``: in-process
servers); Swarm and Marathon roll updates themselves. Pure: :func:`plan_replicas` looks at slots,
decides, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["RolloutSlot", "plan_replicas"]


class RolloutSlot(Protocol):
    """What :func:`plan_replicas` reads of a place for one replica."""

    @property
    def seq(self) -> int:
        """Order of creation (newer is larger)."""
        ...

    @property
    def generation(self) -> object:
        """Which deploy/update of the function it runs (compared by identity)."""
        ...

    @property
    def ready(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...


SlotT = TypeVar("SlotT", bound=RolloutSlot)


def plan_replicas(slots: Sequence[SlotT], current: object, desired: int) -> tuple[int, list[SlotT]]:
    """Decide how to move a function's slots toward ``desired`` replicas of generation ``current``.

    Rules:

    * slots of the current generation: start the missing ones; stop the excess, not-ready ones first,
      then the newest;
    * slots of older generations (an update in progress): keep ready ones only while the current
      generation has fewer than ``desired`` ready replicas; stop not-ready ones at once. So an update
      never lowers the number of ready replicas, and never reaches zero if there was one.

    Returns:
        (slots to start, slots to stop). Slots already stopping are left out.
    """
    live = [slot for slot in slots if not slot.stopping]
    new = [slot for slot in live if slot.generation is current]
    old = [slot for slot in live if slot.generation is not current]

    def order(candidates: list[SlotT]) -> list[SlotT]:
        return sorted(candidates, key=lambda slot: (slot.ready, -slot.seq))  # not ready first, then newest

    stop: list[SlotT] = []
    start = max(0, desired - len(new))
    if len(new) > desired:
        stop.extend(order(new)[: len(new) - desired])
    ready_new = sum(1 for slot in new if slot.ready and slot not in stop)
    keep = max(0, desired - ready_new)
    old_ready = [slot for slot in order(old) if slot.ready]
    stop.extend(slot for slot in old if not slot.ready)
    stop.extend(old_ready[: max(0, len(old_ready) - keep)])
    return start, stop
