"""The async calls in SQLite: ``<state_dir>/queue.db``, apart from ``faasd.db``.

Same discipline as :mod:`faasd.store`: stdlib ``sqlite3``, WAL journaling, ``synchronous=FULL`` (a
commit is on disk before it returns), errors as :class:`~faasd.errors.StateError` naming the file, and
the file (with its ``-wal``/``-shm`` companions) private to the daemon's user: bodies may hold secrets.
A file of its own because every accepted call is a write: its commits never wait behind a deploy's.

Two connections, each used by one thread at a time (:class:`QueueDb`): the **writer**, which applies
batches of :data:`Op` in one transaction each (group commit: many accepted calls share one fsync), and
the **reader**, which loads a call's request (and stored result) when a worker takes it. In WAL mode
the reader never waits for the writer.

A row lives from the call's acceptance until it is finished (delivered, or given up); what a worker
learnt on the way -- attempts, when to try next, the function's answer while its callback is retried --
is written to the row, so a restart resumes each call where it was (at-least-once: a call whose
invocation or callback was under way when the daemon died is done again). A function's answer larger
than :data:`PART_BYTES` is stored in parts (``result_parts``) as it arrives, so no answer is ever
held in memory whole.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import trio

from faasd.errors import StateError

__all__ = [
    "PART_BYTES",
    "AddCall",
    "AddPart",
    "DeleteCall",
    "IndexRow",
    "Op",
    "QueueDb",
    "Reschedule",
    "SaveResult",
    "StoredCall",
    "StoredResult",
]

SCHEMA_VERSION = 1
PART_BYTES = 1024 * 1024
"""A function's answer beyond this is stored in parts of this size (and streamed from there)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    function TEXT NOT NULL,
    method TEXT NOT NULL,
    target BLOB NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    callback_url TEXT,
    accepted_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    result_status INTEGER,
    result_headers TEXT,
    result_seconds REAL,
    result_body BLOB,
    result_length INTEGER
);
CREATE TABLE IF NOT EXISTS result_parts (
    seq INTEGER NOT NULL,
    part INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (seq, part)
);
"""

P = ParamSpec("P")
T = TypeVar("T")
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class AddCall:
    """Store an accepted call; the op's result is its ``seq``."""

    call_id: str
    function: str
    method: str
    target: bytes
    headers: Headers
    body: bytes
    callback_url: str | None
    accepted_at: float


@dataclass(frozen=True, slots=True)
class DeleteCall:
    seq: int


@dataclass(frozen=True, slots=True)
class Reschedule:
    """Count the attempts made so far and set when to try next (Unix time)."""

    seq: int
    attempts: int
    callback_attempts: int
    not_before: float


@dataclass(frozen=True, slots=True)
class SaveResult:
    """The function's answer, kept while its callback is retried. ``body`` None: it is in parts."""

    seq: int
    status: int
    headers: Headers
    seconds: float
    body: bytes | None
    length: int


@dataclass(frozen=True, slots=True)
class AddPart:
    seq: int
    part: int
    data: bytes


Op = AddCall | DeleteCall | Reschedule | SaveResult | AddPart


@dataclass(frozen=True, slots=True)
class IndexRow:
    """What the queue keeps in memory of a stored call (no body)."""

    seq: int
    call_id: str
    function: str
    accepted_at: float
    stored_bytes: int
    attempts: int
    callback_attempts: int
    not_before: float
    has_result: bool


@dataclass(frozen=True, slots=True)
class StoredResult:
    status: int
    headers: Headers
    seconds: float
    body: bytes | None
    """None: in ``length`` bytes of parts (:meth:`QueueDb.read_part`)."""
    length: int


@dataclass(frozen=True, slots=True)
class StoredCall:
    seq: int
    call_id: str
    function: str
    method: str
    target: bytes
    headers: Headers
    body: bytes
    callback_url: str | None
    accepted_at: float
    result: StoredResult | None


class QueueDb:
    """``queue.db``, for trio code: every call runs on a worker thread (see the module docstring).

    Resource handling: the caller owns it and must :meth:`aclose` it.
    """

    def __init__(self, path: str, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(1)

    @classmethod
    def open(cls, path: str) -> QueueDb:
        """Open (creating if needed) the database at ``path``. Synchronous: call it before serving.

        Raises:
            StateError: it cannot be opened or created, is not an SQLite database, or was written by a
                newer faasd; the message names the file.
        """
        writer = reader = None
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            _make_private(path)
            writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute("PRAGMA synchronous=FULL")
            writer.executescript(_SCHEMA)
            version = writer.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                writer.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StateError(f"{path} was written by a newer faasd (schema {version}); upgrade faasd")
            reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            _make_private(path)
        except BaseException as exc:
            for connection in (writer, reader):
                if connection is not None:
                    connection.close()
            if isinstance(exc, sqlite3.Error):
                raise StateError(f"{path}: {_sqlite_reason(exc)}") from exc
            if isinstance(exc, OSError):
                raise StateError(f"{exc.filename or path}: {exc.strerror or exc}") from exc
            raise
        return cls(path, writer, reader)

    async def _on(
        self, limiter: trio.CapacityLimiter, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        try:
            return await trio.to_thread.run_sync(lambda: function(*args, **kwargs), limiter=limiter)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {_sqlite_reason(exc)}") from exc

    # -- the writer -------------------------------------------------------------------------------
    async def apply(self, ops: Sequence[Op]) -> list[int | None]:
        """Apply ``ops`` in one transaction; each op's result (the ``seq`` of an :class:`AddCall`).

        Raises:
            StateError: nothing was applied (disk full, file gone); names the file.
        """
        return await self._on(self._write_limiter, self._apply, ops)

    def _apply(self, ops: Sequence[Op]) -> list[int | None]:
        db = self._writer
        results: list[int | None] = []
        with db:
            db.execute("BEGIN IMMEDIATE")
            for op in ops:
                results.append(_apply_one(db, op))
        return results

    # -- the reader -------------------------------------------------------------------------------
    async def load_index(self) -> list[IndexRow]:
        """Every stored call, oldest first, without bodies."""
        return await self._on(self._read_limiter, self._load_index)

    def _load_index(self) -> list[IndexRow]:
        rows = self._reader.execute(
            "SELECT seq, call_id, function, accepted_at, length(body), attempts, callback_attempts, not_before,"
            " result_status IS NOT NULL FROM calls ORDER BY seq"
        ).fetchall()
        return [
            IndexRow(seq, call_id, function, accepted_at, stored, attempts, callback_attempts, not_before, bool(done))
            for seq, call_id, function, accepted_at, stored, attempts, callback_attempts, not_before, done in rows
        ]

    async def load_call(self, seq: int) -> StoredCall | None:
        return await self._on(self._read_limiter, self._load_call, seq)

    def _load_call(self, seq: int) -> StoredCall | None:
        row = self._reader.execute(
            "SELECT seq, call_id, function, method, target, headers, body, callback_url, accepted_at,"
            " result_status, result_headers, result_seconds, result_body, result_length FROM calls WHERE seq = ?",
            (seq,),
        ).fetchone()
        if row is None:
            return None
        result = None
        if row[9] is not None:
            body = None if row[12] is None else bytes(row[12])
            result = StoredResult(row[9], _headers_from(row[10]), row[11], body, row[13])
        return StoredCall(
            seq=row[0],
            call_id=row[1],
            function=row[2],
            method=row[3],
            target=bytes(row[4]),
            headers=_headers_from(row[5]),
            body=bytes(row[6]),
            callback_url=row[7],
            accepted_at=row[8],
            result=result,
        )

    async def read_part(self, seq: int, part: int) -> bytes:
        return await self._on(self._read_limiter, self._read_part, seq, part)

    def _read_part(self, seq: int, part: int) -> bytes:
        row = self._reader.execute("SELECT data FROM result_parts WHERE seq = ? AND part = ?", (seq, part)).fetchone()
        if row is None:
            raise sqlite3.DatabaseError(f"part {part} of call {seq}'s stored answer is missing")
        return bytes(row[0])

    async def aclose(self) -> None:
        def close() -> None:
            self._writer.close()
            self._reader.close()

        await trio.to_thread.run_sync(close, limiter=self._write_limiter)


def _add(db: sqlite3.Connection, op: AddCall) -> int:
    cursor = db.execute(
        "INSERT INTO calls (call_id, function, method, target, headers, body, callback_url, accepted_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            op.call_id,
            op.function,
            op.method,
            op.target,
            _headers_to(op.headers),
            op.body,
            op.callback_url,
            op.accepted_at,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _delete(db: sqlite3.Connection, op: DeleteCall) -> None:
    db.execute("DELETE FROM calls WHERE seq = ?", (op.seq,))
    db.execute("DELETE FROM result_parts WHERE seq = ?", (op.seq,))


def _reschedule(db: sqlite3.Connection, op: Reschedule) -> None:
    db.execute(
        "UPDATE calls SET attempts = ?, callback_attempts = ?, not_before = ? WHERE seq = ?",
        (op.attempts, op.callback_attempts, op.not_before, op.seq),
    )


def _save_result(db: sqlite3.Connection, op: SaveResult) -> None:
    db.execute(
        "UPDATE calls SET result_status = ?, result_headers = ?, result_seconds = ?, result_body = ?,"
        " result_length = ? WHERE seq = ?",
        (op.status, _headers_to(op.headers), op.seconds, op.body, op.length, op.seq),
    )


def _add_part(db: sqlite3.Connection, op: AddPart) -> None:
    db.execute("INSERT OR REPLACE INTO result_parts (seq, part, data) VALUES (?, ?, ?)", (op.seq, op.part, op.data))


def _apply_one(db: sqlite3.Connection, op: Op) -> int | None:
    """Write one operation (the writer's transaction is open); an added call's seq, else None."""
    if isinstance(op, AddCall):
        return _add(db, op)
    if isinstance(op, DeleteCall):
        _delete(db, op)
    elif isinstance(op, Reschedule):
        _reschedule(db, op)
    elif isinstance(op, SaveResult):
        _save_result(db, op)
    else:
        _add_part(db, op)
    return None


def _headers_to(headers: Headers) -> str:
    return json.dumps([[name.decode("latin-1"), value.decode("latin-1")] for name, value in headers])


def _headers_from(text: str) -> Headers:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in json.loads(text)]


def _make_private(path: str) -> None:
    """chmod 0600 the database and whichever of its ``-wal``/``-shm`` files exist."""
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            os.chmod(name, 0o600)
        except FileNotFoundError:
            continue


def _sqlite_reason(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "file is not a database" in text:
        return "not an SQLite database (file is not a database): move it away to start afresh, or restore a backup"
    if "unable to open database file" in text:
        return "cannot open or create it (unable to open database file): is it a directory, or not writable?"
    return text
