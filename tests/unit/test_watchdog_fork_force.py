"""ForkCall.force_finish on a call the client abandoned, whose leader is not reaped yet.

A call killed for ``client_gone`` and still not finished a second later (its pipes held open, or a
busy machine that has not let the killed process die) is force-finished from the deadline tick. Its
leader may still be dying then: ``force_finish`` marks the status -1, which is no wait status, and
computing the (unwanted) answer from it raised ``ValueError`` out of the tick (seen once under load in
``test_fd_count_stays_flat_over_thousands_of_bad_calls``). Real process, real loop, real pipes.
"""

from __future__ import annotations

import asyncio
import os
import signal

from faasd.watchdog.config import WatchdogConfig
from faasd.watchdog.fork import ForkRunner
from faasd.watchdog.metrics import WatchdogStats
from tests.helpers import parsed_request


def test_force_finishing_an_abandoned_call_whose_leader_still_runs_does_not_raise() -> None:
    async def main() -> tuple[int | None, list[object]]:
        loop = asyncio.get_running_loop()
        runner = ForkRunner(WatchdogConfig.from_env({"fprocess": "sleep 30"}), WatchdogStats(), loop)
        answers: list[object] = []
        call = runner.start_call(parsed_request(), answers.append)  # type: ignore[arg-type]
        assert call is not None and call.pid > 0  # alone: spawned on the loop, at once
        pid = call.pid
        os.kill(pid, signal.SIGSTOP)  # it cannot exit on its own meanwhile
        call._done = None  # abandoned, as HttpConnection.connection_lost -> abandon() does ...
        call.kill_reason = "client_gone"  # ... but the SIGKILL not yet delivered: the leader still runs
        try:
            call.force_finish()  # raised ValueError: invalid wait status: -1
            status = call.status
        finally:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            await runner.aclose()
        return status, answers

    status, answers = asyncio.run(main())
    assert status == -1  # the leader was not reaped: the path that raised
    assert answers == []  # abandoned: nobody is answered
