"""What the user sees, drawn with rich: `progress`, the live frame while the test runs (a table
redrawn in place on a terminal, a plain line every few seconds otherwise), and
`render_summary`, the tables printed when it ends."""

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

from flowstage.loadtest.figures import Percentiles, Summary, Tally, percentiles

__all__ = ["progress", "render_summary"]


def _fmt(value: float | None) -> str:
    """A figure as the tables show it: whole above 100, one decimal below, "-" when none."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _progress_figures(tally: Tally) -> list[tuple[str, str]]:
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


def _progress_table(tally: Tally) -> Table:
    table = Table(box=box.SIMPLE, show_header=False, title="flowstage loadtest")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in _progress_figures(tally):
        table.add_row(label, value)
    return table


@contextlib.asynccontextmanager
async def progress(console: Console, tally: Tally, interval: float) -> AsyncIterator[None]:
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
