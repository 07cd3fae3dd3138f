"""http mode's long-lived server under the replica's process limit: a fork bomb in a handler is stopped too.

In fork and python modes a call -- its process group, or its worker's -- is what fills the limit
(:mod:`faasd.watchdog.proclimit`). In http mode every call runs in the one server process
(:mod:`faasd.watchdog.http`), and the watchdog cannot tell which call forked: what it can tell apart is the
server's process group (the server and every process it forked that stayed in its group) and processes that
left it (``setsid``, ``setpgid``). So on the same tick as the other modes (every 50 ms while calls are in
flight, every second when idle), when the replica refused a fork at its limit:

* every process of the replica's cgroup outside the server's process group (and not the watchdog's own) is
  stopped, then killed -- the sweep of "Processes that left their call"; the server goes on serving, and
  the calls in flight are not blamed for what a process that left them did;
* when the server's process group itself holds the limit (nothing left it: the lone-call rule; after a
  sweep: at least :data:`~faasd.watchdog.proclimit.CULPRIT_SHARE` of it), the server cannot be told from
  its forks: its whole group is killed, every call in flight answered 500 with the limit named (the same
  text as the other modes), and the server restarted -- logged as such -- as after any exit of it.

Either way the replica cools down (429 with ``Retry-After``, as in the other modes) before it takes new calls.
A process the server forked and never waited for stays its zombie until the server reaps it (or ends): that
is the server's own business, as under any init.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import TYPE_CHECKING

from faasd.logs import WARNING, LineLogger, event

if TYPE_CHECKING:
    from faasd.watchdog.http import HttpRunner

__all__ = ["check_server"]

log = LineLogger("faasd.watchdog")


def check_server(runner: HttpRunner, now: float) -> None:
    """On the tick: sweep what left the server's process group when the limit was reached, or kill the
    server's group when it holds the limit (see the module docstring)."""
    limit = runner.process_limit
    if not limit.active:
        return
    server = runner.pid
    culprit = limit.to_kill({server: runner} if server else {}, now)
    if culprit is None:
        return
    event(
        log,
        WARNING,
        "killing the function's server: its process group filled the replica's process limit; it restarts",
        pid=server,
        limit=limit.limit,
        calls=len(runner.calls),
    )
    runner.stats.count_kill("process_limit")
    message = limit.killed_message().decode().rstrip("\n")
    for call in list(runner.calls):
        if call not in runner.waiting:  # Sent to the server (or on the way): its answer will not come.
            runner.fail(call, 500, message)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server, signal.SIGKILL)
    limit.answered(now)
