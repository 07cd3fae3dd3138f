"""faasd.providers.local.cpuwatch: a failure of the CPU classes' loop is logged once and the loop goes on
(it runs in the local backend's nursery: an exception escaping it would stop the backend)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest
import trio
import trio.testing

from faasd.providers.local.cpuwatch import watch_cpu
from faasd.providers.local.state import Function
from faasd.sandbox.cgroups import Cgroups
from faasd.sandbox.cpuclass import INTERVAL_S


async def test_a_failing_pass_is_logged_once_and_the_loop_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    passes = 0

    def functions() -> Iterable[Function]:
        nonlocal passes
        passes += 1
        raise RuntimeError("unexpected")

    caplog.set_level(logging.ERROR, logger="faasd.providers.local")
    with trio.move_on_after(INTERVAL_S * 10.5):
        await watch_cpu(Cgroups("v1"), functions, lambda name: 0)
    assert passes == 10
    failures = [record for record in caplog.records if "CPU classes failed" in record.getMessage()]
    assert len(failures) == 1, [record.getMessage() for record in caplog.records]
    assert "unexpected" in str(failures[0].fields)  # type: ignore[attr-defined]
