"""`flowstage loadtest` against an app started in the test, through its async entry point with
the output captured: its counts agree with the server's own run records and with its --json
file, failed runs are counted, an unreachable server is a clear error, and a cancelled (or
time-bounded) test still prints a partial summary. (`--loop` is tested with `serve` in
test_cli.py.)"""

from __future__ import annotations

import asyncio
import io
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer
from conftest import make_settings
from rich.console import Console

from flowstage.actors.clock import ManualClock
from flowstage.loadtest import (
    LoadtestError,
    Options,
    Shape,
    Summary,
    build_workflow,
    check_options,
    critical_path,
    parse_sse,
    percentiles,
    run_loadtest,
)
from flowstage.server import cli
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE
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
                                  ["--url", "127.0.0.1:8080"]])
def test_out_of_bounds_options_are_refused_before_anything_is_sent(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["loadtest", *argv]) == 2
    assert "flowstage loadtest:" in capsys.readouterr().err


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

