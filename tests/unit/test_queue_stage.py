"""The async queue as the daemon's second stage (faasd/queue/stage.py), in-process with a real
``queue.db``: a call that arrives before the queue is loaded waits for it and is then stored (202),
not refused; until then the autoscaler and the metrics read an empty queue; a ``queue.db`` that cannot
be opened ends the stage with the error, and a call waiting for it gets a 503 at once, not a hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from faasd.errors import StateError
from faasd.queue.stage import QueueStage
from faasd.queue.store import QueueDb
from tests.unit.test_queue_accept import _post, _queue


async def test_a_call_before_the_load_waits_for_it_and_is_stored(tmp_path: Path) -> None:
    built: list[float] = []

    def build(db: QueueDb):  # type: ignore[no-untyped-def]
        built.append(trio.current_time())
        return _queue(db)

    stage = QueueStage(build)
    shutdown = trio.Event()
    answers: list[tuple[int, bytes]] = []

    async def early_call() -> None:
        status, headers, _ = await _post(stage, "/async-function/echo", b"early")  # type: ignore[arg-type]
        answers.append((status, headers[b"x-call-id"]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(early_call)
        await trio.sleep(0.2)  # The call is in: it waits, the queue is not even opened.
        assert answers == [] and built == [] and stage.stats() == {} and stage.waiting_load("echo") == 0.0
        await nursery.start(stage.run, str(tmp_path / "queue.db"), shutdown, 8080)
        with trio.fail_after(10):
            while not (stage.gate.opened and answers):
                await trio.sleep(0.01)
        assert answers[0][0] == 202
        assert stage.queue is not None and stage.stats().keys() == stage.queue.stats().keys() == {"echo"}
        assert stage.stats()["echo"].queued == 1
        shutdown.set()
        await stage.drain(1.0)
        nursery.cancel_scope.cancel()
    await stage.aclose()

    db = QueueDb.open(str(tmp_path / "queue.db"))  # Durable: a restart finds it.
    restarted, _ = _queue(db)
    assert await restarted.load() == 1
    await db.aclose()


async def test_an_unusable_queue_db_ends_the_stage_and_answers_a_waiting_call(tmp_path: Path) -> None:
    (tmp_path / "queue.db").mkdir()  # Not a file: SQLite cannot open it.
    stage = QueueStage(_queue)
    answers: list[int] = []

    async def early_call() -> None:
        answers.append((await _post(stage, "/async-function/echo", b"x"))[0])  # type: ignore[arg-type]

    with pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(early_call)
            await trio.sleep(0.05)
            await stage.run(str(tmp_path / "queue.db"), trio.Event(), 8080)
    assert raised.group_contains(StateError, match="queue.db: Is a directory")
    assert answers == [503]
