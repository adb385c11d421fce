"""Runs and their event logs, as the engine hands them over in batches.

The engine keeps live runs in memory and flushes snapshots and events here every few tens of
milliseconds (group commit); finished runs are read from here. Events are stored encoded, as
they go on the wire, a run's new events of a flush in one row (`event_chunks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from flowstage.server.store.common import Page, decode_cursor, newest_first, page_of
from flowstage.server.store.db import Connection, Database, insert_rows
from flowstage.server.store.event_chunks import EventRow, chunks, events_of
from flowstage.simulation.models import Run, Workflow

__all__ = ["EventRow", "RunRepo"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Run)
_workflow_decoder = msgspec.json.Decoder(Workflow)
_ACTIVE = ("running", "paused")
# A chunk sent again (its flush failed, and more events came since) replaces the stored one.
_INSERT_EVENTS = "INSERT INTO run_events (run_id, first_seq, last_seq, events)"
_ON_EVENTS = ("ON CONFLICT (run_id, first_seq) DO UPDATE SET last_seq = excluded.last_seq, events = excluded.events "
              "WHERE excluded.last_seq > run_events.last_seq")
_INSERT_RUNS = "INSERT INTO runs (id, workflow_id, created_at, state, doc)"
_ON_RUNS = "ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc"
_LAST_SEQ = "SELECT last_seq FROM run_events WHERE run_id = {} ORDER BY first_seq DESC LIMIT 1"


class RunRepo:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._frozen: set[tuple[str, int]] = set()  # graphs known to be stored already

    # --- the engine's sink ------------------------------------------------------------------

    async def save_runs(self, runs: Sequence[Run]) -> None:
        """Insert or replace run snapshots (the engine's sink)."""
        if runs:
            await self.save(runs, ())

    async def append_events(self, rows: Iterable[EventRow]) -> None:
        """Append events (the engine's sink)."""
        # The engine hands over a lazy batch (falsy when empty); `save` cuts it into chunks.
        if rows:
            await self.save((), rows)

    async def save(self, runs: Sequence[Run], events: Iterable[EventRow]) -> None:
        """Snapshots and events in one transaction: one fsync for both."""
        run_rows = [(r.id, r.workflow_id, r.created_at, r.state, _encoder.encode(r)) for r in runs]

        def write(conn: Connection) -> None:
            insert_rows(conn, _INSERT_RUNS, 5, run_rows, _ON_RUNS)
            insert_rows(conn, _INSERT_EVENTS, 4, chunks(events), _ON_EVENTS)  # on the database thread

        await self._db.write(write)

    async def freeze_graph(self, workflow: Workflow) -> None:
        """Keep the graph a run executes, once per workflow version, for reading it later."""
        key = (workflow.id, workflow.version)
        if key in self._frozen:
            return
        await self._db.write(lambda conn: conn.execute(
            "INSERT INTO workflow_versions (workflow_id, version, doc) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (workflow.id, workflow.version, _encoder.encode(workflow))))
        if len(self._frozen) > 100_000:  # a bound on memory, not on correctness
            self._frozen.clear()
        self._frozen.add(key)

    async def frozen_graph(self, workflow_id: str, version: int) -> Workflow | None:
        row = await self._db.read(lambda conn: conn.execute(
            "SELECT doc FROM workflow_versions WHERE workflow_id = ? AND version = ?",
            (workflow_id, version)).fetchone())
        return None if row is None else _workflow_decoder.decode(row[0])

    # --- reads ------------------------------------------------------------------------------

    async def get(self, run_id: str) -> Run | None:
        row = await self._db.read(
            lambda conn: conn.execute("SELECT doc FROM runs WHERE id = ?", (run_id,)).fetchone())
        return None if row is None else _decoder.decode(row[0])

    async def latest_for_workflow(self, workflow_id: str) -> Run | None:
        row = await self._db.read(lambda conn: conn.execute(
            "SELECT doc FROM runs WHERE workflow_id = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            (workflow_id,)).fetchone())
        return None if row is None else _decoder.decode(row[0])

    async def page(
        self, limit: int, cursor: str | None, *, workflow_id: str | None = None, state: str | None = None
    ) -> Page[Run]:
        """Stored runs newest first, of one workflow and/or in one state if asked. A live run's
        stored snapshot lags (see the engine's flush); callers show the live one."""
        after = decode_cursor(cursor) if cursor else None
        filters: list[tuple[str, object]] = []
        if workflow_id is not None:
            filters.append(("workflow_id = ?", workflow_id))
        if state is not None:
            filters.append(("state = ?", state))
        rows, more = await self._db.read(lambda conn: newest_first(conn, "runs", limit, after, filters))
        return page_of([_decoder.decode(r) for r in rows], more)

    async def events_after(self, run_id: str, seq: int, limit: int = 10_000) -> list[tuple[int, str, bytes]]:
        """The run's stored events after `seq`, at most `limit`: (seq, name, data)."""

        def query(conn: Connection) -> list[tuple[int, str, bytes]]:
            out: list[tuple[int, str, bytes]] = []
            # From the chunk holding seq + 1 on (the index finds it), in order.
            for first, events in conn.execute(
                    "SELECT first_seq, events FROM run_events WHERE run_id = ? AND first_seq >= coalesce("
                    "(SELECT max(first_seq) FROM run_events WHERE run_id = ? AND first_seq <= ?), 0) "
                    "ORDER BY first_seq", (run_id, run_id, seq + 1)):
                out.extend(e for e in events_of(first, events) if e[0] > seq)
                if len(out) >= limit:
                    break
            return out[:limit]

        return await self._db.read(query)

    async def last_seq(self, run_id: str) -> int:
        """The seq of the run's last stored event (0 if none)."""
        row = await self._db.read(lambda conn: conn.execute(_LAST_SEQ.format("?"), (run_id,)).fetchone())
        return 0 if row is None else int(row[0])

    async def active(self) -> list[tuple[Run, int]]:
        """Runs stored as running or paused, each with the last seq of its event log."""

        def query(conn: Connection) -> list[tuple[bytes, int]]:
            return [(r[0], int(r[1] or 0)) for r in conn.execute(
                f"SELECT doc, ({_LAST_SEQ.format('runs.id')}) FROM runs WHERE state IN (?, ?)", _ACTIVE)]

        return [(_decoder.decode(doc), last) for doc, last in await self._db.read(query)]
