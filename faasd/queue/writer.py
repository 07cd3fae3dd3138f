"""The one task that writes ``queue.db``: group commit.

Every write of the queue -- an accepted call, a retry's schedule, a stored answer, a finished call's
delete -- is an :data:`~faasd.queue.store.Op` handed to :class:`Writer`. Its task takes whatever is
waiting (up to :data:`MAX_BATCH_OPS` operations and :data:`MAX_BATCH_BYTES` of bodies) and commits it
in one transaction: with ``synchronous=FULL`` each commit is an fsync, and concurrent accepts share
it instead of queueing for one each. Operations are applied in the order they were handed over.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import trio

from faasd.errors import StateError
from faasd.logs import event
from faasd.queue.store import AddCall, Op, QueueDb

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_OPS", "Writer"]

log = logging.getLogger(__name__)

MAX_BATCH_OPS = 1000
MAX_BATCH_BYTES = 16 * 1024 * 1024
"""One transaction holds at most this many operations and body bytes."""


class _Pending:
    __slots__ = ("done", "error", "op", "result")

    def __init__(self, op: Op | None) -> None:
        self.op = op
        self.done = trio.Event()
        self.result: int | None = None
        self.error: StateError | None = None


class Writer:
    """Hands operations to the writing task (:meth:`run`) and, for :meth:`write`, waits for the commit."""

    def __init__(self, db: QueueDb) -> None:
        self.db = db
        self.batches = 0
        self._send, self._receive = trio.open_memory_channel[_Pending](math.inf)

    def __repr__(self) -> str:
        return f"<Writer batches={self.batches} waiting={self._receive.statistics().current_buffer_used}>"

    async def write(self, op: Op | None) -> int | None:
        """Have ``op`` committed -- None: everything handed over before it -- and return its result
        (the ``seq`` of an :class:`~faasd.queue.store.AddCall`).

        Raises:
            StateError: its transaction failed.
        """
        pending = _Pending(op)
        self._send.send_nowait(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def write_later(self, op: Op) -> None:
        """Have ``op`` committed soon, without waiting (a failure is logged)."""
        self._send.send_nowait(_Pending(op))

    async def run(self) -> None:
        """Commit batches until cancelled (a batch being committed is finished first: the thread is
        not abandoned)."""
        receive = self._receive
        while True:
            batch = [await receive.receive()]
            size = _op_bytes(batch[0].op)
            while len(batch) < MAX_BATCH_OPS and size < MAX_BATCH_BYTES:
                try:
                    pending = receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(pending)
                size += _op_bytes(pending.op)
            ops = [pending.op for pending in batch if pending.op is not None]
            try:
                results: Sequence[int | None] = await self.db.apply(ops) if ops else []
            except StateError as exc:
                event(log, logging.ERROR, "cannot write the async queue", error=exc.message, operations=len(ops))
                for pending in batch:
                    pending.error = exc
                    pending.done.set()
                continue
            self.batches += 1
            answers = iter(results)
            for pending in batch:
                if pending.op is not None:
                    pending.result = next(answers)
                pending.done.set()


def _op_bytes(op: Op | None) -> int:
    if isinstance(op, AddCall):
        return len(op.body)
    return len(getattr(op, "data", b"")) + len(getattr(op, "body", None) or b"")
