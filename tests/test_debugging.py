"""Debugging a run through HTTP, under the manual clock: breakpoints, step, retry, run-from and
pinned outputs, with the events a frontend sees."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, Client, ClientFactory, create, make_settings
from test_runs_http import DeadSink

from flowstage.actors.clock import ManualClock
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE
from flowstage.simulation.timefmt import iso_ms

TRIGGER = 0.020  # a manual trigger's duration


def node(node_id: str, type_: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "position": {"x": 0, "y": 0}, "data": {"config": config}}


def link(source: str, target: str, handle: str | None = None) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target, "sourceHandle": handle}


# t -> a -> b -> c -> d, each delay one second.
CHAIN = {
    "name": "Chain",
    "nodes": [node("t", "manual_trigger"), node("a", "delay", ms=1000), node("b", "delay", ms=1000),
              node("c", "delay", ms=1000), node("d", "delay", ms=1000)],
    "connections": [link("t", "a"), link("a", "b"), link("b", "c"), link("c", "d")],
}





async def post(client: Client, path: str, status: int, body: Any = None) -> dict[str, Any]:
    resp = await client.post(path, json=body) if body is not None else await client.post(path)
    assert resp.status == status, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def get(client: Client, path: str) -> dict[str, Any]:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def events(client: Client, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run so far, as its SSE stream sent them (a live run's stream is read
    until what was written so far)."""
    events: list[dict[str, Any]] = []
    async with client.get(f"/api/runs/{run_id}/events") as resp:
        while True:
            try:
                line = await asyncio.wait_for(resp.content.readline(), 0.2)
            except TimeoutError:
                return events  # nothing more until the clock moves
            if not line:
                return events
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))


def states(run: dict[str, Any]) -> dict[str, str]:
    return {node_id: n["state"] for node_id, n in run["nodes"].items()}


async def test_breakpoint_step_three_times_then_resume_to_completion(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"breakpoints": ["b"], "seed": 1})
    assert run["breakpoints"] == ["b"] and run["pausedAt"] is None
    run_id = run["id"]
    await clock.advance(TRIGGER + 1.0)
    at_b = await get(clocked, f"/api/runs/{run_id}")
    assert at_b["state"] == "paused"
    assert at_b["pausedAt"] == {"nodeId": "b", "reason": "breakpoint"}
    assert states(at_b) == {"t": "completed", "a": "completed", "b": "queued", "c": "idle", "d": "idle"}
    last = (await events(clocked, run_id))[-3:]
    assert [(e["event"], e.get("nodeId")) for e in last] == [
        ("edge.data", None), ("node.queued", "b"), ("run.paused", "b")]
    assert last[-1]["reason"] == "breakpoint" and last[-1]["ts"] == iso_ms(T0 + TRIGGER + 1.0)

    await clock.advance(60.0)  # a paused run waits
    assert states(await get(clocked, f"/api/runs/{run_id}"))["b"] == "queued"

    # Step 1: b starts, and the run pauses again right there.
    step1 = await post(clocked, f"/api/runs/{run_id}/step", 200)
    assert step1["state"] == "paused" and step1["pausedAt"] == {"nodeId": "b", "reason": "step"}
    assert states(step1)["b"] == "paused" and step1["nodes"]["b"]["startedAt"] == iso_ms(T0 + TRIGGER + 61.0)
    # Step 2: b runs its second and finishes; c is ready but held.
    step2 = await post(clocked, f"/api/runs/{run_id}/step", 200)
    assert step2["state"] == "running" and step2["pausedAt"] is None
    await clock.advance(0.999)
    assert states(await get(clocked, f"/api/runs/{run_id}"))["b"] == "running"
    await clock.advance(0.001)
    after_b = await get(clocked, f"/api/runs/{run_id}")
    assert after_b["pausedAt"] == {"nodeId": "b", "reason": "step"}
    assert states(after_b) == {"t": "completed", "a": "completed", "b": "completed", "c": "queued", "d": "idle"}
    # Step 3: c starts.
    step3 = await post(clocked, f"/api/runs/{run_id}/step", 200)
    assert step3["pausedAt"] == {"nodeId": "c", "reason": "step"} and states(step3)["c"] == "paused"
    assert step3["nodes"]["c"]["startedAt"] == iso_ms(T0 + TRIGGER + 62.0)
    # What c received, what it waits for, and how long it has run: nothing yet, it just started.
    c = await get(clocked, f"/api/runs/{run_id}/nodes/c")
    assert c["inputs"] == {"b-c": after_b["nodes"]["b"]["output"]} and c["waitingFor"] == []
    assert (c["state"], c["durationMs"], c["attempt"]) == ("paused", 0.0, 1)
    assert c["queuedAt"] == after_b["nodes"]["b"]["finishedAt"] and c["startedAt"] == iso_ms(T0 + TRIGGER + 62.0)
    d = await get(clocked, f"/api/runs/{run_id}/nodes/d")
    assert (d["state"], d["inputs"], d["waitingFor"]) == ("idle", {}, ["c-d"])

    resumed = await post(clocked, f"/api/runs/{run_id}/resume", 200)
    assert resumed["state"] == "running" and resumed["pausedAt"] is None
    await clock.run_until_idle()
    done = await get(clocked, f"/api/runs/{run_id}")
    assert done["state"] == "completed"
    assert done["finishedAt"] == iso_ms(T0 + TRIGGER + 64.0)
    names = [(e["event"], e.get("nodeId"), e.get("reason")) for e in await events(clocked, run_id)
             if e["event"].startswith("run.") or (e.get("nodeId") in ("b", "c") and e["event"] != "node.progress")]
    assert names == [
        ("run.started", None, None),
        ("node.queued", "b", None), ("run.paused", "b", "breakpoint"),
        ("run.resumed", None, None), ("node.started", "b", None), ("run.paused", "b", "step"),
        ("run.resumed", None, None), ("node.completed", "b", None),
        ("node.queued", "c", None), ("run.paused", "b", "step"),
        ("run.resumed", None, None), ("node.started", "c", None), ("run.paused", "c", "step"),
        ("run.resumed", None, None), ("node.completed", "c", None),
        ("run.completed", None, None)]


async def test_a_failed_run_retried_reuses_its_upstream_and_completes(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    failed = await post(clocked, f"/api/workflows/{wf}/execute", 202,
                        {"script": {"b": {"outcome": "fail", "error": "boom"}}})
    await clock.run_until_idle()
    failed = await get(clocked, f"/api/runs/{failed['id']}")
    assert failed["state"] == "failed"
    assert states(failed) == {"t": "completed", "a": "completed", "b": "failed", "c": "skipped", "d": "skipped"}

    resp = await clocked.post(f"/api/runs/{failed['id']}/retry")
    assert resp.status == 202, await resp.text()
    retry = await resp.json()
    assert resp.headers["Location"] == f"/api/runs/{retry['id']}"
    assert retry["parentRunId"] == failed["id"] and retry["id"] != failed["id"]
    assert retry["workflowVersion"] == failed["workflowVersion"]
    await clock.run_until_idle()
    done = await get(clocked, f"/api/runs/{retry['id']}")
    assert done["state"] == "completed"
    # t and a were not run again: their outputs are the parent's, and no time passed for them.
    for reused in ("t", "a"):
        assert done["nodes"][reused]["output"] == failed["nodes"][reused]["output"]
        assert done["nodes"][reused]["startedAt"] is None
    assert done["nodes"]["b"]["startedAt"] == done["createdAt"]
    assert done["finishedAt"] == iso_ms(iso_to_float(done["createdAt"]) + 3.0)
    seen = await events(clocked, retry["id"])
    t_events = [e for e in seen if e.get("nodeId") in ("t", "a")]
    assert [(e["event"], e["nodeId"], e.get("reused")) for e in t_events] == [
        ("node.completed", "t", True), ("node.completed", "a", True)]
    assert t_events[1]["output"] == failed["nodes"]["a"]["output"]

    # The inspector says which nodes ran again, and how often each ran in the lineage.
    t_view = await get(clocked, f"/api/runs/{retry['id']}/nodes/t")
    assert (t_view["reused"], t_view["attempt"], t_view["durationMs"], t_view["queuedAt"]) == (True, 1, None, None)
    b_view = await get(clocked, f"/api/runs/{retry['id']}/nodes/b")
    assert (b_view["reused"], b_view["attempt"], b_view["durationMs"]) == (False, 2, 1000.0)
    assert b_view["inputs"] == {"a-b": failed["nodes"]["a"]["output"]}

    # Only a failed or stopped run is retried.
    again = await clocked.post(f"/api/runs/{retry['id']}/retry")
    assert again.status == 409
    assert (await again.json())["detail"] == "Can't retry a completed run: only a failed or stopped run is retried."


def iso_to_float(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# t -> x (delay 3 s) and t -> y (delay 1 s) -> z: two branches at once.
BRANCHES = {
    "name": "Branches",
    "nodes": [node("t", "manual_trigger"), node("x", "delay", ms=3000), node("y", "delay", ms=1000),
              node("z", "delay", ms=1000)],
    "connections": [link("t", "x"), link("t", "y"), link("y", "z")],
}


async def test_a_breakpoint_freezes_the_branches_already_running_as_a_pause_does(
    clocked: Client, clock: ManualClock
) -> None:
    wf = await create(clocked, BRANCHES)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"breakpoints": ["z"]})
    await clock.advance(TRIGGER + 1.0)
    paused = await get(clocked, f"/api/runs/{run['id']}")
    assert paused["pausedAt"] == {"nodeId": "z", "reason": "breakpoint"}
    assert states(paused) == {"t": "completed", "x": "paused", "y": "completed", "z": "queued"}
    assert paused["nodes"]["x"]["progress"] == pytest.approx(1 / 3, abs=1e-4)
    await clock.advance(10.0)
    assert (await get(clocked, f"/api/runs/{run['id']}"))["nodes"]["x"]["progress"] == pytest.approx(1 / 3, abs=1e-4)
    await post(clocked, f"/api/runs/{run['id']}/resume", 200)
    await clock.run_until_idle()
    done = await get(clocked, f"/api/runs/{run['id']}")
    assert done["state"] == "completed"
    # x kept its third: two seconds were left when the run went on, ten seconds later.
    assert done["nodes"]["x"]["finishedAt"] == iso_ms(T0 + TRIGGER + 13.0)
    assert done["nodes"]["z"]["startedAt"] == iso_ms(T0 + TRIGGER + 11.0)


async def test_a_breakpoint_on_a_first_node_pauses_the_run_before_anything_runs(clocked: Client) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"breakpoints": ["t", "c"]})
    assert run["state"] == "paused" and run["pausedAt"] == {"nodeId": "t", "reason": "breakpoint"}
    assert run["breakpoints"] == ["t", "c"]
    assert states(run)["t"] == "queued"


async def test_breakpoints_change_on_a_live_run(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {})
    resp = await clocked.put(f"/api/runs/{run['id']}/breakpoints", json={"nodeIds": ["d", "b"]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["breakpoints"] == ["b", "d"]  # in the order the run meets them
    await clock.advance(TRIGGER + 1.0)
    assert (await get(clocked, f"/api/runs/{run['id']}"))["pausedAt"] == {"nodeId": "b", "reason": "breakpoint"}
    cleared = await clocked.put(f"/api/runs/{run['id']}/breakpoints", json={"nodeIds": []})
    assert (await cleared.json())["breakpoints"] == []
    await post(clocked, f"/api/runs/{run['id']}/resume", 200)
    await clock.run_until_idle()
    assert (await get(clocked, f"/api/runs/{run['id']}"))["state"] == "completed"  # d no longer stops it
    finished = await clocked.put(f"/api/runs/{run['id']}/breakpoints", json={"nodeIds": ["d"]})
    assert finished.status == 409


async def test_a_clients_pause_says_user_and_names_no_node(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {})
    await clock.advance(0.5)
    paused = await post(clocked, f"/api/runs/{run['id']}/pause", 200)
    assert paused["pausedAt"] == {"nodeId": None, "reason": "user"}
    await post(clocked, f"/api/runs/{run['id']}/stop", 200)
    seen = await events(clocked, run["id"])
    pause = next(e for e in seen if e["event"] == "run.paused")
    assert pause["nodeId"] is None and pause["reason"] == "user"


async def test_a_step_to_a_node_runs_until_that_node_finishes(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"breakpoints": ["a"]})
    await clock.advance(TRIGGER)
    stepping = await post(clocked, f"/api/runs/{run['id']}/step", 200, {"nodeId": "c"})
    assert stepping["state"] == "running"
    await clock.run_until_idle()
    at_c = await get(clocked, f"/api/runs/{run['id']}")
    assert at_c["pausedAt"] == {"nodeId": "c", "reason": "step"}
    assert states(at_c) == {"t": "completed", "a": "completed", "b": "completed", "c": "completed", "d": "queued"}
    assert at_c["nodes"]["c"]["finishedAt"] == iso_ms(T0 + TRIGGER + 3.0)
    # A node that already finished is no target.
    again = await clocked.post(f"/api/runs/{run['id']}/step", json={"nodeId": "b"})
    assert again.status == 409
    assert (await again.json())["detail"] == "Can't step to node 'b': it already completed"


async def test_stopping_a_run_held_at_a_breakpoint_skips_the_held_node(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"breakpoints": ["b"]})
    await clock.advance(TRIGGER + 1.0)
    stopped = await post(clocked, f"/api/runs/{run['id']}/stop", 200)
    assert stopped["state"] == "stopped" and stopped["pausedAt"] is None
    assert states(stopped) == {"t": "completed", "a": "completed", "b": "skipped", "c": "skipped", "d": "skipped"}


async def test_bad_debugging_input_is_422_or_409_and_changes_nothing(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"breakpoints": ["a", "nope"]}, ["body", "breakpoints", 1]),
        ({"pinned": {"ghost": {}}}, ["body", "pinned", "ghost"]),
        ({"startAt": "nope", "fromRun": "run_x"}, ["body", "startAt"]),
        ({"startAt": "b"}, ["body", "fromRun"]),
        ({"startAt": "b", "fromRun": "run_missing"}, ["body", "fromRun"]),
    ]
    for body, loc in cases:
        resp = await clocked.post(f"/api/workflows/{wf}/execute", json=body)
        assert resp.status == 422, (body, await resp.text())
        assert resp.content_type == "application/problem+json"
        assert [e["loc"] for e in (await resp.json())["errors"]] == [loc], body
    assert (await get(clocked, "/api/runs"))["items"] == []

    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {})
    running = await clocked.post(f"/api/runs/{run['id']}/step")
    assert running.status == 409 and (await running.json())["detail"] == "Can't step when running"
    bad_node = await clocked.put(f"/api/runs/{run['id']}/breakpoints", json={"nodeIds": ["zz"]})
    assert bad_node.status == 422
    assert [e["loc"] for e in (await bad_node.json())["errors"]] == [["body", "nodeIds", 0]]
    assert (await get(clocked, f"/api/runs/{run['id']}"))["breakpoints"] == []
    await clock.run_until_idle()
    finished = await clocked.post(f"/api/runs/{run['id']}/step")
    assert finished.status == 409 and (await finished.json())["detail"].startswith("Can't step when completed")
    for path in ("step", "retry"):
        assert (await clocked.post(f"/api/runs/run_missing/{path}")).status == 404


async def test_pinned_outputs_stand_in_for_the_nodes_and_flow_downstream(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    pinned = {"items": [{"id": 1}, {"id": 2}]}
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"pinned": {"a": pinned}})
    await clock.run_until_idle()
    done = await get(clocked, f"/api/runs/{run['id']}")
    assert done["state"] == "completed"
    assert done["nodes"]["a"]["output"] == pinned and done["nodes"]["a"]["startedAt"] is None
    # a took no time: b started when the trigger finished.
    assert done["nodes"]["b"]["startedAt"] == iso_ms(T0 + TRIGGER)
    seen = await events(clocked, run["id"])
    a_events = [e for e in seen if e.get("nodeId") == "a"]
    assert [(e["event"], e.get("pinned"), e.get("reused")) for e in a_events] == [("node.completed", True, None)]
    edge = next(e for e in seen if e["event"] == "edge.data" and e["connectionId"] == "a-b")
    assert edge["items"] == 2
    a_view = await get(clocked, f"/api/runs/{run['id']}/nodes/a")
    assert (a_view["pinned"], a_view["reused"], a_view["attempt"], a_view["output"]) == (True, False, 0, pinned)


async def test_run_from_a_node_reuses_what_is_upstream_of_it_and_reruns_the_rest(
    clocked: Client, clock: ManualClock
) -> None:
    wf = await create(clocked, CHAIN)
    first = await post(clocked, f"/api/workflows/{wf}/execute", 202, {})
    await clock.run_until_idle()
    first = await get(clocked, f"/api/runs/{first['id']}")
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"startAt": "c", "fromRun": first["id"]})
    assert run["parentRunId"] == first["id"]
    await clock.run_until_idle()
    done = await get(clocked, f"/api/runs/{run['id']}")
    assert done["state"] == "completed"
    assert [n for n in "tabcd" if done["nodes"][n]["startedAt"] is None] == ["t", "a", "b"]
    assert done["nodes"]["b"]["output"] == first["nodes"]["b"]["output"]
    assert done["finishedAt"] == iso_ms(iso_to_float(done["createdAt"]) + 2.0)  # only c and d ran

    # Edit b: it and everything after it run again; what is before it is still reused.
    current = await get(clocked, f"/api/workflows/{wf}")
    nodes: list[dict[str, Any]] = CHAIN["nodes"]  # type: ignore[assignment]
    edited = {**CHAIN, "nodes": [n if n["id"] != "b" else node("b", "delay", ms=500) for n in nodes]}
    resp = await clocked.put(f"/api/workflows/{wf}", json=edited, headers={"If-Match": f'"{current["version"]}"'})
    assert resp.status == 200, await resp.text()
    rerun = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"fromRun": first["id"]})
    await clock.run_until_idle()
    rerun = await get(clocked, f"/api/runs/{rerun['id']}")
    assert [n for n in "tabcd" if rerun["nodes"][n]["startedAt"] is None] == ["t", "a"]
    assert rerun["finishedAt"] == iso_ms(iso_to_float(rerun["createdAt"]) + 2.5)


async def test_a_stopped_run_is_retried_with_its_speed_and_a_new_seed(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"speed": 2, "seed": 7})
    await clock.advance(TRIGGER / 2 + 0.25)  # a (half a second at speed 2) is under way
    await post(clocked, f"/api/runs/{run['id']}/stop", 200)
    retry = await post(clocked, f"/api/runs/{run['id']}/retry", 202, {"breakpoints": ["c"]})
    assert retry["speed"] == 2 and retry["seed"] != 7 and retry["breakpoints"] == ["c"]
    await clock.run_until_idle()
    held = await get(clocked, f"/api/runs/{retry['id']}")
    assert held["pausedAt"] == {"nodeId": "c", "reason": "breakpoint"}
    assert held["nodes"]["t"]["startedAt"] is None  # reused
    assert held["nodes"]["a"]["startedAt"] == held["createdAt"]  # stopped half-way: it runs again


async def test_a_run_held_at_a_breakpoint_is_stored_paused_and_ends_interrupted_after_a_crash(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage="sqlite")
    clock = ManualClock(start=T0)
    app = create_app(settings, clock=clock)
    client = await aiohttp_client(app)
    wf = await create(client, CHAIN)
    run = await post(client, f"/api/workflows/{wf}/execute", 202, {"breakpoints": ["b"]})
    await clock.advance(TRIGGER + 1.0)
    await app[ENGINE].flush()
    listed = await get(client, "/api/runs?state=paused")
    assert [(r["id"], r["pausedAt"]) for r in listed["items"]] == [(run["id"], {"nodeId": "b", "reason": "breakpoint"})]
    app[ENGINE].sink = DeadSink()  # the process dies: nothing more is saved
    await client.close()

    again = await aiohttp_client(create_app(settings, clock=ManualClock(start=T0 + 60)))
    lost = await get(again, f"/api/runs/{run['id']}")
    assert lost["state"] == "failed" and lost["error"]["code"] == "interrupted" and lost["pausedAt"] is None
    assert states(lost) == {"t": "completed", "a": "completed", "b": "skipped", "c": "skipped", "d": "skipped"}
    # What it had done is still worth a retry.
    retry = await post(again, f"/api/runs/{run['id']}/retry", 202)
    assert retry["parentRunId"] == run["id"]


async def test_a_resume_during_a_step_lets_the_run_go_on_freely(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"breakpoints": ["a"]})
    await clock.advance(TRIGGER)
    await post(clocked, f"/api/runs/{run['id']}/step", 200, {"nodeId": "b"})
    resumed = await post(clocked, f"/api/runs/{run['id']}/resume", 200)
    assert resumed["state"] == "running"
    await clock.run_until_idle()
    assert (await get(clocked, f"/api/runs/{run['id']}"))["state"] == "completed"


async def test_a_replay_cannot_be_stepped_given_breakpoints_or_retried(clocked: Client, clock: ManualClock) -> None:
    wf = await create(clocked, CHAIN)
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202, {"breakpoints": ["b"]})
    await clock.advance(TRIGGER + 1.0 + 5.0)  # held at b for five seconds, then stopped
    await post(clocked, f"/api/runs/{run['id']}/stop", 200)
    replay = await post(clocked, f"/api/runs/{run['id']}/replay", 202, {"speed": 1})
    await clock.advance(TRIGGER + 1.0)
    paused = await get(clocked, f"/api/runs/{replay['id']}")  # the recorded breakpoint, replayed
    assert paused["state"] == "paused" and paused["pausedAt"] == {"nodeId": "b", "reason": "breakpoint"}
    for method, path, body in (("POST", "step", None), ("PUT", "breakpoints", {"nodeIds": []}),
                               ("POST", "retry", None)):
        resp = await clocked.request(method, f"/api/runs/{replay['id']}/{path}", json=body)
        assert resp.status == 409, (path, await resp.text())
    await clock.run_until_idle()
    assert (await get(clocked, f"/api/runs/{replay['id']}"))["state"] == "stopped"
    retry = await clocked.post(f"/api/runs/{replay['id']}/retry")
    assert (await retry.json())["detail"] == "Can't retry a replay run: only a workflow run is retried."


async def test_a_pinned_router_takes_its_branch_and_a_merge_breakpoint_holds_the_merge(
    clocked: Client, clock: ManualClock
) -> None:
    # t -> c (condition) -> yes | no -> m (merge): c pinned to its "true" branch.
    workflow = {
        "name": "Branch",
        "nodes": [node("t", "manual_trigger"), node("c", "condition"), node("yes", "delay", ms=1000),
                  node("no", "delay", ms=1000), node("m", "merge")],
        "connections": [link("t", "c"), link("c", "yes", "true"), link("c", "no", "false"),
                        link("yes", "m"), link("no", "m")],
    }
    wf = await create(clocked, workflow)
    bad = await clocked.post(f"/api/workflows/{wf}/execute", json={"pinned": {"c": {"ok": True}}})
    assert bad.status == 422
    assert [e["loc"] for e in (await bad.json())["errors"]] == [["body", "pinned", "c", "branch"]]
    run = await post(clocked, f"/api/workflows/{wf}/execute", 202,
                     {"pinned": {"c": {"branch": "true", "data": {"n": 1}}}, "breakpoints": ["m"]})
    await clock.run_until_idle()
    held = await get(clocked, f"/api/runs/{run['id']}")
    assert held["pausedAt"] == {"nodeId": "m", "reason": "breakpoint"}
    assert states(held) == {"t": "completed", "c": "completed", "yes": "completed", "no": "skipped", "m": "queued"}
    m = await get(clocked, f"/api/runs/{run['id']}/nodes/m")
    assert m["inputs"] == {"yes-m": {"n": 1}} and m["waitingFor"] == []
    await post(clocked, f"/api/runs/{run['id']}/resume", 200)
    await clock.run_until_idle()
    assert (await get(clocked, f"/api/runs/{run['id']}"))["state"] == "completed"
