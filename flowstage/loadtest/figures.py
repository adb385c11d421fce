"""The figures of a load test: `Tally`, what the workers have counted so far, and `Summary`, the
result `summarize` makes of it (printed by report.py, written by --json), with nearest-rank
`percentiles` for every latency."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import msgspec

from flowstage.loadtest.options import Options

__all__ = [
    "MAKESPAN_SOURCE",
    "Ideal",
    "Percentiles",
    "RunCounts",
    "StoppedBy",
    "Summary",
    "Tally",
    "percentiles",
    "summarize",
]

StoppedBy = Literal["completed", "duration", "interrupted"]
MAKESPAN_SOURCE = "server: finishedAt - createdAt of the run record"


class Percentiles(msgspec.Struct, frozen=True, rename="camel"):
    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    mean: float | None


def percentiles(values: Sequence[float]) -> Percentiles:
    """Nearest-rank percentiles, rounded to 0.01 (ms are the unit everywhere here)."""
    if not values:
        return Percentiles(0, None, None, None, None, None)
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * n) - 1)], 2)

    return Percentiles(n, rank(50), rank(95), rank(99), round(ordered[-1], 2),
                       round(sum(ordered) / n, 2))


class RunCounts(msgspec.Struct, frozen=True, rename="camel"):
    requested: int
    started: int
    finished: int
    completed: int
    failed: int
    stopped: int
    # started, but not seen to finish (the test ended first, or following it failed)
    unfinished: int
    not_started: int


class Ideal(msgspec.Struct, frozen=True, rename="camel"):
    ms: float
    ms_at_speed_1: float
    estimate: str
    critical_path: list[str]


class Summary(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    url: str
    workflow_ids: list[str]
    shape: str | None
    nodes: int
    speed: float
    failure_rate: float
    concurrency: int
    subscribe: bool
    stopped_by: StoppedBy
    wall_seconds: float
    runs: RunCounts
    events_received: int
    runs_per_second: float
    events_per_second: float
    ideal: Ideal
    makespan_source: str
    makespan_ms: Percentiles
    client_makespan_ms: Percentiles
    execute_latency_ms: Percentiles
    control_latency_ms: dict[str, Percentiles]
    # pause/resume samples answered 409: the run had already finished
    control_too_late: int
    errors: dict[str, int]
    error_total: int


class Tally:
    """What the workers have seen so far; read by the progress display and the summary."""

    def __init__(self, requested: int) -> None:
        self.requested = requested
        self.started = 0
        self.states: Counter[str] = Counter()
        self.makespan_ms: list[float] = []
        self.client_ms: list[float] = []
        self.execute_ms: list[float] = []
        self.control_ms: dict[str, list[float]] = {"pause": [], "resume": []}
        self.control_too_late = 0
        self.events = 0
        # runs between their execute POST and their end (or giving up on them)
        self.in_flight = 0
        self.errors: Counter[str] = Counter()
        self.t0 = time.perf_counter()

    def error(self, phase: str, kind: str) -> None:
        self.errors[f"{phase}: {kind}"] += 1

    @property
    def finished(self) -> int:
        return sum(self.states.values())

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def summarize(opts: Options, tally: Tally, workflow_ids: list[str], ideal: Ideal,
              nodes: int, stopped_by: StoppedBy) -> Summary:
    """The Summary of what `tally` counted, for a test of `opts` on a workflow of `nodes`
    nodes whose ideal makespan is `ideal`."""
    wall = tally.elapsed()
    finished = tally.finished
    return Summary(
        url=opts.url, workflow_ids=workflow_ids, shape=None if opts.workflow else opts.shape,
        nodes=nodes, speed=opts.speed, failure_rate=opts.failure_rate,
        concurrency=opts.concurrency, subscribe=opts.subscribe, stopped_by=stopped_by,
        wall_seconds=round(wall, 3),
        runs=RunCounts(
            requested=tally.requested, started=tally.started, finished=finished,
            completed=tally.states["completed"], failed=tally.states["failed"],
            stopped=tally.states["stopped"], unfinished=tally.started - finished,
            not_started=tally.requested - tally.started),
        events_received=tally.events,
        runs_per_second=round(finished / wall, 2) if wall > 0 else 0.0,
        events_per_second=round(tally.events / wall, 2) if wall > 0 else 0.0,
        ideal=ideal, makespan_source=MAKESPAN_SOURCE,
        makespan_ms=percentiles(tally.makespan_ms),
        client_makespan_ms=percentiles(tally.client_ms),
        execute_latency_ms=percentiles(tally.execute_ms),
        control_latency_ms={k: percentiles(v) for k, v in tally.control_ms.items() if v},
        control_too_late=tally.control_too_late,
        errors=dict(sorted(tally.errors.items())), error_total=sum(tally.errors.values()),
    )
