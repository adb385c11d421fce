"""Benchmark: N concurrent 10-node runs on the real clock, Flowstage's engine against a bare
asyncio skeleton of the same shape, in one invocation.

    .venv/bin/python bench/engine.py                 # N = 1000 5000 10000, 5 trials each
    .venv/bin/python bench/engine.py -n 10000 -r 7 --gc default
    .venv/bin/python bench/engine.py -n 10000 --baseline c53cba7   # this tree against that commit

Every run is a chain of ten nodes (trigger, http, transform, db, transform, llm, transform,
email, transform, output) whose durations are drawn uniform 50-200 ms from the run's seed;
`ideal` is the longest chain of all runs (~1.7 s at 10k runs), the wall time a machine
with no overhead would need.

The skeleton is what the same job costs with no Flowstage code: one task per run, the very
same durations as `asyncio.sleep`s, and the very same events - one tuple per transition
(run.started, node.queued/started/completed, edge.data, run.completed: 41 per run), put in
an `asyncio.Queue` that a consumer drains every 50 ms (Flowstage's flush interval). Both
sides are submitted the same way: one `gather` over N submit coroutines (`engine.execute`,
or one that creates the run's task), and both are timed to their last run.completed.

With `--baseline REF`, Flowstage as of git commit REF runs as a third side, interleaved with
the other two, so a change to the engine is judged against the code before it in the same
invocation (the same harness, machine and noise). Its tree is exported with `git archive`.
Both Flowstage sides are imported the same way, from a temporary directory laid out as the
wheel installs the package (this checkout's linked, the baseline's exported).

Each trial runs in a fresh subprocess, so RSS and the heap start clean; both sides get the
same GC setting (by default the one the server applies at start-up, `actors.tuning.tune_gc`).
The engine writes to a counting MemorySink (`keep=False`: batches are handed over and
counted, not kept), so the memory figure is the engine's own. Metrics: wall/ideal (to the last
run.completed); events/s; event-loop lag p50/p99 (a 10 ms ticker measuring its oversleep);
peak RSS growth per active run; and the zero-duration ceiling: node completions per second
when simulated time is zero, timed until every event was persisted (Flowstage: a last
`engine.flush()`) or consumed (skeleton: the queue drained), so neither side gets to leave
its persistence work for after the clock stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "actors", "simulation", "config")

CHAIN = ("manual_trigger", "http_request", "transform", "database_query", "transform", "llm_prompt",
         "transform", "send_email", "transform", "output")
EVENTS_PER_RUN = 1 + 3 * len(CHAIN) + (len(CHAIN) - 1) + 1
PAGE = os.sysconf("SC_PAGE_SIZE")
FLUSH_INTERVAL = 0.05


def _rss() -> int:
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * PAGE


def _workflow() -> Any:
    from flowstage.simulation.models import Connection, Node, Position, Workflow

    pos = Position(0, 0)
    nodes = [Node(f"n{i}", t, pos) for i, t in enumerate(CHAIN)]
    conns = [Connection(f"c{i}", f"n{i}", f"n{i + 1}", "out", "in") for i in range(len(CHAIN) - 1)]
    return Workflow("wf-bench", "bench", "", [], 1, "2026-01-01T00:00:00.000Z",
                    "2026-01-01T00:00:00.000Z", nodes, conns)


def _durations(n: int, zero: bool) -> list[list[float]]:
    """Per run, per node, seconds: what the engine draws for seed i (pure functions)."""
    from flowstage.simulation.catalogue import Uniform
    from flowstage.simulation.rng import STREAM_TIMING, Rng, node_seed
    from flowstage.simulation.timing import duration_ms

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


async def _measure(n: int, submit: Callable[[int], Awaitable[Any]], done: asyncio.Future[float],
                   drain: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    """Submit N runs the same way for both sides; time them to the last completion, and to
    the moment every event was persisted (handed to the sink, or taken off the queue)."""
    loop = asyncio.get_running_loop()
    ticker = Ticker()
    base = _rss()
    ticker.start()
    t0 = loop.time()
    await asyncio.gather(*(submit(i) for i in range(n)))
    submitted = loop.time() - t0
    t_end = await done
    events = await drain()
    drained = loop.time() - t0
    await ticker.stop()
    return {"wall": t_end - t0, "drained": drained, "submit": submitted, "events": events, "lags": ticker.lags,
            "rss": ticker.peak - base, "nodes": n * len(CHAIN)}


async def _flowstage(n: int, zero: bool) -> dict[str, Any]:
    from flowstage.actors.clock import SystemClock
    from flowstage.actors.engine import Engine, EngineConfig
    from flowstage.actors.sink import MemorySink
    from flowstage.simulation.catalogue import Fixed, Uniform

    timing = Fixed(ms=0) if zero else Uniform(min_ms=50, max_ms=200)
    config = EngineConfig(timings=dict.fromkeys(CHAIN, timing), retain_finished=0, flush_interval=FLUSH_INTERVAL)
    sink = MemorySink(keep=False)
    engine = Engine(SystemClock(), sink, config)
    await engine.start()
    workflow = _workflow()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    left = n
    count = 0

    def listener(run_id: str, workflow_id: str, seq: int, name: str, data: bytes) -> None:
        nonlocal left, count
        count += 1
        if name == "run.completed":
            left -= 1
            if left == 0:
                done.set_result(loop.time())

    engine.add_listener(listener)

    def submit(i: int) -> Awaitable[Any]:
        return engine.execute(workflow, seed=i, speed=1.0)

    async def drain() -> int:
        await engine.flush()
        return sink.appended

    result = await _measure(n, submit, done, drain)
    await engine.close()
    assert count == result["events"] == n * EVENTS_PER_RUN, (count, result["events"], n * EVENTS_PER_RUN)
    return result


async def _skeleton(n: int, zero: bool) -> dict[str, Any]:
    durations = _durations(n, zero)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    put = queue.put_nowait
    done: asyncio.Future[float] = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()
    left = n
    count = 0
    node_ids = [f"n{j}" for j in range(len(CHAIN))]
    edge_ids = [f"c{j}" for j in range(len(CHAIN) - 1)]
    last = len(CHAIN) - 1

    async def run(run_id: str, durs: list[float]) -> None:
        nonlocal left
        now = loop.time
        put(("run.started", run_id, "wf-bench", 1, now()))
        seq = 1
        for j, d in enumerate(durs):
            node = node_ids[j]
            put(("node.queued", run_id, "wf-bench", seq + 1, now(), node))
            put(("node.started", run_id, "wf-bench", seq + 2, now(), node))
            await asyncio.sleep(d)
            put(("node.completed", run_id, "wf-bench", seq + 3, now(), node))
            seq += 3
            if j < last:
                seq += 1
                put(("edge.data", run_id, "wf-bench", seq, now(), edge_ids[j], node, node_ids[j + 1]))
        put(("run.completed", run_id, "wf-bench", seq + 1, now()))
        left -= 1
        if left == 0:
            done.set_result(loop.time())

    def take() -> None:
        nonlocal count
        while not queue.empty():
            queue.get_nowait()
            count += 1

    async def consume() -> None:  # the batched "persistence": drain every flush interval
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            take()

    async def drain() -> int:
        take()
        return count

    async def submit(i: int) -> None:
        task = loop.create_task(run(f"run_{i}", durations[i]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    consumer = loop.create_task(consume())
    result = await _measure(n, submit, done, drain)
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    assert result["events"] == n * EVENTS_PER_RUN, (result["events"], n * EVENTS_PER_RUN)
    return result


def _layout(tree: Path, into: Path) -> Path:
    """A directory holding `flowstage` as the wheel lays it out, its parts linked from `tree`
    (a checkout or an exported commit): what a trial puts on its path."""
    package = into / "flowstage"
    package.mkdir(parents=True)
    for item in [*(tree / "flowstage").iterdir(), *(tree / name for name in PACKAGES)]:
        if item.name != "__pycache__":
            (package / item.name).symlink_to(item)
    return into


def _export(ref: str, into: Path) -> Path:
    """Flowstage as of commit `ref`, laid out as the wheel installs it."""
    tree = into / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "flowstage", *PACKAGES],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return _layout(tree, into / "layout")


def _trial(kind: str, n: int, zero: bool, gc_setting: str, paths: dict[str, Path]) -> dict[str, Any]:
    """Run one trial in a fresh interpreter; return its metrics. Both Flowstage sides run the
    same way: without `site` (so no install's import hook is involved), with their own layout
    of the package and this environment's libraries on the path."""
    command = [sys.executable, __file__, "--trial", kind, str(n), "1" if zero else "0", gc_setting]
    env = None
    if kind in paths:
        command[1:1] = ["-S"]
        command[command.index(kind)] = "flowstage"
        libraries = sysconfig.get_paths()
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(paths[kind]), libraries["purelib"], libraries["platlib"]])}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return dict(json.loads(out.stdout))


def _child(kind: str, n: int, zero: bool, gc_setting: str) -> None:
    import gc

    if gc_setting == "tuned":
        from flowstage.actors.tuning import tune_gc

        tune_gc()
    else:
        gc.freeze()  # the interpreter's own start-up objects are not the engine's cost
        if gc_setting != "default":  # e.g. "50000,20,100"
            gc.set_threshold(*(int(x) for x in gc_setting.split(",")))
    coro = _flowstage(n, zero) if kind == "flowstage" else _skeleton(n, zero)
    result = asyncio.run(coro)
    result["lag50"] = _pct(result["lags"], 0.50)
    result["lag99"] = _pct(result["lags"], 0.99)
    result["lagmax"] = max(result["lags"], default=0.0)
    del result["lags"]
    print(json.dumps(result))


def _medians(trials: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(t[k] for t in trials) for k in trials[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--gc", default="tuned",
                        help='GC setting of both sides: "tuned" (actors.tuning.tune_gc, as the server does), '
                             '"default" (Python\'s) or thresholds like "50000,20,100"')
    parser.add_argument("--no-ceiling", action="store_true", help="skip the zero-duration ceiling")
    parser.add_argument("--baseline", metavar="REF", help="also run Flowstage as of this git commit")
    parser.add_argument("--trial", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        _child(args.trial[0], int(args.trial[1]), args.trial[2] == "1", args.trial[3])
        return
    with tempfile.TemporaryDirectory(prefix="flowstage-bench-") as tmp:
        paths = {"flowstage": _layout(REPO, Path(tmp) / "here")}
        if args.baseline:
            paths["baseline"] = _export(args.baseline, Path(tmp) / "baseline")
        _compare(args, paths)


def _compare(args: argparse.Namespace, paths: dict[str, Path]) -> None:
    baseline = "baseline" in paths
    kinds = ["skeleton", "flowstage", *(["baseline"] if baseline else [])]

    started = time.monotonic()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; medians of {args.repeats} trials "
          f"(sides interleaved); sink: MemorySink(keep=False); gc: {args.gc}"
          + (f"; baseline = Flowstage at {args.baseline}" if baseline else ""))
    header = (f"{'N':>6} {'impl':<10} {'ideal s':>8} {'wall s':>7} {'wall/ideal':>10} {'submit s':>8} "
              f"{'events/s':>10} {'lag p50 ms':>10} {'lag p99 ms':>10} {'KiB/run':>8}")
    print(header)
    for n in args.runs:
        durations = _durations(n, zero=False)
        ideal = max(sum(d) for d in durations)
        trials: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for _ in range(args.repeats):  # interleaved, so a noisy spell hits every side
            for kind in trials:
                trials[kind].append(_trial(kind, n, False, args.gc, paths))
        med = {kind: _medians(t) for kind, t in trials.items()}
        for kind, m in med.items():
            print(f"{n:>6} {kind:<10} {ideal:>8.3f} {m['wall']:>7.3f} {m['wall'] / ideal:>10.3f} "
                  f"{m['submit']:>8.3f} {m['events'] / m['wall']:>10.0f} {m['lag50'] * 1000:>10.1f} "
                  f"{m['lag99'] * 1000:>10.1f} {m['rss'] / n / 1024:>8.1f}")
        for label, other in [("ratio", "skeleton"), *([("/baseline", "baseline")] if baseline else [])]:
            f, s = med["flowstage"], med[other]
            print(f"{'':>6} {label:<10} {'':>8} {f['wall'] / s['wall']:>7.2f} {'':>10} {'':>8} {'':>10} "
                  f"{'':>10} {f['lag99'] / max(s['lag99'], 1e-9):>10.2f} {f['rss'] / max(s['rss'], 1):>8.2f}")

    if args.no_ceiling:
        print(f"\nbench took {time.monotonic() - started:.0f} s")
        return
    print("\nzero-duration ceiling (node completions per second, simulated time = 0; timed until every "
          "event was persisted or consumed)")
    n = max(args.runs)
    zero: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind in zero:
            zero[kind].append(_trial(kind, n, True, args.gc, paths))
    ceil: dict[str, float] = {}
    for kind, t in zero.items():
        wall = statistics.median(x["drained"] for x in t)
        events = statistics.median(x["events"] for x in t)
        ceil[kind] = n * len(CHAIN) / wall
        print(f"{n:>6} {kind:<10} wall {wall:.3f} s  {ceil[kind]:>10.0f} nodes/s  {events / wall:>10.0f} events/s")
    print(f"{'':>6} {'ratio':<10} flowstage/skeleton = {ceil['flowstage'] / ceil['skeleton']:.2f}")
    if baseline:
        print(f"{'':>6} {'ratio':<10} baseline/skeleton = {ceil['baseline'] / ceil['skeleton']:.2f}, "
              f"flowstage/baseline = {ceil['flowstage'] / ceil['baseline']:.2f}")
    print(f"\nbench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
