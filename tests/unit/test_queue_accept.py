"""Accepting async calls in-process: the route (faasd/queue/route.py) in front of a real queue
(faasd/queue/queue.py) and a real ``queue.db`` -- no daemon, no replica: nothing is invoked because no
function has a replica and the queue's tasks are not started, so what is checked is acceptance alone.

* the 202 is sent only once the call's row is committed (read back, at the moment the 202 starts, by
  another connection to the file);
* a restart (a new queue on the same file) finds every accepted call;
* a full disk (SQLite's own ``database or disk is full``, forced with ``max_page_count``) is a 500 that
  does not tell an anonymous caller where the state dir is, and leaves nothing half-accepted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import trio

from faasd.gateway.invoke import Invoker
from faasd.gateway.metrics import GatewayMetrics
from faasd.gateway.proxy import UpstreamPool
from faasd.queue.queue import AsyncQueue, QueueLimits
from faasd.queue.route import AsyncRoute
from faasd.queue.settings import QueueDefaults
from faasd.queue.store import QueueDb
from faasd.registry import EndpointRegistry


def _queue(db: QueueDb) -> tuple[AsyncQueue, AsyncRoute]:
    invoker = Invoker(
        exists=lambda name: name == "echo",
        registry=EndpointRegistry(),
        metrics=GatewayMetrics(dict),
        pool=UpstreamPool(),
        upstream_timeout_s=5,
        ready_timeout_s=5,
        max_body_bytes=1024 * 1024,
    )
    queue = AsyncQueue(
        db,
        invoker,
        spec=lambda name: None,
        defaults=QueueDefaults(),
        limits=QueueLimits(body_bytes=1024 * 1024),
        attempt_timeout_s=lambda name: 10,
    )
    return queue, AsyncRoute(queue, invoker, exists=invoker.exists)


async def _post(
    route: AsyncRoute, path: str, body: bytes, on_start: Any = None, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
        "client": ("127.0.0.1", 40000),
    }
    sent = False
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> MutableMapping[str, Any]:
        nonlocal sent
        if sent:
            await trio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], dict(message["headers"])
            if on_start is not None:
                on_start()
        else:
            answer["body"] += message.get("body", b"")

    await route(scope, receive, send)
    return answer["status"], answer["headers"], answer["body"]


async def test_the_202_is_sent_once_the_call_is_on_disk_and_a_restart_finds_it(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    db = QueueDb.open(str(path))
    queue, route = _queue(db)
    rows_at_202: list[int] = []

    def count_rows() -> None:
        with sqlite3.connect(path) as other:  # another connection: sees only what is committed
            rows_at_202.append(other.execute("SELECT count(*) FROM calls").fetchone()[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.writer.run)
        for number in range(3):
            status, headers, body = await _post(
                route,
                "/async-function/echo.openfaas-fn/sub",
                b"call %d" % number,
                count_rows,
                [(b"x-call-id", b"c%d" % number)],
            )
            assert (status, body, headers[b"x-call-id"]) == (202, b"", b"c%d" % number)
        nursery.cancel_scope.cancel()
    assert rows_at_202 == [1, 2, 3]
    assert queue.stats()["echo"].queued == 3
    await db.aclose()

    db = QueueDb.open(str(path))  # as after a restart
    restarted, _ = _queue(db)
    assert await restarted.load() == 3
    assert restarted.stats()["echo"].queued == 3
    call = await db.load_call(1)
    assert call is not None and (call.call_id, call.function, call.target, call.body) == (
        "c0",
        "echo",
        b"/sub",
        b"call 0",
    )
    await db.aclose()


async def test_a_full_disk_is_a_500_that_names_no_file_and_accepts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state" / "queue.db"
    db = QueueDb.open(str(path))
    with sqlite3.connect(path) as other:
        pages = other.execute("PRAGMA page_count").fetchone()[0]
    db._writer.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full" past this
    queue, route = _queue(db)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.writer.run)
        status, _, body = await _post(route, "/async-function/echo", b"x" * 200_000)
        nursery.cancel_scope.cancel()
    assert status == 500
    assert body == b"The call could not be stored; it was not accepted (the daemon's log says why)\n"
    assert str(tmp_path).encode() not in body
    [record] = [record for record in caplog.records if record.getMessage() == "cannot write the async queue"]
    error = record.fields["error"]  # type: ignore[attr-defined]
    assert "database or disk is full" in error and str(path) in error  # the operator learns why
    assert queue.stats() == {} or queue.stats()["echo"].queued == 0
    await db.aclose()
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM calls").fetchone()[0] == 0
