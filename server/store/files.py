"""Uploaded files: rows in the database, bytes on disk, stored once per distinct content.

Layout under `<data_dir>/files/`: `blobs/<sha256>` (the bytes), `thumbs/<sha256>.webp`, and
`tmp/` for uploads in flight. A row and its bytes appear together or not at all: bytes are
written to `tmp/`, renamed into `blobs/`, then the row is committed; whatever a crash leaves
between those steps (files in `tmp/`, blobs no row names) is removed at start-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from flowstage.server.errors import PreconditionFailed
from flowstage.server.store.common import Page, decode_cursor, etag_matches, newest_first, page_of
from flowstage.server.store.db import Connection, Database
from flowstage.simulation.errors import NotFound
from flowstage.simulation.inspection import Inspection
from flowstage.simulation.messages import no_such
from flowstage.simulation.models import FileInfo

__all__ = ["FileRepo", "StagedFile"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FileInfo)
_SHARED_ORPHAN_AGE = 3600.0  # seconds


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return math.inf  # gone already


class StagedFile(msgspec.Struct, frozen=True):
    """An upload written to `tmp/` and inspected, ready to be committed with its row."""

    info: FileInfo
    kind: str
    tmp_path: str
    thumbnail: bytes | None


class FileRepo:
    def __init__(self, db: Database, root: Path) -> None:
        self._db = db
        self.root = root
        self.tmp_dir = root / "tmp"
        self.blob_dir = root / "blobs"
        self.thumb_dir = root / "thumbs"

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256

    def thumb_path(self, sha256: str) -> Path:
        return self.thumb_dir / f"{sha256}.webp"

    async def open(self) -> None:
        for d in (self.tmp_dir, self.blob_dir, self.thumb_dir):
            d.mkdir(parents=True, exist_ok=True)
        await self.clean_orphans()

    async def clean_orphans(self) -> int:
        """Remove uploads in flight and bytes no row names (a crash between rename and commit).

        When other processes share the database and this directory, what looks orphaned may
        be their upload in flight: only what is older than an hour is removed then."""
        known = set(await self._db.read(
            lambda conn: [r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM files")]))
        oldest = time.time() - _SHARED_ORPHAN_AGE if self._db.shared else math.inf
        removed = 0
        for path in [*self.tmp_dir.iterdir(), *self.blob_dir.iterdir(), *self.thumb_dir.iterdir()]:
            sha = path.name.split(".")[0]
            if (path.parent == self.tmp_dir or sha not in known) and _modified(path) < oldest:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _lock_content(self, conn: Connection, sha256: str) -> None:
        """Until this transaction ends, no other process adds or deletes a row of these bytes
        (SQLite needs nothing: one process, one writer)."""
        if self._db.dialect == "postgres":
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (sha256,))

    async def commit(self, staged: Sequence[StagedFile]) -> None:
        """Move every staged upload into place and commit their rows in one transaction."""

        def write(conn: Connection) -> None:
            for item in sorted(staged, key=lambda item: item.info.sha256):  # locks in one order
                self._lock_content(conn, item.info.sha256)
                blob = self.blob_path(item.info.sha256)
                if blob.exists():  # identical bytes are kept once
                    Path(item.tmp_path).unlink(missing_ok=True)
                else:
                    Path(item.tmp_path).replace(blob)
                thumb = self.thumb_path(item.info.sha256)
                if item.thumbnail is not None and not thumb.exists():
                    thumb.write_bytes(item.thumbnail)
                conn.execute(
                    "INSERT INTO files (id, created_at, sha256, mime_type, kind, doc) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (item.info.id, item.info.created_at, item.info.sha256, item.info.mime_type,
                     item.kind, _encoder.encode(item.info)),
                )

        await self._db.write(write)

    async def add_bytes(self, data: bytes, name: str, created_at: str, file_id: str,
                        inspect: Callable[[Path], Inspection]) -> FileInfo:
        """Store bytes made by the server itself (e.g. a resized image) as a new file."""
        tmp = self.tmp_dir / secrets.token_hex(16)
        try:
            tmp.write_bytes(data)
            inspection = await asyncio.to_thread(inspect, tmp)
            info = FileInfo(
                id=file_id, name=name, size=len(data), mime_type=inspection.mime_type,
                sha256=hashlib.sha256(data).hexdigest(), created_at=created_at,
                metadata=inspection.metadata, content_url=f"/api/files/{file_id}/content",
                thumbnail_url=f"/api/files/{file_id}/thumbnail" if inspection.thumbnail else None,
            )
            await self.commit([StagedFile(info=info, kind=inspection.kind, tmp_path=str(tmp),
                                          thumbnail=inspection.thumbnail)])
        finally:
            tmp.unlink(missing_ok=True)
        return info

    async def get(self, file_id: str) -> FileInfo:
        row = await self._db.read(
            lambda conn: conn.execute("SELECT doc FROM files WHERE id = ?", (file_id,)).fetchone())
        if row is None:
            raise NotFound(no_such("file", file_id))
        return _decoder.decode(row[0])

    async def get_many(self, file_ids: Sequence[str]) -> dict[str, FileInfo]:
        def query(conn: Connection) -> list[bytes]:
            marks = ",".join("?" * len(file_ids))
            return [r[0] for r in conn.execute(f"SELECT doc FROM files WHERE id IN ({marks})", list(file_ids))]

        docs = await self._db.read(query) if file_ids else []
        return {info.id: info for info in map(_decoder.decode, docs)}

    async def list(
        self, limit: int, cursor: str | None, kind: str | None = None, mime_type: str | None = None
    ) -> Page[FileInfo]:
        after = decode_cursor(cursor) if cursor else None
        filters: list[tuple[str, object]] = []
        if kind is not None:
            filters.append(("kind = ?", kind))
        if mime_type is not None:
            filters.append(("mime_type = ?", mime_type))
        rows, more = await self._db.read(lambda conn: newest_first(conn, "files", limit, after, filters))
        return page_of([_decoder.decode(r) for r in rows], more)

    async def delete(self, file_id: str, if_match: str | None = None) -> None:
        """Delete the row; the bytes and thumbnail go with the last row that names them.
        `if_match` is compared with the file's ETag (its content hash)."""

        def remove(conn: Connection) -> None:
            row = conn.execute("SELECT sha256 FROM files WHERE id = ?", (file_id,)).fetchone()
            if row is None:
                raise NotFound(no_such("file", file_id))
            sha = str(row[0])
            self._lock_content(conn, sha)
            if if_match is not None and not etag_matches(if_match, f'"{sha}"'):
                raise PreconditionFailed(f"If-Match {if_match} does not match the file's ETag.")
            conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
            (others,) = conn.execute("SELECT count(*) FROM files WHERE sha256 = ?", (sha,)).fetchone()
            # Here, on the database thread and holding the content's lock, so no upload of the
            # same bytes can commit between the count and the unlink.
            if others == 0:
                self.blob_path(sha).unlink(missing_ok=True)
                self.thumb_path(sha).unlink(missing_ok=True)

        await self._db.write(remove)
