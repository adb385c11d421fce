"""The figures of a load test: `Tally`, what the workers have counted so far, and `Summary`, the
result `summarize` makes of it (printed by report.py, written by --json), with nearest-rank
`percentiles` for every latency. A figure that was not measured is None (null in JSON, "n/a"
on screen), never 0."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import msgspec

from flowstage.loadtest.options import Options

__all__ = [
    "FINAL_STATES",
    "MAKESPAN_SOURCE",
    "CpuFigures",
    "Ideal",
    "MemoryFigures",
    "Percentiles",
    "RunCounts",
    "StoppedBy",
    "StreamFigures",
    "Summary",
    "Tally",
    "percentiles",
    "summarize",
]

StoppedBy = Literal["completed", "duration", "interrupted"]
MAKESPAN_SOURCE = ("server: finishedAt (the terminal event's ts when following events) - "
                   "createdAt of the run record")
FINAL_STATES = ("completed", "failed", "stopped")


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
    # Makespans an idle server would show at the test's speed (workload.idle_makespans): the
    # tail that the timing profiles themselves put above `ms`. None: no workflow was run.
    idle_ms: Percentiles | None = None


class StreamFigures(msgspec.Struct, frozen=True, rename="camel"):
    """The one `/api/events` stream of `--follow events`."""

    # connections opened: the first, then one per reconnect (each resuming with Last-Event-ID)
    connections: int
    # stream.gap notices: events the server no longer held when the stream resumed
    gaps: int
    # runs read with GET /api/runs/{id} after a gap, so that none is lost
    runs_read_after_gaps: int


class CpuFigures(msgspec.Struct, frozen=True, rename="camel"):
    """CPU seconds used during the test (from the first run started to the last followed)."""

    load_tester_seconds: float
    # None when the server's CPU is not known (see server_source)
    server_seconds: float | None
    # load tester / server; None when the server's CPU is not known
    ratio: float | None
    # where server_seconds comes from, or why it is not known
    server_source: str


class MemoryFigures(msgspec.Struct, frozen=True, rename="camel"):
    """The server's resident memory (RSS, MiB) before the test, at its peak, and after it,
    once the server has let finished runs go; None where not known (see source)."""

    before_mib: float | None
    peak_mib: float | None
    after_mib: float | None
    # where the figures come from, or why they are not known
    source: str


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
    # Added with --follow: how runs were followed, makespans by final state (no survivor bias:
    # makespanMs mixes them), throttled requests (429, retried; not errors), the stream, CPU.
    follow: str
    makespan_by_state_ms: dict[str, Percentiles]
    client_makespan_by_state_ms: dict[str, Percentiles]
    throttled: dict[str, int]
    throttled_total: int
    # seconds into the test of the first and the last 429 (None: never throttled)
    throttled_first_s: float | None
    throttled_last_s: float | None
    throttled_wait_seconds: float
    stream: StreamFigures | None
    cpu: CpuFigures
    # Added with the server's memory (issue 14): RSS before, at the peak and after the test.
    memory: MemoryFigures


class Tally:
    """What the workers have seen so far; read by the progress display and the summary."""

    def __init__(self, requested: int) -> None:
        self.requested = requested
        self.started = 0
        self.states: Counter[str] = Counter()
        self.makespan_ms: dict[str, list[float]] = {state: [] for state in FINAL_STATES}
        self.client_ms: dict[str, list[float]] = {state: [] for state in FINAL_STATES}
        self.execute_ms: list[float] = []
        self.control_ms: dict[str, list[float]] = {"pause": [], "resume": []}
        self.control_too_late = 0
        self.events = 0
        # runs between their execute POST and their end (or giving up on them)
        self.in_flight = 0
        self.errors: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.throttle_times: list[float] = []  # perf_counter of the first and the last 429
        self.throttle_wait = 0.0
        self.connections = 0
        self.gaps = 0
        self.gap_reads = 0
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self._t_end: float | None = None
        self._cpu_end: float | None = None

    def start(self) -> None:
        """The clock starts: the first run is about to be started."""
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def stop(self) -> None:
        """The clock stops (once): the figures from here on are final."""
        if self._t_end is None:
            self._t_end = time.perf_counter()
            self._cpu_end = time.process_time()

    def error(self, phase: str, kind: str) -> None:
        self.errors[f"{phase}: {kind}"] += 1

    def throttle(self, phase: str, wait: float) -> None:
        """A request of `phase` was answered 429 and will be retried after `wait` s."""
        self.throttled[phase] += 1
        self.throttle_wait += wait
        now = time.perf_counter()
        if self.throttle_times:
            self.throttle_times[1:] = [now]
        else:
            self.throttle_times = [now, now]

    def ended(self, state: str, makespan_ms: float | None, client_ms: float) -> None:
        """A run was seen to end in `state`; its makespans (server's None: not measured)."""
        self.states[state] += 1
        if state in self.client_ms:
            self.client_ms[state].append(client_ms)
            if makespan_ms is not None:
                self.makespan_ms[state].append(makespan_ms)

    @property
    def finished(self) -> int:
        return sum(self.states.values())

    def elapsed(self) -> float:
        end = time.perf_counter() if self._t_end is None else self._t_end
        return end - self.t0

    def cpu_seconds(self) -> float:
        """This process's CPU time since the clock started (every thread, user + system)."""
        end = time.process_time() if self._cpu_end is None else self._cpu_end
        return end - self.cpu0


def _since_start(tally: Tally, at: float) -> float:
    return round(max(0.0, at - tally.t0), 3)


def summarize(opts: Options, tally: Tally, workflow_ids: list[str], ideal: Ideal,
              nodes: int, stopped_by: StoppedBy, cpu: CpuFigures, memory: MemoryFigures) -> Summary:
    """The Summary of what `tally` counted, for a test of `opts` on a workflow of `nodes`
    nodes whose ideal makespan is `ideal`."""
    wall = tally.elapsed()
    finished = tally.finished
    follow = opts.following
    times = tally.throttle_times
    return Summary(
        url=opts.url, workflow_ids=workflow_ids, shape=None if opts.workflow else opts.shape,
        nodes=nodes, speed=opts.speed, failure_rate=opts.failure_rate,
        concurrency=opts.concurrency, subscribe=follow == "run-events", stopped_by=stopped_by,
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
        makespan_ms=percentiles([v for vs in tally.makespan_ms.values() for v in vs]),
        client_makespan_ms=percentiles([v for vs in tally.client_ms.values() for v in vs]),
        execute_latency_ms=percentiles(tally.execute_ms),
        control_latency_ms={k: percentiles(v) for k, v in tally.control_ms.items()},  # unmeasured: count 0, nulls
        control_too_late=tally.control_too_late,
        errors=dict(sorted(tally.errors.items())), error_total=sum(tally.errors.values()),
        follow=follow,
        makespan_by_state_ms={k: percentiles(v) for k, v in tally.makespan_ms.items()},
        client_makespan_by_state_ms={k: percentiles(v) for k, v in tally.client_ms.items()},
        throttled=dict(sorted(tally.throttled.items())),
        throttled_total=sum(tally.throttled.values()),
        throttled_first_s=_since_start(tally, times[0]) if times else None,
        throttled_last_s=_since_start(tally, times[-1]) if times else None,
        throttled_wait_seconds=round(tally.throttle_wait, 3),
        stream=StreamFigures(tally.connections, tally.gaps, tally.gap_reads)
        if follow == "events" else None,
        cpu=cpu,
        memory=memory,
    )
