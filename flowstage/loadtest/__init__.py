"""`flowstage loadtest`: drive a Flowstage server with many concurrent runs and report.

It creates (or reuses) one workflow of K nodes in a given shape, starts N runs keeping C in
flight, follows each to its end (by default through one `/api/events` stream for all of them;
`--follow poll` polls `GET /api/runs/{id}` with a backoff, `--follow run-events` reads each
run's own stream), honours the server's throttling (429 Retry-After), shows live progress,
and prints a summary: run makespan percentiles by final state against the ideal critical
path, execute (and optionally pause/resume) latency, events received, runs by final state,
throttled requests, errors by kind, its own CPU next to the server's, and the server's
memory before, at the peak and after. `--json FILE`
writes the same summary for CI.

Only HTTP: it runs against any Flowstage URL. The parts: options.py (what a test is asked to
do, its flags and bounds), workload.py (the workflow it creates and its ideal makespan),
http.py (every request, throttling honoured), driver.py (starting and following runs),
follow.py (the one /api/events stream), cpu.py (the server's CPU), memory.py (its RSS),
figures.py (what is
counted, the Summary), report.py (the live frame and the summary tables, drawn with rich).
This module holds the two
entry points: `run_loadtest`, the async one (the tests call it directly), and `command`, what
`flowstage loadtest` runs once server/cli.py has read its flags and chosen its event loop.
Cancelling `run_loadtest` (Ctrl-C) cancels the in-flight requests and still returns, prints
and writes the partial summary.

Only `flowstage loadtest` imports this package: `flowstage serve` loads neither it nor rich.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgspec
from rich.console import Console
from yarl import URL

from flowstage.actors.clock import Clock, SystemClock
from flowstage.actors.tuning import tune_gc
from flowstage.loadtest.cpu import Fetch, ServerCpu
from flowstage.loadtest.driver import Target, drive, parse_sse, prepare
from flowstage.loadtest.figures import (
    CpuFigures,
    Ideal,
    MemoryFigures,
    StoppedBy,
    Summary,
    Tally,
    percentiles,
    summarize,
)
from flowstage.loadtest.follow import EventFollower, FrameScanner
from flowstage.loadtest.http import Http
from flowstage.loadtest.memory import MemoryWatch
from flowstage.loadtest.options import (
    Follow,
    LoadtestError,
    Options,
    Shape,
    add_arguments,
    check_options,
    options_from_args,
)
from flowstage.loadtest.report import progress, render_summary
from flowstage.loadtest.wire import Pool
from flowstage.loadtest.workload import IDEAL_ESTIMATE, build_workflow, critical_path, idle_makespans

__all__ = [
    "Follow",
    "FrameScanner",
    "LoadtestError",
    "Options",
    "Shape",
    "Summary",
    "add_arguments",
    "build_workflow",
    "check_options",
    "command",
    "connection_budget",
    "critical_path",
    "idle_makespans",
    "options_from_args",
    "parse_sse",
    "percentiles",
    "run_loadtest",
]


def _expire(deadline: asyncio.Timeout) -> None:
    deadline.reschedule(asyncio.get_running_loop().time())  # expires on the loop's next turn


async def _drive(http: Http, opts: Options, console: Console, tally: Tally,
                 target: Target) -> None:
    """Start and follow the runs of a prepared test, showing progress."""
    async with progress(console, tally, opts.progress_interval, opts.following):
        try:
            if opts.following == "events":
                follower = EventFollower(http, tally, target.workflow_id, target.sse_timeout)
                async with follower.running():
                    await drive(http, target, tally, follower)
            else:
                await drive(http, target, tally, None)
        finally:
            tally.stop()  # before the last frame is drawn: it shows the final figures


async def _cpu_at_end(server_cpu: ServerCpu, tally: Tally, fetch: Fetch) -> CpuFigures:
    """The CPU figures, read as soon as the test ends (however it ends)."""
    tally.stop()
    try:
        async with asyncio.timeout(5):
            return await server_cpu.end(tally.cpu_seconds(), fetch)
    except TimeoutError:
        return CpuFigures(round(tally.cpu_seconds(), 3), None, None,
                          "not known: the server did not answer in time at the end")


async def _memory_at_end(memory: MemoryWatch) -> MemoryFigures:
    """The memory figures: the last read once the server has let the finished runs go."""
    try:
        async with asyncio.timeout(5):
            return await memory.end()
    except TimeoutError:
        return MemoryFigures(None, None, None, "not known: the server did not answer in time at the end")


def connection_budget() -> int:
    """Connections this process can open: its open-file limit, raised to the hard limit, less
    room for streams, the event loop and the summary file. 20,000 runs in flight with one
    connection each would otherwise end in "Too many open files" on a default Linux limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return 1_000_000 if soft == resource.RLIM_INFINITY else max(16, soft - 256)


class _Outcome:
    """What a test got to, however it ended: its target, its workflow's size, the CPU."""

    def __init__(self, nodes: int) -> None:
        self.target: Target | None = None
        self.nodes = nodes
        self.cpu = CpuFigures(0.0, None, None, "not known: the test did not start")
        self.memory = MemoryFigures(None, None, None, "not known: the test did not start")


async def _test(opts: Options, console: Console, tally: Tally, clock: Clock,
                outcome: _Outcome) -> StoppedBy:
    """Prepare and drive the test; "completed", or "duration" if that ran out first."""
    # Requests share a pool of connections, one per run in flight unless --connections says
    # otherwise or the open-file limit is lower (plus a few for control samples and reads after
    # a gap); streams have their own.
    connections = opts.connections or min(opts.concurrency, connection_budget())
    pool = Pool(URL(opts.url), connections + 16, opts.request_timeout)
    streams = (opts.concurrency if opts.following == "run-events" else 1) + 4
    connector = aiohttp.TCPConnector(limit=streams, limit_per_host=0, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=opts.request_timeout)
    try:
        # No cookies: the API sets none, and a jar costs work on every request.
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            http = Http(session, pool, opts.url, tally, opts.max_retry_wait)

            async def fetch(path: str) -> tuple[int, bytes]:
                answer = await http.request("metrics", "GET", path)
                return answer.status, answer.body

            server_cpu: ServerCpu | None = None
            memory: MemoryWatch | None = None
            deadline = asyncio.timeout(None)
            try:
                async with deadline:
                    expiry = clock.call_later(opts.duration, _expire, deadline)
                    try:
                        outcome.target, outcome.nodes = await prepare(http, opts)
                        server_cpu = await ServerCpu.begin(opts.url, fetch)
                        memory = await MemoryWatch.begin(server_cpu, fetch)
                        tally.start()
                        await _drive(http, opts, console, tally, outcome.target)
                    finally:
                        expiry.cancel()
                        if server_cpu is not None:
                            outcome.cpu = await _cpu_at_end(server_cpu, tally, fetch)
                        if memory is not None:
                            outcome.memory = await _memory_at_end(memory)
            except TimeoutError:
                if not deadline.expired():
                    raise
                return "duration"
    finally:
        pool.close()
    return "completed"


async def run_loadtest(opts: Options, console: Console | None = None, *,
                       clock: Clock | None = None) -> Summary:
    """Run the test; print the summary (and write --json). Raises LoadtestError if it cannot
    start. Cancelling it (Ctrl-C) stops the runs in flight and returns the partial summary.

    `clock` times `--duration` only (wall time by default; every figure is wall time): a test
    passes a ManualClock to make the duration run out at the moment it chooses."""
    check_options(opts)
    console = console or Console()
    tally = Tally(opts.runs)
    outcome = _Outcome(opts.nodes)
    stopped_by: StoppedBy
    try:
        stopped_by = await _test(opts, console, tally, clock or SystemClock(), outcome)
    except asyncio.CancelledError:
        stopped_by = "interrupted"
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    target = outcome.target
    if target is None:
        ideal = Ideal(0.0, 0.0, IDEAL_ESTIMATE, [])
        workflow_ids: list[str] = []
    else:
        ideal, workflow_ids = target.ideal, [target.workflow_id]
    summary = summarize(opts, tally, workflow_ids, ideal, outcome.nodes, stopped_by, outcome.cpu,
                        outcome.memory)
    console.print(render_summary(summary))
    if opts.json_path:
        data = msgspec.json.format(msgspec.json.encode(summary), indent=2) + b"\n"
        await asyncio.to_thread(Path(opts.json_path).write_bytes, data)
        console.print(f"summary written to {opts.json_path}", highlight=False)
    return summary


def command(opts: Options, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> int:
    """Run a test of checked `opts` on a loop made by `loop_factory` (None: asyncio's own):
    0 when no error was counted (a test `--duration` ended included), 1 when errors were
    counted, 130 when interrupted (after the summary). LoadtestError if the test cannot start
    (`flowstage loadtest` then exits 2)."""
    # The server's collector settings (actors.tuning), for the same reason: ten thousand
    # connections and runs in flight made CPython's default young collections promote them
    # all and walk them again and again - a third of the tester's CPU at 10,000 in flight.
    tune_gc()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            summary = runner.run(run_loadtest(opts))
    except KeyboardInterrupt:  # a second Ctrl-C while the summary was being written
        return 130
    if summary.stopped_by == "interrupted":
        return 130
    return 1 if summary.error_total else 0
