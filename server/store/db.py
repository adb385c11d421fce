"""The database behind the repositories: one connection on one dedicated thread, so blocking
calls never run on the event loop; explicit transactions; a schema version with forward
migrations.

`SQLiteDatabase` is the embedded default (`storage = "sqlite"`, or `"memory"`: SQLite's
in-memory database through exactly the same code, which is what the tests use).
`server.store.postgres.PostgresDatabase` is the shared one (`storage = "postgres"`). The
repositories write their SQL once, with `?` placeholders, against the `Connection` protocol;
where the two dialects differ they ask `Database.dialect`.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from flowstage.simulation.errors import Unavailable

__all__ = ["MIGRATIONS", "Connection", "Cursor", "Database", "SQLiteDatabase", "SchemaTooNew", "StoreUnavailable",
           "insert_rows"]

T = TypeVar("T")

# Each entry moves the schema from version i to i + 1. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE workflows (
        id TEXT PRIMARY KEY, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        version INTEGER NOT NULL, doc BLOB NOT NULL);
    CREATE INDEX workflows_newest ON workflows (created_at DESC, id DESC);
    CREATE TABLE templates (
        id TEXT PRIMARY KEY, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        version INTEGER NOT NULL, doc BLOB NOT NULL);
    CREATE INDEX templates_newest ON templates (created_at DESC, id DESC);
    CREATE TABLE files (
        id TEXT PRIMARY KEY, created_at TEXT NOT NULL, sha256 TEXT NOT NULL,
        mime_type TEXT NOT NULL, kind TEXT NOT NULL, doc BLOB NOT NULL);
    CREATE INDEX files_newest ON files (created_at DESC, id DESC);
    CREATE INDEX files_sha256 ON files (sha256);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, created_at TEXT NOT NULL,
        state TEXT NOT NULL, doc BLOB NOT NULL);
    CREATE INDEX runs_by_workflow ON runs (workflow_id, created_at DESC, id DESC);
    CREATE INDEX runs_by_state ON runs (state);
    CREATE TABLE workflow_versions (
        workflow_id TEXT NOT NULL, version INTEGER NOT NULL, doc BLOB NOT NULL,
        PRIMARY KEY (workflow_id, version)) WITHOUT ROWID;
    CREATE TABLE run_events (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
    """,
    # 2: GET /api/runs pages through every run newest first, optionally of one state: both
    # walk an index instead of sorting the whole table. The state index replaces the one on
    # state alone (a prefix of it serves the start-up query for active runs).
    """
    CREATE INDEX runs_newest ON runs (created_at DESC, id DESC);
    CREATE INDEX runs_by_state_newest ON runs (state, created_at DESC, id DESC);
    DROP INDEX runs_by_state;
    """,
    # 3: imported recordings (POST /api/recordings), kept whole to be replayed.
    """
    CREATE TABLE recordings (
        id TEXT PRIMARY KEY, created_at TEXT NOT NULL, run_id TEXT NOT NULL, workflow_id TEXT NOT NULL,
        doc BLOB NOT NULL);
    """,
    # 4: run events stored one row per run per flush (server.store.event_chunks): a JSON array
    # of [name, data] for first_seq..last_seq. Each event was a row of its own before, and a
    # flush under load wrote tens of thousands of them.
    """
    CREATE TABLE run_event_chunks (
        run_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, events BLOB NOT NULL);
    INSERT INTO run_event_chunks (run_id, first_seq, last_seq, events)
        SELECT run_id, seq, seq, CAST('[[' || json_quote(name) || ',' || CAST(data AS TEXT) || ']]' AS BLOB)
        FROM run_events ORDER BY run_id, seq;
    DROP TABLE run_events;
    ALTER TABLE run_event_chunks RENAME TO run_events;
    CREATE UNIQUE INDEX run_events_by_run ON run_events (run_id, first_seq);
    """,
)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer Flowstage; refusing it protects its data."""


class StoreUnavailable(Unavailable):
    """The database cannot be reached (a 503 problem); the request changed nothing."""


class Cursor(Protocol):
    """What the repositories use of a cursor: sqlite3's and psycopg's both have it."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the repositories use of a connection. SQL has `?` placeholders in both dialects."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...


Dialect = Literal["sqlite", "postgres"]

# Rows one INSERT carries at most (a power of two: see `insert_rows`).
_ROWS_PER_STATEMENT = 256


def insert_rows(conn: Connection, insert: str, width: int, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """`insert VALUES (?, ...), (?, ...) ... tail` for every row of `width` values, a few
    statements for any number of rows, instead of one statement per row (sqlite3's `executemany`).

    Why: sqlite3 lets go of the GIL for every statement it steps, and taking it back waits
    for the event loop's thread to yield it (up to `sys.getswitchinterval()`, 5 ms) when that
    thread is busy, which it is under load. A flush of a thousand rows took 4.5 s that way.
    Statements carry 256, 128, ... 1 rows, so at most 9 distinct texts per kind are prepared
    (and cached); PostgreSQL gets fewer round trips from the same statements."""
    at, count = 0, len(rows)
    while at < count:
        size = min(_ROWS_PER_STATEMENT, 1 << ((count - at).bit_length() - 1))
        conn.execute(_insert_sql(insert, width, size, tail),
                     [value for row in rows[at:at + size] for value in row])
        at += size


@functools.lru_cache(maxsize=64)
def _insert_sql(insert: str, width: int, size: int, tail: str) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return f"{insert} VALUES {', '.join([one] * size)} {tail}"


class Database:
    """Owns the connection and the one thread that touches it; subclasses connect."""

    dialect: Dialect
    # Whether other processes share this database (they cache nothing it holds unchecked).
    shared = False

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowstage-db")
        self._opened = False

    async def open(self) -> None:
        try:
            await self._submit(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._opened = True

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self._submit(self._close)
        self._executor.shutdown(wait=True)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` on the database thread."""
        return await self._submit(lambda: self._read(fn))

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in one transaction on the database thread; committed before return."""
        return await self._submit(lambda: self._transaction(fn))

    async def _submit(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # On the database thread:

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _read(self, fn: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        raise NotImplementedError


class SQLiteDatabase(Database):
    """A SQLite file, or SQLite's in-memory database."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: str | Path | None) -> None:
        """`path=None` is an in-memory database."""
        super().__init__()
        self._path = ":memory:" if path is None else str(path)
        self._conn: sqlite3.Connection | None = None

    @property
    def path(self) -> str:
        return self._path

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    def _read(self, fn: Callable[[Connection], T]) -> T:
        return fn(self._connection())

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a transaction acknowledged to a client survives a crash of the process and of the
        # machine; the write path is batched where it matters (run events), so it is affordable.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        if current > len(MIGRATIONS):
            raise SchemaTooNew(
                f"database schema version {current} is newer than this Flowstage "
                f"({len(MIGRATIONS)}); upgrade Flowstage"
            )
        for version in range(current, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

