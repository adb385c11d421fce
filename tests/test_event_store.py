"""A run's event log in the store: events come back byte for byte, in order, from any seq,
however the flushes cut them into rows; a flush sent again after a failure replaces its row."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import pytest

from flowstage.config import Settings
from flowstage.server.store import Store, database_for
from flowstage.server.store.event_chunks import chunks, events_of
from flowstage.simulation.models import Run

DATA = [b'{"runId":"r","seq":1}', b'{"text":"caf\\u00e9 \xe2\x9c\x93","n":[1,2.5,null]}', b'{}',
        b'{"nested":{"a":[{"b":"]"}]}}']


def test_chunks_cut_at_each_new_run_and_each_break_in_seq() -> None:
    rows = [("r1", 1, "run.started", DATA[0]), ("r1", 2, "node.queued", DATA[1]),
            ("r2", 1, "run.started", DATA[2]), ("r1", 5, "node.started", DATA[3])]
    cut = chunks(rows)
    assert [(run, first, last) for run, first, last, _ in cut] == [("r1", 1, 2), ("r2", 1, 1), ("r1", 5, 5)]
    assert events_of(1, cut[0][3]) == [(1, "run.started", DATA[0]), (2, "node.queued", DATA[1])]
    assert events_of(5, cut[2][3]) == [(5, "node.started", DATA[3])]


@pytest.fixture
async def store(durable: Settings) -> Store:
    """A store on SQLite and one on PostgreSQL."""
    data_dir = Path(durable.data_dir)
    opened = Store(database_for(durable.storage, data_dir, durable.database_url), data_dir / "files", time.time)
    await opened.open()
    return opened


async def test_events_come_back_from_any_seq_across_flushes(store: Store) -> None:
    names = ["run.started", "node.queued", "node.started", "node.completed", "edge.data", "run.completed"]
    events = [(i + 1, names[i], DATA[i % len(DATA)]) for i in range(6)]
    try:
        for flush in (events[0:1], events[1:4], events[4:6]):  # three flushes, three rows
            await store.runs.save([], [("run_a", seq, name, data) for seq, name, data in flush])
        await store.runs.save([], [("run_b", 1, "run.started", DATA[0])])
        assert await store.runs.events_after("run_a", 0) == events
        for after in range(7):
            assert await store.runs.events_after("run_a", after) == events[after:]
        assert await store.runs.events_after("run_a", 1, limit=2) == events[1:3]
        assert await store.runs.events_after("run_a", 2, limit=3) == events[2:5]
        assert await store.runs.last_seq("run_a") == 6
        assert await store.runs.last_seq("run_b") == 1
        assert await store.runs.last_seq("run_none") == 0
    finally:
        await store.close()


async def test_a_flush_sent_again_with_more_events_replaces_its_row(store: Store) -> None:
    first = [("run_a", 1, "run.started", DATA[0]), ("run_a", 2, "node.queued", DATA[1])]
    more = [*first, ("run_a", 3, "node.started", DATA[2])]
    try:
        await store.runs.save([], first)
        await store.runs.save([], more)  # its flush was not known to have landed: sent again, longer
        await store.runs.save([], first)  # an older copy changes nothing
        assert await store.runs.events_after("run_a", 0) == [(s, n, d) for _, s, n, d in more]
        assert await store.runs.last_seq("run_a") == 3
    finally:
        await store.close()


@pytest.mark.parametrize("count", [1, 255, 256, 700])
async def test_one_flush_of_many_runs_stores_every_run_and_event(store: Store, count: int) -> None:
    """A flush's rows go in as few multi-row statements (256, 128, ... rows each): every count,
    across those sizes, stores every snapshot and chunk; a run saved again is replaced."""
    def run(i: int, state: Literal["running", "completed"]) -> Run:
        return Run(f"run_{i:04d}", "wf_x", 1, state, i, 1.0, "2026-11-29T00:00:00.000Z",
                   "2026-11-29T00:00:00.000Z", None, 0.0, {})

    try:
        await store.runs.save([run(i, "running") for i in range(count)],
                              [(f"run_{i:04d}", seq, "node.queued", DATA[seq % 4])
                               for i in range(count) for seq in (1, 2)])
        await store.runs.save([run(i, "completed") for i in range(0, count, 2)],
                              [(f"run_{i:04d}", 3, "run.completed", DATA[0]) for i in range(0, count, 2)])
        for i in (0, count // 2, count - 1):
            stored = await store.runs.get(f"run_{i:04d}")
            assert stored is not None and stored.seed == i
            assert stored.state == ("completed" if i % 2 == 0 else "running")
            expected = [(1, "node.queued", DATA[1]), (2, "node.queued", DATA[2])]
            if i % 2 == 0:
                expected.append((3, "run.completed", DATA[0]))
            assert await store.runs.events_after(f"run_{i:04d}", 0) == expected
        page = await store.runs.page(1000, None, workflow_id="wf_x")
        assert len(page.items) == count
    finally:
        await store.close()
