"""The durable queue of async calls: acceptance, the workers, retries, callbacks, bounds.

A call is **accepted** (:meth:`AsyncQueue.accept`) only once its row is committed to ``queue.db``: the
route answers 202 after that, never before, so an accepted call survives a crash or ``kill -9``. Rows
are written by one writer task that commits whatever is waiting in one transaction (group commit), so
concurrent accepts share an fsync.

The **dispatcher** (one task) starts a worker task for the oldest ready call of each function while
that function has fewer than its concurrency (:class:`~faasd.queue.settings.QueueSettings`) running.
A **worker** loads the call, invokes the function through the gateway's invoke path
(:mod:`faasd.queue.worker`), and then:

* the function answered one of its retry codes (429, 502, 503 by default -- also the gateway's own
  503 "no ready replica" and 502 "replica failed or timed out") and attempts are left: the call waits
  its backoff and goes back in line;
* no ``X-Callback-Url``: done (the row is deleted);
* else the answer is POSTed there (:mod:`faasd.queue.callback`). Delivered or refused: done. Failed
  (no answer, 408, 429, 5xx): the answer is stored with the call and the callback retried with backoff
  up to ``async_callback_attempts`` times, then given up (logged and counted).

Everything a worker learns is written to the row before the call waits again, and a restart reloads
every row (:meth:`AsyncQueue.load`): **at-least-once**. A call whose invocation was under way when the
daemon died is invoked again; one whose callback was under way may be delivered twice. On a graceful
stop no new call is started and those running get up to ``shutdown_timeout`` to finish.

Bounds (each a ``faasd up`` key): calls waiting per function (``async_queue_size``, 429 when full) and in
all (``async_queue_total``, 503), bytes stored (``async_max_stored_size``, 503), the body of one call
(``max_body_size``, 413), attempts and callback attempts, and the bytes workers hold in memory
(:data:`MEMORY_BYTES`).
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from faasd.errors import FaasdError, InvalidRequest, StateError
from faasd.gateway.invoke import Invoker
from faasd.logs import event
from faasd.providers.types import FunctionSpec
from faasd.queue.callback import CallbackRule, CallbackUrl, deliver
from faasd.queue.hosts import LOOPBACK_ONLY, CallbackHosts
from faasd.queue.settings import QueueDefaults, QueueSettings, backoff_s
from faasd.queue.store import (
    PART_BYTES,
    AddCall,
    DeleteCall,
    IndexRow,
    QueueDb,
    Reschedule,
    SaveResult,
    StoredCall,
)
from faasd.queue.worker import (
    ByteBudget,
    Capture,
    Result,
    callback_headers,
    invoke_scope,
    marked,
    replay,
    stored_parts,
    stored_result,
)
from faasd.queue.writer import Writer

__all__ = ["MEMORY_BYTES", "AsyncQueue", "FunctionQueueFull", "QueueFull", "QueueLimits", "QueueStats"]

log = logging.getLogger(__name__)

MEMORY_BYTES = 64 * 1024 * 1024
"""Request bodies and answers the workers hold in memory at once, all calls together."""


class QueueFull(FaasdError):
    """The queue as a whole holds as many calls (or bytes) as it may: 503, retry later."""

    http_status = 503


class FunctionQueueFull(QueueFull):
    """This function's line is full: 429, the caller should slow down."""

    http_status = 429


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueLimits:
    per_function: int = 1000
    total: int = 10_000
    stored_bytes: int = 256 * 1024 * 1024
    body_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One function's line, as metrics and ``faasd status`` show it."""

    queued: int
    """Accepted calls not finished: waiting, running, or waiting to retry."""
    running: int
    oldest_s: float
    """Age of the oldest of them (0 when none)."""


@dataclass(slots=True)
class _Entry:
    seq: int
    function: str
    call_id: str
    accepted_at: float
    stored_bytes: int
    attempts: int = 0
    callback_attempts: int = 0
    has_result: bool = False


@dataclass(slots=True)
class _Line:
    """One function's calls."""

    entries: dict[int, _Entry] = field(default_factory=dict)
    """Every unfinished call by seq: oldest first."""
    ready: deque[_Entry] = field(default_factory=deque)
    delayed: list[tuple[float, int, _Entry]] = field(default_factory=list)
    """(not before, seq, entry), a heap."""
    running: int = 0
    invoking: int = 0
    """Of the running, those inside the function call now."""
    reserved: int = 0
    """Accepts waiting for their commit."""

    @property
    def idle(self) -> bool:
        return not self.entries and not self.running and not self.reserved


class AsyncQueue:
    """See the module docstring.

    Args:
        spec: ``spec(name)`` -- the function's spec (for its labels), or None when it is unknown.
        attempt_timeout_s: ``attempt_timeout_s(function)``, the longest one invocation may take, waiting for
            a replica included (a bound behind the gateway's own timeouts, which answer 502/503 first).
        on_event: ``on_event(function, what)`` for metrics: ``accepted``, ``retry``, ``callback_retry``,
            and the outcomes ``done``, ``delivered``, ``refused``, ``given_up``.
        callback_hosts: where callbacks may go besides loopback (``async_callback_hosts``).
    """

    def __init__(
        self,
        db: QueueDb,
        invoker: Invoker,
        *,
        spec: Callable[[str], FunctionSpec | None],
        defaults: QueueDefaults,
        limits: QueueLimits,
        attempt_timeout_s: Callable[[str], float],
        on_event: Callable[[str, str], None] = lambda function, what: None,
        callback_hosts: CallbackHosts = LOOPBACK_ONLY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.invoker = invoker
        self.spec = spec
        self.defaults = defaults
        self.limits = limits
        self.attempt_timeout_s = attempt_timeout_s
        self.on_event = on_event
        self.clock = clock
        self.callbacks = CallbackRule(callback_hosts)
        """Where callbacks may go; the daemon sets its ``gateway_port`` once the gateway is bound."""
        self._lines: dict[str, _Line] = {}
        self._total = 0
        self._reserved = 0
        self._stored_bytes = 0
        self._reserved_bytes = 0
        self._settings: dict[str, tuple[Mapping[str, str], Mapping[str, str], QueueSettings]] = {}
        self._budget = ByteBudget(MEMORY_BYTES)
        self._wakeup = trio.Event()
        self._idle = trio.Event()
        self._draining = False
        self._stopping_at: float | None = None
        self.writer = Writer(db)
        self._write = self.writer.write
        self._write_later = self.writer.write_later

    def __repr__(self) -> str:
        running = sum(line.running for line in self._lines.values())
        return f"<AsyncQueue calls={self._total} running={running} bytes={self._stored_bytes}>"

    # -- start and stop ---------------------------------------------------------------------------
    async def load(self) -> int:
        """Read every stored call into the lines (after a restart); the number of calls.

        Raises:
            StateError: the database cannot be read.
        """
        rows = await self.db.load_index()
        now = self.clock()
        for row in rows:
            self._index(row, now)
        return len(rows)

    def _index(self, row: IndexRow, now: float) -> None:
        entry = _Entry(
            row.seq,
            row.function,
            row.call_id,
            row.accepted_at,
            row.stored_bytes,
            row.attempts,
            row.callback_attempts,
            row.has_result,
        )
        line = self._line(row.function)
        line.entries[row.seq] = entry
        self._total += 1
        self._stored_bytes += row.stored_bytes
        if row.not_before > now:
            heapq.heappush(line.delayed, (row.not_before, row.seq, entry))
        else:
            line.ready.append(entry)

    async def run(self, shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer, the dispatcher and every worker, until cancelled; no new call starts once
        ``shutdown`` is set (see :meth:`drain`)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.writer.run)
            nursery.start_soon(self._stop_on, shutdown)
            task_status.started()
            await self._dispatch(nursery)

    async def _stop_on(self, shutdown: trio.Event) -> None:
        await shutdown.wait()
        self._stopping_at = trio.current_time()
        self._draining = True
        self._wake()

    async def drain(self, timeout_s: float) -> None:
        """Start no new call; wait for the running ones to finish, up to ``timeout_s`` after the shutdown
        began (or from now); then for every write handed over to be committed."""
        self._draining = True
        self._wake()
        with trio.move_on_at((self._stopping_at or trio.current_time()) + timeout_s):
            while any(line.running for line in self._lines.values()):
                await self._idle.wait()
        with trio.move_on_after(max(timeout_s, 5.0)):
            await self._write(None)

    # -- accepting --------------------------------------------------------------------------------
    def check_room(self, function: str, body_bytes: int = 0) -> None:
        """Raise when a call of ``body_bytes`` for ``function`` would not fit (cheap: called before the
        body is read, and again before it is stored).

        Raises:
            FunctionQueueFull: the function's line is full (429).
            QueueFull: the queue as a whole is (503).
        """
        limits = self.limits
        line = self._lines.get(function)
        queued = len(line.entries) + line.reserved if line is not None else 0
        if queued >= limits.per_function:
            raise FunctionQueueFull(
                f"The async queue of function {function} is full ({queued} calls, async_queue_size); retry later"
            )
        if self._total + self._reserved >= limits.total:
            raise QueueFull(f"The async queue is full ({limits.total} calls, async_queue_total); retry later")
        if self._stored_bytes + self._reserved_bytes + body_bytes > limits.stored_bytes:
            raise QueueFull(
                f"The async queue is full ({limits.stored_bytes} bytes stored, async_max_stored_size); retry later"
            )

    async def accept(self, call: AddCall) -> None:
        """Store ``call``; return once it is on disk (then it will be run, whatever happens next).

        Raises:
            QueueFull: no room (see :meth:`check_room`).
            StateError: it could not be stored.
        """
        size = len(call.body)
        self.check_room(call.function, size)
        line = self._line(call.function)
        line.reserved += 1
        self._reserved += 1
        self._reserved_bytes += size
        try:
            with trio.CancelScope(shield=True):  # Once written it must be indexed, client gone or not.
                seq = await self._write(call)
        finally:
            line.reserved -= 1
            self._reserved -= 1
            self._reserved_bytes -= size
        assert seq is not None
        entry = _Entry(seq, call.function, call.call_id, call.accepted_at, size)
        line.entries[seq] = entry
        line.ready.append(entry)
        self._total += 1
        self._stored_bytes += size
        self.on_event(call.function, "accepted")
        self._wake()

    # -- what others read -------------------------------------------------------------------------
    def stats(self) -> dict[str, QueueStats]:
        """Per function with calls queued or running (bounded: only functions that had calls accepted)."""
        now = self.clock()
        stats = {}
        for name, line in sorted(self._lines.items()):
            oldest = next(iter(line.entries.values()), None)
            age = max(0.0, now - oldest.accepted_at) if oldest is not None else 0.0
            stats[name] = QueueStats(queued=len(line.entries), running=line.running, oldest_s=age)
        return stats

    def waiting_load(self, function: str) -> float:
        """Queued work the autoscaler counts as load for ``function``: calls still to be invoked that
        its workers could run now -- waiting for a worker or for a retry -- up to the function's
        concurrency minus the calls the workers have in the function already (those the gateway's
        meter counts itself)."""
        line = self._lines.get(function)
        if line is None or not line.entries:
            return 0.0
        waiting = sum(not entry.has_result for entry in line.ready)
        waiting += sum(not entry.has_result for _, _, entry in line.delayed)
        free = max(0, self.settings(function).concurrency - line.invoking)
        return float(min(waiting, free))

    def settings(self, function: str) -> QueueSettings:
        """The function's queue settings (cached until its labels change)."""
        spec = self.spec(function)
        labels = spec.labels if spec is not None else {}
        annotations = spec.annotations if spec is not None else {}
        cached = self._settings.get(function)
        if cached is not None and cached[0] is labels and cached[1] is annotations:
            return cached[2]
        try:
            settings = QueueSettings.for_function(labels, annotations, self.defaults)
        except InvalidRequest as exc:  # Checked at deploy; one adopted from a backend may still be odd.
            event(log, logging.WARNING, "bad queue labels, using defaults", function=function, error=exc.message)
            settings = QueueSettings.for_function({}, {}, self.defaults)
        self._settings[function] = (labels, annotations, settings)
        return settings

    # -- the dispatcher ---------------------------------------------------------------------------
    def _line(self, function: str) -> _Line:
        line = self._lines.get(function)
        if line is None:
            line = self._lines[function] = _Line()
        return line

    def _wake(self) -> None:
        self._wakeup.set()

    async def _dispatch(self, nursery: trio.Nursery) -> None:
        while True:
            self._wakeup = trio.Event()
            now = self.clock()
            next_due = math.inf
            for name, line in list(self._lines.items()):
                while line.delayed and line.delayed[0][0] <= now:
                    line.ready.append(heapq.heappop(line.delayed)[2])
                if line.delayed:
                    next_due = min(next_due, line.delayed[0][0])
                if self._draining or not line.ready:
                    if line.idle:
                        del self._lines[name]
                        self._settings.pop(name, None)
                    continue
                concurrency = self.settings(name).concurrency
                while line.ready and line.running < concurrency:
                    entry = line.ready.popleft()
                    line.running += 1
                    nursery.start_soon(self._work, line, entry)
            with trio.move_on_after(max(0.0, next_due - now) if next_due < math.inf else math.inf):
                await self._wakeup.wait()

    def _delay(self, line: _Line, entry: _Entry, not_before: float) -> None:
        heapq.heappush(line.delayed, (not_before, entry.seq, entry))

    def _finish(self, line: _Line, entry: _Entry, outcome: str) -> None:
        """The call is done: forget it (its row is deleted by the writer, soon)."""
        if line.entries.pop(entry.seq, None) is not None:
            self._total -= 1
            self._stored_bytes -= entry.stored_bytes
            self._write_later(DeleteCall(entry.seq))
            self.on_event(entry.function, outcome)

    # -- a worker ---------------------------------------------------------------------------------
    async def _work(self, line: _Line, entry: _Entry) -> None:
        try:
            await self._advance(line, entry)
        except Exception as exc:  # A task boundary: one call's trouble (a full disk, a bug) stays its own.
            if isinstance(exc, StateError):
                event(log, logging.ERROR, "async call: database error", call_id=entry.call_id, error=exc.message)
            else:
                log.exception("async call %s of %s failed", entry.call_id, entry.function)
            if entry.seq in line.entries:
                self._delay(line, entry, self.clock() + self.defaults.retry_max_wait_s)
        finally:
            line.running -= 1
            self._idle.set()
            self._idle = trio.Event()
            self._wake()

    async def _advance(self, line: _Line, entry: _Entry) -> None:
        call = await self.db.load_call(entry.seq)
        if call is None:  # Removed under us (by hand?): nothing to do.
            self._finish(line, entry, "done")
            return
        result = stored_result(call)
        if result is None:
            result = await self._invoke(line, entry, call)
            if result is None:
                return  # Retried later.
        if call.callback_url is None:
            self._finish(line, entry, "done")
            return
        try:  # Checked when accepted; async_callback_hosts may have changed since (a restart).
            url = self.callbacks.check(call.callback_url)
        except InvalidRequest as exc:
            event(log, logging.WARNING, "callback given up", call_id=call.call_id, error=exc.message)
            self._finish(line, entry, "given_up")
            return
        await self._callback(line, entry, call, url, result)

    async def _invoke(self, line: _Line, entry: _Entry, call: StoredCall) -> Result | None:
        """One invocation; None when it is to be retried (already scheduled)."""
        settings = self.settings(call.function)
        retry_left = entry.attempts + 1 < settings.attempts
        capture = Capture(
            call.seq,
            keep_body=call.callback_url is not None,
            keep_status=lambda status: not (retry_left and status in settings.retry_codes),
            spill=self._write,
            limit=self.limits.body_bytes,
        )
        started = time.monotonic()
        line.invoking += 1
        try:
            reserve = len(call.body) + (PART_BYTES if call.callback_url else 0)
            async with self._budget.hold(reserve):
                timeout_s = self.attempt_timeout_s(call.function)
                with trio.move_on_after(timeout_s) as deadline:
                    try:
                        await self.invoker.invoke(
                            invoke_scope(call), replay(call.body), capture.send, call.function, call.target
                        )
                    except Exception as exc:  # The replica cut its answer short (or the like): a 502.
                        capture.fail(502, f"The function's answer failed: {exc or type(exc).__name__}")
                if deadline.cancelled_caught:
                    capture.fail(502, f"No complete answer from function {call.function} within {timeout_s:g}s")
                elif not capture.complete:
                    capture.fail(502, f"Function {call.function} gave no complete answer")
        finally:
            line.invoking -= 1
        seconds = time.monotonic() - started
        entry.attempts += 1
        if retry_left and capture.status in settings.retry_codes:
            wait = backoff_s(entry.attempts, settings.min_wait_s, settings.max_wait_s)
            event(
                log,
                logging.INFO,
                "async call retried",
                function=call.function,
                call_id=call.call_id,
                status=capture.status,
                attempt=entry.attempts,
                attempts=settings.attempts,
                wait_s=round(wait, 3),
            )
            await self._reschedule(line, entry, wait)
            self.on_event(call.function, "retry")
            return None
        stored = capture.parts > 0
        if stored:
            headers = marked(capture.headers, capture.truncated)
            await self._write(SaveResult(call.seq, capture.status, headers, seconds, None, capture.length))
            entry.has_result = True
            self._stored_bytes += capture.length
            entry.stored_bytes += capture.length
        return Result(capture.status, capture.headers, seconds, capture.body, capture.length, capture.truncated, stored)

    async def _callback(self, line: _Line, entry: _Entry, call: StoredCall, url: CallbackUrl, result: Result) -> None:
        headers = callback_headers(
            result.headers,
            call_id=call.call_id,
            function=call.function,
            status=result.status,
            seconds=result.seconds,
            truncated=result.truncated,
        )
        body = result.body if result.body is not None else stored_parts(self.db, call.seq, result.length)
        delivery = await deliver(
            url, headers, body, result.length, timeout_s=self.defaults.callback_timeout_s, guard=self.callbacks.guard
        )
        entry.callback_attempts += 1
        if delivery.ok:
            self._finish(line, entry, "delivered")
            return
        attempts = self.defaults.callback_attempts
        if delivery.final or entry.callback_attempts >= attempts:
            event(
                log,
                logging.WARNING,
                "callback given up",
                function=call.function,
                call_id=call.call_id,
                attempt=entry.callback_attempts,
                error=delivery.reason,
            )
            self._finish(line, entry, "refused" if delivery.status else "given_up")
            return
        wait = backoff_s(entry.callback_attempts, self.defaults.retry_wait_s, self.defaults.retry_max_wait_s)
        event(
            log,
            logging.WARNING,
            "callback failed; retrying",
            function=call.function,
            call_id=call.call_id,
            attempt=entry.callback_attempts,
            attempts=attempts,
            wait_s=round(wait, 3),
            error=delivery.reason,
        )
        if not result.stored:
            headers = marked(result.headers, result.truncated)
            self._write_later(SaveResult(call.seq, result.status, headers, result.seconds, result.body, result.length))
            result.stored = entry.has_result = True
            self._stored_bytes += result.length
            entry.stored_bytes += result.length
        await self._reschedule(line, entry, wait)
        self.on_event(call.function, "callback_retry")

    async def _reschedule(self, line: _Line, entry: _Entry, wait_s: float) -> None:
        not_before = self.clock() + wait_s
        await self._write(Reschedule(entry.seq, entry.attempts, entry.callback_attempts, not_before))
        self._delay(line, entry, not_before)
