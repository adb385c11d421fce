"""Persistence behind small repository interfaces, on SQLite (a file, or in memory) or on a
PostgreSQL that several processes share; nothing outside this package knows which."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flowstage.server.store.common import Page, new_id
from flowstage.server.store.db import Connection, Database, SQLiteDatabase, StoreUnavailable
from flowstage.server.store.documents import Cached, DocumentRepo
from flowstage.server.store.files import FileRepo
from flowstage.server.store.recordings import RecordingRepo
from flowstage.server.store.runs import RunRepo
from flowstage.simulation.models import Template, Workflow

__all__ = [
    "BackendMissing", "Cached", "Database", "DocumentRepo", "FileRepo", "Page", "RecordingRepo", "RunRepo", "Store",
    "StoreUnavailable", "database_for", "new_id",
]


class BackendMissing(RuntimeError):
    """`storage = "postgres"` without psycopg installed."""


def database_for(storage: str, data_dir: Path, database_url: str = "") -> Database:
    """The database the `storage` setting names: SQLite in `data_dir`, in memory, or the
    PostgreSQL at `database_url` (psycopg is the `postgres` extra, imported only then)."""
    if storage == "postgres":
        try:
            from flowstage.server.store.postgres import PostgresDatabase
        except ImportError:
            raise BackendMissing(
                "storage = \"postgres\" needs psycopg: pip install 'flowstage[postgres]'") from None
        return PostgresDatabase(database_url)
    return SQLiteDatabase(None if storage == "memory" else data_dir / "flowstage.db")


class Store:
    """Every repository, over one database; files always live in `files_dir`."""

    def __init__(self, db: Database, files_dir: Path, now: Callable[[], float]) -> None:
        self.db = db
        self.workflows: DocumentRepo[Workflow] = DocumentRepo(self.db, "workflows", Workflow, "workflow", now)
        self.templates: DocumentRepo[Template] = DocumentRepo(self.db, "templates", Template, "template", now)
        self.files = FileRepo(self.db, files_dir)
        self.runs = RunRepo(self.db)
        self.recordings = RecordingRepo(self.db)

    async def open(self) -> None:
        await self.db.open()
        await self.files.open()

    async def close(self) -> None:
        await self.db.close()

    async def reset(self) -> None:
        """Test mode: empty every table and the files directory, as a new store would be."""

        listing = {
            "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            "postgres": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
        }[self.db.dialect]

        def empty(conn: Connection) -> None:
            tables = [row[0] for row in conn.execute(listing)]
            for table in tables:  # names from the schema itself
                # PostgreSQL keeps its schema version in meta (SQLite's is a pragma).
                conn.execute("DELETE FROM meta WHERE key <> 'schema_version'" if table == "meta"
                             else f"DELETE FROM {table}")

        await self.db.write(empty)
        self.workflows.forget_cached()
        self.templates.forget_cached()
        await self.files.clean_orphans()

    async def claim_once(self, key: str) -> bool:
        """True the first time `key` is claimed in this database, False ever after."""

        def claim(conn: Connection) -> bool:
            cursor = conn.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT DO NOTHING", (key,))
            return cursor.rowcount == 1

        return await self.db.write(claim)
