"""Execution through the HTTP API: execute, status, controls and their 409s, history,
dataflow, determinism, failures, restarts, and process-files over real images."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from conftest import T0, Client, ClientFactory, create, make_settings
from PIL import Image

from flowstage.actors.clock import ManualClock
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE, STORE
from flowstage.server.store.runs import EventRow
from flowstage.simulation.models import Run
from flowstage.simulation.timefmt import iso_ms


def node(node_id: str, type_: str, x: float = 0, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "position": {"x": x, "y": 0}, "data": {"config": config}}


def link(source: str, target: str, handle: str | None = None) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target, "sourceHandle": handle}


DIAMOND = {
    "name": "Diamond",
    "nodes": [node("a", "manual_trigger"), node("b", "delay", ms=2000), node("c", "delay", ms=3000),
              node("d", "merge")],
    "connections": [link("a", "b"), link("a", "c"), link("b", "d"), link("c", "d")],
}



async def execute(client: Client, wf_id: str, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/workflows/{wf_id}/execute", json=body)
    assert resp.status == 202, await resp.text()
    run: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == f"/api/runs/{run['id']}"
    return run


async def wait_finished(client: Client, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """For runs on the real clock at a high speed: poll until the run ends."""
    async with asyncio.timeout(timeout):
        while True:
            run: dict[str, Any] = await (await client.get(f"/api/runs/{run_id}")).json()
            if run["state"] in ("completed", "failed", "stopped"):
                return run
            await asyncio.sleep(0.01)


class DeadSink:
    """Where a killed process's writes go."""

    async def save_runs(self, runs: list[Run]) -> None:
        return None

    async def append_events(self, rows: Iterable[EventRow]) -> None:
        return None




async def test_status_is_idle_before_the_first_run(client: Client, simple_workflow: dict[str, Any]) -> None:
    wf_id = await create(client, simple_workflow)
    resp = await client.get(f"/api/workflows/{wf_id}/status")
    assert resp.status == 200
    assert await resp.json() == {"state": "idle"}
    flow = await (await client.get(f"/api/workflows/{wf_id}/dataflow")).json()
    assert flow == {"runId": None, "edges": []}


async def test_diamond_branches_overlap_and_join_at_exact_virtual_times(
    clocked: Client, clock: ManualClock
) -> None:
    wf_id = await create(clocked, DIAMOND)
    run = await execute(clocked, wf_id, seed=1)
    assert run["state"] == "running" and run["speed"] == 1.0
    await clock.run_until_idle()
    done = await (await clocked.get(f"/api/runs/{run['id']}")).json()
    assert done["state"] == "completed" and done["progress"] == 1.0
    nodes = done["nodes"]
    a_end = nodes["a"]["finishedAt"]
    assert nodes["b"]["startedAt"] == nodes["c"]["startedAt"] == a_end  # branches start together
    assert nodes["b"]["finishedAt"] == iso_ms(T0 + 0.020 + 2.0)
    assert nodes["c"]["finishedAt"] == iso_ms(T0 + 0.020 + 3.0)
    assert nodes["d"]["startedAt"] == nodes["c"]["finishedAt"]  # the later branch releases d
    assert done["finishedAt"] == nodes["d"]["finishedAt"]


async def test_pause_freezes_and_resume_shifts_later_times_by_the_pause(
    clocked: Client, clock: ManualClock
) -> None:
    wf_id = await create(clocked, DIAMOND)
    straight = await execute(clocked, wf_id, seed=1)
    await clock.run_until_idle()
    reference = await (await clocked.get(f"/api/runs/{straight['id']}")).json()

    run = await execute(clocked, wf_id, seed=1)
    await clock.advance(1.0)
    paused = await clocked.post(f"/api/workflows/{wf_id}/pause")
    assert paused.status == 200
    body = await paused.json()
    assert body["state"] == "paused"
    assert body["nodes"]["b"]["state"] == "paused"
    frozen = body["nodes"]["b"]["progress"]
    await clock.advance(5.0)
    still = await (await clocked.get(f"/api/runs/{run['id']}")).json()
    assert still["nodes"]["b"]["progress"] == frozen  # nothing moves while paused
    again = await clocked.post(f"/api/runs/{run['id']}/pause")  # pausing a paused run: no-op
    assert again.status == 200 and (await again.json())["state"] == "paused"
    resumed = await clocked.post(f"/api/workflows/{wf_id}/resume")
    assert resumed.status == 200 and (await resumed.json())["state"] == "running"
    noop = await clocked.post(f"/api/runs/{run['id']}/resume")
    assert noop.status == 200 and (await noop.json())["state"] == "running"
    await clock.run_until_idle()
    done = await (await clocked.get(f"/api/runs/{run['id']}")).json()
    offset = done["createdAt"]  # both runs started at their own time; compare durations
    assert offset
    for node_id in ("b", "c", "d"):
        for field in ("finishedAt",):
            from flowstage.simulation.timefmt import parse_iso

            ref = parse_iso(reference["nodes"][node_id][field]) - parse_iso(reference["createdAt"])
            got = parse_iso(done["nodes"][node_id][field]) - parse_iso(done["createdAt"])
            assert got == pytest.approx(ref + 5.0, abs=0.0011)


async def test_stop_marks_running_stopped_and_unstarted_skipped(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, DIAMOND)
    run = await execute(clocked, wf_id)
    await clock.advance(1.0)
    resp = await clocked.post(f"/api/runs/{run['id']}/stop")
    assert resp.status == 200
    body = await resp.json()
    assert body["state"] == "stopped"
    assert body["finishedAt"] is not None
    states = {k: v["state"] for k, v in body["nodes"].items()}
    assert states == {"a": "completed", "b": "stopped", "c": "stopped", "d": "skipped"}


async def test_every_control_on_a_finished_run_is_409(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, DIAMOND)
    run = await execute(clocked, wf_id)
    await clock.run_until_idle()
    for action in ("pause", "resume", "stop"):
        for url in (f"/api/runs/{run['id']}/{action}", f"/api/workflows/{wf_id}/{action}"):
            resp = await clocked.post(url)
            assert resp.status == 409, url
            problem = await resp.json()
            assert resp.headers["Content-Type"] == "application/problem+json"
            assert problem["detail"] == f"Can't {action} when completed"


async def test_controls_of_a_never_run_workflow_are_409_and_unknowns_404(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf_id = await create(client, simple_workflow)
    assert (await client.post(f"/api/workflows/{wf_id}/stop")).status == 409
    assert (await client.post("/api/workflows/wf_nope/stop")).status == 404
    assert (await client.post("/api/runs/run_nope/pause")).status == 404
    assert (await client.get("/api/runs/run_nope")).status == 404
    assert (await client.post("/api/workflows/wf_nope/execute", json={})).status == 404


async def test_execute_validates_its_body_and_refuses_cycles(client: Client) -> None:
    wf_id = await create(client, {
        "name": "Loop",
        "nodes": [node("a", "transform"), node("b", "transform")],
        "connections": [link("a", "b"), link("b", "a")],
    })
    resp = await client.post(f"/api/workflows/{wf_id}/execute", json={})
    assert resp.status == 422
    assert "cycle" in (await resp.json())["detail"].lower()
    ok = await create(client, DIAMOND)
    for body, loc in (({"speed": 0}, ["body", "speed"]), ({"failureRate": 2}, ["body", "failureRate"]),
                      ({"seed": -1}, ["body", "seed"]), ({"bogus": 1}, ["body", "bogus"])):
        resp = await client.post(f"/api/workflows/{ok}/execute", json=body)
        assert resp.status == 422, body
        assert (await resp.json())["errors"][0]["loc"] == loc
    assert (await client.get(f"/api/workflows/{ok}/runs")).status == 200
    assert (await (await client.get(f"/api/workflows/{ok}/runs")).json())["items"] == []


async def test_execute_without_a_body_uses_the_configured_speed(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, speed=250.0)))
    wf_id = await create(client, DIAMOND)
    resp = await client.post(f"/api/workflows/{wf_id}/execute")
    assert resp.status == 202
    assert (await resp.json())["speed"] == 250.0


async def test_same_seed_same_outputs_and_event_order(clocked: Client, clock: ManualClock) -> None:
    workflow = {
        "name": "Branchy",
        "nodes": [node("t", "manual_trigger"), node("h", "http_request", url="https://x.example"),
                  node("q", "database_query", query="SELECT * FROM orders"), node("l", "llm_prompt", prompt="hi"),
                  node("c", "condition"), node("e", "send_email", to=["a@b.c"], subject="s"),
                  node("o", "output")],
        "connections": [link("t", "h"), link("t", "q"), link("h", "l"), link("l", "c"),
                        link("c", "e", "true"), link("c", "o", "false"), link("q", "o")],
    }
    wf_id = await create(clocked, workflow)
    first = await execute(clocked, wf_id, seed=99, speed=3)
    noise = await execute(clocked, wf_id, seed=5, speed=7)
    second = await execute(clocked, wf_id, seed=99, speed=3)
    await clock.run_until_idle()
    a, b, c = [await (await clocked.get(f"/api/runs/{r['id']}")).json() for r in (first, second, noise)]

    def shape(run: dict[str, Any]) -> dict[str, Any]:
        return {k: (v["state"], v["output"]) for k, v in run["nodes"].items()}

    def durations(run: dict[str, Any]) -> dict[str, Any]:
        return {k: v["finishedAt"] and v["startedAt"] and (v["startedAt"], v["finishedAt"])
                for k, v in run["nodes"].items()}

    assert shape(a) == shape(b)
    assert a["state"] == b["state"]
    assert durations(a) == durations(b)  # started together, same virtual times
    assert shape(a) != shape(c)  # another seed gives other data


async def test_failure_rate_fails_a_node_skips_downstream_and_fails_the_run(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    wf_id = await create(client, {
        "name": "Fragile",
        "nodes": [node("t", "manual_trigger"), node("h", "http_request", url="https://x"),
                  node("o", "output")],
        "connections": [link("t", "h"), link("h", "o")],
    })
    run = await execute(client, wf_id, failureRate=1.0, speed=1000)
    done = await wait_finished(client, run["id"])
    # Every node would fail; the first one does, and nothing downstream of it starts.
    assert done["state"] == "failed"
    assert {k: v["state"] for k, v in done["nodes"].items()} == {
        "t": "failed", "h": "skipped", "o": "skipped"}
    assert done["error"]["nodeId"] == "t"
    assert done["error"]["code"] == done["nodes"]["t"]["error"]["code"] == "simulated_failure"
    assert done["nodes"]["t"]["error"]["message"]


async def test_condition_skips_the_untaken_branch(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, {
        "name": "Branch",
        "nodes": [node("t", "manual_trigger"), node("c", "condition", trueProbability=1.0),
                  node("yes", "output"), node("no", "output")],
        "connections": [link("t", "c"), link("c", "yes", "true"), link("c", "no", "false")],
    })
    run = await execute(clocked, wf_id)
    await clock.run_until_idle()
    done = await (await clocked.get(f"/api/runs/{run['id']}")).json()
    assert done["state"] == "completed"
    assert done["nodes"]["yes"]["state"] == "completed"
    assert done["nodes"]["no"]["state"] == "skipped"
    assert done["progress"] == 1.0  # a branch not taken owed no work
    flow = await (await clocked.get(f"/api/workflows/{wf_id}/dataflow")).json()
    edges = {e["connectionId"]: e for e in flow["edges"]}
    assert flow["runId"] == run["id"]
    assert edges["c-yes"]["state"] == "done" and edges["c-yes"]["bytes"] > 0
    assert edges["c-no"]["state"] == "skipped" and edges["c-no"]["items"] == 0


async def test_runs_are_listed_newest_first_and_edits_do_not_change_a_running_run(
    clocked: Client, clock: ManualClock
) -> None:
    wf_id = await create(clocked, DIAMOND)
    first = await execute(clocked, wf_id)
    # Editing the workflow while it runs changes neither this run nor its graph.
    await clocked.delete(f"/api/workflows/{wf_id}/nodes/d")
    second = await execute(clocked, wf_id)
    await clock.run_until_idle()
    listing = await (await clocked.get(f"/api/workflows/{wf_id}/runs")).json()
    assert [r["id"] for r in listing["items"]] == [second["id"], first["id"]]
    old, new = listing["items"][1], listing["items"][0]
    assert set(old["nodes"]) == {"a", "b", "c", "d"} and old["workflowVersion"] == 1
    assert set(new["nodes"]) == {"a", "b", "c"} and new["workflowVersion"] == 2
    assert old["state"] == "completed"
    status = await (await clocked.get(f"/api/workflows/{wf_id}/status")).json()
    assert status["id"] == second["id"]


async def test_run_get_has_etag_and_304(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, DIAMOND)
    run = await execute(clocked, wf_id)
    await clock.run_until_idle()
    resp = await clocked.get(f"/api/runs/{run['id']}")
    etag = resp.headers["ETag"]
    assert (await clocked.get(f"/api/runs/{run['id']}", headers={"If-None-Match": etag})).status == 304


async def test_many_concurrent_runs_complete(client: Client) -> None:
    wf_id = await create(client, DIAMOND)
    runs = await asyncio.gather(*(execute(client, wf_id, speed=5000) for _ in range(300)))
    done = await asyncio.gather(*(wait_finished(client, r["id"], timeout=30) for r in runs))
    assert {r["state"] for r in done} == {"completed"}
    assert len({r["id"] for r in done}) == 300


async def test_runs_survive_restart_and_active_ones_end_interrupted(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage="sqlite")
    clock = ManualClock(start=T0)
    app = create_app(settings, clock=clock)
    client = await aiohttp_client(app)
    wf_id = await create(client, DIAMOND)
    finished = await execute(client, wf_id)
    await clock.run_until_idle()
    in_flight = await execute(client, wf_id)
    await clock.advance(1.0)
    # Simulate a crash: what was flushed is on disk; nothing written after this point lands,
    # as when the process is killed (the engine's orderly shutdown would record the end).
    engine = app[ENGINE]
    await engine.flush()
    engine.sink = DeadSink()
    await client.close()

    again = await aiohttp_client(create_app(settings, clock=ManualClock(start=T0 + 60)))
    kept = await (await again.get(f"/api/runs/{finished['id']}")).json()
    assert kept["state"] == "completed"
    lost = await (await again.get(f"/api/runs/{in_flight['id']}")).json()
    assert lost["state"] == "failed"
    assert lost["error"]["code"] == "interrupted"
    assert lost["finishedAt"] == iso_ms(T0 + 60)
    states = {k: v["state"] for k, v in lost["nodes"].items()}
    assert states == {"a": "completed", "b": "stopped", "c": "stopped", "d": "skipped"}
    # As far as its stored events got: b and c had reported 0.25 each, d never started.
    assert {k: v["progress"] for k, v in lost["nodes"].items()} == {"a": 1.0, "b": 0.25, "c": 0.25, "d": 0.0}
    assert lost["progress"] == 0.375
    listing = await (await again.get(f"/api/workflows/{wf_id}/runs")).json()
    assert [r["id"] for r in listing["items"]] == [in_flight["id"], finished["id"]]
    flow = await (await again.get(f"/api/workflows/{wf_id}/dataflow")).json()
    assert flow["runId"] == in_flight["id"] and len(flow["edges"]) == 4
    assert (await again.post(f"/api/runs/{in_flight['id']}/resume")).status == 409


# --- progress of runs that end early ---------------------------------------------------------


async def test_a_stopped_run_keeps_the_progress_it_had_reached(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, {**DIAMOND, "nodes": [
        node("a", "manual_trigger"), node("b", "delay", ms=2000), node("c", "delay", ms=4000), node("d", "merge")]})
    run = await execute(clocked, wf_id)
    await clock.advance(0.020 + 1.0)  # a took 20 ms; b is half done, c a quarter
    running = await (await clocked.get(f"/api/runs/{run['id']}")).json()
    assert running["progress"] == 0.4375  # (1 + 0.5 + 0.25 + 0) / 4
    stopped = await (await clocked.post(f"/api/runs/{run['id']}/stop")).json()
    assert stopped["state"] == "stopped"
    assert {k: (v["state"], v["progress"]) for k, v in stopped["nodes"].items()} == {
        "a": ("completed", 1.0), "b": ("stopped", 0.5), "c": ("stopped", 0.25), "d": ("skipped", 0.0)}
    assert stopped["progress"] == 0.4375
    await clock.advance(10.0)
    assert (await (await clocked.get(f"/api/runs/{run['id']}")).json())["progress"] == 0.4375
    listed = await (await clocked.get(f"/api/runs?workflowId={wf_id}")).json()
    assert listed["items"][0]["progress"] == 0.4375


async def test_a_branch_not_taken_counts_as_done_in_a_stopped_runs_progress(
    clocked: Client, clock: ManualClock
) -> None:
    wf_id = await create(clocked, {
        "name": "Branch",
        "nodes": [node("t", "manual_trigger"), node("c", "condition", trueProbability=1.0),
                  node("yes", "delay", ms=4000), node("no", "output")],
        "connections": [link("t", "c"), link("c", "yes", "true"), link("c", "no", "false")],
    })
    run = await execute(clocked, wf_id)
    await clock.advance(0.020 + 0.010 + 1.0)  # trigger, condition, then a quarter of yes
    stopped = await (await clocked.post(f"/api/runs/{run['id']}/stop")).json()
    assert {k: (v["state"], v["progress"]) for k, v in stopped["nodes"].items()} == {
        "t": ("completed", 1.0), "c": ("completed", 1.0), "yes": ("stopped", 0.25), "no": ("skipped", 0.0)}
    assert stopped["progress"] == 0.8125  # (1 + 1 + 0.25 + 1) / 4


async def test_a_failed_run_counts_what_its_failed_node_did_and_nothing_it_skipped(
    clocked: Client, clock: ManualClock
) -> None:
    wf_id = await create(clocked, {
        "name": "Fragile",
        "nodes": [node("t", "manual_trigger"), node("h", "http_request", url="https://x"), node("o", "output")],
        "connections": [link("t", "h"), link("h", "o")],
    })
    run = await execute(clocked, wf_id, failureRate=1.0, seed=3)
    await clock.run_until_idle()
    done = await (await clocked.get(f"/api/runs/{run['id']}")).json()
    assert done["state"] == "failed"
    reached = done["nodes"]["t"]["progress"]  # a simulated failure strikes 30-100% of the way
    assert 0.3 <= reached < 1.0
    assert (done["nodes"]["h"]["progress"], done["nodes"]["o"]["progress"]) == (0.0, 0.0)
    assert done["progress"] == round(reached / 3, 4)


# --- GET /api/runs ----------------------------------------------------------------------------


async def _runs(client: Client, query: str = "") -> dict[str, Any]:
    resp = await client.get(f"/api/runs{query}")
    assert resp.status == 200, await resp.text()
    page: dict[str, Any] = await resp.json()
    return page


async def test_runs_of_every_workflow_are_listed_newest_first_and_filtered(
    clocked: Client, clock: ManualClock
) -> None:
    a = await create(clocked, DIAMOND)
    b = await create(clocked, {**DIAMOND, "name": "Other"})
    r1 = (await execute(clocked, a))["id"]
    r2 = (await execute(clocked, b))["id"]
    assert (await clocked.post(f"/api/runs/{r2}/stop")).status == 200
    await clock.run_until_idle()
    r3 = (await execute(clocked, a))["id"]

    page = await _runs(clocked)
    assert [(r["id"], r["workflowId"], r["state"]) for r in page["items"]] == [
        (r3, a, "running"), (r2, b, "stopped"), (r1, a, "completed")]
    assert page["nextCursor"] is None
    for item in page["items"]:  # whole runs, as GET /api/runs/{id} shows them
        assert item == await (await clocked.get(f"/api/runs/{item['id']}")).json()

    expected = {
        f"?workflowId={a}": [r3, r1],
        f"?workflowId={b}": [r2],
        "?workflowId=wf_missing": [],
        "?state=running": [r3],
        "?state=completed": [r1],
        "?state=stopped": [r2],
        "?state=failed": [],
        "?state=paused": [],
        f"?state=stopped&workflowId={b}": [r2],
        f"?state=stopped&workflowId={a}": [],
        f"?workflowId={a}&state=completed": [r1],
    }
    for query, ids in expected.items():
        listed = await _runs(clocked, query)
        assert ([r["id"] for r in listed["items"]], listed["nextCursor"]) == (ids, None), query


async def test_runs_page_with_limit_and_cursor_through_each_filter(clocked: Client, clock: ManualClock) -> None:
    a = await create(clocked, DIAMOND)
    b = await create(clocked, {**DIAMOND, "name": "Other"})
    made = [(await execute(clocked, wf))["id"] for wf in (a, b, a, b, a)]
    await clock.run_until_idle()

    async def walk(query: str) -> tuple[list[str], list[int]]:
        seen: list[str] = []
        sizes: list[int] = []
        cursor: str | None = None
        while True:
            page = await _runs(clocked, query + ("" if cursor is None else f"&cursor={cursor}"))
            sizes.append(len(page["items"]))
            seen.extend(r["id"] for r in page["items"])
            cursor = page["nextCursor"]
            if cursor is None:
                return seen, sizes

    assert await walk("?limit=2") == (made[::-1], [2, 2, 1])
    assert await walk(f"?limit=2&workflowId={a}") == ([made[4], made[2], made[0]], [2, 1])
    assert await walk("?limit=4&state=completed") == (made[::-1], [4, 1])


@pytest.mark.parametrize(("query", "loc"), [
    ("?state=bogus", ["query", "state"]),
    ("?state=RUNNING", ["query", "state"]),
    ("?state=", ["query", "state"]),
    ("?state=idle", ["query", "state"]),  # a workflow's status, not a run state
    ("?limit=0", ["query", "limit"]),
    ("?limit=501", ["query", "limit"]),
    ("?cursor=garbage", ["query", "cursor"]),
])
async def test_invalid_run_list_queries_are_422_at_the_parameter(
    client: Client, query: str, loc: list[Any]
) -> None:
    resp = await client.get(f"/api/runs{query}")
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    assert [e["loc"] for e in (await resp.json())["errors"]] == [loc]


async def test_a_state_filter_sees_a_run_that_ended_before_its_end_was_stored(
    clocked: Client, clock: ManualClock
) -> None:
    wf_id = await create(clocked, DIAMOND)
    run_id = (await execute(clocked, wf_id))["id"]
    await clock.advance(3.0)
    # Every flush so far has landed (a write on the database thread takes real time, which the
    # manual clock does not wait for): the one the timer makes next is the only one left.
    await clocked.app[ENGINE].flush()
    await clock.advance(0.04)  # ended at 3.03; the engine stores it 50 ms later
    stored = await clocked.app[STORE].runs.get(run_id)
    assert stored is not None and stored.state == "running"
    assert [r["state"] for r in (await _runs(clocked))["items"]] == ["completed"]
    assert [r["id"] for r in (await _runs(clocked, "?state=completed"))["items"]] == [run_id]
    assert (await _runs(clocked, "?state=running"))["items"] == []


# --- process-files ------------------------------------------------------------------------


async def upload_png(client: Client, size: tuple[int, int], name: str = "photo.png") -> dict[str, Any]:
    buf = io.BytesIO()
    Image.new("RGB", size, "orange").save(buf, "PNG")
    form = FormData(quote_fields=False)
    form.add_field("file", buf.getvalue(), filename=name, content_type="image/png")
    resp = await client.post("/api/files/upload", data=form)
    assert resp.status == 201
    return dict((await resp.json())["items"][0])


async def test_process_files_really_resizes_images_into_new_files(client: Client) -> None:
    wf_id = await create(client, {"name": "Images", "nodes": [
        node("resize", "image_resize", width=100, height=100), node("webp", "image_convert", format="WEBP")]})
    a = await upload_png(client, (400, 200), "wide.png")
    b = await upload_png(client, (300, 600), "tall.png")
    resp = await client.post(f"/api/workflows/{wf_id}/nodes/resize/process-files",
                             json={"fileIds": [a["id"], b["id"]], "speed": 100})
    assert resp.status == 202
    run = await resp.json()
    assert run["kind"] == "process-files" and list(run["nodes"]) == ["resize"]
    done = await wait_finished(client, run["id"])
    assert done["state"] == "completed", done
    made = done["nodes"]["resize"]["output"]["files"]
    assert [(f["sourceFileId"], f["width"], f["height"]) for f in made] == [
        (a["id"], 100, 50), (b["id"], 50, 100)]
    for f in made:
        info = await (await client.get(f"/api/files/{f['fileId']}")).json()
        content = await (await client.get(info["contentUrl"])).read()
        assert Image.open(io.BytesIO(content)).size == (info["metadata"]["width"], info["metadata"]["height"])

    convert = await client.post(f"/api/workflows/{wf_id}/nodes/webp/process-files",
                                json={"fileIds": [a["id"]], "speed": 100})
    converted = await wait_finished(client, (await convert.json())["id"])
    (out,) = converted["nodes"]["webp"]["output"]["files"]
    assert out["mimeType"] == "image/webp" and out["name"] == "wide-converted.webp"


async def test_process_files_refuses_unknown_files_before_starting(client: Client) -> None:
    wf_id = await create(client, {"name": "Images", "nodes": [node("r", "image_resize")]})
    real = await upload_png(client, (10, 10))
    resp = await client.post(f"/api/workflows/{wf_id}/nodes/r/process-files",
                             json={"fileIds": [real["id"], "file_missing"]})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "fileIds", 1]
    assert (await (await client.get(f"/api/workflows/{wf_id}/runs")).json())["items"] == []
    assert (await client.post(f"/api/workflows/{wf_id}/nodes/nope/process-files",
                              json={"fileIds": [real["id"]]})).status == 404


async def test_image_nodes_process_files_named_in_their_config(client: Client) -> None:
    img = await upload_png(client, (64, 32))
    wf_id = await create(client, {"name": "Configured", "nodes": [
        node("t", "manual_trigger"), node("r", "image_thumbnail", size=16, fileIds=[img["id"]])],
        "connections": [link("t", "r")]})
    done = await wait_finished(client, (await execute(client, wf_id, speed=1000))["id"])
    (made,) = done["nodes"]["r"]["output"]["files"]
    assert (made["width"], made["height"]) == (16, 8)


async def test_deleting_a_file_a_node_uses_is_allowed_and_fails_that_node_clearly(
    client: Client
) -> None:
    img = await upload_png(client, (50, 50))
    wf_id = await create(client, {"name": "Images", "nodes": [
        node("t", "manual_trigger"), node("r", "image_resize", fileIds=[img["id"]]),
        node("o", "output")], "connections": [link("t", "r"), link("r", "o")]})
    assert (await client.delete(f"/api/files/{img['id']}")).status == 204
    done = await wait_finished(client, (await execute(client, wf_id, speed=1000))["id"])
    assert done["state"] == "failed"
    assert done["nodes"]["r"]["state"] == "failed"
    assert img["id"] in done["nodes"]["r"]["error"]["message"]
    assert done["nodes"]["o"]["state"] == "skipped"
    assert done["error"]["nodeId"] == "r"


async def test_other_node_types_simulate_per_file(client: Client) -> None:
    # csv_parse and json_parse read the real bytes (tests/test_file_nodes.py); transform simulates.
    wf_id = await create(client, {"name": "Transform", "nodes": [node("p", "transform")]})
    img = await upload_png(client, (20, 20))
    run = await (await client.post(f"/api/workflows/{wf_id}/nodes/p/process-files",
                                   json={"fileIds": [img["id"], img["id"]], "speed": 1000})).json()
    done = await wait_finished(client, run["id"])
    output = done["nodes"]["p"]["output"]
    assert output["count"] == 2
    assert [f["sourceFileId"] for f in output["files"]] == [img["id"], img["id"]]


async def test_a_workflow_without_nodes_completes_at_once(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, {"name": "Empty"})
    run = await execute(clocked, wf_id)
    await clock.run_until_idle()
    done = await (await clocked.get(f"/api/runs/{run['id']}")).json()
    assert (done["state"], done["progress"], done["nodes"]) == ("completed", 1.0, {})
    assert done["finishedAt"] == done["startedAt"]


async def test_status_and_dataflow_send_etags_and_304(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, DIAMOND)
    etags = {}
    for path in (f"/api/workflows/{wf_id}/status", f"/api/workflows/{wf_id}/dataflow"):
        etags[path] = (await clocked.get(path)).headers["ETag"]
        assert (await clocked.get(path, headers={"If-None-Match": etags[path]})).status == 304
    await execute(clocked, wf_id)
    await clock.run_until_idle()
    for path, etag in etags.items():  # a run happened: new representations
        changed = await clocked.get(path, headers={"If-None-Match": etag})
        assert changed.status == 200
        assert changed.headers["ETag"] != etag


async def test_a_client_ahead_of_the_store_after_a_crash_still_gets_the_end(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage="sqlite")
    app = create_app(settings, clock=ManualClock(start=T0))
    client = await aiohttp_client(app)
    wf_id = await create(client, DIAMOND)
    run = await execute(client, wf_id)
    engine = app[ENGINE]
    await engine.flush()
    engine.sink = DeadSink()  # the process "dies": later events were sent but never saved
    await client.close()

    again = await aiohttp_client(create_app(settings, clock=ManualClock(start=T0 + 60)))
    # The client had seen seq 99 (more than the store holds) before the crash.
    resp = await again.get(f"/api/runs/{run['id']}/events", headers={"Last-Event-ID": "99"})
    assert resp.status == 200
    async with asyncio.timeout(5):
        body = (await resp.read()).decode()
    assert body.count("event: ") == 1
    assert "event: run.failed" in body and '"code":"interrupted"' in body


async def test_execute_with_count_starts_that_many_runs_in_one_request(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, DIAMOND)
    resp = await clocked.post(f"/api/workflows/{wf_id}/execute", json={"count": 3, "seed": 5, "speed": 2})
    assert resp.status == 202, await resp.text()
    assert "Location" not in resp.headers
    batch = await resp.json()
    assert batch["nextCursor"] is None
    assert [(r["state"], r["seed"], r["speed"]) for r in batch["items"]] == [
        ("running", 5, 2.0), ("running", 6, 2.0), ("running", 7, 2.0)]
    assert len({r["id"] for r in batch["items"]}) == 3
    await clock.run_until_idle()
    listed = await (await clocked.get(f"/api/workflows/{wf_id}/runs")).json()
    assert sorted(r["id"] for r in listed["items"]) == sorted(r["id"] for r in batch["items"])
    assert {r["state"] for r in listed["items"]} == {"completed"}
    for count in (0, 1001, "2"):
        bad = await clocked.post(f"/api/workflows/{wf_id}/execute", json={"count": count})
        assert bad.status == 422
        assert [e["loc"] for e in (await bad.json())["errors"]] == [["body", "count"]]
    assert len((await (await clocked.get(f"/api/workflows/{wf_id}/runs")).json())["items"]) == 3
