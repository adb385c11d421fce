"""Where runs and their events are persisted: a `RunSink`, written to in batches.

The engine never writes per event: a flusher groups every change of ~50 ms into one
`save_runs` and one `append_events` call (group commit). Run snapshots handed to a sink
carry node outputs as `msgspec.Raw` (JSON already encoded): encode the Run with
`msgspec.json` and they are embedded as they are; decode it back and they are plain data.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from flowstage.actors.eventlog import EventRows
from flowstage.simulation.models import Run

__all__ = ["MemorySink", "RunSink"]


class RunSink(Protocol):
    async def save_runs(self, runs: list[Run]) -> None:
        """Insert or replace these run snapshots (by run id)."""
        ...

    async def append_events(self, rows: EventRows) -> None:
        """Append these events. `rows` iterates (run_id, seq, name, data) tuples lazily
        (and has a len); each (run_id, seq) arrives once, in seq order per run."""
        ...


class MemorySink:
    """Keeps everything in dicts; for tests and benchmarks."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep  # False: only count (a benchmark measuring the engine alone)
        self.runs: dict[str, Run] = {}
        self.events: dict[str, list[tuple[int, str, bytes]]] = {}
        self.flushes = 0
        self.saved = 0
        self.appended = 0

    async def save_runs(self, runs: list[Run]) -> None:
        self.flushes += 1
        self.saved += len(runs)
        if self.keep:
            for run in runs:
                self.runs[run.id] = run

    async def append_events(self, rows: EventRows) -> None:
        self.appended += len(rows)
        if self.keep:
            for run_id, seq, name, data in rows:
                self.events.setdefault(run_id, []).append((seq, name, data))

    def run(self, run_id: str) -> Run:
        """A stored run with its outputs decoded to plain data."""
        return msgspec.json.decode(msgspec.json.encode(self.runs[run_id]), type=Run)
