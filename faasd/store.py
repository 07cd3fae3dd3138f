"""The daemon's desired state in SQLite: function specs with their replica counts, and secrets.

Why SQLite (stdlib ``sqlite3``): one file in the state dir, transactions, and WAL journaling, so a
crash or a kill never loses an acknowledged deploy (``synchronous=FULL``: each commit is on disk before
the API answers). The backend is the truth for what runs; this is the truth for what should run.

:class:`Store` is synchronous and owns one connection; the daemon uses :class:`AsyncStore`, which runs
every call on a worker thread through ``trio.to_thread.run_sync`` with a limiter of one, so the event
loop never waits on disk and the connection is used by one thread at a time.
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

from faasd.providers.types import FunctionSpec

__all__ = ["AsyncStore", "Store", "StoredFunction"]

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


class Store:
    """Synchronous access to ``<state_dir>/faasd.db``; create with :meth:`open`."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: str) -> Store:
        """Open (creating if needed) the database at ``path`` with WAL and full sync.

        Resource handling: the caller owns the store and must :meth:`close` it.
        """
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(_SCHEMA)
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            connection.close()
            raise RuntimeError(f"{path} was written by a newer faasd (schema {version}); upgrade faasd")
        os.chmod(path, 0o600)
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
        rows = self._db.execute("SELECT spec, replicas, created_at, updated_at FROM functions ORDER BY name").fetchall()
        return [_function_from_row(row) for row in rows]

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

    def get_secret(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def list_secrets(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM secrets ORDER BY name")]

    def delete_secret(self, name: str) -> bool:
        with self._db:
            cursor = self._db.execute("DELETE FROM secrets WHERE name = ?", (name,))
        return cursor.rowcount == 1


def _function_from_row(row: tuple[str, int, float, float]) -> StoredFunction:
    spec_json, replicas, created, updated = row
    return StoredFunction(
        spec=FunctionSpec.from_json(json.loads(spec_json)),
        replicas=replicas,
        created_at=datetime.fromtimestamp(created, UTC),
        updated_at=datetime.fromtimestamp(updated, UTC),
    )


class AsyncStore:
    """The :class:`Store` for trio code: each call runs on a worker thread, one at a time."""

    def __init__(self, store: Store) -> None:
        self.sync = store
        self._limiter = trio.CapacityLimiter(1)

    async def _run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await trio.to_thread.run_sync(lambda: function(*args, **kwargs), limiter=self._limiter)

    async def put_function(self, spec: FunctionSpec, replicas: int) -> StoredFunction:
        return await self._run(self.sync.put_function, spec, replicas)

    async def get_function(self, name: str) -> StoredFunction | None:
        return await self._run(self.sync.get_function, name)

    async def list_functions(self) -> list[StoredFunction]:
        return await self._run(self.sync.list_functions)

    async def set_replicas(self, name: str, replicas: int) -> bool:
        return await self._run(self.sync.set_replicas, name, replicas)

    async def delete_function(self, name: str) -> bool:
        return await self._run(self.sync.delete_function, name)

    async def put_secret(self, name: str, value: bytes) -> bool:
        return await self._run(self.sync.put_secret, name, value)

    async def get_secret(self, name: str) -> bytes | None:
        return await self._run(self.sync.get_secret, name)

    async def list_secrets(self) -> list[str]:
        return await self._run(self.sync.list_secrets)

    async def delete_secret(self, name: str) -> bool:
        return await self._run(self.sync.delete_secret, name)

    async def aclose(self) -> None:
        await self._run(self.sync.close)
