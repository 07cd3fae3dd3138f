"""A fork-mode call that cannot start because its replica is at its process limit is told so.

With a pids cgroup the kernel refuses a fork (``EAGAIN``) once a fork bomb filled the replica's
``pids.max``. The answer names the limit and its label instead of the errno's text. Calls in flight
together need no thread either (a thread counts as a process, and the kernel would refuse it too). The
kernel's refusal is stood in for at the spawn (a real one depends on the moment a bomb fills the limit:
tests/reliability/test_faults.py runs that, and accepts any 500); the runner, loop and pipes are real.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.sandbox import enter
from faasd.watchdog import fork as fork_module
from faasd.watchdog.config import WatchdogConfig
from faasd.watchdog.fork import ForkRunner
from faasd.watchdog.metrics import WatchdogStats
from tests.helpers import parsed_request

LIMIT = 64
EXPECTED = f"Cannot start process: its replica is at its process limit of {LIMIT} (com.faasd.limits.processes)\n"


@pytest.fixture
def pids_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A replica with a pids cgroup, as :mod:`faasd.sandbox.enter` leaves it (``pids.events`` kept open)."""
    events = tmp_path / "pids.events"
    events.write_text("max 0\n")
    fd = os.open(events, os.O_RDONLY)
    monkeypatch.setitem(enter._kept, "pev", fd)
    monkeypatch.setitem(enter._kept, "plim", LIMIT)
    yield
    os.close(fd)


def _answers(count: int) -> list[tuple[int, bytes]]:
    """Start ``count`` calls of ``sleep 30`` at once, then stop those that started (503); every answer's
    status and body."""

    async def main() -> list[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        runner = ForkRunner(WatchdogConfig.from_env({"fprocess": "sleep 30"}), WatchdogStats(), loop)
        answers: list[tuple[int, bytes]] = []
        for _ in range(count):
            runner.start_call(parsed_request(), lambda result: answers.append(result[:2]))  # type: ignore[arg-type]
        runner.kill_all("shutdown")
        for _ in range(250):
            if len(answers) == count:
                break
            await asyncio.sleep(0.02)
        await runner.aclose()
        return answers

    return asyncio.run(main())


def test_a_fork_the_kernel_refused_names_the_limit(pids_cgroup: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object) -> int:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(fork_module, "spawn", refused)
    assert _answers(1) == [(500, EXPECTED.encode())]


def test_calls_at_once_start_without_a_thread(pids_cgroup: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three calls in flight together all run (each answered 503 by the shutdown that stops them) while no
    thread can start: when spawns went to threads, the kernel's refusal of one at a full ``pids.max``
    failed a call that a fork could still have started."""

    def refused(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    answers = _answers(3)
    assert [status for status, _ in answers] == [503, 503, 503], answers


def test_without_a_pids_cgroup_the_kernels_reason_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(enter._kept, "pev", raising=False)

    def refused(*args: object) -> int:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(fork_module, "spawn", refused)
    assert _answers(1) == [(500, f"Cannot start process: {os.strerror(errno.EAGAIN)}\n".encode())]
