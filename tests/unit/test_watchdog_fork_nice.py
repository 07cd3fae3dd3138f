"""A fork-mode call's process runs nicer than its watchdog, with or without a watched process limit.

Why it matters: at c16 the watchdog otherwise waited for a CPU behind its own calls' processes (a third of
its time) while the calls it could have started left the CPUs idle. ``nice`` (coreutils, no arguments)
prints the niceness it runs at; the runner, its loop and the spawn are real.
"""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from faasd.sandbox import enter
from faasd.watchdog.config import WatchdogConfig
from faasd.watchdog.fork import ForkRunner
from faasd.watchdog.metrics import WatchdogStats
from faasd.watchdog.proclimit import CALL_NICE
from tests.helpers import parsed_request

pytestmark = pytest.mark.skipif(shutil.which("nice") is None, reason="needs coreutils' nice")


def _call(fprocess: str) -> tuple[int, bytes]:
    """One call of ``fprocess`` through a fork-mode runner: its status and body."""

    async def main() -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        runner = ForkRunner(WatchdogConfig.from_env({"fprocess": fprocess}), WatchdogStats(), loop)
        answered: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        runner.start_call(parsed_request(), lambda result: answered.set_result((result[0], result[1])))  # type: ignore[arg-type]
        try:
            return await asyncio.wait_for(answered, 10)
        finally:
            await runner.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["fork", "streaming"])
def test_a_call_runs_nicer_than_its_watchdog_without_a_pids_cgroup(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(enter._kept, "pev", raising=False)  # No watched limit.
    if mode == "streaming":
        from faasd.watchdog.streaming import StreamingRunner

        monkeypatch.setattr("tests.unit.test_watchdog_fork_nice.ForkRunner", StreamingRunner)
    # Not ``nice`` itself: the watchdog lowers the call's process right after starting it, and on two CPUs a
    # process that reads its niceness at once can run before that (seen once in CI: 0). What counts is the
    # call's work, which runs after: a shell that waits a moment, then ``nice``.
    status, body = _call("sh -c 'sleep 0.05; nice'")
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + CALL_NICE)
    assert status == 200
    assert int(body) == expected
