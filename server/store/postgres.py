"""PostgreSQL (`storage = "postgres"`, `database_url`): the database several Flowstage
processes share. The same repositories run on it as on SQLite, through psycopg 3 on the same
one-connection, one-thread `Database` (so nothing else in the store changes shape).

The schema is SQLite's at the same version: `POSTGRES_MIGRATIONS[0]` creates it as SQLite's
migrations 1-4 leave it, and every later migration is appended to both lists. Text columns
compare bytewise (`COLLATE "C"`), as SQLite's do, so lists keep their order. Migrating holds an
advisory lock: workers starting together migrate once.

A lost connection is a `StoreUnavailable` (a 503) for the request that found it; the next one
connects again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from flowstage.config.settings import redact_url
from flowstage.server.store.db import Connection, Cursor, Database, Dialect, SchemaTooNew, StoreUnavailable

__all__ = ["POSTGRES_BASE_VERSION", "POSTGRES_MIGRATIONS", "PostgresDatabase"]

T = TypeVar("T")

_TEXT = 'TEXT COLLATE "C" NOT NULL'
# The schema of version POSTGRES_BASE_VERSION, created whole; later versions are appended.
POSTGRES_BASE_VERSION = 4
POSTGRES_MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE meta (key {_TEXT} PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE workflows (
        id {_TEXT} PRIMARY KEY, created_at {_TEXT}, updated_at TEXT NOT NULL,
        version INTEGER NOT NULL, doc BYTEA NOT NULL);
    CREATE INDEX workflows_newest ON workflows (created_at DESC, id DESC);
    CREATE TABLE templates (
        id {_TEXT} PRIMARY KEY, created_at {_TEXT}, updated_at TEXT NOT NULL,
        version INTEGER NOT NULL, doc BYTEA NOT NULL);
    CREATE INDEX templates_newest ON templates (created_at DESC, id DESC);
    CREATE TABLE files (
        id {_TEXT} PRIMARY KEY, created_at {_TEXT}, sha256 {_TEXT},
        mime_type {_TEXT}, kind {_TEXT}, doc BYTEA NOT NULL);
    CREATE INDEX files_newest ON files (created_at DESC, id DESC);
    CREATE INDEX files_sha256 ON files (sha256);
    CREATE TABLE runs (
        id {_TEXT} PRIMARY KEY, workflow_id {_TEXT}, created_at {_TEXT},
        state {_TEXT}, doc BYTEA NOT NULL);
    CREATE INDEX runs_by_workflow ON runs (workflow_id, created_at DESC, id DESC);
    CREATE INDEX runs_newest ON runs (created_at DESC, id DESC);
    CREATE INDEX runs_by_state_newest ON runs (state, created_at DESC, id DESC);
    CREATE TABLE workflow_versions (
        workflow_id {_TEXT}, version INTEGER NOT NULL, doc BYTEA NOT NULL,
        PRIMARY KEY (workflow_id, version));
    CREATE TABLE run_events (
        run_id {_TEXT}, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, events BYTEA NOT NULL);
    CREATE UNIQUE INDEX run_events_by_run ON run_events (run_id, first_seq);
    CREATE TABLE recordings (
        id {_TEXT} PRIMARY KEY, created_at {_TEXT}, run_id {_TEXT}, workflow_id {_TEXT},
        doc BYTEA NOT NULL);
    """,
)
_MIGRATION_LOCK = 0x666C6F77  # "flow": the advisory lock key held while migrating


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The store's SQL (`?` placeholders) as psycopg takes it (`%s`, and `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Adapted:
    """A psycopg connection as the store's `Connection`."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor:
        # Without parameters psycopg sends the text as it is (no `%%` to undo).
        return self._conn.execute(_placeholders(sql) if params else sql, params or None)


class PostgresDatabase(Database):
    dialect: Dialect = "postgres"
    shared = True

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None

    # On the database thread:

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, round(self._connect_timeout)))
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(self._unreachable(exc)) from None
            self._conn = conn
        return conn

    def _unreachable(self, exc: BaseException) -> str:
        lines = str(exc).strip().splitlines()
        reason = lines[0].removeprefix("connection failed: ") if lines else type(exc).__name__
        return f"PostgreSQL at {redact_url(self.url)} is unreachable: {reason}"

    @contextmanager
    def _lost_is_unavailable(self) -> Iterator[None]:
        try:
            yield
        except psycopg.OperationalError as exc:
            if self._conn is not None and not self._conn.broken:
                raise  # a statement's own error (a lock timeout, say), not a lost connection
            raise StoreUnavailable(self._unreachable(exc)) from None

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with self._lost_is_unavailable():
            return fn(_Adapted(self._connection()))

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        with self._lost_is_unavailable():
            conn = self._connection()
            with conn.transaction():
                return fn(_Adapted(conn))

    def _open(self) -> None:
        try:
            self._transaction(self._migrate)
        except BaseException:
            self._close()
            raise

    def _migrate(self, conn: Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
        current = 0
        if exists:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            current = 0 if row is None else int(row[0])
        latest = POSTGRES_BASE_VERSION + len(POSTGRES_MIGRATIONS) - 1
        if current > latest:
            raise SchemaTooNew(f"database schema version {current} is newer than this Flowstage ({latest}); "
                               "upgrade Flowstage")
        first = 0 if current == 0 else current - POSTGRES_BASE_VERSION + 1
        for migration in POSTGRES_MIGRATIONS[first:]:
            for statement in migration.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if first < len(POSTGRES_MIGRATIONS):
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(latest),))

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

