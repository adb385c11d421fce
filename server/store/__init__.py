"""Persistence behind small repository interfaces; SQLite (file or in-memory) is the one
backend today, and nothing outside this package knows it is SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from flowstage.server.store.common import Page, new_id
from flowstage.server.store.db import Database
from flowstage.server.store.documents import Cached, DocumentRepo
from flowstage.server.store.files import FileRepo
from flowstage.server.store.recordings import RecordingRepo
from flowstage.server.store.runs import RunRepo
from flowstage.simulation.models import Template, Workflow

__all__ = ["Cached", "Database", "DocumentRepo", "FileRepo", "Page", "RecordingRepo", "RunRepo", "Store", "new_id"]


class Store:
    """Every repository, over one database. `data_dir=None` keeps everything in memory."""

    def __init__(self, db_path: Path | None, files_dir: Path, now: Callable[[], float]) -> None:
        """`db_path=None` keeps the database in memory; files always live in `files_dir`."""
        self.db = Database(db_path)
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

        def empty(conn: sqlite3.Connection) -> None:
            tables = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            for table in tables:
                conn.execute(f"DELETE FROM {table}")  # names from the schema itself

        await self.db.write(empty)
        self.workflows.forget_cached()
        self.templates.forget_cached()
        await self.files.clean_orphans()

    async def claim_once(self, key: str) -> bool:
        """True the first time `key` is claimed in this database, False ever after."""

        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, '1')", (key,))
            return cursor.rowcount == 1

        return await self.db.write(claim)
