"""What the user sees, drawn with rich: `progress`, the live frame while the test runs (a table
redrawn in place on a terminal, a plain line every few seconds otherwise; drawn once more with
the final figures when the test ends, so the last frame is never stale), and
`render_summary`, the tables printed when it ends. What was not measured shows as "n/a"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flowstage.loadtest.figures import FINAL_STATES, Percentiles, Summary, Tally, percentiles
from flowstage.loadtest.http import MAX_THROTTLED_RETRIES

__all__ = ["NA", "THROTTLING_OFF", "progress", "render_summary"]

NA = "n/a"
# How to turn the server's throttling off (config/defaults.toml, docs/configuration.md).
THROTTLING_OFF = ("start the server with rate_limit_per_second = 0 "
                  "(FLOWSTAGE_RATE_LIMIT_PER_SECOND=0)")
_FOLLOWING = {"events": "one /api/events stream", "poll": "polling GET /api/runs/{id}",
              "run-events": "one /api/runs/{id}/events stream per run"}


def _fmt(value: float | None) -> str:
    """A figure as the tables show it: whole above 100, one decimal below, n/a when none."""
    if value is None:
        return NA
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _progress_figures(tally: Tally, follow: str) -> list[tuple[str, str]]:
    elapsed = max(tally.elapsed(), 1e-9)
    make = percentiles(tally.makespan_ms["completed"])
    execute = percentiles(tally.execute_ms)
    return [
        ("elapsed", f"{elapsed:,.1f} s"),
        ("started", f"{tally.started:,} / {tally.requested:,}"),
        ("finished", f"{tally.finished:,} (completed {tally.states['completed']:,}, "
                     f"failed {tally.states['failed']:,}, stopped {tally.states['stopped']:,})"),
        ("in flight", f"{tally.in_flight:,}"),
        ("runs/s", f"{tally.finished / elapsed:,.1f}"),
        ("events/s", NA if follow == "poll" else f"{tally.events / elapsed:,.1f}"),
        ("makespan p50/p95", f"{_fmt(make.p50)} / {_fmt(make.p95)} ms"),
        ("execute p50/p95", f"{_fmt(execute.p50)} / {_fmt(execute.p95)} ms"),
        ("throttled", f"{sum(tally.throttled.values()):,}"),
        ("errors", f"{sum(tally.errors.values()):,}"),
        ("CPU (load tester)", f"{tally.cpu_seconds():,.1f} s"),
    ]


def _progress_table(tally: Tally, follow: str) -> Table:
    table = Table(box=box.SIMPLE, show_header=False, title="flowstage loadtest")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in _progress_figures(tally, follow):
        table.add_row(label, value)
    return table


@contextlib.asynccontextmanager
async def progress(console: Console, tally: Tally, interval: float,
                   follow: str) -> AsyncIterator[None]:
    """Live progress: a table redrawn in place on a terminal, else a plain line every
    `interval` seconds; on exit, one last frame with the final figures. Its task is owned
    here: cancelled and awaited on exit."""
    if console.is_terminal:
        live = Live(_progress_table(tally, follow), console=console, auto_refresh=False,
                    transient=True)

        def draw() -> None:
            live.update(_progress_table(tally, follow), refresh=True)

        period = 0.25
        cm: contextlib.AbstractContextManager[Any] = live
    else:
        def draw() -> None:
            console.print("  ".join(f"{k} {v}" for k, v in _progress_figures(tally, follow)),
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
            draw()


def _throttling(summary: Summary) -> str:
    if not summary.throttled_total:
        return "throttled: 0 (the server answered no request 429)"
    phases = ", ".join(f"{phase} {n:,}" for phase, n in summary.throttled.items())
    # A request still throttled after its last retry failed: it is an error (`HTTP 429`).
    gave_up = sum(n for kind, n in summary.errors.items() if kind.endswith(": HTTP 429"))
    outcome = ("not counted as an error" if not gave_up else
               f"up to {MAX_THROTTLED_RETRIES} times; {gave_up:,} requests still throttled after that "
               "gave up and are counted as errors (HTTP 429), the other 429s are not")
    return (f"throttled: the server answered 429 to {summary.throttled_total:,} requests "
            f"({phases}) from {_fmt(summary.throttled_first_s)} s to "
            f"{_fmt(summary.throttled_last_s)} s into the test; each was retried after its "
            f"Retry-After ({summary.throttled_wait_seconds:,.1f} s of waiting in all), {outcome}. "
            f"To turn throttling off, {THROTTLING_OFF}.")


def _cpu(summary: Summary) -> str:
    cpu = summary.cpu
    server = NA if cpu.server_seconds is None else f"{cpu.server_seconds:,.2f} s"
    ratio = NA if cpu.ratio is None else f"{cpu.ratio:.2f}"
    return (f"CPU: load tester {cpu.load_tester_seconds:,.2f} s, server {server} "
            f"({cpu.server_source}); load tester CPU / server CPU = {ratio}")


def _memory(summary: Summary) -> str:
    m = summary.memory
    if m.before_mib is None:
        return f"server memory: {NA} ({m.source})"
    return (f"server memory (RSS): before {_fmt(m.before_mib)} MiB, peak {_fmt(m.peak_mib)} MiB, "
            f"after {_fmt(m.after_mib)} MiB ({m.source})")


def render_summary(summary: Summary) -> Group:
    head = Text(f"{summary.url}  workflow {', '.join(summary.workflow_ids) or NA}  "
                f"{summary.shape or 'given'} of {summary.nodes} nodes  speed {summary.speed:g}  "
                f"concurrency {summary.concurrency}  following: {_FOLLOWING[summary.follow]}  "
                f"stopped by: {summary.stopped_by}"
                + ("  (PARTIAL)" if summary.stopped_by != "completed" else ""))
    runs = summary.runs
    events_measured = summary.follow != "poll"
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
             ("events received", f"{summary.events_received:,}" if events_measured else NA),
             ("events/s", f"{summary.events_per_second:,.1f}" if events_measured else NA),
             ("errors", f"{summary.error_total:,}"),
             ("throttled", f"{summary.throttled_total:,}"), ("", "")]
    for left, right in zip(pairs[0::2], pairs[1::2], strict=True):
        counts.add_row(*left, *right)
    # Nothing wraps or shortens ("10,0…"): with one space between columns, 80 columns hold the
    # longest label and six figures of up to 100,000.
    lat = Table(box=box.SIMPLE_HEAD, title="latency (ms)", padding=(0, 0), show_edge=False)
    for col in ("", "n", "p50", "p95", "p99", "max", "mean"):
        lat.add_column(col, justify="right" if col else "left", no_wrap=True)

    def row(label: str, p: Percentiles) -> None:
        lat.add_row(label, f"{p.count:,}", _fmt(p.p50), _fmt(p.p95), _fmt(p.p99), _fmt(p.max),
                    _fmt(p.mean))

    ideal = summary.ideal.ms
    lat.add_row("ideal makespan", "", _fmt(ideal), "", "", "", "")
    idle = summary.ideal.idle_ms
    if idle is not None:
        row("makespan, idle server", idle)
    # Each final state apart: completed runs alone would flatter a server whose runs fail.
    for side, by_state in (("server", summary.makespan_by_state_ms),
                           ("client", summary.client_makespan_by_state_ms)):
        for state in FINAL_STATES:
            row(f"makespan ({side}), {state}", by_state[state])
    row("execute POST", summary.execute_latency_ms)
    for action, p in summary.control_latency_ms.items():
        if p.count:  # only with --control-sample
            row(f"{action} POST", p)
    notes = [f"ideal = critical path {' > '.join(summary.ideal.critical_path)} = "
             f"{summary.ideal.ms_at_speed_1:,.1f} ms / speed {summary.speed:g} "
             f"({summary.ideal.estimate})"]
    completed = summary.makespan_by_state_ms["completed"].p50
    notes.append("completed makespan p50 / ideal = "
                 + (f"{completed / ideal:.2f}" if completed is not None and ideal > 0 else NA))
    if idle is not None:
        tail = summary.makespan_by_state_ms["completed"].p99
        notes.append(f"idle server = {idle.count:,} draws of each node's duration from its timing profile: "
                     "what a server that keeps time shows at any load; completed makespan p99 / idle p99 = "
                     + (f"{tail / idle.p99:.2f}" if tail is not None and idle.p99 else NA))
    if summary.control_too_late:
        notes.append(f"{summary.control_too_late} pause/resume samples came after the run ended")
    if summary.stream is not None:
        notes.append(f"stream: {summary.stream.connections:,} connection(s) to /api/events, "
                     f"{summary.stream.gaps:,} gap(s), {summary.stream.runs_read_after_gaps:,} "
                     "run(s) read after gaps")
    notes += [_throttling(summary), _cpu(summary), _memory(summary)]
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
