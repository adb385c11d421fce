"""`flowstage loadtest` against an app started in the test, through its async entry point with
the output captured: its counts agree with the server's own run records and with its --json
file, failed runs are counted (and their makespans reported apart), runs are followed on one
/api/events stream (resuming after a drop, reading runs after a gap), throttled requests are
waited out and retried, what was not measured shows as n/a, the CPU line is printed, an
unreachable server is a clear error, and a cancelled (or time-bounded) test still prints a
partial summary. (`--loop` is tested with `serve` in test_cli.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import math
import re
import socket
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import make_settings
from rich.console import Console
from servers import free_port
from yarl import URL

from flowstage.actors.clock import ManualClock
from flowstage.loadtest import (
    FrameScanner,
    LoadtestError,
    Options,
    Shape,
    Summary,
    build_workflow,
    check_options,
    critical_path,
    idle_makespans,
    parse_sse,
    percentiles,
    run_loadtest,
)
from flowstage.loadtest.cpu import (
    SAME_PROCESS,
    ServerCpu,
    cpu_from_metrics,
    listening_pid,
    process_cpu_seconds,
)
from flowstage.loadtest.figures import MemoryFigures
from flowstage.loadtest.http import retry_after_seconds
from flowstage.loadtest.memory import SAMPLE_S, MemoryWatch, rss_from_metrics
from flowstage.loadtest.report import render_summary
from flowstage.loadtest.wire import Pool
from flowstage.server import cli
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE, SSE
from flowstage.simulation.catalogue import CATALOGUE

ServerFactory = Callable[..., Any]
TYPES = {name: msgspec.to_builtins(t) for name, t in CATALOGUE.items()}


@pytest.fixture
async def server(aiohttp_server: ServerFactory, tmp_path: Path) -> TestServer:
    started: TestServer = await aiohttp_server(create_app(make_settings(tmp_path)))
    return started


def url_of(server: TestServer) -> str:
    return str(server.make_url(""))


def captured(terminal: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, force_terminal=terminal, color_system=None), out


async def runs_on_server(url: str, workflow_id: str) -> list[dict[str, Any]]:
    runs_url = f"{url}/api/workflows/{workflow_id}/runs?limit=500"
    async with aiohttp.ClientSession() as session, session.get(runs_url) as resp:
        assert resp.status == 200
        page = await resp.json()
    assert page["nextCursor"] is None
    return list(page["items"])


def makespans(records: list[dict[str, Any]]) -> list[float]:
    from datetime import datetime

    return [(datetime.fromisoformat(r["finishedAt"]) - datetime.fromisoformat(r["createdAt"]))
            .total_seconds() * 1000 for r in records]


# How long a wait for a state may last before the test fails as hung; never what a test asserts.
WAIT = 10.0


def counted(server: TestServer, name: str, count: int) -> asyncio.Event:
    """Set once the server's engine has emitted `count` events called `name` (of any runs)."""
    reached = asyncio.Event()
    seen = 0

    def listener(run_id: str, workflow_id: str, _seq: int, event: str, data: bytes) -> None:
        nonlocal seen
        if event == name:
            seen += 1
            if seen >= count:
                reached.set()

    server.app[ENGINE].add_listener(listener)
    return reached


async def before(reached: asyncio.Event, test: asyncio.Task[Summary]) -> None:
    """Wait for `reached`; fail if the load test ended first, or after WAIT s."""
    waiter = asyncio.create_task(reached.wait())
    try:
        done, _ = await asyncio.wait({waiter, test}, timeout=WAIT,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    assert waiter in done, "the load test ended first" if test in done else "timed out"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("shape", "terminal"),
                         [("chain", False), ("diamond", False), ("fanout", False), ("chain", True)])
async def test_the_summary_counts_match_the_servers_run_records_and_the_json_file(
    server: TestServer, tmp_path: Path, shape: Shape, terminal: bool
) -> None:
    console, out = captured(terminal)
    json_path = tmp_path / "summary.json"
    opts = Options(url=url_of(server), runs=20, concurrency=5, speed=1000, nodes=4,
                   shape=shape, json_path=str(json_path), progress_interval=0.02)
    summary = await run_loadtest(opts, console)

    [workflow_id] = summary.workflow_ids
    records = await runs_on_server(opts.url, workflow_id)
    states = Counter(r["state"] for r in records)
    assert (summary.runs.started, summary.runs.finished, len(records)) == (20, 20, 20)
    assert (summary.runs.completed, states["completed"]) == (20, 20)
    assert summary.runs.failed == states["failed"] == 0
    assert (summary.runs.unfinished, summary.runs.not_started) == (0, 0)
    assert (summary.stopped_by, summary.error_total, summary.errors) == ("completed", 0, {})
    assert summary.execute_latency_ms.count == 20
    # The makespan figures are the server's own finishedAt - createdAt.
    assert summary.makespan_ms == percentiles(makespans(records))
    assert summary.nodes == 4
    assert summary.ideal.ms == pytest.approx(summary.ideal.ms_at_speed_1 / 1000)
    assert msgspec.json.decode(json_path.read_bytes()) == msgspec.to_builtins(summary)
    text = out.getvalue()
    assert "makespan (server)" in text
    assert "execute POST" in text
    assert "errors: 0" in text


async def test_batch_starts_runs_with_count_and_follows_every_one(server: TestServer) -> None:
    console, _ = captured()
    # 23 runs, 10 per execute: 10 + 10 + 3, two executes in flight at once.
    opts = Options(url=url_of(server), runs=23, concurrency=20, batch=10, speed=1000, nodes=4,
                   control_sample=2)
    summary = await run_loadtest(opts, console)
    records = await runs_on_server(opts.url, summary.workflow_ids[0])
    assert (summary.runs.started, summary.runs.completed, len(records)) == (23, 23, 23)
    assert summary.execute_latency_ms.count == 3
    assert summary.makespan_ms.count == 21  # the two paused and resumed are kept out
    timed = summary.control_latency_ms["pause"].count
    assert timed + summary.control_too_late == 2  # the first two runs of the first batch
    assert summary.error_total == 0


async def test_batch_beyond_an_executes_count_is_refused() -> None:
    with pytest.raises(LoadtestError, match=r"--batch must be between 1 and 1000"):
        await run_loadtest(Options(batch=1001), captured()[0])


async def test_failed_runs_are_counted_as_runs_not_errors(server: TestServer) -> None:
    console, _ = captured()
    opts = Options(url=url_of(server), runs=20, concurrency=5, speed=1000, nodes=4,
                   failure_rate=0.5)
    summary = await run_loadtest(opts, console)
    states = Counter(r["state"] for r in await runs_on_server(opts.url, summary.workflow_ids[0]))
    assert summary.runs.failed == states["failed"] > 0
    assert summary.runs.completed == states["completed"]
    assert summary.runs.failed + summary.runs.completed == 20
    assert summary.error_total == 0


async def test_pause_and_resume_samples_are_timed(aiohttp_server: ServerFactory,
                                                  tmp_path: Path) -> None:
    # The server's clock stands still until the three runs were paused and resumed: the
    # controls arrive while the runs run, however slow the machine (none comes too late).
    clock = ManualClock()
    server: TestServer = await aiohttp_server(create_app(make_settings(tmp_path), clock=clock))
    resumed = counted(server, "run.resumed", 3)
    console, out = captured()
    opts = Options(url=url_of(server), runs=3, concurrency=3, speed=1, nodes=4, control_sample=3)
    test = asyncio.create_task(run_loadtest(opts, console))
    await before(resumed, test)
    await clock.run_until_idle()
    async with asyncio.timeout(WAIT):
        summary = await test
    assert summary.control_latency_ms["pause"].count == 3
    assert summary.control_latency_ms["resume"].count == 3
    assert summary.runs.completed == 3
    # Paused runs are left out of the makespan figures.
    assert summary.makespan_ms.count == 0
    assert "pause POST" in out.getvalue()


async def test_a_reused_workflow_is_run_as_it_is(server: TestServer) -> None:
    console, _ = captured()
    url = url_of(server)
    body = build_workflow("diamond", 6, TYPES, "mine")
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/api/workflows", json=body) as resp:
        assert resp.status == 201
        workflow_id = (await resp.json())["id"]
    summary = await run_loadtest(Options(url=url, runs=5, concurrency=5, speed=1000,
                                         workflow=workflow_id), console)
    assert summary.workflow_ids == [workflow_id]
    assert (summary.shape, summary.nodes, summary.runs.completed) == (None, 6, 5)
    assert len(await runs_on_server(url, workflow_id)) == 5


async def test_an_unreachable_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    console, _ = captured()
    with pytest.raises(LoadtestError, match=f"cannot reach {url}"):
        await run_loadtest(Options(url=url, runs=1), console)


def test_the_command_exits_2_naming_an_unreachable_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert cli.main(["loadtest", "--url", url, "--runs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach {url}" in err
    assert "flowstage loadtest:" in err


@pytest.mark.parametrize("argv", [["--runs", "100001"], ["--duration", "3601"],
                                  ["--concurrency", "0"], ["--nodes", "3", "--shape", "diamond"],
                                  ["--url", "127.0.0.1:8080"], ["--progress-interval", "0"],
                                  ["--progress-interval", "-1"], ["--json", "/nonexistent/folder/x.json"]])
def test_out_of_bounds_options_are_refused_before_anything_is_sent(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["loadtest", *argv]) == 2
    err = capsys.readouterr().err
    assert "flowstage loadtest:" in err and argv[0] in err


def test_allow_large_lifts_the_bounds() -> None:
    check_options(Options(runs=200_000, duration=7200, allow_large=True))
    with pytest.raises(LoadtestError, match="--allow-large"):
        check_options(Options(runs=200_000))


async def test_a_cancelled_test_still_prints_and_writes_a_partial_summary(
    server: TestServer, tmp_path: Path
) -> None:
    console, out = captured()
    json_path = tmp_path / "partial.json"
    opts = Options(url=url_of(server), runs=10_000, concurrency=5, speed=20, nodes=4,
                   json_path=str(json_path))
    # Cancel (as Ctrl-C does through asyncio.run) once some runs have finished: when the server
    # has started more runs than there are workers, a worker has finished one and counted it.
    some_finished = counted(server, "run.started", opts.concurrency + 1)
    task = asyncio.create_task(run_loadtest(opts, console))
    await before(some_finished, task)
    task.cancel()
    async with asyncio.timeout(WAIT):
        summary: Summary = await task
    assert summary.stopped_by == "interrupted"
    assert 0 < summary.runs.started < 10_000
    assert summary.runs.not_started == 10_000 - summary.runs.started
    assert summary.runs.unfinished == summary.runs.started - summary.runs.finished
    assert "PARTIAL" in out.getvalue()
    assert msgspec.json.decode(json_path.read_bytes())["stoppedBy"] == "interrupted"
    # Nothing of the load tester is left running.
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if "loadtest" in t.get_name()]


async def test_duration_bounds_the_whole_test(server: TestServer) -> None:
    console, out = captured()
    opts = Options(url=url_of(server), runs=10_000, concurrency=5, speed=20, nodes=4,
                   duration=0.5)
    # The duration runs out (on a manual clock) once a worker has finished a run (more runs
    # started than there are workers), not at an instant a slow machine may not have reached.
    clock = ManualClock()
    some_finished = counted(server, "run.started", opts.concurrency + 1)
    test = asyncio.create_task(run_loadtest(opts, console, clock=clock))
    await before(some_finished, test)
    await clock.advance(opts.duration)
    async with asyncio.timeout(WAIT):
        summary = await test
    assert summary.stopped_by == "duration"
    assert 0 < summary.runs.completed < 10_000
    assert summary.wall_seconds < 2
    assert "PARTIAL" in out.getvalue()


async def test_subscribe_counts_every_event_of_every_run(server: TestServer) -> None:
    console, _ = captured()
    opts = Options(url=url_of(server), runs=10, concurrency=5, speed=1000, nodes=4,
                   subscribe=True)
    summary = await run_loadtest(opts, console)
    assert summary.runs.completed == 10
    assert summary.error_total == 0
    engine = server.app[ENGINE]
    records = await runs_on_server(opts.url, summary.workflow_ids[0])
    emitted = 0
    for record in records:
        log = engine.events(record["id"])
        assert log is not None
        emitted += log.last_seq
    assert summary.events_received == emitted


# --- following runs on /api/events, throttling, figures by state, n/a, CPU ------------------


def flat(out: io.StringIO) -> str:
    """The output with every run of spaces and line breaks made one space (rich wraps lines)."""
    return " ".join(out.getvalue().split())


def requests_seen(app: web.Application) -> Counter[str]:
    """Count the requests `app` serves by method and route pattern (added before it starts)."""
    seen: Counter[str] = Counter()

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        seen[f"{request.method} {resource.canonical if resource else request.path}"] += 1
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(middleware)
    return seen


async def test_events_follow_every_run_to_its_end_on_one_stream(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    app = create_app(make_settings(tmp_path))
    seen = requests_seen(app)
    server: TestServer = await aiohttp_server(app)
    console, out = captured()
    opts = Options(url=url_of(server), runs=30, concurrency=30, speed=1000, nodes=4)
    summary = await run_loadtest(opts, console)

    assert (summary.follow, summary.runs.completed, summary.error_total) == ("events", 30, 0)
    # One stream for every run, and no run read on its own.
    assert seen["GET /api/events"] == 1
    assert seen["GET /api/runs/{runId}"] == 0
    assert seen["POST /api/workflows/{id}/execute"] == 30
    assert summary.stream is not None
    assert (summary.stream.connections, summary.stream.gaps,
            summary.stream.runs_read_after_gaps) == (1, 0, 0)
    # The terminal event's ts is the run's finishedAt: the same makespans as the records.
    records = await runs_on_server(opts.url, summary.workflow_ids[0])
    assert summary.makespan_by_state_ms["completed"] == percentiles(makespans(records))
    engine = server.app[ENGINE]
    emitted = 0
    for record in records:
        log = engine.events(record["id"])
        assert log is not None
        emitted += log.last_seq
    assert summary.events_received == emitted
    text = flat(out)
    assert "following: one /api/events stream" in text
    assert "stream: 1 connection(s) to /api/events, 0 gap(s), 0 run(s) read after gaps" in text


async def test_a_gap_in_the_stream_is_filled_by_reading_the_run(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    app = create_app(make_settings(tmp_path))
    seen = requests_seen(app)
    server: TestServer = await aiohttp_server(app)
    hub = server.app[SSE]

    def drop_the_stream_and_the_ring(run_id: str, workflow_id: str, _seq: int, event: str,
                                     data: bytes) -> None:
        # The run's end has just entered the ring, before any stream was sent it: ending
        # every stream and forgetting the ring loses it, and the resumed stream says so.
        if event == "run.completed":
            hub.reset()

    server.app[ENGINE].add_listener(drop_the_stream_and_the_ring)
    console, _ = captured()
    opts = Options(url=url_of(server), runs=1, concurrency=1, speed=1000, nodes=4)
    summary = await run_loadtest(opts, console)

    assert (summary.runs.completed, summary.runs.unfinished, summary.error_total) == (1, 0, 0)
    assert summary.stream is not None
    assert (summary.stream.connections, summary.stream.gaps,
            summary.stream.runs_read_after_gaps) == (2, 1, 1)
    assert seen["GET /api/events"] == 2
    assert seen["GET /api/runs/{runId}"] == 1
    [record] = await runs_on_server(opts.url, summary.workflow_ids[0])
    assert summary.makespan_by_state_ms["completed"] == percentiles(makespans([record]))


async def test_throttled_requests_are_waited_out_retried_and_counted_apart(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    # A bucket of 3 requests refilled 100 times a second: the test's first burst of requests
    # (the workflow, the stream, 10 executes) is mostly answered 429 with Retry-After: 1. The
    # waits are capped at 20 ms so that the test does not sleep for a second.
    settings = make_settings(tmp_path, rate_limit_per_second=100, rate_limit_burst=3)
    server: TestServer = await aiohttp_server(create_app(settings))
    console, out = captured()
    opts = Options(url=url_of(server), runs=10, concurrency=10, speed=1000, nodes=4,
                   max_retry_wait=0.02)
    summary = await run_loadtest(opts, console)

    assert (summary.runs.completed, summary.error_total, summary.errors) == (10, 0, {})
    assert summary.throttled_total > 0
    assert summary.throttled_total == sum(summary.throttled.values())
    assert set(summary.throttled) <= {"prepare", "events", "execute"}
    assert summary.throttled_first_s is not None and summary.throttled_last_s is not None
    assert 0 <= summary.throttled_first_s <= summary.throttled_last_s
    # Each wait is the capped Retry-After, plus at most half as much again of jitter.
    assert 0.02 * summary.throttled_total <= summary.throttled_wait_seconds \
        <= 0.03 * summary.throttled_total + 0.001
    text = flat(out)
    assert f"throttled: the server answered 429 to {summary.throttled_total} requests" in text
    assert ("To turn throttling off, start the server with rate_limit_per_second = 0 "
            "(FLOWSTAGE_RATE_LIMIT_PER_SECOND=0).") in text
    assert "not counted as an error" in text
    # Requests still throttled after their last retry are errors, and the summary says so.
    gave_up = msgspec.structs.replace(summary, errors={"execute: HTTP 429": 2}, error_total=2)
    console, out = captured()
    console.print(render_summary(gave_up))
    text = flat(out)
    assert "2 requests still throttled after that gave up and are counted as errors" in text
    assert "not counted as an error" not in text


@pytest.mark.parametrize("follow", ["poll", "run-events"])
async def test_polling_and_run_streams_stay_options_and_honour_throttling(
    aiohttp_server: ServerFactory, tmp_path: Path, follow: Any
) -> None:
    settings = make_settings(tmp_path, rate_limit_per_second=200, rate_limit_burst=5)
    app = create_app(settings)
    seen = requests_seen(app)
    server: TestServer = await aiohttp_server(app)
    console, _ = captured()
    opts = Options(url=url_of(server), runs=8, concurrency=8, speed=1000, nodes=4,
                   follow=follow, max_retry_wait=0.02)
    summary = await run_loadtest(opts, console)
    assert (summary.follow, summary.runs.completed, summary.error_total) == (follow, 8, 0)
    assert summary.throttled_total > 0
    assert summary.stream is None
    assert seen["GET /api/events"] == 0
    assert summary.subscribe is (follow == "run-events")


async def test_failed_runs_makespans_are_reported_apart(server: TestServer) -> None:
    console, out = captured()
    opts = Options(url=url_of(server), runs=20, concurrency=20, speed=1000, nodes=4,
                   failure_rate=0.3)
    summary = await run_loadtest(opts, console)
    records = await runs_on_server(opts.url, summary.workflow_ids[0])
    by_state = {state: [r for r in records if r["state"] == state]
                for state in ("completed", "failed", "stopped")}
    assert by_state["failed"] and by_state["completed"]  # seeded by the clock: both happen
    for state, runs in by_state.items():
        assert summary.makespan_by_state_ms[state] == percentiles(makespans(runs)), state
        assert summary.client_makespan_by_state_ms[state].count == len(runs), state
    # The mixed figure is still there, for the --json of before.
    assert summary.makespan_ms == percentiles(makespans(records))
    text = out.getvalue()
    failed = summary.makespan_by_state_ms["failed"]
    assert re.search(rf"makespan \(server\), failed +{failed.count} ", text)
    assert re.search(r"makespan \(server\), stopped +0 +n/a +n/a +n/a +n/a +n/a", text)


async def test_what_was_not_measured_shows_as_na(server: TestServer) -> None:
    console, out = captured()
    opts = Options(url=url_of(server), runs=3, concurrency=3, speed=1000, nodes=4,
                   follow="poll")
    summary = await run_loadtest(opts, console)
    assert summary.runs.completed == 3
    text = out.getvalue()
    # Polling reads no events: their count is not 0, it is unknown.
    assert re.search(r"events received +n/a", text)
    assert re.search(r"events/s +n/a", text)
    assert re.search(r"makespan \(client\), failed +0 +n/a", text)
    assert "server n/a" in text
    # No control was timed: the JSON still has both, with nulls (not missing, not 0).
    controls = msgspec.to_builtins(summary)["controlLatencyMs"]
    assert controls == {a: {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
                        for a in ("pause", "resume")}


async def test_the_cpu_line_is_printed_and_a_server_in_this_process_is_not_measured(
    server: TestServer, tmp_path: Path
) -> None:
    console, out = captured()
    json_path = tmp_path / "summary.json"
    opts = Options(url=url_of(server), runs=5, concurrency=5, speed=1000, nodes=4,
                   json_path=str(json_path))
    summary = await run_loadtest(opts, console)
    # The test's server shares this process: its CPU cannot be told from the load tester's.
    assert (summary.cpu.server_seconds, summary.cpu.ratio) == (None, None)
    assert summary.cpu.server_source == SAME_PROCESS
    assert summary.cpu.load_tester_seconds >= 0
    text = flat(out)
    assert (f"CPU: load tester {summary.cpu.load_tester_seconds:,.2f} s, server n/a "
            f"({SAME_PROCESS}); load tester CPU / server CPU = n/a") in text
    assert msgspec.json.decode(json_path.read_bytes())["cpu"] == {
        "loadTesterSeconds": summary.cpu.load_tester_seconds, "serverSeconds": None,
        "ratio": None, "serverSource": SAME_PROCESS}


async def test_the_last_progress_frame_has_the_final_figures(server: TestServer) -> None:
    console, out = captured()
    # No line comes from the ticker in so short a test: the one line is the final frame.
    opts = Options(url=url_of(server), runs=6, concurrency=3, speed=1000, nodes=4,
                   progress_interval=60)
    summary = await run_loadtest(opts, console)
    first = out.getvalue().splitlines()[0]
    assert re.match(r"elapsed \d+\.\d s  started 6 / 6  finished 6 \(completed 6, failed 0, "
                    r"stopped 0\)  in flight 0  ", first), first
    assert summary.runs.completed == 6
    assert "throttled 0  errors 0  CPU (load tester)" in first


def test_subscribe_and_follow_poll_together_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["loadtest", "--subscribe", "--follow", "poll"]) == 2
    assert capsys.readouterr().err == ("flowstage loadtest: --subscribe is --follow run-events; "
                                       "it cannot go with --follow poll\n")


async def test_a_server_on_this_machine_is_found_and_its_cpu_read() -> None:
    # A process of our own that listens on a port and waits: the load tester's view of a
    # `flowstage serve` on this machine.
    listener = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import socket, sys; s = socket.socket(); "
        "s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True); "
        "sys.stdin.read()", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert listener.stdout is not None
        async with asyncio.timeout(WAIT):
            port = int(await listener.stdout.readline())
        assert listening_pid(port) == listener.pid
        assert process_cpu_seconds(listener.pid) is not None

        async def no_metrics(path: str) -> tuple[int, bytes]:
            raise AssertionError("a process found on this machine needs no /metrics")

        server_cpu = await ServerCpu.begin(f"http://127.0.0.1:{port}", no_metrics)
        figures = await server_cpu.end(0.5, no_metrics)
        assert figures.server_source == (f"/proc/{listener.pid}/stat (the process listening "
                                         f"on port {port})")
        assert figures.server_seconds is not None and figures.server_seconds >= 0
        assert figures.ratio == (round(0.5 / figures.server_seconds, 3)
                                 if figures.server_seconds else None)
    finally:
        listener.kill()
        await listener.communicate()
    assert listening_pid(port) is None


async def test_a_remote_servers_cpu_comes_from_its_metrics() -> None:
    scrapes = iter([b"# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 10.5\n",
                    b"process_cpu_seconds_total 14.5\n"])

    async def metrics(path: str) -> tuple[int, bytes]:
        assert path == "/metrics"
        return 200, next(scrapes)

    server_cpu = await ServerCpu.begin("http://flowstage.invalid:8080", metrics)
    figures = await server_cpu.end(1.0, metrics)
    assert (figures.server_seconds, figures.ratio, figures.server_source) == (
        4.0, 0.25, "GET /metrics process_cpu_seconds_total")


async def test_a_local_servers_memory_is_read_before_at_the_peak_and_after() -> None:
    # A process that grows by 64 MiB while the test runs and frees it before the end.
    grower = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import socket, sys; s = socket.socket(); "
        "s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True); "
        "sys.stdin.readline(); b = bytearray(64 << 20); print('grown', flush=True); "
        "sys.stdin.readline(); del b; print('freed', flush=True); sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert grower.stdin is not None and grower.stdout is not None

    async def step(expect: bytes) -> None:
        assert grower.stdin is not None and grower.stdout is not None
        grower.stdin.write(b"go\n")
        async with asyncio.timeout(WAIT):
            assert (await grower.stdout.readline()).strip() == expect

    async def no_metrics(path: str) -> tuple[int, bytes]:
        raise AssertionError("a process found on this machine needs no /metrics")

    try:
        async with asyncio.timeout(WAIT):
            port = int(await grower.stdout.readline())
        watch = await MemoryWatch.begin(await ServerCpu.begin(f"http://127.0.0.1:{port}", no_metrics),
                                        no_metrics)
        await step(b"grown")
        await asyncio.sleep(3 * SAMPLE_S)  # sampled at least twice while grown
        await step(b"freed")
        figures = await watch.end(settle=0.0)
    finally:
        grower.kill()
        await grower.communicate()
    assert figures.source == f"/proc/{grower.pid}/statm"
    assert figures.before_mib is not None and figures.peak_mib is not None and figures.after_mib is not None
    assert figures.peak_mib - figures.before_mib >= 60
    assert figures.peak_mib - figures.after_mib >= 60


async def test_a_remote_servers_memory_comes_from_its_metrics() -> None:
    mib = 1024 * 1024
    # Scraped for the CPU, then for the memory at the start, once while running, at the end.
    rss = iter([100, 100, 180])

    async def metrics(path: str) -> tuple[int, bytes]:
        assert path == "/metrics"
        return 200, (f"process_cpu_seconds_total 1.0\n"
                     f"process_resident_memory_bytes {next(rss, 120) * mib:.6e}\n").encode()

    watch = await MemoryWatch.begin(await ServerCpu.begin("http://flowstage.invalid:8080", metrics), metrics)
    await asyncio.sleep(4 * SAMPLE_S + 0.2)  # one scrape while running
    figures = await watch.end(settle=0.0)
    assert figures == MemoryFigures(100.0, 180.0, 120.0, "GET /metrics process_resident_memory_bytes")


def test_rss_is_read_from_a_metrics_exposition() -> None:
    text = b"# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 5.24288e+07\n"
    assert rss_from_metrics(text) == 52_428_800
    assert rss_from_metrics(b"process_resident_memory_bytes_other 1\n") is None


def test_connections_are_bounded_by_the_open_file_limit() -> None:
    import resource

    from flowstage.loadtest import connection_budget

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = 1_000_000 if hard == resource.RLIM_INFINITY else max(16, hard - 256)
    assert connection_budget() == expected
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard  # raised to the hard limit


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "k", "ideal_ms"), [
    ("chain", 4, 20 + 350 + 70 + 5),        # trigger, http (median), transform (mean), output
    ("diamond", 4, 20 + 350 + 10),          # trigger, max(http, transform), merge
    ("fanout", 4, 20 + 350 + 5),            # trigger, max(http, transform), output
    ("chain", 10, 20 + 4 * 350 + 4 * 70 + 5),
    ("diamond", 10, 20 + 2 * 350 + 2 * 70 + 10),
])
def test_the_ideal_is_the_critical_path_of_point_estimates(shape: Shape, k: int,
                                                           ideal_ms: float) -> None:
    body = build_workflow(shape, k, TYPES, "w")
    assert len(body["nodes"]) == k
    ms, path = critical_path(body, TYPES)
    assert ms == pytest.approx(ideal_ms)
    assert path[0] == "manual_trigger"


def chain_of(*nodes: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """A workflow of (id, type, config) nodes, each connected to the next."""
    return {"nodes": [{"id": nid, "type": kind, "data": {"config": config}} for nid, kind, config in nodes],
            "connections": [{"id": f"c{i}", "source": a[0], "target": b[0]}
                            for i, (a, b) in enumerate(itertools.pairwise(nodes))]}


def test_an_idle_servers_makespans_are_drawn_from_each_nodes_timing_profile() -> None:
    # Fixed timings and a delay's own ms: every draw is the critical path.
    assert set(idle_makespans(build_workflow("chain", 2, TYPES, "w"), TYPES, samples=100)) == {20 + 5}
    delayed = chain_of(("t", "manual_trigger", {}), ("d", "delay", {"ms": 250}))
    assert set(idle_makespans(delayed, TYPES, samples=100)) == {20 + 250}
    # A uniform node: between its bounds, its mean in the middle.
    uniform = sorted(idle_makespans(chain_of(("x", "transform", {})), TYPES))
    assert uniform[0] >= 20
    assert uniform[-1] <= 120
    assert uniform[len(uniform) // 2] == pytest.approx(70, rel=0.03)
    # A lognormal node (median 350 ms, sigma 0.5, capped at 5 s): the median in the middle and
    # the tail where e^(sigma z) puts it; the point-estimate ideal (its median) is below that.
    lognormal = sorted(idle_makespans(chain_of(("h", "http_request", {})), TYPES))
    assert lognormal[len(lognormal) // 2] == pytest.approx(350, rel=0.03)
    assert lognormal[int(len(lognormal) * 0.99)] == pytest.approx(350 * math.exp(0.5 * 2.326), rel=0.06)
    assert lognormal[-1] <= 5000
    # Two branches in parallel: the run waits for the slower, so its median is where each
    # branch is below it with probability sqrt(1/2) (z = 0.545), not the branch's median.
    fan = chain_of(("t", "manual_trigger", {}), ("a", "http_request", {}), ("o", "output", {}))
    fan["nodes"].append({"id": "b", "type": "http_request"})
    fan["connections"] += [{"id": "tb", "source": "t", "target": "b"}, {"id": "bo", "source": "b", "target": "o"}]
    both = sorted(idle_makespans(fan, TYPES))
    assert both[len(both) // 2] == pytest.approx(20 + 350 * math.exp(0.5 * 0.545) + 5, rel=0.03)
    assert critical_path(fan, TYPES)[0] == 20 + 350 + 5
    # Fewer draws for a large workflow: the tester's start stays short.
    assert len(idle_makespans(build_workflow("chain", 10, TYPES, "w"), TYPES)) == 10_000
    assert len(idle_makespans(build_workflow("chain", 1000, TYPES, "w"), TYPES)) == 1_000


async def test_the_servers_makespans_are_an_idle_servers_and_both_are_reported(server: TestServer) -> None:
    # Fan-out: the slowest of parallel lognormal branches puts the idle median 1.6x above the
    # point-estimate ideal; a server keeping time shows the same makespans as the draws.
    console, out = captured(False)
    opts = Options(url=url_of(server), runs=200, concurrency=50, speed=10, nodes=10, shape="fanout")
    summary = await run_loadtest(opts, console)
    idle = summary.ideal.idle_ms
    assert idle is not None and idle.count == 10_000
    assert idle.p50 is not None and idle.p99 is not None and idle.p99 > idle.p50 > 1.4 * summary.ideal.ms
    done = summary.makespan_by_state_ms["completed"]
    assert done.count == 200
    assert done.p50 == pytest.approx(idle.p50, rel=0.2)
    text = out.getvalue()
    assert re.search(r"makespan, idle server +10,000 +\d", text)
    assert "completed makespan p99 / idle p99 = " in text


def test_a_cycle_has_no_critical_path() -> None:
    body = build_workflow("chain", 3, TYPES, "w")
    body["connections"].append({"id": "back", "source": "n2", "target": "n1"})
    with pytest.raises(LoadtestError, match="cycle"):
        critical_path(body, TYPES)


def test_sse_messages_are_parsed_however_the_bytes_are_split() -> None:
    wire = (b": ping\n\n"
            b"id: 1\nevent: run.started\ndata: {\"runId\":\"r\",\"seq\":1}\n\n"
            b"id: 2\r\nevent: node.completed\r\ndata: {\"seq\":2}\r\n\r\n"
            b"id: 3\nevent: run.completed\ndata: {}\n\n")
    expected = [("run.started", 1), ("node.completed", 2), ("run.completed", 3)]
    for cut in range(len(wire) + 1):
        buffer = bytearray()
        got = [*parse_sse(buffer, wire[:cut]), *parse_sse(buffer, wire[cut:])]
        assert got == expected, cut
    buffer = bytearray()
    assert [m for i in range(len(wire)) for m in parse_sse(buffer, wire[i:i + 1])] == expected


def test_percentiles_are_nearest_rank() -> None:
    p = percentiles([float(v) for v in range(1, 101)])
    assert (p.count, p.p50, p.p95, p.p99, p.max, p.mean) == (100, 50.0, 95.0, 99.0, 100.0, 50.5)
    assert percentiles([]).p50 is None



def test_the_frame_scanner_finds_the_ends_however_the_bytes_are_split() -> None:
    wire = (b"id: 7\nevent: run.started\ndata: {\"runId\":\"r1\",\"seq\":1}\n\n"
            b": ping\n\n"
            b"id: 8\nevent: node.completed\ndata: {\"runId\":\"r1\",\"seq\":2}\n\n"
            b"id: 9\r\nevent: run.completed\r\ndata: {\"runId\":\"r1\",\"ts\":\"T\"}\r\n\r\n"
            b"id: 11\nevent: stream.gap\ndata: {\"event\":\"stream.gap\",\"resumedAt\":12}\n\n"
            b"id: 12\nevent: run.failed\ndata: {\"runId\":\"r2\",\"ts\":\"U\"}\n\n")
    wanted = [(b"run.completed", b'{"runId":"r1","ts":"T"}'),
              (b"stream.gap", b'{"event":"stream.gap","resumedAt":12}'),
              (b"run.failed", b'{"runId":"r2","ts":"U"}')]
    for cut in range(len(wire) + 1):
        scanner = FrameScanner()
        first, found = scanner.feed(wire[:cut])
        second, more = scanner.feed(wire[cut:])
        assert (first + second, found + more, scanner.last_id) == (5, wanted, 12), cut
    scanner = FrameScanner()
    counted = [scanner.feed(wire[i:i + 1]) for i in range(len(wire))]
    assert sum(n for n, _ in counted) == 5
    assert [w for _, found in counted for w in found] == wanted


def test_retry_after_is_seconds_or_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds("0.5", now) == 0.5
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:04 GMT", now) == 4.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds(None, now) == retry_after_seconds("soon", now) == 1.0
    assert retry_after_seconds("-2", now) == 0.0


def test_metrics_cpu_is_read_from_the_exposition() -> None:
    text = (b"# TYPE process_cpu_seconds_total counter\n"
            b"process_cpu_seconds_total_extra 1\nprocess_cpu_seconds_total 12.25\n")
    assert cpu_from_metrics(text) == 12.25
    assert cpu_from_metrics(b"flowstage_runs_started 3\n") is None


async def test_the_request_client_reads_chunked_and_close_delimited_answers() -> None:
    answers = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: \"x\"\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
               b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\nuntil the end"]
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
        writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    pool = Pool(URL(f"http://127.0.0.1:{port}"), 1, timeout=WAIT)
    try:
        first = await pool.send(pool.encode("GET", "/a", {"Accept": "x/y"}, None))
        second = await pool.send(pool.encode("POST", "/b", None, None))
    finally:
        pool.close()
        listening.close()
        await listening.wait_closed()
    assert (first.status, first.body, first.headers["etag"]) == (200, b"hello world", '"x"')
    assert (second.status, second.body) == (201, b"until the end")
    assert requests == [
        f"GET /a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: flowstage-loadtest\r\n"
        "Accept: x/y\r\n\r\n".encode(),
        f"POST /b HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: flowstage-loadtest\r\n"
        "Content-Length: 0\r\n\r\n".encode()]


async def test_connections_opened_at_once_share_one_address_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test opens thousands of connections in the same instant: they share one getaddrinfo
    (each is a thread-pool job, and 10,000 of them queued took seconds). A failed look-up is
    not kept: the next connection looks the name up again."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:  # until the pool closes the connection
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    lookups: list[str] = []

    async def counted(host: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        if len(lookups) == 1:
            raise OSError("name resolution failed")
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", counted)
    pool = Pool(URL(f"http://localhost:{port}"), 50, timeout=WAIT)
    request = pool.encode("GET", "/", None, None)
    try:
        with pytest.raises(OSError, match="name resolution failed"):
            await pool.send(request)
        answers = await asyncio.gather(*(pool.send(request) for _ in range(50)))
    finally:
        pool.close()
        listening.close()
        await listening.wait_closed()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    assert [a.status for a in answers] == [204] * 50
    assert lookups == ["localhost", "localhost"]


async def test_a_refused_connection_fails_its_request_at_once_as_refused() -> None:
    """Connections are not awaited before the request is written: a refusal still fails
    that request as a refusal, not as a time-out, and the pool stays usable."""
    closed = free_port()
    pool = Pool(URL(f"http://127.0.0.1:{closed}"), 4, timeout=WAIT)
    try:
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                await pool.send(pool.encode("GET", "/", None, None))
    finally:
        pool.close()
