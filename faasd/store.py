"""The daemon's desired state in SQLite: function specs with their replica counts, secrets, and
Flock-of-Birds snippets (their source; each runs as a function stored beside it, see :mod:`faasd.fob`).

Why SQLite (stdlib ``sqlite3``): one file in the state dir, transactions, and WAL journaling, so a
crash or a kill never loses an acknowledged deploy (``synchronous=FULL``: each commit is on disk before
the API answers). The backend is the truth for what runs; this is the truth for what should run.

:class:`Store` is synchronous and owns one connection; the daemon uses :class:`AsyncStore`, which runs
every call on a worker thread through ``trio.to_thread.run_sync`` with a limiter of one, so the event
loop never waits on disk and the connection is used by one thread at a time.

Error handling: a database that cannot be opened or used (not a database, a directory, unwritable, a
newer schema, disk full) is a :class:`~faasd.errors.StateError` naming the file -- at start-up one error
line, later a one-line 500 -- never an ``sqlite3`` traceback. A stored function that no longer makes a
valid spec (hand-edited, corrupted, or refused by a newer validation) is reported by
:meth:`Store.load_functions` apart from the others, so one bad row cannot stop a restore.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

import trio

from faasd.errors import InvalidRequest, StateError
from faasd.providers.types import FunctionSpec

__all__ = ["AsyncStore", "Store", "StoredFunction", "StoredSnippet", "UnreadableFunction"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    replicas INTEGER NOT NULL CHECK (replicas >= 0),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snippets (
    id TEXT PRIMARY KEY,
    language TEXT NOT NULL,
    source BLOB NOT NULL,
    created_at REAL NOT NULL
);
"""

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredFunction:
    spec: FunctionSpec
    replicas: int
    """Desired replicas."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredSnippet:
    """A Flock-of-Birds snippet: ``POST /api/gen``'s upload, as it came."""

    id: str
    language: str
    source: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UnreadableFunction:
    """A stored function whose row does not make a valid :class:`StoredFunction`."""

    name: str
    replicas: int
    """Its desired replicas when readable, else 0."""
    error: str
    """Why, in one line (e.g. the spec's first invalid field)."""


class Store:
    """Synchronous access to ``<state_dir>/faasd.db``; create with :meth:`open`."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: str) -> Store:
        """Open (creating if needed) the database at ``path`` with WAL and full sync.

        Resource handling: the caller owns the store and must :meth:`close` it. The file and its
        ``-wal``/``-shm`` companions are 0600 whatever the umask: the file is created 0600 before SQLite
        opens it (SQLite gives its companions the database's mode), and older ones are narrowed.

        Raises:
            StateError: the file cannot be opened or created, is not an SQLite database, or was
                written by a newer faasd; the message names the file.
        """
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            _make_private(path)
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                connection.executescript(_SCHEMA)
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version > SCHEMA_VERSION:
                    raise StateError(f"{path} was written by a newer faasd (schema {version}); upgrade faasd")
                _make_private(path)
            except BaseException:
                connection.close()
                raise
        except sqlite3.Error as exc:
            raise StateError(f"{path}: {_sqlite_reason(exc)}") from exc
        except OSError as exc:
            raise StateError(f"{exc.filename or path}: {exc.strerror or exc}") from exc
        return cls(connection, path)

    def close(self) -> None:
        self._db.close()

    # -- functions --------------------------------------------------------------------------------
    def put_function(self, spec: FunctionSpec, replicas: int) -> StoredFunction:
        """Insert or replace a function's spec and desired replicas (keeps its creation time)."""
        now = time.time()
        document = json.dumps(spec.to_json(), separators=(",", ":"), sort_keys=True)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO functions (name, spec, replicas, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, replicas=excluded.replicas,"
                " updated_at=excluded.updated_at",
                (spec.name, document, replicas, now, now),
            )
        stored = self.get_function(spec.name)
        assert stored is not None
        return stored

    def get_function(self, name: str) -> StoredFunction | None:
        row = self._db.execute(
            "SELECT spec, replicas, created_at, updated_at FROM functions WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else _function_from_row(row)

    def list_functions(self) -> list[StoredFunction]:
        """Every readable stored function (see :meth:`load_functions` for the others)."""
        return self.load_functions()[0]

    def load_functions(self) -> tuple[list[StoredFunction], list[UnreadableFunction]]:
        """Every stored function, by name: (readable ones, unreadable ones with the reason)."""
        rows = self._db.execute(
            "SELECT name, spec, replicas, created_at, updated_at FROM functions ORDER BY name"
        ).fetchall()
        readable: list[StoredFunction] = []
        unreadable: list[UnreadableFunction] = []
        for name, *row in rows:
            try:
                stored = _function_from_row(tuple(row))
                if stored.spec.name != name:
                    raise InvalidRequest(f"the stored spec names another function, {stored.spec.name!r}")
            except json.JSONDecodeError as exc:
                unreadable.append(_unreadable(name, row[1], f"the stored spec is not valid JSON ({exc.msg})"))
            except InvalidRequest as exc:
                unreadable.append(_unreadable(name, row[1], f"the stored spec is invalid: {exc.message}"))
            except (ValueError, TypeError, OverflowError) as exc:
                unreadable.append(_unreadable(name, row[1], f"the stored row is invalid: {exc}"))
            else:
                readable.append(stored)
        return readable, unreadable

    def set_replicas(self, name: str, replicas: int) -> bool:
        """Set a function's desired replicas; False if there is no such function."""
        with self._db:
            cursor = self._db.execute(
                "UPDATE functions SET replicas = ?, updated_at = ? WHERE name = ?",
                (replicas, time.time(), name),
            )
        return cursor.rowcount == 1

    def delete_function(self, name: str) -> bool:
        """Forget a function; False if there was none."""
        with self._db:
            cursor = self._db.execute("DELETE FROM functions WHERE name = ?", (name,))
        return cursor.rowcount == 1

    # -- secrets ----------------------------------------------------------------------------------
    def put_secret(self, name: str, value: bytes) -> bool:
        """Create or replace a secret; True if it was created."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            existed = self._db.execute("SELECT 1 FROM secrets WHERE name = ?", (name,)).fetchone() is not None
            self._db.execute(
                "INSERT INTO secrets (name, value, created_at, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                (name, value, now, now),
            )
        return not existed

    def add_secret(self, name: str, value: bytes) -> bool:
        """Create a secret; False (and nothing changed) if one by that name exists."""
        now = time.time()
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO secrets (name, value, created_at, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO NOTHING",
                (name, value, now, now),
            )
        return cursor.rowcount == 1

    def replace_secret(self, name: str, value: bytes) -> bool:
        """Change an existing secret's value; False if there is none."""
        with self._db:
            cursor = self._db.execute(
                "UPDATE secrets SET value = ?, updated_at = ? WHERE name = ?", (value, time.time(), name)
            )
        return cursor.rowcount == 1

    def get_secret(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def list_secrets(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM secrets ORDER BY name")]

    def delete_secret(self, name: str) -> bool:
        with self._db:
            cursor = self._db.execute("DELETE FROM secrets WHERE name = ?", (name,))
        return cursor.rowcount == 1

    # -- snippets ---------------------------------------------------------------------------------
    def add_snippet(self, snippet_id: str, language: str, source: bytes) -> StoredSnippet:
        """Store a new snippet (its id is new: a uuid4)."""
        now = time.time()
        with self._db:
            self._db.execute(
                "INSERT INTO snippets (id, language, source, created_at) VALUES (?, ?, ?, ?)",
                (snippet_id, language, source, now),
            )
        return StoredSnippet(id=snippet_id, language=language, source=source, created_at=_utc(now))

    def list_snippets(self) -> list[StoredSnippet]:
        """Every snippet, oldest first."""
        rows = self._db.execute("SELECT id, language, source, created_at FROM snippets ORDER BY created_at, id")
        return [
            StoredSnippet(id=row[0], language=row[1], source=bytes(row[2]), created_at=_utc(row[3])) for row in rows
        ]

    def get_snippet_source(self, snippet_id: str) -> bytes | None:
        row = self._db.execute("SELECT source FROM snippets WHERE id = ?", (snippet_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def delete_snippet(self, snippet_id: str) -> bool:
        """Forget a snippet; False if there was none."""
        with self._db:
            cursor = self._db.execute("DELETE FROM snippets WHERE id = ?", (snippet_id,))
        return cursor.rowcount == 1


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _make_private(path: str) -> None:
    """chmod 0600 the database and whichever of its ``-wal``/``-shm`` files exist."""
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            os.chmod(name, 0o600)
        except FileNotFoundError:
            continue


def _function_from_row(row: tuple[str, int, float, float]) -> StoredFunction:
    """Raises ValueError (JSONDecodeError), TypeError, OverflowError or InvalidRequest on a bad row."""
    spec_json, replicas, created, updated = row
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ValueError(f"replicas {replicas!r} is not a whole number >= 0")
    return StoredFunction(
        spec=FunctionSpec.from_json(json.loads(spec_json)),
        replicas=replicas,
        created_at=datetime.fromtimestamp(created, UTC),
        updated_at=datetime.fromtimestamp(updated, UTC),
    )


def _unreadable(name: object, replicas: object, error: str) -> UnreadableFunction:
    count = replicas if isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 0 else 0
    return UnreadableFunction(name=str(name), replicas=count, error=" ".join(error.split()))


def _sqlite_reason(exc: sqlite3.Error) -> str:
    """sqlite's message, with what it means for faasd where that is not obvious."""
    text = str(exc)
    if "file is not a database" in text:
        return "not an SQLite database (file is not a database): move it away to start afresh, or restore a backup"
    if "unable to open database file" in text:
        return "cannot open or create it (unable to open database file): is it a directory, or not writable?"
    if "readonly" in text or "read-only" in text:
        return f"not writable ({text})"
    return text


class AsyncStore:
    """The :class:`Store` for trio code: each call runs on a worker thread, one at a time.

    Error handling: an ``sqlite3`` error (disk full, the file removed or made read-only under the
    daemon) is raised as :class:`~faasd.errors.StateError` naming the database.
    """

    def __init__(self, store: Store) -> None:
        self.sync = store
        self._limiter = trio.CapacityLimiter(1)

    async def _run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await trio.to_thread.run_sync(lambda: function(*args, **kwargs), limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StateError(f"{self.sync.path}: {_sqlite_reason(exc)}") from exc

    async def put_function(self, spec: FunctionSpec, replicas: int) -> StoredFunction:
        return await self._run(self.sync.put_function, spec, replicas)

    async def get_function(self, name: str) -> StoredFunction | None:
        return await self._run(self.sync.get_function, name)

    async def list_functions(self) -> list[StoredFunction]:
        return await self._run(self.sync.list_functions)

    async def load_functions(self) -> tuple[list[StoredFunction], list[UnreadableFunction]]:
        return await self._run(self.sync.load_functions)

    async def set_replicas(self, name: str, replicas: int) -> bool:
        return await self._run(self.sync.set_replicas, name, replicas)

    async def delete_function(self, name: str) -> bool:
        return await self._run(self.sync.delete_function, name)

    async def put_secret(self, name: str, value: bytes) -> bool:
        return await self._run(self.sync.put_secret, name, value)

    async def add_secret(self, name: str, value: bytes) -> bool:
        return await self._run(self.sync.add_secret, name, value)

    async def replace_secret(self, name: str, value: bytes) -> bool:
        return await self._run(self.sync.replace_secret, name, value)

    async def get_secret(self, name: str) -> bytes | None:
        return await self._run(self.sync.get_secret, name)

    async def list_secrets(self) -> list[str]:
        return await self._run(self.sync.list_secrets)

    async def delete_secret(self, name: str) -> bool:
        return await self._run(self.sync.delete_secret, name)

    async def add_snippet(self, snippet_id: str, language: str, source: bytes) -> StoredSnippet:
        return await self._run(self.sync.add_snippet, snippet_id, language, source)

    async def list_snippets(self) -> list[StoredSnippet]:
        return await self._run(self.sync.list_snippets)

    async def get_snippet_source(self, snippet_id: str) -> bytes | None:
        return await self._run(self.sync.get_snippet_source, snippet_id)

    async def delete_snippet(self, snippet_id: str) -> bool:
        return await self._run(self.sync.delete_snippet, snippet_id)

    async def aclose(self) -> None:
        await self._run(self.sync.close)
