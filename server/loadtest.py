"""`flowstage loadtest`: drive a Flowstage server with many concurrent runs and report.

It creates (or reuses) one workflow of K nodes in a given shape, starts N runs keeping C in
flight, follows each to its end (polling `GET /api/runs/{id}` with a backoff, or with
`--subscribe` reading `/api/runs/{id}/events` until the terminal event), shows live
progress, and prints a summary: run makespan percentiles against the ideal critical path,
execute (and optionally pause/resume) latency, events received, runs by final state and
errors by kind. `--json FILE` writes the same summary for CI.

Only HTTP: it runs against any Flowstage URL. `run_loadtest` is the async entry point (the
tests call it directly); `command` is what `flowstage loadtest` runs. Cancelling
`run_loadtest` (Ctrl-C) cancels the in-flight requests and still returns, prints and writes
the partial summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgspec
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flowstage.actors.clock import Clock, SystemClock

__all__ = [
    "MAX_DURATION_S",
    "MAX_RUNS",
    "LoadtestError",
    "Options",
    "Percentiles",
    "Summary",
    "add_arguments",
    "build_workflow",
    "command",
    "critical_path",
    "parse_sse",
    "percentiles",
    "render_summary",
    "run_loadtest",
]

# Without --allow-large a test is refused beyond these: a typo must not start a day-long flood.
MAX_RUNS = 100_000
MAX_DURATION_S = 3600.0

Shape = Literal["chain", "diamond", "fanout"]
StoppedBy = Literal["completed", "duration", "interrupted"]

TERMINAL_STATES = frozenset({"completed", "failed", "stopped"})
TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.stopped"})
IDEAL_ESTIMATE = "fixed: ms exactly; uniform: mean; lognormal: median (capped at max)"
MAKESPAN_SOURCE = "server: finishedAt - createdAt of the run record"

_MIDDLE_TYPES = ("http_request", "transform")
_JSON = {"Content-Type": "application/json"}
_SSE_ATTEMPTS = 3
_POLL_CAP_S = 1.0
_POLL_ERRORS_BEFORE_GIVING_UP = 5


class LoadtestError(Exception):
    """The test cannot start (bad options, server unreachable or not Flowstage); the message
    says why. Problems during the test are counted in the summary, not raised."""


class Options(msgspec.Struct, frozen=True, kw_only=True):
    url: str = "http://127.0.0.1:8080"
    runs: int = 100
    concurrency: int = 10
    workflow: str | None = None
    nodes: int = 10
    shape: Shape = "chain"
    speed: float = 100.0
    failure_rate: float = 0.0
    subscribe: bool = False
    duration: float = 600.0
    json_path: str | None = None
    # The first N runs are paused and resumed once, right after they start, to time controls.
    control_sample: int = 0
    allow_large: bool = False
    # Seconds between two plain progress lines when the output is not a terminal.
    progress_interval: float = 2.0
    request_timeout: float = 30.0


def check_options(opts: Options) -> None:
    problems = []
    if not opts.url.startswith(("http://", "https://")):
        problems.append(f"--url must be an http:// or https:// URL, not {opts.url!r}")
    if opts.runs < 1:
        problems.append("--runs must be at least 1")
    elif opts.runs > MAX_RUNS and not opts.allow_large:
        problems.append(f"--runs {opts.runs} is above {MAX_RUNS:,}; "
                        "add --allow-large if you mean it")
    if opts.concurrency < 1:
        problems.append("--concurrency must be at least 1")
    if not (math.isfinite(opts.duration) and opts.duration > 0):
        problems.append("--duration must be a positive number of seconds")
    elif opts.duration > MAX_DURATION_S and not opts.allow_large:
        problems.append(f"--duration {opts.duration:g} is above {MAX_DURATION_S:g} s; "
                        "add --allow-large if you mean it")
    if not (math.isfinite(opts.speed) and 0 < opts.speed <= 1e6):
        problems.append("--speed must be greater than 0 and at most 1e6")
    if not 0.0 <= opts.failure_rate <= 1.0:
        problems.append("--failure-rate must be between 0 and 1")
    if opts.control_sample < 0:
        problems.append("--control-sample must be 0 or more")
    if opts.workflow is None:
        least = _MIN_NODES[opts.shape]
        if not least <= opts.nodes <= 1000:
            problems.append(f"--nodes for a {opts.shape} must be between {least} and 1000")
    if problems:
        raise LoadtestError("; ".join(problems))


# --- the workflow under test ---------------------------------------------------------------

_MIN_NODES: dict[str, int] = {"chain": 2, "diamond": 4, "fanout": 3}


def _pick(types: Mapping[str, Any], preferred: str, want_inputs: bool, want_outputs: bool) -> str:
    if preferred in types:
        return preferred
    for name, spec in types.items():
        if bool(spec.get("inputs")) == want_inputs and bool(spec.get("outputs")) == want_outputs:
            return name
    raise LoadtestError(f"the server has no node type like {preferred!r}")


def build_workflow(shape: Shape, k: int, types: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A workflow body of `k` nodes: trigger first, then
    - chain:   trigger -> k-2 middle nodes in a line -> output
    - diamond: trigger -> two parallel lines sharing the k-2 middle nodes -> merge
    - fanout:  trigger -> k-2 parallel middle nodes -> output (fan-in on one input handle)
    Middle nodes alternate http_request (lognormal) and transform (uniform)."""
    trigger = _pick(types, "manual_trigger", False, True)
    sink = _pick(types, "output", True, False)
    middle = [t for t in _MIDDLE_TYPES if t in types] or [_pick(types, "transform", True, True)]
    nodes: list[dict[str, Any]] = []
    connections: list[dict[str, Any]] = []

    def node(kind: str, x: int, y: int) -> str:
        nid = f"n{len(nodes)}"
        nodes.append({"id": nid, "type": kind, "position": {"x": x, "y": y},
                      "data": {"label": f"{kind} {len(nodes)}", "config": {}}})
        return nid

    def connect(source: str, target: str) -> None:
        src = next(n for n in nodes if n["id"] == source)["type"]
        dst = next(n for n in nodes if n["id"] == target)["type"]
        connections.append({"id": f"c{len(connections)}", "source": source, "target": target,
                            "sourceHandle": types[src]["outputs"][0]["id"],
                            "targetHandle": types[dst]["inputs"][0]["id"]})

    start = node(trigger, 0, 0)
    inner = k - 2
    if shape == "chain":
        last = start
        for i in range(inner):
            nid = node(middle[i % len(middle)], 220 * (i + 1), 0)
            connect(last, nid)
            last = nid
        connect(last, node(sink, 220 * (inner + 1), 0))
    elif shape == "diamond":
        merge = _pick(types, "merge", True, True)
        branches = [(inner + 1) // 2, inner // 2]
        ends = []
        made = 0
        for b, length in enumerate(branches):
            last = start
            for i in range(length):
                nid = node(middle[made % len(middle)], 220 * (i + 1), 160 * b - 80)
                made += 1
                connect(last, nid)
                last = nid
            ends.append(last)
        end = node(merge, 220 * (max(branches) + 1), 0)
        for last in ends:
            connect(last, end)
    else:
        ends = []
        for i in range(inner):
            nid = node(middle[i % len(middle)], 220, 120 * i)
            connect(start, nid)
            ends.append(nid)
        end = node(sink, 440, 0)
        for nid in ends:
            connect(nid, end)
    return {"name": name, "description": f"flowstage loadtest: {shape} of {k} nodes",
            "tags": ["loadtest"], "nodes": nodes, "connections": connections}


def point_estimate_ms(kind: str, timing: Mapping[str, Any], config: Mapping[str, Any]) -> float:
    """One number for a node's duration at speed 1 (see IDEAL_ESTIMATE)."""
    if kind == "delay" and isinstance(config.get("ms"), int | float):
        return float(config["ms"])
    match timing.get("kind"):
        case "fixed":
            return float(timing["ms"])
        case "uniform":
            return (float(timing["minMs"]) + float(timing["maxMs"])) / 2
        case "lognormal":
            return min(float(timing["medianMs"]), float(timing["maxMs"]))
    return 0.0


def critical_path(workflow: Mapping[str, Any], types: Mapping[str, Any]) -> tuple[float, list[str]]:
    """The longest path through the workflow's DAG, weighting each node by its point
    estimate: (ms at speed 1, the node types along it). Both branches of a condition count,
    so with conditions it is an upper bound."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    weight = {nid: point_estimate_ms(n["type"], types.get(n["type"], {}).get("timing", {}),
                                     (n.get("data") or {}).get("config") or {})
              for nid, n in nodes.items()}
    after: dict[str, list[str]] = {nid: [] for nid in nodes}
    indegree = dict.fromkeys(nodes, 0)
    for c in workflow["connections"]:
        after[c["source"]].append(c["target"])
        indegree[c["target"]] += 1
    ready = deque(nid for nid, d in indegree.items() if d == 0)
    best = {nid: weight[nid] for nid in nodes}
    came_from: dict[str, str | None] = dict.fromkeys(nodes)
    seen = 0
    while ready:
        nid = ready.popleft()
        seen += 1
        for nxt in after[nid]:
            if best[nid] + weight[nxt] > best[nxt]:
                best[nxt] = best[nid] + weight[nxt]
                came_from[nxt] = nid
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if seen != len(nodes):
        raise LoadtestError(f"workflow {workflow.get('id')!r} has a cycle; it cannot run")
    if not nodes:
        return 0.0, []
    last = max(best, key=lambda nid: best[nid])
    path: list[str] = []
    step: str | None = last
    while step is not None:
        path.append(nodes[step]["type"])
        step = came_from[step]
    return best[last], path[::-1]


# --- figures -------------------------------------------------------------------------------


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


class _Tally:
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


def _summary(opts: Options, tally: _Tally, workflow_ids: list[str], ideal: Ideal,
             nodes: int, stopped_by: StoppedBy) -> Summary:
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


# --- talking to the server -----------------------------------------------------------------


class _RunView(msgspec.Struct, rename="camel"):
    """The few fields of a Run the load tester reads."""

    id: str
    state: str
    created_at: str
    finished_at: str | None = None


_decode_run = msgspec.json.Decoder(_RunView).decode
_decode_any = msgspec.json.Decoder().decode
_CLIENT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, msgspec.DecodeError)


def _ms_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


class _Target:
    """Everything fixed for the duration of the test."""

    def __init__(self, opts: Options, workflow_id: str, ideal: Ideal) -> None:
        self.opts = opts
        self.base = opts.url.rstrip("/")
        self.workflow_id = workflow_id
        self.ideal = ideal
        body: dict[str, Any] = {"speed": opts.speed}
        if opts.failure_rate:
            body["failureRate"] = opts.failure_rate
        self.execute_body = msgspec.json.encode(body)
        self.execute_url = f"{self.base}/api/workflows/{workflow_id}/execute"
        self.first_poll_s = min(max(ideal.ms / 1000, 0.005), _POLL_CAP_S)
        self.sse_timeout = aiohttp.ClientTimeout(total=None, connect=opts.request_timeout,
                                                 sock_read=60)


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        body = await resp.read()
        return resp.status, (_decode_any(body) if body and resp.status < 300 else body)


async def _prepare(session: aiohttp.ClientSession, opts: Options) -> tuple[_Target, int]:
    base = opts.url.rstrip("/")
    try:
        status, page = await _get_json(session, f"{base}/api/node-types")
    except _CLIENT_ERRORS as exc:
        raise LoadtestError(f"cannot reach {opts.url}: {_kind(exc)}: {exc}") from exc
    if status != 200 or not isinstance(page, dict) or "items" not in page:
        raise LoadtestError(f"{opts.url} does not look like a Flowstage server: "
                            f"GET /api/node-types answered {status}")
    types = {t["type"]: t for t in page["items"]}
    try:
        if opts.workflow:
            status, workflow = await _get_json(session, f"{base}/api/workflows/{opts.workflow}")
            if status != 200:
                raise LoadtestError(f"workflow {opts.workflow!r}: GET answered {status}")
        else:
            body = build_workflow(opts.shape, opts.nodes, types,
                                  f"loadtest {opts.shape} x{opts.nodes}")
            async with session.post(f"{base}/api/workflows", data=msgspec.json.encode(body),
                                    headers=_JSON) as resp:
                raw = await resp.read()
                if resp.status != 201:
                    raise LoadtestError(f"creating the workflow answered {resp.status}: "
                                        f"{raw[:500].decode(errors='replace')}")
                workflow = _decode_any(raw)
    except _CLIENT_ERRORS as exc:
        raise LoadtestError(f"preparing the workflow failed: {_kind(exc)}: {exc}") from exc
    ms, path = critical_path(workflow, types)
    ideal = Ideal(ms=round(ms / opts.speed, 3), ms_at_speed_1=round(ms, 3),
                  estimate=IDEAL_ESTIMATE, critical_path=path)
    return _Target(opts, workflow["id"], ideal), len(workflow["nodes"])


async def _one_run(session: aiohttp.ClientSession, target: _Target, tally: _Tally,
                   index: int) -> None:
    """Start one run and follow it to its end; every problem is counted, none raised."""
    sent = time.perf_counter()
    try:
        async with session.post(target.execute_url, data=target.execute_body,
                                headers=_JSON) as resp:
            raw = await resp.read()
            status = resp.status
    except _CLIENT_ERRORS as exc:
        tally.error("execute", _kind(exc))
        return
    if status != 202:
        tally.error("execute", f"HTTP {status}")
        return
    tally.execute_ms.append((time.perf_counter() - sent) * 1000)
    tally.started += 1
    try:
        run_id = _decode_run(raw).id
    except msgspec.DecodeError:
        tally.error("execute", "undecodable run")
        return
    sampled = index < target.opts.control_sample
    if sampled:
        await _control_sample(session, target, tally, run_id)
    if target.opts.subscribe:
        final = await _follow_events(session, target, tally, run_id)
    else:
        final = await _poll(session, target, tally, run_id, target.first_poll_s)
    if final is None:
        return
    tally.client_ms.append((time.perf_counter() - sent) * 1000)
    tally.states[final.state] += 1
    # A paused-and-resumed run's makespan includes the pause: keep it out of the figures.
    if final.finished_at and not sampled:
        tally.makespan_ms.append(_ms_between(final.created_at, final.finished_at))


async def _control_sample(session: aiohttp.ClientSession, target: _Target, tally: _Tally,
                          run_id: str) -> None:
    for action in ("pause", "resume"):
        sent = time.perf_counter()
        try:
            async with session.post(f"{target.base}/api/runs/{run_id}/{action}") as resp:
                await resp.read()
                status = resp.status
        except _CLIENT_ERRORS as exc:
            tally.error(action, _kind(exc))
            return
        if status == 409:  # finished before the control arrived: not an error
            tally.control_too_late += 1
            return
        if status != 200:
            tally.error(action, f"HTTP {status}")
            return
        tally.control_ms[action].append((time.perf_counter() - sent) * 1000)


async def _poll(session: aiohttp.ClientSession, target: _Target, tally: _Tally, run_id: str,
                first_delay: float) -> _RunView | None:
    """GET the run until it is finished: first when it should be, then backing off by 1.5x
    up to 1 s; If-None-Match makes an unchanged answer a bodiless 304."""
    url = f"{target.base}/api/runs/{run_id}"
    delay = first_delay
    step = max(0.01, first_delay / 4)
    etag: str | None = None
    errors = 0
    while True:
        if delay > 0:
            await asyncio.sleep(delay)
        delay, step = step, min(step * 1.5, _POLL_CAP_S)
        try:
            async with session.get(url, headers={"If-None-Match": etag} if etag else None) as resp:
                status = resp.status
                raw = await resp.read()
                if status == 200:
                    etag = resp.headers.get("ETag")
                    run = _decode_run(raw)
                    if run.state in TERMINAL_STATES:
                        return run
                    errors = 0
                    continue
                if status == 304:
                    errors = 0
                    continue
                tally.error("poll", f"HTTP {status}")
                if status == 429:
                    delay = max(delay, float(resp.headers.get("Retry-After", "1") or 1))
                elif status < 500:
                    return None
        except _CLIENT_ERRORS as exc:
            tally.error("poll", _kind(exc))
        errors += 1
        if errors >= _POLL_ERRORS_BEFORE_GIVING_UP:
            return None


def parse_sse(buffer: bytearray, chunk: bytes) -> Iterator[tuple[str, int | None]]:
    """Feed one chunk of a text/event-stream; yield (event name, id) for every complete
    message. `buffer` keeps the incomplete tail between calls. Comments are skipped."""
    buffer += chunk
    if b"\r" in buffer:  # CRLF line ends; a CR at the very end may meet its LF next time
        tail = buffer.endswith(b"\r")
        buffer[:] = bytes(buffer[:-1] if tail else buffer).replace(b"\r\n", b"\n")
        if tail:
            buffer += b"\r"
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return
        message = bytes(buffer[:end])
        del buffer[:end + 2]
        name, ident, has_field = "message", None, False
        for line in message.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"event":
                name, has_field = value.decode(), True
            elif field == b"id":
                ident, has_field = (int(value) if value.isdigit() else None), True
            elif field == b"data":
                has_field = True
        if has_field:
            yield name, ident


async def _follow_events(session: aiohttp.ClientSession, target: _Target, tally: _Tally,
                         run_id: str) -> _RunView | None:
    """Read the run's event stream until its terminal event (resuming with Last-Event-ID
    if it drops), then read the run record once for its times."""
    url = f"{target.base}/api/runs/{run_id}/events"
    last = 0
    for _ in range(_SSE_ATTEMPTS):
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
        try:
            async with session.get(url, headers=headers, timeout=target.sse_timeout) as resp:
                if resp.status != 200:
                    tally.error("events", f"HTTP {resp.status}")
                    break
                buffer = bytearray()
                async for chunk in resp.content.iter_any():
                    for name, ident in parse_sse(buffer, chunk):
                        if ident is not None:
                            if ident <= last:
                                continue  # a replay after a reconnect
                            last = ident
                        tally.events += 1
                        if name in TERMINAL_EVENTS:
                            return await _poll(session, target, tally, run_id, 0)
                tally.error("events", "stream closed before the terminal event")
        except _CLIENT_ERRORS as exc:
            tally.error("events", _kind(exc))
    # The stream could not be followed: fall back to polling, so the run is still counted.
    return await _poll(session, target, tally, run_id, target.first_poll_s)


async def _drive(session: aiohttp.ClientSession, target: _Target, tally: _Tally) -> None:
    indices = iter(range(tally.requested))

    async def worker() -> None:
        for index in indices:  # one iterator shared by every worker: each index once
            tally.in_flight += 1
            try:
                await _one_run(session, target, tally, index)
            except Exception as exc:  # a bug here must not stop the other workers
                tally.error("loadtest", _kind(exc))
            finally:
                tally.in_flight -= 1

    async with asyncio.TaskGroup() as group:
        for _ in range(min(target.opts.concurrency, tally.requested)):
            group.create_task(worker())


# --- output --------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:,.1f}{unit}"


def _progress_figures(tally: _Tally) -> list[tuple[str, str]]:
    elapsed = max(tally.elapsed(), 1e-9)
    make = percentiles(tally.makespan_ms)
    execute = percentiles(tally.execute_ms)
    return [
        ("elapsed", f"{elapsed:,.1f} s"),
        ("started", f"{tally.started:,} / {tally.requested:,}"),
        ("finished", f"{tally.finished:,} (completed {tally.states['completed']:,}, "
                     f"failed {tally.states['failed']:,}, stopped {tally.states['stopped']:,})"),
        ("in flight", f"{tally.in_flight:,}"),
        ("runs/s", f"{tally.finished / elapsed:,.1f}"),
        ("events/s", f"{tally.events / elapsed:,.1f}"),
        ("makespan p50/p95", f"{_fmt(make.p50)} / {_fmt(make.p95)} ms"),
        ("execute p50/p95", f"{_fmt(execute.p50)} / {_fmt(execute.p95)} ms"),
        ("errors", f"{sum(tally.errors.values()):,}"),
    ]


def _progress_table(tally: _Tally) -> Table:
    table = Table(box=box.SIMPLE, show_header=False, title="flowstage loadtest")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in _progress_figures(tally):
        table.add_row(label, value)
    return table


@contextlib.asynccontextmanager
async def _progress(console: Console, tally: _Tally, interval: float) -> AsyncIterator[None]:
    """Live progress: a table redrawn in place on a terminal, else a plain line every
    `interval` seconds. Its task is owned here: cancelled and awaited on exit."""
    if console.is_terminal:
        live = Live(_progress_table(tally), console=console, auto_refresh=False, transient=True)

        def draw() -> None:
            live.update(_progress_table(tally), refresh=True)

        period = 0.25
        cm: contextlib.AbstractContextManager[Any] = live
    else:
        def draw() -> None:
            console.print("  ".join(f"{k} {v}" for k, v in _progress_figures(tally)),
                          highlight=False, soft_wrap=True)

        period = interval
        cm = contextlib.nullcontext()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(period)
            draw()

    with cm:
        task = asyncio.create_task(ticker(), name="flowstage-loadtest-progress")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def render_summary(summary: Summary) -> Group:
    head = Text(f"{summary.url}  workflow {', '.join(summary.workflow_ids) or '-'}  "
                f"{summary.shape or 'given'} of {summary.nodes} nodes  speed {summary.speed:g}  "
                f"concurrency {summary.concurrency}  "
                f"{'SSE' if summary.subscribe else 'polling'}  "
                f"stopped by: {summary.stopped_by}"
                + ("  (PARTIAL)" if summary.stopped_by != "completed" else ""))
    runs = summary.runs
    counts = Table(box=box.SIMPLE_HEAD, title="runs", show_header=False)
    counts.add_column()
    counts.add_column(justify="right")
    counts.add_column()
    counts.add_column(justify="right")
    pairs = [("requested", f"{runs.requested:,}"), ("started", f"{runs.started:,}"),
             ("completed", f"{runs.completed:,}"), ("failed", f"{runs.failed:,}"),
             ("stopped", f"{runs.stopped:,}"), ("unfinished", f"{runs.unfinished:,}"),
             ("not started", f"{runs.not_started:,}"), ("wall", f"{summary.wall_seconds:,.2f} s"),
             ("runs/s", f"{summary.runs_per_second:,.1f}"),
             ("events received", f"{summary.events_received:,}"),
             ("events/s", f"{summary.events_per_second:,.1f}"),
             ("errors", f"{summary.error_total:,}")]
    for left, right in zip(pairs[0::2], pairs[1::2], strict=True):
        counts.add_row(*left, *right)
    lat = Table(box=box.SIMPLE_HEAD, title="latency (ms)")
    for col in ("", "n", "p50", "p95", "p99", "max", "mean"):
        lat.add_column(col, justify="right" if col else "left", no_wrap=not col)

    def row(label: str, p: Percentiles) -> None:
        lat.add_row(label, f"{p.count:,}", _fmt(p.p50), _fmt(p.p95), _fmt(p.p99), _fmt(p.max),
                    _fmt(p.mean))

    ideal = summary.ideal.ms
    lat.add_row("ideal makespan", "", _fmt(ideal), "", "", "", "")
    row("makespan (server)", summary.makespan_ms)
    row("makespan (client)", summary.client_makespan_ms)
    row("execute POST", summary.execute_latency_ms)
    for action, p in summary.control_latency_ms.items():
        row(f"{action} POST", p)
    notes = [f"ideal = critical path {' > '.join(summary.ideal.critical_path)} = "
             f"{summary.ideal.ms_at_speed_1:,.1f} ms / speed {summary.speed:g} "
             f"({summary.ideal.estimate})"]
    if summary.makespan_ms.p50 is not None and ideal > 0:
        notes.append(f"makespan p50 / ideal = {summary.makespan_ms.p50 / ideal:.2f}")
    if summary.control_too_late:
        notes.append(f"{summary.control_too_late} pause/resume samples came after the run ended")
    errors = Table(box=box.SIMPLE_HEAD, title=f"errors: {summary.error_total:,}")
    errors.add_column("kind")
    errors.add_column("count", justify="right")
    for kind, n in summary.errors.items():
        errors.add_row(kind, f"{n:,}")
    parts: list[Any] = [head, counts, lat, *(Text(n) for n in notes)]
    if summary.errors:
        parts.append(errors)
    else:
        parts.append(Text("errors: 0"))
    return Group(*parts)


# --- entry points --------------------------------------------------------------------------


def _expire(deadline: asyncio.Timeout) -> None:
    deadline.reschedule(asyncio.get_running_loop().time())  # expires on the loop's next turn


async def run_loadtest(opts: Options, console: Console | None = None, *,
                       clock: Clock | None = None) -> Summary:
    """Run the test; print the summary (and write --json). Raises LoadtestError if it cannot
    start. Cancelling it (Ctrl-C) stops the runs in flight and returns the partial summary.

    `clock` times `--duration` only (wall time by default; every figure is wall time): a test
    passes a ManualClock to make the duration run out at the moment it chooses."""
    check_options(opts)
    console = console or Console()
    tally = _Tally(opts.runs)
    target: _Target | None = None
    nodes = opts.nodes
    stopped_by: StoppedBy = "completed"
    # Connections: one per worker, one more per SSE stream, a few for control samples.
    limit = opts.concurrency * (2 if opts.subscribe else 1) + 16
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=opts.request_timeout)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            deadline = asyncio.timeout(None)
            try:
                async with deadline:
                    expiry = (clock or SystemClock()).call_later(opts.duration, _expire, deadline)
                    try:
                        target, nodes = await _prepare(session, opts)
                        tally.t0 = time.perf_counter()
                        async with _progress(console, tally, opts.progress_interval):
                            await _drive(session, target, tally)
                    finally:
                        expiry.cancel()
            except TimeoutError:
                if not deadline.expired():
                    raise
                stopped_by = "duration"
    except asyncio.CancelledError:
        stopped_by = "interrupted"
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    if target is None:
        ideal = Ideal(0.0, 0.0, IDEAL_ESTIMATE, [])
        workflow_ids: list[str] = []
    else:
        ideal, workflow_ids = target.ideal, [target.workflow_id]
    summary = _summary(opts, tally, workflow_ids, ideal, nodes, stopped_by)
    console.print(render_summary(summary))
    if opts.json_path:
        data = msgspec.json.format(msgspec.json.encode(summary), indent=2) + b"\n"
        await asyncio.to_thread(Path(opts.json_path).write_bytes, data)
        console.print(f"summary written to {opts.json_path}", highlight=False)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Options()
    parser.add_argument("--url", default=d.url, help=f"the server (default {d.url})")
    parser.add_argument("--runs", type=int, default=d.runs, metavar="N",
                        help=f"runs to start (default {d.runs}; at most {MAX_RUNS:,} "
                             "without --allow-large)")
    parser.add_argument("--concurrency", type=int, default=d.concurrency, metavar="C",
                        help=f"runs in flight at once (default {d.concurrency})")
    parser.add_argument("--workflow", metavar="ID", help="run this existing workflow "
                        "instead of creating one")
    parser.add_argument("--nodes", type=int, default=d.nodes, metavar="K",
                        help=f"nodes in the created workflow (default {d.nodes})")
    parser.add_argument("--shape", choices=("chain", "diamond", "fanout"), default=d.shape,
                        help="shape of the created workflow (default chain)")
    parser.add_argument("--speed", type=float, default=d.speed, metavar="S",
                        help=f"execute speed: simulated time runs S times faster "
                             f"(default {d.speed:g})")
    parser.add_argument("--failure-rate", type=float, default=d.failure_rate, metavar="P",
                        help="execute failureRate: chance that each node fails (default 0)")
    parser.add_argument("--subscribe", action="store_true",
                        help="follow runs over SSE (/api/runs/{id}/events) instead of polling")
    parser.add_argument("--duration", type=float, default=d.duration, metavar="T",
                        help=f"stop after T seconds whatever is left (default {d.duration:g}; "
                             f"at most {MAX_DURATION_S:g} without --allow-large)")
    parser.add_argument("--json", dest="json_path", metavar="FILE",
                        help="also write the summary as JSON to FILE")
    parser.add_argument("--control-sample", type=int, default=0, metavar="N",
                        help="pause and resume the first N runs once, timing the controls")
    parser.add_argument("--allow-large", action="store_true",
                        help=f"allow --runs above {MAX_RUNS:,} and --duration above "
                             f"{MAX_DURATION_S:g} s")
    parser.add_argument("--progress-interval", type=float, default=d.progress_interval,
                        metavar="SECONDS", help="seconds between plain progress lines when "
                        "the output is not a terminal")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the load generator's event loop (uvloop needs the uvloop extra)")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event-loop factory for `--loop`; LoadtestError if uvloop is wanted but missing."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        raise LoadtestError("--loop uvloop needs uvloop: pip install -e '.[uvloop]'") from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def command(args: argparse.Namespace) -> int:
    """`flowstage loadtest`: 0 when every run was followed with no error, 1 when errors were
    counted, 2 when the test could not start, 130 when interrupted (after the summary)."""
    try:
        opts = Options(url=args.url, runs=args.runs, concurrency=args.concurrency,
                       workflow=args.workflow, nodes=args.nodes, shape=args.shape,
                       speed=args.speed, failure_rate=args.failure_rate,
                       subscribe=args.subscribe, duration=args.duration,
                       json_path=args.json_path, control_sample=args.control_sample,
                       allow_large=args.allow_large, progress_interval=args.progress_interval)
        check_options(opts)
        factory = loop_factory(args.loop)
        with asyncio.Runner(loop_factory=factory) as runner:
            summary = runner.run(run_loadtest(opts))
    except LoadtestError as exc:
        print(f"flowstage loadtest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C while the summary was being written
        return 130
    if summary.stopped_by == "interrupted":
        return 130
    return 1 if summary.error_total else 0
