"""Benchmark: N concurrent 10-node runs on the real clock, Flowstage's engine against a bare
asyncio skeleton of the same shape, in one invocation.

    .venv/bin/python bench/engine.py                 # N = 1000 5000 10000, 3 repeats
    .venv/bin/python bench/engine.py -n 10000 -r 5

Every run is a chain of ten nodes (trigger, http, transform, db, transform, llm, transform,
email, transform, output) whose durations are drawn uniform 50-200 ms from the run's seed;
`ideal` is the longest chain of all runs (~1.7 s at 10k runs), the wall time a machine
with no overhead would need. The skeleton gets exactly the same durations: one task per
run, `asyncio.sleep` per node, events appended to a list; no Flowstage code.

Each trial runs in a fresh subprocess, so RSS and the heap start clean. The engine writes
to a counting MemorySink (`keep=False`: batches are handed over and counted, not kept), so
the memory figure is the engine's own. Metrics: wall/ideal; events/s; event-loop lag
p50/p99 (a 10 ms ticker measuring its oversleep); peak RSS growth per active run; and the
zero-duration ceiling (node completions per second when simulated time is zero).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHAIN = ("manual_trigger", "http_request", "transform", "database_query", "transform", "llm_prompt",
         "transform", "send_email", "transform", "output")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * PAGE


def _workflow() -> Any:
    from simulation.models import Connection, Node, Position, Workflow

    pos = Position(0, 0)
    nodes = [Node(f"n{i}", t, pos) for i, t in enumerate(CHAIN)]
    conns = [Connection(f"c{i}", f"n{i}", f"n{i + 1}", "out", "in") for i in range(len(CHAIN) - 1)]
    return Workflow("wf-bench", "bench", "", [], 1, "2026-01-01T00:00:00.000Z",
                    "2026-01-01T00:00:00.000Z", nodes, conns)


def _durations(n: int, zero: bool) -> list[list[float]]:
    """Per run, per node, seconds: what the engine draws for seed i (pure functions)."""
    from simulation.catalogue import Uniform
    from simulation.rng import STREAM_TIMING, Rng, node_seed
    from simulation.timing import duration_ms

    if zero:
        return [[0.0] * len(CHAIN) for _ in range(n)]
    timing = Uniform(min_ms=50, max_ms=200)
    return [[duration_ms(t, timing, {}, Rng(node_seed(i, f"n{j}"), STREAM_TIMING)) / 1000
             for j, t in enumerate(CHAIN)] for i in range(n)]


class Ticker:
    """Samples loop lag (oversleep of a 10 ms sleep) and peak RSS."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.peak = _rss()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.01)
            self.lags.append(loop.time() - t0 - 0.01)
            self.peak = max(self.peak, _rss())

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _flowstage(n: int, zero: bool) -> dict[str, Any]:
    from actors.clock import SystemClock
    from actors.engine import Engine, EngineConfig
    from actors.sink import MemorySink
    from simulation.catalogue import Fixed, Uniform

    timing = Fixed(ms=0) if zero else Uniform(min_ms=50, max_ms=200)
    config = EngineConfig(timings={t: timing for t in CHAIN}, retain_finished=0)
    sink = MemorySink(keep=False)
    engine = Engine(SystemClock(), sink, config)
    await engine.start()
    workflow = _workflow()
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = n
    events = 0

    def listener(run_id: str, workflow_id: str, seq: int, name: str, data: bytes) -> None:
        nonlocal left, events
        events += 1
        if name == "run.completed":
            left -= 1
            if left == 0:
                done.set_result(loop.time())

    engine.add_listener(listener)
    ticker = Ticker()
    base = _rss()
    ticker.start()
    t0 = loop.time()
    await asyncio.gather(*(engine.execute(workflow, seed=i, speed=1.0) for i in range(n)))
    submitted = loop.time() - t0
    t_end = await done
    await ticker.stop()
    await engine.close()
    return {"wall": t_end - t0, "submit": submitted, "events": events, "lags": ticker.lags,
            "rss": ticker.peak - base, "nodes": n * len(CHAIN)}


async def _skeleton(n: int, zero: bool) -> dict[str, Any]:
    durations = _durations(n, zero)
    loop = asyncio.get_running_loop()
    log: list[tuple[Any, ...]] = []

    async def run(i: int, durs: list[float]) -> None:
        log.append(("run.started", i, loop.time()))
        for j, d in enumerate(durs):
            log.append(("node.started", i, j, loop.time()))
            await asyncio.sleep(d)
            log.append(("node.completed", i, j, loop.time()))
        log.append(("run.completed", i, loop.time()))

    ticker = Ticker()
    base = _rss()
    ticker.start()
    t0 = loop.time()
    tasks = [loop.create_task(run(i, d)) for i, d in enumerate(durations)]
    submitted = loop.time() - t0
    await asyncio.gather(*tasks)
    wall = loop.time() - t0
    await ticker.stop()
    return {"wall": wall, "submit": submitted, "events": len(log), "lags": ticker.lags,
            "rss": ticker.peak - base, "nodes": n * len(CHAIN)}


GC_SETTING = "default"


def _trial(kind: str, n: int, zero: bool) -> dict[str, Any]:
    """Run one trial in a fresh interpreter; return its metrics."""
    out = subprocess.run([sys.executable, __file__, "--trial", kind, str(n), "1" if zero else "0", GC_SETTING],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def _child(kind: str, n: int, zero: bool, gc_setting: str) -> None:
    import gc

    gc.freeze()  # the interpreter's own start-up objects are not the engine's cost
    if gc_setting != "default":  # e.g. "50000,20,100": what a server might set at start-up
        gc.set_threshold(*(int(x) for x in gc_setting.split(",")))
    coro = _flowstage(n, zero) if kind == "flowstage" else _skeleton(n, zero)
    result = asyncio.run(coro)
    result["lag50"] = _pct(result["lags"], 0.50)
    result["lag99"] = _pct(result["lags"], 0.99)
    del result["lags"]
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--gc", default="default",
                        help='gc thresholds for both implementations, e.g. "50000,20,100" (default: Python\'s)')
    parser.add_argument("--trial", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        _child(args.trial[0], int(args.trial[1]), args.trial[2] == "1", args.trial[3])
        return
    global GC_SETTING
    GC_SETTING = args.gc

    started = time.monotonic()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; medians of {args.repeats} trials; "
          f"sink: MemorySink(keep=False); gc thresholds: {args.gc}")
    header = (f"{'N':>6} {'impl':<10} {'ideal s':>8} {'wall s':>7} {'wall/ideal':>10} {'submit s':>8} "
              f"{'events/s':>10} {'lag p50 ms':>10} {'lag p99 ms':>10} {'KiB/run':>8}")
    print(header)
    rows: dict[tuple[int, str], dict[str, float]] = {}
    for n in args.runs:
        durations = _durations(n, zero=False)
        ideal = max(sum(d) for d in durations)
        for kind in ("skeleton", "flowstage"):
            trials = [_trial(kind, n, zero=False) for _ in range(args.repeats)]
            med = {k: statistics.median(t[k] for t in trials) for k in trials[0]}
            rows[(n, kind)] = med
            print(f"{n:>6} {kind:<10} {ideal:>8.3f} {med['wall']:>7.3f} {med['wall'] / ideal:>10.3f} "
                  f"{med['submit']:>8.3f} {med['events'] / med['wall']:>10.0f} {med['lag50'] * 1000:>10.1f} "
                  f"{med['lag99'] * 1000:>10.1f} {med['rss'] / n / 1024:>8.1f}")
        f, s = rows[(n, "flowstage")], rows[(n, "skeleton")]
        print(f"{'':>6} {'ratio':<10} {'':>8} {f['wall'] / s['wall']:>7.2f} {'':>10} {'':>8} {'':>10} "
              f"{'':>10} {f['lag99'] / max(s['lag99'], 1e-9):>10.2f} {f['rss'] / max(s['rss'], 1):>8.2f}")

    print("\nzero-duration ceiling (node completions per second, simulated time = 0)")
    n = max(args.runs)
    ceil: dict[str, float] = {}
    for kind in ("skeleton", "flowstage"):
        trials = [_trial(kind, n, zero=True) for _ in range(args.repeats)]
        wall = statistics.median(t["wall"] for t in trials)
        events = statistics.median(t["events"] for t in trials)
        ceil[kind] = n * len(CHAIN) / wall
        print(f"{n:>6} {kind:<10} wall {wall:.3f} s  {ceil[kind]:>10.0f} nodes/s  {events / wall:>10.0f} events/s")
    print(f"{'':>6} {'ratio':<10} flowstage/skeleton = {ceil['flowstage'] / ceil['skeleton']:.2f}")
    print(f"\nbench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
