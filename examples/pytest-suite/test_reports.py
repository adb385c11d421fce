"""Testing the report client against Flowstage: virtual time, scripted outcomes, the journal,
the event stream and a live server for synchronous code.

Run from this folder: `pip install 'flowstage[testing]'`, then `pytest`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import datetime
from typing import Any

import pytest
from reports import report_status, start_report

from flowstage.testing import LiveServer, RunHandle, Stage, StageStalled


def seconds(ts: str) -> float:
    """An event's RFC 3339 `ts` as seconds since the epoch."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def test_the_report_completes_in_virtual_time(flowstage: Stage, report: dict[str, Any]) -> None:
    run_id = await start_report(flowstage.client, report["id"], seed=11)
    run = RunHandle(flowstage, run_id, report["id"])  # a handle on the run our client started

    final = await run.run_until_complete()

    assert final["state"] == "completed"
    assert {node: state["state"] for node, state in final["nodes"].items()} == {
        "trigger": "completed", "fetch": "completed", "summarise": "completed", "store": "completed"}
    # No real second went by: the clock jumped from one node's end to the next, and stopped
    # at the instant the run completed.
    elapsed = seconds(final["finishedAt"]) - seconds(final["startedAt"])
    assert flowstage.clock.now == pytest.approx(elapsed, abs=0.001)
    assert run.events.names()[0] == "run.started"
    assert run.events.last()["event"] == "run.completed"


async def test_a_fetch_that_times_out_skips_the_rest(flowstage: Stage, report: dict[str, Any]) -> None:
    flowstage.script.node("fetch").fails("upstream timed out", after=30.0)
    run = await flowstage.execute(report["id"])

    final = await run.run_until_complete()

    assert final["state"] == "failed"
    failed = run.events.first("node.failed", node="fetch")
    assert failed["error"]["message"] == "upstream timed out"
    started = run.events.first("node.started", node="fetch")
    assert seconds(failed["ts"]) - seconds(started["ts"]) == 30.0
    assert run.node("summarise")["state"] == "skipped"
    assert run.node("store")["state"] == "skipped"


async def test_the_summary_sees_what_fetch_returned(flowstage: Stage, report: dict[str, Any]) -> None:
    run = await flowstage.execute(report["id"], script={
        "fetch": {"outcome": "complete", "output": {"orders": 3}},
    })
    await run.run_until_complete()

    assert run.node("summarise")["inputs"] == {"fetch-summarise": {"orders": 3}}


async def test_pause_and_resume_on_the_manual_clock(flowstage: Stage, report: dict[str, Any]) -> None:
    flowstage.script.node("fetch").takes(10.0)
    run = await flowstage.execute(report["id"])
    await flowstage.clock.advance(5.0)  # the trigger is done, fetch is half-way
    assert run.node("fetch")["state"] == "running"

    await flowstage.client.post(f"/api/runs/{run.id}/pause")
    with pytest.raises(StageStalled) as stalled:  # a paused run cannot end: no hang, an error
        await run.run_until_complete()
    assert stalled.value.waiting == ["fetch", "summarise", "store"]
    await flowstage.clock.advance(3600.0)  # an hour later, nothing has moved
    assert run.node("fetch")["state"] == "paused"

    await flowstage.client.post(f"/api/runs/{run.id}/resume")
    final = await run.run_until_complete()
    assert final["state"] == "completed"
    assert seconds(run.events.first("run.resumed")["ts"]) - seconds(run.events.first("run.paused")["ts"]) == 3600.0


async def test_the_client_starts_exactly_one_run(flowstage: Stage, report: dict[str, Any]) -> None:
    await start_report(flowstage.client, report["id"], seed=5)

    [request] = flowstage.journal.assert_request_made("POST", "/api/workflows/*/execute", count=1)
    assert request.body == {"seed": 5}
    assert request.status == 202


async def test_the_event_stream_tells_the_whole_story(flowstage: Stage, report: dict[str, Any]) -> None:
    run = await flowstage.execute(report["id"])

    streamed = await asyncio.wait_for(run.sse(until="run.completed"), timeout=10)

    assert streamed.names() == run.events.names()
    assert [e["nodeId"] for e in streamed.named("node.completed")] == ["trigger", "fetch", "summarise", "store"]


async def test_a_hung_service_fails_fast_instead_of_hanging(flowstage: Stage, report: dict[str, Any]) -> None:
    flowstage.script.matching("database_*").hangs()
    run = await flowstage.execute(report["id"])

    with pytest.raises(StageStalled) as stalled:
        await run.run_until_complete()
    assert stalled.value.waiting == ["store"]


def test_a_synchronous_caller_against_the_live_server(flowstage_live: LiveServer,
                                                      report_body: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{flowstage_live.url}/api/workflows", data=json.dumps(report_body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        workflow = json.loads(answer.read())
    execute = urllib.request.Request(f"{flowstage_live.url}/api/workflows/{workflow['id']}/execute", data=b"{}",
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(execute, timeout=10) as answer:
        run_id = json.loads(answer.read())["id"]

    assert report_status(flowstage_live.url, run_id) == "running"
    flowstage_live.clock(advance=3600)  # the live server's clock is manual too
    assert report_status(flowstage_live.url, run_id) == "completed"
