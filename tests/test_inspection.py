"""Node inspection, `GET /api/runs/{id}/nodes/{nodeId}`: state, simulated timings (paused time
left out, scaled by speed), the inputs delivered on each connection, what a node still waits
for, output and error, live and after the run left memory or the server restarted; and the
attempt count across a retry lineage, from hand-made runs."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import FormData
from conftest import T0, Client, ClientFactory, create, make_settings
from PIL import Image

from flowstage.actors.clock import ManualClock
from flowstage.server.app import create_app
from flowstage.server.inspection import Recorded, lineage_attempts
from flowstage.server.keys import ENGINE, STORE
from flowstage.simulation.models import (
    ErrorInfo,
    NodeCompleted,
    NodeFailed,
    NodeQueued,
    NodeRun,
    NodeStarted,
    Run,
    RunPaused,
    RunResumed,
    Workflow,
    event_name,
)
from flowstage.simulation.node_view import EventRecord, executed, inspect_node
from flowstage.simulation.plan import compile_plan
from flowstage.simulation.timefmt import iso_ms


def node(node_id: str, type_: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "position": {"x": 0, "y": 0}, "data": {"config": config}}


def link(source: str, target: str) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target}


def takes(ms: float, output: Any = None) -> dict[str, Any]:
    """A scripted completion after `ms` simulated milliseconds."""
    return {"outcome": "complete", "durationMs": ms, **({} if output is None else {"output": output})}


# t -> h -> o, connections c1 and c2 (the `wf` fixture's workflow), each node's time scripted.
CHAIN_SCRIPT = {"t": takes(100, {"go": 1}), "h": takes(2000, {"status": 200}), "o": takes(100)}




@pytest.fixture
async def chain(clocked: Client, simple_workflow: dict[str, Any]) -> str:
    """The `wf` fixture's workflow, on the clocked app."""
    return await create(clocked, simple_workflow)



async def execute(client: Client, wf_id: str, **body: Any) -> str:
    resp = await client.post(f"/api/workflows/{wf_id}/execute", json=body)
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["id"])


async def inspect(client: Client, run_id: str, node_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/runs/{run_id}/nodes/{node_id}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def view(node_id: str, state: str, **fields: Any) -> dict[str, Any]:
    """An inspection as the API writes it: every field, these ones set."""
    base: dict[str, Any] = {
        "nodeId": node_id, "state": state, "queuedAt": None, "startedAt": None, "finishedAt": None,
        "durationMs": None, "inputs": {}, "output": None, "error": None, "attempt": 0, "waitingFor": [],
        "reused": False, "pinned": False}
    return {**base, **fields}


# --- a live run ------------------------------------------------------------------------------


async def test_a_running_node_shows_its_inputs_and_a_simulated_duration_that_grows(
    clocked: Client, clock: ManualClock, chain: str
) -> None:
    run_id = await execute(clocked, chain, speed=2, script=CHAIN_SCRIPT)
    # t takes 100 ms simulated, 50 ms of clock at speed 2; then h runs for 250 ms of clock.
    await clock.advance(0.05 + 0.25)
    h_start = iso_ms(T0 + 0.05)
    running = view("h", "running", queuedAt=h_start, startedAt=h_start, durationMs=500.0,
                   inputs={"c1": {"go": 1}}, attempt=1)
    assert await inspect(clocked, run_id, "h") == running
    assert await inspect(clocked, run_id, "o") == view("o", "idle", waitingFor=["c2"])
    await clock.advance(0.25)
    assert (await inspect(clocked, run_id, "h"))["durationMs"] == 1000.0

    await clock.run_until_idle()
    assert await inspect(clocked, run_id, "h") == view(
        "h", "completed", queuedAt=h_start, startedAt=h_start, finishedAt=iso_ms(T0 + 1.05), durationMs=2000.0,
        inputs={"c1": {"go": 1}}, output={"status": 200}, attempt=1)
    assert await inspect(clocked, run_id, "o") == view(
        "o", "completed", queuedAt=iso_ms(T0 + 1.05), startedAt=iso_ms(T0 + 1.05), finishedAt=iso_ms(T0 + 1.1),
        durationMs=100.0, inputs={"c2": {"status": 200}}, output={"status": 200}, attempt=1)
    trigger = await inspect(clocked, run_id, "t")
    assert (trigger["inputs"], trigger["waitingFor"], trigger["output"]) == ({}, [], {"go": 1})


async def test_a_paused_runs_node_does_not_age_and_its_pause_is_left_out_after(
    clocked: Client, clock: ManualClock, chain: str
) -> None:
    run_id = await execute(clocked, chain, speed=2, script=CHAIN_SCRIPT)
    await clock.advance(0.05 + 0.25)
    paused = await clocked.post(f"/api/runs/{run_id}/pause")
    assert paused.status == 200
    await clock.advance(5.0)
    frozen = await inspect(clocked, run_id, "h")
    assert (frozen["state"], frozen["durationMs"]) == ("paused", 500.0)
    assert (await clocked.post(f"/api/runs/{run_id}/resume")).status == 200
    await clock.advance(0.25)
    assert (await inspect(clocked, run_id, "h"))["durationMs"] == 1000.0
    await clock.run_until_idle()
    done = await inspect(clocked, run_id, "h")
    # 6 s of clock went by between its start and its end; 1 s of it running, at speed 2.
    assert (done["startedAt"], done["finishedAt"]) == (iso_ms(T0 + 0.05), iso_ms(T0 + 6.05))
    assert (done["state"], done["durationMs"]) == ("completed", 2000.0)


async def test_a_fan_in_waits_for_the_branch_that_has_not_delivered(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, {
        "name": "Fan-in",
        "nodes": [node("t", "manual_trigger"), node("b", "delay"), node("c", "delay"), node("m", "merge")],
        "connections": [link("t", "b"), link("t", "c"), link("b", "m"), link("c", "m")],
    })
    run_id = await execute(clocked, wf_id, script={
        "t": takes(20, {"go": 1}), "b": takes(1000, {"from": "b"}), "c": {"outcome": "hang"}})
    await clock.advance(2.0)
    assert await inspect(clocked, run_id, "m") == view("m", "idle", inputs={"b-m": {"from": "b"}},
                                                       waitingFor=["c-m"])
    hanging = await inspect(clocked, run_id, "c")
    assert (hanging["state"], hanging["durationMs"], hanging["inputs"]) == ("running", 1980.0, {"t-c": {"go": 1}})

    stopped = await clocked.post(f"/api/runs/{run_id}/stop")
    assert stopped.status == 200
    # Stopped, m never ran: what reached it stays visible; it waits for nothing any more.
    assert await inspect(clocked, run_id, "m") == view(
        "m", "skipped", finishedAt=iso_ms(T0 + 2.0), inputs={"b-m": {"from": "b"}})
    c = await inspect(clocked, run_id, "c")
    assert (c["state"], c["durationMs"], c["finishedAt"], c["attempt"]) == ("stopped", 1980.0, iso_ms(T0 + 2.0), 1)


async def test_a_failed_node_shows_its_error_and_what_it_skipped_shows_nothing_received(
    clocked: Client, clock: ManualClock, chain: str
) -> None:
    run_id = await execute(clocked, chain, script={
        "t": takes(20, {"go": 1}), "h": {"outcome": "fail", "error": "upstream said 503", "durationMs": 500}})
    await clock.run_until_idle()
    assert await inspect(clocked, run_id, "h") == view(
        "h", "failed", queuedAt=iso_ms(T0 + 0.02), startedAt=iso_ms(T0 + 0.02), finishedAt=iso_ms(T0 + 0.52),
        durationMs=500.0, inputs={"c1": {"go": 1}}, attempt=1,
        error={"code": "scripted_failure", "message": "upstream said 503", "nodeId": "h"})
    assert await inspect(clocked, run_id, "o") == view("o", "skipped", finishedAt=iso_ms(T0 + 0.52))


# --- after the run left memory ------------------------------------------------------------------


async def test_a_run_the_engine_evicted_is_inspected_from_the_store_alike(
    clocked: Client, clock: ManualClock, chain: str
) -> None:
    engine = clocked.app[ENGINE]
    engine.config = msgspec.structs.replace(engine.config, retain_finished=0)
    run_id = await execute(clocked, chain, speed=2, script=CHAIN_SCRIPT)
    await clock.advance(0.3)
    await clocked.post(f"/api/runs/{run_id}/pause")
    await clock.advance(1.0)
    await clocked.post(f"/api/runs/{run_id}/resume")
    await clock.run_until_idle()
    live = {n: await clocked.get(f"/api/runs/{run_id}/nodes/{n}") for n in ("t", "h", "o")}
    live_bodies = {n: await r.json() for n, r in live.items()}
    async with asyncio.timeout(5):  # persisted, then evicted
        while engine.events(run_id) is not None:
            await engine.flush()
            await clock.advance(0.1)
    for n, before in live.items():
        after = await clocked.get(f"/api/runs/{run_id}/nodes/{n}")
        assert await after.json() == live_bodies[n]
        assert after.headers["ETag"] == before.headers["ETag"]
    assert live_bodies["h"]["durationMs"] == 2000.0


async def test_nodes_are_inspected_after_a_restart_including_a_run_the_shutdown_ended(
    aiohttp_client: ClientFactory, tmp_path: Path, simple_workflow: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path / "data", storage="sqlite")
    clock = ManualClock(start=T0)
    first: Client = await aiohttp_client(create_app(settings, clock=clock))
    wf_id = await create(first, simple_workflow)
    finished = await execute(first, wf_id, speed=2, script=CHAIN_SCRIPT)
    await clock.run_until_idle()
    before = {n: await inspect(first, finished, n) for n in ("t", "h", "o")}
    in_flight = await execute(first, wf_id, speed=2, script=CHAIN_SCRIPT)
    await clock.advance(0.05 + 0.25)  # h has run 500 ms simulated when the server stops
    await first.close()

    second: Client = await aiohttp_client(create_app(settings, clock=ManualClock(start=T0 + 60)))
    assert {n: await inspect(second, finished, n) for n in ("t", "h", "o")} == before
    started = iso_ms(T0 + 1.1 + 0.05)
    assert await inspect(second, in_flight, "h") == view(
        "h", "stopped", queuedAt=started, startedAt=started, finishedAt=iso_ms(T0 + 1.1 + 0.3), durationMs=500.0,
        inputs={"c1": {"go": 1}}, attempt=1)
    assert await inspect(second, in_flight, "o") == view("o", "skipped", finishedAt=iso_ms(T0 + 1.1 + 0.3))


# --- HTTP details ----------------------------------------------------------------------------------


async def test_unknown_runs_and_nodes_are_404_naming_them(clocked: Client, clock: ManualClock, chain: str) -> None:
    resp = await clocked.get("/api/runs/run_nope/nodes/h")
    assert (resp.status, resp.content_type) == (404, "application/problem+json")
    assert (await resp.json())["detail"] == "No run with id 'run_nope'."
    run_id = await execute(clocked, chain)
    resp = await clocked.get(f"/api/runs/{run_id}/nodes/zz")
    assert (resp.status, resp.content_type) == (404, "application/problem+json")
    assert (await resp.json())["detail"] == f"No node 'zz' in run '{run_id}'."
    await clock.run_until_idle()
    assert (await clocked.get(f"/api/runs/{run_id}/nodes/zz")).status == 404


async def test_an_inspection_has_a_strong_etag_and_answers_304_while_unchanged(
    clocked: Client, clock: ManualClock, chain: str
) -> None:
    run_id = await execute(clocked, chain, script=CHAIN_SCRIPT)
    await clock.run_until_idle()
    url = f"/api/runs/{run_id}/nodes/h"
    etag = (await clocked.get(url)).headers["ETag"]
    assert etag.startswith('"')
    assert (await clocked.get(url, headers={"If-None-Match": etag})).status == 304


async def test_a_process_files_run_has_its_one_node(client: Client) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), "orange").save(buf, "PNG")
    form = FormData(quote_fields=False)
    form.add_field("file", buf.getvalue(), filename="a.png", content_type="image/png")
    file_id = (await (await client.post("/api/files/upload", data=form)).json())["items"][0]["id"]
    wf_id = await create(client, {"name": "Images", "nodes": [
        node("t", "manual_trigger"), node("r", "image_resize", width=10, height=10)], "connections": [link("t", "r")]})
    resp = await client.post(f"/api/workflows/{wf_id}/nodes/r/process-files",
                             json={"fileIds": [file_id], "speed": 1000})
    run_id = (await resp.json())["id"]
    async with asyncio.timeout(10):
        while (await (await client.get(f"/api/runs/{run_id}")).json())["state"] == "running":
            await asyncio.sleep(0.01)
    resized = await inspect(client, run_id, "r")
    assert (resized["state"], resized["inputs"], resized["waitingFor"], resized["attempt"]) == ("completed", {}, [], 1)
    assert resized["output"]["files"][0]["width"] == 10
    assert (await client.get(f"/api/runs/{run_id}/nodes/t")).status == 404  # not part of this run


# --- attempts across a retry lineage, from hand-made runs ---------------------------------------------


def _run(run_id: str, state: str, nodes: dict[str, NodeRun], parent: str | None = None) -> Run:
    return Run(run_id, "wf_1", 1, state, 1, 1.0, iso_ms(T0), iso_ms(T0), iso_ms(T0 + 9), 1.0,  # type: ignore[arg-type]
               nodes, parent_run_id=parent)


def _events(*events: Any) -> list[EventRecord]:
    return [(e.seq, event_name(e), msgspec.json.encode(e)) for e in events]


def _lineage() -> dict[str, Recorded]:
    """A run where h failed after t completed; its retry, where t was reused and h ran again."""
    ts = iso_ms(T0)
    done = NodeRun("completed", 1.0, ts, ts, {"go": 1}, None)
    boom = ErrorInfo("scripted_failure", "boom", "h")
    parent = _run("run_parent", "failed", {"t": done, "h": NodeRun("failed", 0.5, ts, ts, None, boom)})
    parent_events = _events(
        NodeQueued("run_parent", "wf_1", 1, ts, "t"), NodeStarted("run_parent", "wf_1", 2, ts, "t"),
        NodeCompleted("run_parent", "wf_1", 3, ts, node_id="t", output={"go": 1}),
        NodeQueued("run_parent", "wf_1", 4, ts, "h"), NodeStarted("run_parent", "wf_1", 5, ts, "h"),
        NodeFailed("run_parent", "wf_1", 6, ts, "h", boom))
    reused = NodeRun("completed", 1.0, None, ts, {"go": 1}, None)
    child = _run("run_child", "completed", {"t": reused, "h": done}, parent="run_parent")
    child_events = _events(
        NodeCompleted("run_child", "wf_1", 1, ts, node_id="t", output={"go": 1}, reused=True),
        NodeQueued("run_child", "wf_1", 2, ts, "h"), NodeStarted("run_child", "wf_1", 3, ts, "h"),
        NodeCompleted("run_child", "wf_1", 4, ts, node_id="h", output={"go": 1}))
    return {"run_parent": Recorded(parent, parent_events, T0 + 9), "run_child": Recorded(child, child_events, T0 + 9)}


async def test_attempts_count_the_runs_of_the_lineage_that_executed_the_node() -> None:
    runs = _lineage()

    async def load(run_id: str) -> Recorded | None:
        return runs.get(run_id)

    child, parent = runs["run_child"], runs["run_parent"]
    assert await lineage_attempts(child, "h", load) == 2  # failed in the parent, ran again
    assert await lineage_attempts(child, "t", load) == 1  # ran in the parent, reused since
    assert await lineage_attempts(parent, "h", load) == 1  # a parent does not see its children
    assert await lineage_attempts(child, "h", load, limit=1) == 1  # the walk is bounded
    assert (executed(child.events, "t"), executed(child.events, "h")) == (False, True)

    orphan = Recorded(msgspec.structs.replace(child.run, parent_run_id="run_gone"), child.events, T0)
    assert await lineage_attempts(orphan, "h", load) == 1  # a parent that is gone ends the walk
    looped = Recorded(msgspec.structs.replace(child.run, id="run_loop", parent_run_id="run_loop"), child.events, T0)

    async def load_looped(run_id: str) -> Recorded | None:
        return looped if run_id == "run_loop" else None

    assert await lineage_attempts(looped, "h", load_looped) == 1  # a run is counted once


def test_a_reused_node_is_shown_with_its_output_and_no_timings() -> None:
    child = _lineage()["run_child"]
    shown = inspect_node(None, child.run, child.events, "t", now=T0 + 9, attempt=1)
    assert msgspec.to_builtins(shown) == view(
        "t", "completed", finishedAt=iso_ms(T0), output={"go": 1}, attempt=1, reused=True)


def test_a_node_held_before_it_starts_has_its_inputs_and_waits_for_nothing(
    simple_workflow: dict[str, Any]
) -> None:
    connections = [{**c, "sourceHandle": "out", "targetHandle": "in"} for c in simple_workflow["connections"]]
    workflow = msgspec.convert({**simple_workflow, "id": "wf_1", "version": 1, "createdAt": iso_ms(T0),
                                "updatedAt": iso_ms(T0), "connections": connections}, Workflow)
    ts = iso_ms(T0)
    run = _run("run_held", "paused", {"t": NodeRun("completed", 1.0, ts, ts, {"go": 1}, None),
                                      "h": NodeRun("queued", 0.0, None, None, None, None),
                                      "o": NodeRun("idle", 0.0, None, None, None, None)})
    # As a breakpoint holds a node: queued, with the run paused before it starts.
    events = _events(NodeQueued("run_held", "wf_1", 1, ts, "h"),
                     RunPaused("run_held", "wf_1", 2, ts, "h", "breakpoint"))
    plan = compile_plan(workflow)
    held = inspect_node(plan, run, events, "h", now=T0 + 5, attempt=0)
    assert msgspec.to_builtins(held) == view("h", "queued", queuedAt=ts, inputs={"c1": {"go": 1}})
    assert inspect_node(plan, run, events, "o", now=T0 + 5, attempt=0).waiting_for == ["c2"]


def test_the_duration_leaves_out_each_pause_and_an_open_one_to_the_end() -> None:
    ts = iso_ms(T0)
    run = msgspec.structs.replace(_run("run_p", "paused", {"h": NodeRun("paused", 0.5, iso_ms(T0 + 10), None, None,
                                                                        None)}), speed=1.5)
    events = _events(
        RunPaused("run_p", "wf_1", 1, ts),  # before the node started: leaves nothing out
        RunResumed("run_p", "wf_1", 2, iso_ms(T0 + 1)),
        NodeStarted("run_p", "wf_1", 3, iso_ms(T0 + 10), "h"),
        RunPaused("run_p", "wf_1", 4, iso_ms(T0 + 11)), RunResumed("run_p", "wf_1", 5, iso_ms(T0 + 13)),
        RunPaused("run_p", "wf_1", 6, iso_ms(T0 + 14.25)))
    shown = inspect_node(None, run, events, "h", now=T0 + 20, attempt=1)
    # Ran 10..11 and 13..14.25: 2.25 s of clock, 3.375 s simulated at speed 1.5.
    assert shown.duration_ms == 3375.0


async def test_attempts_are_counted_through_stored_parents_over_http(client: Client, wf: str) -> None:
    store = client.app[STORE]
    workflow = await store.workflows.get(wf)
    await store.runs.freeze_graph(workflow)
    runs = _lineage()
    for recorded in runs.values():
        run = msgspec.structs.replace(recorded.run, workflow_id=wf, nodes={**recorded.run.nodes, "o": NodeRun(
            "completed", 1.0, None, None, None, None)})
        await store.runs.save([run], [(run.id, seq, name, data) for seq, name, data in recorded.events])
    h = await inspect(client, "run_child", "h")
    assert (h["attempt"], h["reused"], h["inputs"]) == (2, False, {"c1": {"go": 1}})
    t = await inspect(client, "run_child", "t")
    assert (t["attempt"], t["reused"], t["startedAt"], t["durationMs"]) == (1, True, None, None)
