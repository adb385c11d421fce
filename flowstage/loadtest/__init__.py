"""`flowstage loadtest`: drive a Flowstage server with many concurrent runs and report.

It creates (or reuses) one workflow of K nodes in a given shape, starts N runs keeping C in
flight, follows each to its end (polling `GET /api/runs/{id}` with a backoff, or with
`--subscribe` reading `/api/runs/{id}/events` until the terminal event), shows live
progress, and prints a summary: run makespan percentiles against the ideal critical path,
execute (and optionally pause/resume) latency, events received, runs by final state and
errors by kind. `--json FILE` writes the same summary for CI.

Only HTTP: it runs against any Flowstage URL. The parts: options.py (what a test is asked to
do, its flags and bounds), workload.py (the workflow it creates and its ideal makespan),
driver.py (starting and following runs over HTTP), figures.py (what is counted, the Summary),
report.py (the live frame and the summary tables, drawn with rich). This module holds the two
entry points: `run_loadtest`, the async one (the tests call it directly), and `command`, what
`flowstage loadtest` runs once server/cli.py has read its flags and chosen its event loop.
Cancelling `run_loadtest` (Ctrl-C) cancels the in-flight requests and still returns, prints
and writes the partial summary.

Only `flowstage loadtest` imports this package: `flowstage serve` loads neither it nor rich.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgspec
from rich.console import Console

from flowstage.actors.clock import Clock, SystemClock
from flowstage.loadtest.driver import Target, drive, parse_sse, prepare
from flowstage.loadtest.figures import Ideal, StoppedBy, Summary, Tally, percentiles, summarize
from flowstage.loadtest.options import (
    LoadtestError,
    Options,
    Shape,
    add_arguments,
    check_options,
    options_from_args,
)
from flowstage.loadtest.report import progress, render_summary
from flowstage.loadtest.workload import IDEAL_ESTIMATE, build_workflow, critical_path

__all__ = [
    "LoadtestError",
    "Options",
    "Shape",
    "Summary",
    "add_arguments",
    "build_workflow",
    "check_options",
    "command",
    "critical_path",
    "options_from_args",
    "parse_sse",
    "percentiles",
    "run_loadtest",
]


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
    tally = Tally(opts.runs)
    target: Target | None = None
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
                        target, nodes = await prepare(session, opts)
                        tally.t0 = time.perf_counter()
                        async with progress(console, tally, opts.progress_interval):
                            await drive(session, target, tally)
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
    summary = summarize(opts, tally, workflow_ids, ideal, nodes, stopped_by)
    console.print(render_summary(summary))
    if opts.json_path:
        data = msgspec.json.format(msgspec.json.encode(summary), indent=2) + b"\n"
        await asyncio.to_thread(Path(opts.json_path).write_bytes, data)
        console.print(f"summary written to {opts.json_path}", highlight=False)
    return summary


def command(opts: Options, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> int:
    """Run a test of checked `opts` on a loop made by `loop_factory` (None: asyncio's own):
    0 when every run was followed with no error, 1 when errors were counted, 130 when
    interrupted (after the summary). LoadtestError if the test cannot start (`flowstage
    loadtest` then exits 2)."""
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            summary = runner.run(run_loadtest(opts))
    except KeyboardInterrupt:  # a second Ctrl-C while the summary was being written
        return 130
    if summary.stopped_by == "interrupted":
        return 130
    return 1 if summary.error_total else 0
