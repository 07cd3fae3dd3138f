"""faasd/providers/common/rollout.py: how a supervising backend scales and rolls a function's slots."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from faasd.providers.common.rollout import plan_replicas


@dataclass(eq=False)
class FakeSlot:
    """Only what plan_replicas reads of a slot (it is pure: there is nothing else to fake)."""

    seq: int
    generation: object
    ready: bool = True
    stopping: bool = False


@pytest.mark.parametrize(
    ("slots", "desired", "start", "stopped"),
    [
        ([], 2, 2, []),
        ([("new", True), ("new", True)], 2, 0, []),
        ([("new", True), ("new", False), ("new", True)], 1, 0, [1, 2]),  # not ready first, then newest
        ([("new", True), ("new", True), ("new", True)], 1, 0, [2, 1]),
        ([("old", True), ("old", True)], 2, 2, []),  # update begins: old ones keep serving
        ([("old", True), ("old", True), ("new", True), ("new", False)], 2, 0, [1]),  # one new ready: one old goes
        ([("old", True), ("old", True), ("new", True), ("new", True)], 2, 0, [1, 0]),
        ([("old", False), ("old", True), ("new", False)], 1, 0, [0]),  # old not-ready ones go at once
        ([("old", True), ("new", False)], 0, 0, [1, 0]),  # scaled to zero mid-update
        ([("new", True, "stopping"), ("new", True)], 2, 1, []),  # stopping slots do not count
    ],
)
def test_plan_replicas(slots: list[tuple[object, ...]], desired: int, start: int, stopped: list[int]) -> None:
    current, old = object(), object()
    built = [
        FakeSlot(seq, current if spec[0] == "new" else old, ready=bool(spec[1]), stopping=len(spec) > 2)
        for seq, spec in enumerate(slots)
    ]
    to_start, to_stop = plan_replicas(built, current, desired)
    assert to_start == start
    assert [slot.seq for slot in to_stop] == stopped
