"""Repository of versioned graph documents — workflows and templates share it.

Each document is stored whole as JSON beside the columns that lists sort on. Writes to one
document are serialised by a per-id lock and bump `version` by one, and each is stored only
over the version it was made from; reads of single documents come from a small cache of
already-encoded bodies, so the hottest request of an editor (GET a workflow) neither touches
SQLite nor encodes JSON. On a database other processes share (PostgreSQL), a cached body is
served only after one query has found its version still stored.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar
from weakref import WeakValueDictionary

import msgspec

from flowstage.server.errors import PreconditionFailed
from flowstage.server.store.common import Page, decode_cursor, etag_for, etag_matches, newest_first, page_of
from flowstage.server.store.db import Connection, Database
from flowstage.simulation.errors import NotFound
from flowstage.simulation.messages import no_such
from flowstage.simulation.models import Template, Workflow
from flowstage.simulation.timefmt import iso_ms

__all__ = ["Cached", "DocumentRepo"]

D = TypeVar("D", Workflow, Template)

_encoder = msgspec.json.Encoder()
# A document whose `tags` hold the one parameter.
_HAS_TAG = {
    "sqlite": "EXISTS (SELECT 1 FROM json_each(doc, '$.tags') WHERE value = ?)",
    "postgres": "convert_from(doc, 'UTF8')::jsonb -> 'tags' @> to_jsonb(?::text)",
}


class _Changed(Exception):
    """The stored version moved between reading and writing (another process wrote it)."""


class Cached(Generic[D]):
    """A document with its encoded body and ETag, ready to serve."""

    __slots__ = ("body", "doc", "etag")

    doc: D
    body: bytes
    etag: str

    def __init__(self, doc: D) -> None:
        self.doc = doc
        self.body = _encoder.encode(doc)
        self.etag = etag_for(doc.version)


class _Check:
    """One query for whether a cached version is still the stored one, shared by every request
    that asks before the query starts: 64 executes of one workflow at once were 64 round trips
    in a row on the one database thread (a worker's admission ceiling on PostgreSQL). A
    request that comes once the query has started waits for a new one, so each still sees
    every write committed before it arrived."""

    __slots__ = ("doc_id", "started", "table", "task", "version")

    def __init__(self, table: str, doc_id: str, version: int) -> None:
        self.table = table
        self.doc_id = doc_id
        self.version = version
        self.started = False  # set on the database thread, as the query starts
        self.task: asyncio.Future[tuple[bytes | None] | None] | None = None

    def run(self, conn: Connection) -> tuple[bytes | None] | None:
        """On the database thread: None if gone, (None,) if unchanged, else (the new body,)."""
        self.started = True
        row = conn.execute(f"SELECT CASE WHEN version = ? THEN NULL ELSE doc END FROM {self.table} WHERE id = ?",
                           (self.version, self.doc_id)).fetchone()
        return None if row is None else (row[0],)


class DocumentRepo(Generic[D]):
    def __init__(
        self,
        db: Database,
        table: str,
        doc_type: type[D],
        kind: str,
        now: Callable[[], float],
        cache_size: int = 4096,
    ) -> None:
        self._db = db
        self._table = table
        self._kind = kind  # "workflow" / "template", for messages
        self._decoder: msgspec.json.Decoder[D] = msgspec.json.Decoder(doc_type)
        self._now = now
        self._cache: OrderedDict[str, Cached[D]] = OrderedDict()
        self._cache_size = cache_size
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._checks: dict[tuple[str, int], _Check] = {}  # version checks not started yet

    def now_iso(self) -> str:
        return iso_ms(self._now())

    # --- reads ------------------------------------------------------------------------------

    def forget_cached(self) -> None:
        self._cache.clear()

    def cached_ids(self) -> list[str]:
        """Ids whose encoded bodies are held, least recently read first (at most `cache_size`)."""
        return list(self._cache)

    async def get_cached(self, doc_id: str) -> Cached[D]:
        hit = self._cache.get(doc_id)
        if hit is not None:
            if not self._db.shared:
                self._cache.move_to_end(doc_id)
                return hit
            return await self._revalidated(hit)
        table = self._table

        def load(conn: Connection) -> bytes | None:
            row = conn.execute(f"SELECT doc FROM {table} WHERE id = ?", (doc_id,)).fetchone()
            return None if row is None else row[0]

        raw = await self._db.read(load)
        if raw is None:
            raise NotFound(no_such(self._kind, doc_id))
        return self._remember(self._decoder.decode(raw))

    async def _revalidated(self, hit: Cached[D]) -> Cached[D]:
        """A shared database may have been written by another process: the cached body is
        served only while the stored version is still its version. One round trip, which
        carries the document only when it changed, shared by every request for the same
        cached version that arrives before that round trip starts (see `_Check`)."""
        key = (hit.doc.id, hit.doc.version)
        check = self._checks.get(key)
        if check is None or check.started:
            check = self._checks[key] = _Check(self._table, *key)
            check.task = asyncio.ensure_future(self._db.read(check.run))
            check.task.add_done_callback(lambda _: self._check_done(key, check))
        assert check.task is not None
        found = await asyncio.shield(check.task)
        doc_id = key[0]
        if found is None:
            self._cache.pop(doc_id, None)
            raise NotFound(no_such(self._kind, doc_id))
        if found[0] is None:
            if doc_id in self._cache:
                self._cache.move_to_end(doc_id)
            return hit
        return self._remember(self._decoder.decode(found[0]))

    def _check_done(self, key: tuple[str, int], check: _Check) -> None:
        if self._checks.get(key) is check:
            del self._checks[key]

    async def get(self, doc_id: str) -> D:
        return (await self.get_cached(doc_id)).doc

    async def list(self, limit: int, cursor: str | None, tag: str | None = None) -> Page[D]:
        after = decode_cursor(cursor) if cursor else None
        filters: list[tuple[str, object]] = []
        if tag is not None:
            filters.append((_HAS_TAG[self._db.dialect], tag))
        table = self._table
        rows, more = await self._db.read(lambda conn: newest_first(conn, table, limit, after, filters))
        return page_of([self._decoder.decode(raw) for raw in rows], more)

    async def count(self) -> int:
        table = self._table
        return await self._db.read(
            lambda conn: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        )

    # --- writes -----------------------------------------------------------------------------

    async def create(self, doc: D) -> D:
        await self._db.write(lambda conn: self._insert(conn, doc))
        self._remember(doc)
        return doc

    async def mutate(
        self,
        doc_id: str,
        change: Callable[[D], D] | Callable[[D], Awaitable[D]],
        if_match: str | None = None,
    ) -> D:
        """Apply `change` to the current document and store the result as the next version.

        `change` receives the current document and returns the new one (it may raise to refuse
        the change; nothing is written then). Version and `updatedAt` are set here, not by it.
        """
        async with self._lock(doc_id):
            while True:  # again only when another process wrote the document meanwhile
                current = await self.get_cached(doc_id)
                self._check_if_match(current, if_match)
                changed = change(current.doc)
                if isinstance(changed, Awaitable):
                    changed = await changed
                if changed == current.doc:
                    return current.doc  # nothing changed: no new version
                new = msgspec.structs.replace(
                    changed,
                    id=current.doc.id,
                    created_at=current.doc.created_at,
                    version=current.doc.version + 1,
                    updated_at=self.now_iso(),
                )
                try:
                    await self._db.write(functools.partial(self._update, doc=new))
                except _Changed:
                    self._cache.pop(doc_id, None)
                    continue
                self._remember(new)
                return new

    async def delete(self, doc_id: str, if_match: str | None = None) -> None:
        async with self._lock(doc_id):
            while True:  # again only when another process wrote the document meanwhile
                current = await self.get_cached(doc_id)
                self._check_if_match(current, if_match)
                version = current.doc.version
                try:
                    await self._db.write(functools.partial(self._delete, doc_id=doc_id, version=version))
                except _Changed:
                    self._cache.pop(doc_id, None)
                    continue
                self._cache.pop(doc_id, None)
                return

    # --- internals --------------------------------------------------------------------------

    def _check_if_match(self, current: Cached[D], if_match: str | None) -> None:
        if if_match is not None and not etag_matches(if_match, current.etag):
            raise PreconditionFailed(
                f"The {self._kind} is at version {current.doc.version}; "
                f"If-Match {if_match} does not match {current.etag}."
            )

    def _lock(self, doc_id: str) -> asyncio.Lock:
        lock = self._locks.get(doc_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[doc_id] = lock
        return lock

    def _remember(self, doc: D) -> Cached[D]:
        entry = Cached(doc)
        self._cache[doc.id] = entry
        self._cache.move_to_end(doc.id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry

    def _insert(self, conn: Connection, doc: D) -> None:
        conn.execute(
            f"INSERT INTO {self._table} (id, created_at, updated_at, version, doc) "
            "VALUES (?, ?, ?, ?, ?)",
            (doc.id, doc.created_at, doc.updated_at, doc.version, _encoder.encode(doc)),
        )

    def _update(self, conn: Connection, doc: D) -> None:
        """Store `doc` over the version before it, or raise _Changed: never over a version
        this process did not read."""
        cursor = conn.execute(
            f"UPDATE {self._table} SET updated_at = ?, version = ?, doc = ? WHERE id = ? AND version = ?",
            (doc.updated_at, doc.version, _encoder.encode(doc), doc.id, doc.version - 1),
        )
        if cursor.rowcount != 1:
            raise _Changed

    def _delete(self, conn: Connection, doc_id: str, version: int) -> None:
        cursor = conn.execute(f"DELETE FROM {self._table} WHERE id = ? AND version = ?", (doc_id, version))
        if cursor.rowcount != 1:
            raise _Changed
