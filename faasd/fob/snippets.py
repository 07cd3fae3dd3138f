"""Flock-of-Birds snippets in the daemon: each one stored in SQLite and run as the function ``fob-<id>``.

The seed kept its snippets in the dispatcher's own directory and lost them all when it restarted; here
the source is a row of the ``snippets`` table (:mod:`faasd.store`) and the function that runs it is a
stored function like any other, deployed through :class:`~faasd.service.FunctionService` (so it runs
sandboxed, scales, shows in ``faasd status`` and ``/metrics``, and is restored after a restart).

**Creating** (``POST /api/gen``): check the source (:mod:`faasd.fob.checker`: compile only, in a child
process), store the row, deploy the function, then wait until a replica is ready -- the answer comes
once the snippet is callable.
A snippet whose top level fails in its replica (an import error, ``callme`` not a function) never gets
ready: that is a 400 naming the error, and the snippet and its function are removed again.

**Deleting** (``DELETE /api/gen/{id}``): the row first, then the function. ``faasd rm fob-<id>`` (any
removal of the function) deletes the row after the fact.

**Crash consistency.** A snippet exists once its *function* is stored: the function is written last on
create and removed last on delete, so at start :meth:`SnippetService.run` settles any half-done operation
by that rule -- a row without its function (a create that never answered, a ``faasd rm`` whose row was not
deleted yet) is dropped; a function labelled as a snippet without its row (a delete cut short) is removed;
a snippet whose stored function differs from what this faasd would deploy now (a new driver after an
upgrade, another ``snippet_timeout``) is deployed again. That settling needs the function store to be
the truth, so it is done for the local backend; with a backend that keeps its deployments itself
(Swarm, Marathon) the rows are loaded and nothing is removed at start.

The gateway reads :meth:`SnippetService.function_of` on every ``/api/call`` (a dict lookup).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import trio

from faasd.errors import FaasdError, FunctionNotFound, InvalidRequest, NoReplicaAvailable
from faasd.fob.checker import SourceChecker
from faasd.fob.source import SNIPPET_FILE, SourceError
from faasd.fob.spec import function_name, snippet_id_of, snippet_spec
from faasd.logs import event
from faasd.providers.types import Endpoint, LogRequest
from faasd.registry import EndpointRegistry
from faasd.service import FunctionService
from faasd.store import AsyncStore

__all__ = ["Snippet", "SnippetFailed", "SnippetService"]

log = logging.getLogger(__name__)

READY_POLL_S = 0.05
"""While a new snippet starts: how often its function's state is read (readiness itself wakes at once)."""
LOG_LINES_READ = 200
"""A snippet that failed to start: the last lines of its log searched for the reason."""
LOG_WAIT_S = 3.0
LOG_POLL_S = 0.2
"""A snippet that failed to start: how long its log is read again until the reason shows up. The local
backend's log is written before the failure is reported; Swarm's reaches the manager a moment after the
task's exit is seen."""
_IMPORT_ERROR = re.compile(r'error="cannot import [^:"]*handler\.py: ((?:[^"\\]|\\.)*)"')
_SNIPPET_LINE = re.compile(rf'File \\?"[^"\\]*/{re.escape(SNIPPET_FILE)}\\?", line (\d+)')
"""A traceback's line about the snippet, as the watchdog logs it (``text="  File \\"/home/app/snippet.py\\", ...``)."""


class SnippetFailed(SourceError):
    """The snippet compiled but failed in its replica before it could be called (400): its top level
    raised, or ``callme`` is not a function."""


@dataclass(frozen=True, slots=True)
class Snippet:
    """A snippet the gateway routes to (its source stays in the store)."""

    id: str
    language: str
    created_at: datetime

    @property
    def function(self) -> str:
        return function_name(self.id)


class SnippetService:
    """Snippets: the durable rows, their functions, and the id -> function map the gateway reads.

    Args:
        timeout_s: ``snippet_timeout``, how long one call may run.
        ready_timeout_s: how long ``POST /api/gen`` waits for the new snippet's first ready replica.
        persistent: the backend keeps its deployments itself (see the module docstring).
    """

    def __init__(
        self,
        store: AsyncStore,
        service: FunctionService,
        registry: EndpointRegistry,
        *,
        timeout_s: float,
        ready_timeout_s: float,
        persistent: bool = False,
        checker: SourceChecker | None = None,
    ) -> None:
        self.store = store
        self.checker = checker or SourceChecker()
        self.service = service
        self.registry = registry
        self.timeout_s = timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.persistent = persistent
        self._snippets: dict[str, Snippet] = {}
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<SnippetService snippets={len(self._snippets)}>"

    # -- what the gateway reads -------------------------------------------------------------------
    def function_of(self, snippet_id: str) -> str | None:
        """The function running ``snippet_id``, or None when there is no such snippet."""
        snippet = self._snippets.get(snippet_id)
        return snippet.function if snippet is not None else None

    def ids(self) -> list[str]:
        """Every snippet's id, oldest first (``GET /api/stats``)."""
        return [snippet.id for snippet in sorted(self._snippets.values(), key=lambda s: (s.created_at, s.id))]

    def get(self, snippet_id: str) -> Snippet | None:
        return self._snippets.get(snippet_id)

    def endpoint(self, snippet_id: str) -> Endpoint | None:
        """A ready replica of the snippet (``GET /api/meta/{id}``), or None.

        Raises:
            FunctionNotFound: no such snippet.
        """
        name = self._require(snippet_id)
        endpoints = self.registry.get(name)
        return endpoints[0] if endpoints else None

    async def source(self, snippet_id: str) -> bytes:
        """The snippet's source as it was uploaded (``GET /api/cs/{id}``).

        Raises:
            FunctionNotFound: no such snippet.
        """
        self._require(snippet_id)
        source = await self.store.get_snippet_source(snippet_id)
        if source is None:
            raise FunctionNotFound(f"no snippet with id {snippet_id}")
        return source

    # -- start-up ---------------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the stored snippets (before the gateway serves: the first call finds them)."""
        for row in await self.store.list_snippets():
            self._snippets[row.id] = Snippet(id=row.id, language=row.language, created_at=row.created_at)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The snippets' background work: start the source checker (so the first upload need not wait
        for it), settle what a crash left half done (module docstring), then delete the rows of
        snippets whose functions are removed (:meth:`function_removed`). Runs until cancelled, then
        stops the checker."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                nursery.start_soon(self.checker.warm)
                try:
                    await self._settle()
                except FaasdError as exc:
                    event(log, logging.ERROR, "cannot settle the stored snippets", error=exc.message)
                await trio.sleep_forever()
        finally:
            await self.checker.aclose()

    async def _settle(self) -> None:
        if self.persistent:
            return
        rows = {row.id: row for row in await self.store.list_snippets()}
        for snippet_id, row in rows.items():
            name = function_name(snippet_id)
            stored = self.service.stored(name)
            if stored is None:
                event(log, logging.WARNING, "snippet without its function: dropped", snippet=snippet_id)
                await self._drop(snippet_id)
                continue
            try:
                spec = snippet_spec(snippet_id, row.language, row.source, timeout_s=self.timeout_s)
            except InvalidRequest as exc:
                event(log, logging.ERROR, "cannot redeploy snippet", snippet=snippet_id, error=exc.message)
                continue
            if stored.spec != spec:
                event(log, logging.INFO, "snippet redeployed with this faasd's driver and settings", snippet=snippet_id)
                try:
                    await self.service.deploy(spec)
                except FaasdError as exc:
                    event(log, logging.ERROR, "cannot redeploy snippet", snippet=snippet_id, error=exc.message)
        for name in self.service.names():
            stored = self.service.stored(name)
            orphan = snippet_id_of(stored.spec) if stored is not None else None
            if orphan is not None and orphan not in rows:
                event(log, logging.WARNING, "function of a deleted snippet: removed", function=name)
                with contextlib.suppress(FunctionNotFound):
                    await self.service.remove(name)

    # -- operations -------------------------------------------------------------------------------
    async def create(self, source: bytes, language: str | None = None) -> str:
        """Check, store and deploy a snippet; return its id once it is callable.

        Raises:
            SourceError: unsupported language, or a source that cannot be used (400, line and column).
            SnippetFailed: it compiled but failed at import in its replica (400).
            NoReplicaAvailable: it was not ready within ``ready_timeout`` (503); it is removed again.
            FaasdError: the backend refused it (its status); nothing is left behind.
        """
        checked = await self.checker.check(source, language)
        snippet_id = str(uuid.uuid4())
        name = function_name(snippet_id)
        spec = snippet_spec(snippet_id, checked.language, checked.source, timeout_s=self.timeout_s)
        row = await self.store.add_snippet(snippet_id, checked.language, checked.source)
        try:
            await self.service.deploy(spec)
            await self._wait_ready(name)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._undo(snippet_id)
            raise
        self._snippets[snippet_id] = Snippet(id=snippet_id, language=row.language, created_at=row.created_at)
        event(log, logging.INFO, "snippet created", snippet=snippet_id, function=name, bytes=len(source))
        return snippet_id

    async def remove(self, snippet_id: str) -> None:
        """Delete a snippet: its row, then its function.

        Raises:
            FunctionNotFound: no such snippet.
        """
        name = self._require(snippet_id)
        del self._snippets[snippet_id]  # Calls to it are 404 from now on.
        await self.store.delete_snippet(snippet_id)
        with contextlib.suppress(FunctionNotFound):
            await self.service.remove(name)
        event(log, logging.INFO, "snippet deleted", snippet=snippet_id)

    def function_removed(self, name: str) -> None:
        """A function was removed (``faasd rm``, or the backend lost it): if it ran a snippet, the
        snippet goes too (its row is deleted in the background; see "Crash consistency")."""
        stored_id = name.removeprefix("fob-")
        if name == stored_id or stored_id not in self._snippets:
            return
        del self._snippets[stored_id]
        event(log, logging.INFO, "snippet deleted with its function", snippet=stored_id, function=name)
        if self._nursery is not None:
            self._nursery.start_soon(self._drop, stored_id)

    # -- helpers ----------------------------------------------------------------------------------
    def _require(self, snippet_id: str) -> str:
        snippet = self._snippets.get(snippet_id)
        if snippet is None:
            raise FunctionNotFound(f"no snippet with id {snippet_id[:80]}")
        return snippet.function

    async def _drop(self, snippet_id: str) -> None:
        """Delete a row in the background (errors logged: this runs in the service's nursery)."""
        try:
            await self.store.delete_snippet(snippet_id)
        except FaasdError as exc:
            event(log, logging.ERROR, "cannot delete a snippet's row", snippet=snippet_id, error=exc.message)

    async def _undo(self, snippet_id: str) -> None:
        """A create that failed: remove its function (if it got that far), then its row."""
        name = function_name(snippet_id)
        try:
            if self.service.exists(name):
                await self.service.remove(name)
            await self.store.delete_snippet(snippet_id)
        except FaasdError as exc:  # Settled at the next start (see "Crash consistency").
            event(log, logging.ERROR, "cannot undo a failed snippet", snippet=snippet_id, error=exc.message)

    async def _wait_ready(self, name: str) -> None:
        """Until ``name`` has a ready replica.

        Raises:
            SnippetFailed: its replicas fail at start because of the snippet (the import error is read
                from the function's log).
            NoReplicaAvailable: not ready within ``ready_timeout_s`` (or failing for another reason).
        """
        deadline = trio.current_time() + self.ready_timeout_s
        while not self.registry.get(name):
            status = await self.service.status(name)
            if status.state == "failed":
                error = await self._import_error(name)
                log_deadline = trio.current_time() + LOG_WAIT_S
                while error is None and trio.current_time() < log_deadline:
                    await trio.sleep(LOG_POLL_S)
                    error = await self._import_error(name)
                if error is not None:
                    raise error
                raise NoReplicaAvailable(f"the snippet's function cannot start: {status.reason}")
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise NoReplicaAvailable(f"the snippet was not ready within {self.ready_timeout_s:g}s")
            await self.registry.wait_for(name, min(remaining, READY_POLL_S))

    async def _import_error(self, name: str) -> SnippetFailed | None:
        """Why the snippet's worker could not start, from the function's log: the driver's import of
        the snippet raised (and where, when the traceback names a line of the snippet)."""
        lines: list[str] = []
        with contextlib.suppress(FaasdError):
            async with contextlib.aclosing(self.service.logs(LogRequest(name=name, tail=LOG_LINES_READ))) as logs:
                async for message in logs:
                    lines.append(message.text)
        for index in range(len(lines) - 1, -1, -1):
            match = _IMPORT_ERROR.search(lines[index])
            if match is None:
                continue
            reason = re.sub(r"\\(.)", r"\1", match.group(1))
            line = None
            for earlier in reversed(lines[:index]):
                found = _SNIPPET_LINE.search(earlier)
                if found:
                    line = int(found.group(1))
                    break
            where = f"line {line}: " if line else ""
            return SnippetFailed(f"{where}the snippet failed when its replica imported it: {reason}", line)
        return None
