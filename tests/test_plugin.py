"""The pytest plugin as a user meets it: the `flowstage` stage and its virtual clock, scripted
outcomes (in Python and over HTTP), run handles, the journal, the marker's time modes, test
mode's `/__flowstage/*` endpoints and the live server. Behaviours that must fail a user's test
(an unused script, a logged engine error, a bad marker) run in a pytester session of their own.

Every wait is bounded: run handles raise StageStalled instead of hanging, and the few waits on
the wall clock (autojump, realtime, the live server) are wrapped in a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from flowstage.config.settings import SettingsError
from flowstage.pytest_plugin import StageOptions, stage_settings
from flowstage.simulation.timefmt import iso_ms, parse_iso
from flowstage.testing import LiveServer, RunHandle, Script, Stage, StageError, StageStalled, VirtualClock

pytest_plugins = ["pytester"]

# A stage's clock starts here (docs/testing.md), so `ts` values repeat from test to test.
ORIGIN = parse_iso("2026-09-21T14:13:20.000Z")
CHAIN = [("t", "manual_trigger"), ("h", "http_request"), ("o", "output")]
# How long a test may wait on the wall clock for a run that moves on its own.
REAL_BOUND = 5.0


def vt(ts: str) -> float:
    """An event's `ts` as virtual seconds since the stage started."""
    return round(parse_iso(ts) - ORIGIN, 3)


def stamp(now: float) -> str:
    """The `ts` an event fired at virtual instant `now` carries."""
    return iso_ms(ORIGIN + now)


def without_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in ("runId", "workflowId")} for e in events]


async def chain_run(stage: Stage, **body: Any) -> RunHandle:
    wf = await stage.create_workflow(CHAIN)
    return await stage.execute(wf["id"], **body)


# --- create_workflow -------------------------------------------------------------------------


async def test_create_workflow_with_an_api_body(flowstage: Stage) -> None:
    body = {
        "name": "Fetch",
        "tags": ["demo"],
        "nodes": [{"id": "a", "type": "manual_trigger", "position": {"x": 0, "y": 0}},
                  {"id": "b", "type": "output", "position": {"x": 300, "y": 40}}],
        "connections": [{"id": "c1", "source": "a", "target": "b"}],
    }
    wf = await flowstage.create_workflow(body)

    assert wf["name"] == "Fetch"
    assert wf["tags"] == ["demo"]
    assert wf["version"] == 1
    assert [(n["id"], n["type"], n["position"]) for n in wf["nodes"]] == [
        ("a", "manual_trigger", {"x": 0.0, "y": 0.0}), ("b", "output", {"x": 300.0, "y": 40.0})]
    assert [(c["id"], c["source"], c["target"]) for c in wf["connections"]] == [("c1", "a", "b")]
    assert wf["createdAt"] == stamp(0.0)
    stored = await (await flowstage.client.get(f"/api/workflows/{wf['id']}")).json()
    assert stored == wf


async def test_create_workflow_chains_id_type_pairs_in_order(flowstage: Stage) -> None:
    wf = await flowstage.create_workflow(CHAIN, name="Chained")

    assert wf["name"] == "Chained"
    assert [(n["id"], n["type"]) for n in wf["nodes"]] == CHAIN
    assert [(c["id"], c["source"], c["target"]) for c in wf["connections"]] == [
        ("t-h", "t", "h"), ("h-o", "h", "o")]
    unnamed = await flowstage.create_workflow([("only", "manual_trigger")])
    assert unnamed["name"] == "Stage workflow"
    assert unnamed["connections"] == []


async def test_create_workflow_refused_raises_stage_error_with_the_problem(flowstage: Stage) -> None:
    with pytest.raises(StageError) as caught:
        await flowstage.create_workflow([("t", "manual_trigger"), ("x", "no_such_type")])
    assert "POST /api/workflows answered 422" in str(caught.value)
    assert '"loc": ["body", "nodes", 1, "type"]' in str(caught.value)


# --- manual time ------------------------------------------------------------------------------


async def test_a_run_under_manual_time_ends_at_the_instant_of_its_last_event(flowstage: Stage) -> None:
    run = await chain_run(flowstage)
    assert flowstage.clock.now == 0.0
    assert (await run.snapshot())["state"] == "running"

    final = await run.run_until_complete()

    assert final["state"] == "completed"
    assert run.events.last()["event"] == "run.completed"
    # The clock stopped at the instant the run completed, not one deadline further.
    [completed] = [e for e in flowstage.journal.events if e.run_id == run.id and e.name == "run.completed"]
    assert flowstage.clock.now == completed.at
    assert final["finishedAt"] == run.events.last()["ts"] == stamp(flowstage.clock.now)
    # The run's end is the sum of the three nodes' durations, as their events tell them.
    durations = [vt(run.events.first("node.completed", node=n)["ts"])
                 - vt(run.events.first("node.started", node=n)["ts"]) for n in ("t", "h", "o")]
    assert vt(final["finishedAt"]) == pytest.approx(sum(durations), abs=1e-9)


async def test_every_event_is_stamped_with_the_virtual_instant_it_fired_at(flowstage: Stage) -> None:
    run = await chain_run(flowstage)
    await run.run_until_complete()

    journal = [e for e in flowstage.journal.events if e.run_id == run.id]
    assert [e.name for e in journal] == run.events.names()
    assert [e["ts"] for e in run.events] == [stamp(e.at) for e in journal]
    assert [e["seq"] for e in run.events] == list(range(1, len(journal) + 1))


async def test_scripted_durations_give_exact_instants(flowstage: Stage) -> None:
    flowstage.script.node("t").takes(1.0)
    flowstage.script.node("h").takes(2.0)
    flowstage.script.node("o").takes(0.5)
    run = await chain_run(flowstage)

    final = await run.run_until_complete()

    assert flowstage.clock.now == 3.5
    assert final["finishedAt"] == stamp(3.5)
    assert [(e["event"], e.get("nodeId"), vt(e["ts"])) for e in run.events.named("node.completed")] == [
        ("node.completed", "t", 1.0), ("node.completed", "h", 3.0), ("node.completed", "o", 3.5)]


async def test_advance_moves_exactly_and_fires_what_is_due(flowstage: Stage) -> None:
    flowstage.script.node("t").takes(1.0)
    flowstage.script.node("h").takes(2.0)
    run = await chain_run(flowstage)

    await flowstage.clock.advance(1.0)
    assert flowstage.clock.now == 1.0
    assert run.node("t")["state"] == "completed"
    assert run.node("h")["state"] == "running"
    assert run.events.first("node.started", node="h")["ts"] == stamp(1.0)

    await flowstage.clock.advance(1.999)
    assert run.node("h")["state"] == "running"
    assert len(run.events.named("node.completed", node="h")) == 0

    await flowstage.clock.advance(0.001)
    assert run.node("h")["state"] == "completed"
    started = run.events.first("node.started", node="h")
    completed = run.events.first("node.completed", node="h")
    assert vt(completed["ts"]) - vt(started["ts"]) == 2.0
    # Progress fired on the way, each at its own instant.
    assert [(e["progress"], vt(e["ts"])) for e in run.events.named("node.progress", node="h")] == [
        (0.25, 1.5), (0.5, 2.0), (0.75, 2.5)]


async def test_advance_by_a_fraction_moves_now_by_exactly_that(flowstage: Stage) -> None:
    await flowstage.clock.advance(0.1)
    assert flowstage.clock.now == 0.1
    await flowstage.clock.advance(0.2)
    assert flowstage.clock.now == pytest.approx(0.3, abs=1e-12)


async def test_ten_advances_of_a_tenth_fire_what_is_due_at_one_second(flowstage: Stage) -> None:
    flowstage.script.node("t").takes(1.0)
    run = await chain_run(flowstage)

    for _ in range(10):
        await flowstage.clock.advance(0.1)

    assert run.node("t")["state"] == "completed"
    assert run.events.first("node.completed", node="t")["ts"] == stamp(1.0)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), float("-inf")])
async def test_advance_refuses_a_negative_or_non_finite_amount(flowstage: Stage, bad: float) -> None:
    with pytest.raises(ValueError) as refused:
        await flowstage.clock.advance(bad)
    assert str(refused.value) == f"advance() takes a finite number of seconds >= 0, not {bad!r}"
    assert flowstage.clock.now == 0.0


async def test_run_until_idle_runs_every_timer(flowstage_clock: VirtualClock, flowstage: Stage) -> None:
    assert flowstage_clock is flowstage.clock
    flowstage.script.node("h").takes(30.0)
    run = await chain_run(flowstage)

    await flowstage_clock.run_until_idle()

    assert (await run.snapshot())["state"] == "completed"
    assert flowstage_clock.next_deadline() is None
    # h took its scripted 30 s; the run ended when o did.
    h_started = vt(run.events.first("node.started", node="h")["ts"])
    assert vt(run.events.first("node.completed", node="h")["ts"]) == round(h_started + 30.0, 3)
    assert flowstage_clock.now >= flowstage.journal.events[-1].at


async def test_a_breakpoint_stalls_run_until_complete_naming_it_and_a_step_moves_on(flowstage: Stage) -> None:
    flowstage.script.node("h").takes(2.0)
    run = await chain_run(flowstage, breakpoints=["h"])
    with pytest.raises(StageStalled, match=r"it is paused \(breakpoint at h\)") as stalled:
        await run.run_until_complete()
    assert stalled.value.waiting == ["h", "o"]
    assert run.node("h")["state"] == "queued"
    stepped = await flowstage.client.post(f"/api/runs/{run.id}/step", json={"nodeId": "h"})
    assert stepped.status == 200
    await flowstage.clock.run_until_idle()
    assert (await run.snapshot())["pausedAt"] == {"nodeId": "h", "reason": "step"}
    assert run.events.last("run.paused")["reason"] == "step"
    assert run.node("h")["state"] == "completed" and run.node("o")["state"] == "queued"
    assert (await flowstage.client.post(f"/api/runs/{run.id}/resume")).status == 200
    assert (await run.run_until_complete())["state"] == "completed"


async def test_pause_and_resume_under_manual_time(flowstage: Stage) -> None:
    flowstage.script.node("t").takes(1.0)
    flowstage.script.node("h").takes(2.0)
    run = await chain_run(flowstage)
    await flowstage.clock.advance(1.5)
    assert (await flowstage.client.post(f"/api/runs/{run.id}/pause")).status == 200

    with pytest.raises(StageStalled, match="it is paused") as stalled:
        await run.run_until_complete()
    assert stalled.value.waiting == ["h", "o"]
    assert stalled.value.run_id == run.id
    assert flowstage.clock.now == 1.5

    await flowstage.clock.advance(10.0)  # a paused run does not move
    assert run.node("h")["state"] == "paused"
    assert run.node("h")["progress"] == 0.25
    assert (await flowstage.client.post(f"/api/runs/{run.id}/resume")).status == 200
    final = await run.run_until_complete()

    assert final["state"] == "completed"
    assert vt(run.events.first("run.paused")["ts"]) == 1.5
    assert vt(run.events.first("run.resumed")["ts"]) == 11.5
    # h had 1.5 s left when it was paused: it completes 1.5 s after the resume.
    assert vt(run.events.first("node.completed", node="h")["ts"]) == 13.0


# --- stalls -----------------------------------------------------------------------------------


async def test_a_node_scripted_to_hang_stalls_instead_of_hanging(flowstage: Stage) -> None:
    flowstage.script.node("t").takes(1.0)
    flowstage.script.node("h").hangs()
    run = await chain_run(flowstage)

    with pytest.raises(StageStalled, match=r"nothing is scheduled \(a node hangs\)") as stalled:
        await run.run_until_complete()

    assert stalled.value.waiting == ["h", "o"]
    assert "h (running), o (idle)" in str(stalled.value)
    assert vt(run.events.first("node.started", node="h")["ts"]) == 1.0
    assert run.node("h")["state"] == "running"
    assert len(run.events.named("node.progress", node="h")) == 0


async def test_max_virtual_bounds_a_run_too_long_for_it(flowstage: Stage) -> None:
    flowstage.script.node("t").takes(1.0)
    flowstage.script.node("h").takes(100.0)
    flowstage.script.node("o").takes(1.0)
    run = await chain_run(flowstage)

    with pytest.raises(StageStalled, match="not finished within 10 virtual seconds") as stalled:
        await run.run_until_complete(max_virtual=10)
    assert stalled.value.waiting == ["h", "o"]
    assert flowstage.clock.now <= 10.0

    final = await run.run_until_complete()
    assert final["state"] == "completed"
    assert flowstage.clock.now == 102.0


# --- scripted outcomes ------------------------------------------------------------------------


def assert_failed_at(run: RunHandle, message: str, instant: float) -> None:
    failed = run.events.first("node.failed", node="h")
    assert failed["error"] == {"code": "scripted_failure", "message": message, "nodeId": "h"}
    assert vt(failed["ts"]) == instant
    assert vt(failed["ts"]) - vt(run.events.first("node.started", node="h")["ts"]) == 2.0
    assert run.events.first("node.skipped", node="o")
    assert run.node("o")["state"] == "skipped"
    assert [e["connectionId"] for e in run.events.named("edge.data")] == ["t-h"]  # nothing crossed h -> o
    assert run.events.last()["event"] == "run.failed"


async def test_fails_in_python_fails_the_node_at_that_instant_and_skips_downstream(flowstage: Stage) -> None:
    flowstage.script.node("t").takes(1.0)
    flowstage.script.node("h").fails("timed out", after=2.0)
    run = await chain_run(flowstage)

    final = await run.run_until_complete()

    assert final["state"] == "failed"
    assert final["nodes"]["h"]["error"]["message"] == "timed out"
    assert_failed_at(run, "timed out", 3.0)


async def test_fail_over_http_fails_the_node_at_that_instant_and_skips_downstream(flowstage: Stage) -> None:
    run = await chain_run(flowstage, script={"t": {"outcome": "complete", "durationMs": 1000},
                                             "h": {"outcome": "fail", "error": "boom", "durationMs": 2000}})
    final = await run.run_until_complete()

    assert final["state"] == "failed"
    assert_failed_at(run, "boom", 3.0)


async def test_returns_in_python_is_the_output_downstream_receives(flowstage: Stage) -> None:
    flowstage.script.node("h").returns({"status": 201})
    run = await chain_run(flowstage)

    await run.run_until_complete()

    assert run.events.first("node.completed", node="h")["output"] == {"status": 201}
    crossed = run.events.last("edge.data")
    assert (crossed["connectionId"], crossed["items"], crossed["bytes"]) == ("h-o", 1, len(b'{"status":201}'))
    assert run.node("h")["output"] == {"status": 201}
    assert run.node("o")["inputs"] == {"h-o": {"status": 201}}
    assert run.node("o")["output"] == {"name": "result", "value": {"status": 201}}


async def test_complete_with_output_over_http(flowstage: Stage) -> None:
    run = await chain_run(flowstage, script={"h": {"outcome": "complete", "output": {"rows": 3},
                                                   "durationMs": 1500}})
    await run.run_until_complete()

    assert run.events.first("node.completed", node="h")["output"] == {"rows": 3}
    assert vt(run.events.first("node.completed", node="h")["ts"]) - \
        vt(run.events.first("node.started", node="h")["ts"]) == 1.5
    assert run.node("o")["inputs"] == {"h-o": {"rows": 3}}


async def test_inputs_list_an_empty_payload_that_crossed(flowstage: Stage) -> None:
    # The trigger outputs {} (no payload configured); it crosses t-h all the same (edge.data
    # says so), so h's inputs name it.
    run = await chain_run(flowstage)
    await run.run_until_complete()

    crossed = run.events.first("edge.data")
    assert (crossed["connectionId"], crossed["bytes"]) == ("t-h", 2)
    assert run.node("h")["inputs"] == {"t-h": {}}


async def test_takes_then_returns_keeps_both(flowstage: Stage) -> None:
    # docs/testing.md: `script.node("h").takes(5.0).returns({"ok": True})   # both`
    flowstage.script.node("h").takes(5.0).returns({"ok": True})
    run = await chain_run(flowstage)
    await run.run_until_complete()

    completed = run.events.first("node.completed", node="h")
    assert completed["output"] == {"ok": True}
    assert vt(completed["ts"]) - vt(run.events.first("node.started", node="h")["ts"]) == 5.0


async def test_hang_over_http_stalls(flowstage: Stage) -> None:
    run = await chain_run(flowstage, script={"h": {"outcome": "hang"}})
    with pytest.raises(StageStalled, match="a node hangs") as stalled:
        await run.run_until_complete()
    assert stalled.value.waiting == ["h", "o"]


async def test_an_execute_script_wins_over_the_stage_script(flowstage: Stage) -> None:
    flowstage.script.node("h").fails("from the stage")
    run = await chain_run(flowstage, script={"h": {"outcome": "complete", "output": {"from": "execute"}}})
    final = await run.run_until_complete()
    assert final["state"] == "completed"
    assert run.node("h")["output"] == {"from": "execute"}


async def test_a_sequence_gives_one_outcome_per_execution_and_the_last_repeats(flowstage: Stage) -> None:
    flowstage.script.node("h").sequence([{"outcome": "fail", "error": "first time"},
                                         {"outcome": "complete", "output": {"n": 2}}])
    wf = await flowstage.create_workflow(CHAIN)
    seen = []
    for _ in range(3):
        run = await flowstage.execute(wf["id"])
        final = await run.run_until_complete()
        h = final["nodes"]["h"]
        seen.append((final["state"], h["output"], h["error"] and h["error"]["message"]))

    assert seen == [("failed", None, "first time"), ("completed", {"n": 2}, None), ("completed", {"n": 2}, None)]


async def test_a_sequence_of_outcome_names(flowstage: Stage) -> None:
    flowstage.script.node("h").sequence(["fail", "complete"])
    wf = await flowstage.create_workflow(CHAIN)
    states = [(await (await flowstage.execute(wf["id"])).run_until_complete())["state"] for _ in range(3)]
    assert states == ["failed", "completed", "completed"]


async def test_a_refused_execute_uses_up_no_scripted_outcome(flowstage: Stage) -> None:
    flowstage.script.node("h").sequence(["fail", "complete"])
    wf = await flowstage.create_workflow(CHAIN)
    refused = await flowstage.client.post(f"/api/workflows/{wf['id']}/execute",
                                          json={"script": {"zz": {"outcome": "hang"}}})
    assert refused.status == 422
    # The first run that starts still gets the first outcome.
    assert (await (await flowstage.execute(wf["id"])).run_until_complete())["state"] == "failed"


async def test_matching_globs_node_types(flowstage: Stage) -> None:
    flowstage.script.matching("http_*").fails("offline", after=1.0)
    wf = await flowstage.create_workflow({
        "nodes": [{"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}},
                  {"id": "a", "type": "http_request", "position": {"x": 1, "y": 0}},
                  {"id": "b", "type": "http_request", "position": {"x": 2, "y": 0}},
                  {"id": "q", "type": "database_query", "position": {"x": 3, "y": 0}}],
        "connections": [{"id": "ta", "source": "t", "target": "a"}, {"id": "tb", "source": "t", "target": "b"},
                        {"id": "tq", "source": "t", "target": "q"}],
    })
    run = await flowstage.execute(wf["id"])
    final = await run.run_until_complete()

    assert {n: (s["state"], s["error"] and s["error"]["message"]) for n, s in final["nodes"].items()} == {
        "t": ("completed", None), "a": ("failed", "offline"), "b": ("failed", "offline"), "q": ("completed", None)}


async def test_matching_globs_node_ids(flowstage: Stage) -> None:
    flowstage.script.matching("fetch_*").returns({"mocked": True})
    wf = await flowstage.create_workflow([("t", "manual_trigger"), ("fetch_users", "http_request"),
                                          ("fetch_rows", "database_query"), ("http_other", "http_request")])
    run = await flowstage.execute(wf["id"])
    await run.run_until_complete()

    assert run.node("fetch_users")["output"] == {"mocked": True}
    assert run.node("fetch_rows")["output"] == {"mocked": True}
    assert run.node("http_other")["output"] != {"mocked": True}
    assert run.node("http_other")["inputs"] == {"fetch_rows-http_other": {"mocked": True}}


async def test_a_script_for_an_unknown_node_is_422_and_starts_nothing(flowstage: Stage) -> None:
    wf = await flowstage.create_workflow(CHAIN)
    resp = await flowstage.client.post(f"/api/workflows/{wf['id']}/execute",
                                       json={"script": {"zzz": {"outcome": "fail"}}})

    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    problem = await resp.json(content_type=None)
    assert problem["status"] == 422
    assert problem["errors"] == [{"loc": ["body", "script", "zzz"], "msg": "no node 'zzz' in this workflow"}]
    runs = await (await flowstage.client.get(f"/api/workflows/{wf['id']}/runs")).json()
    assert runs["items"] == []
    assert await (await flowstage.client.get(f"/api/workflows/{wf['id']}/status")).json() == {"state": "idle"}
    assert flowstage.journal.events == []
    assert flowstage.clock.next_deadline() is None


@pytest.mark.parametrize(("script", "loc"), [
    ({"h": {"outcome": "explode"}}, ["body", "script", "h", "outcome"]),
    ({"h": {"outcome": "fail"}, "o": {"outcome": "fail", "durationMs": "x"}}, ["body", "script", "o", "durationMs"]),
    ({"h": {"outcome": "fail", "nope": 1}}, ["body", "script", "h", "nope"]),
    ({"h": {}}, ["body", "script", "h", "outcome"]),
    ({"h": "fail"}, ["body", "script", "h"]),
])
async def test_a_bad_script_entry_is_422_at_its_node(flowstage: Stage, script: dict[str, Any], loc: list[str]) -> None:
    # msgspec names an object's key "[...]": the node id is found again, as a form needs it.
    wf = await flowstage.create_workflow(CHAIN)
    resp = await flowstage.client.post(f"/api/workflows/{wf['id']}/execute", json={"script": script})
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json(content_type=None))["errors"]] == [loc]
    assert flowstage.journal.events == []


async def test_an_unknown_node_from_a_stage_errors_clearly(flowstage: Stage) -> None:
    wf = await flowstage.create_workflow(CHAIN)
    with pytest.raises(StageError, match=r'"loc": \["body", "script", "zzz"\]'):
        await flowstage.execute(wf["id"], script={"zzz": {"outcome": "complete"}})


async def test_an_output_on_a_failure_is_422(flowstage: Stage) -> None:
    wf = await flowstage.create_workflow(CHAIN)
    resp = await flowstage.client.post(f"/api/workflows/{wf['id']}/execute",
                                       json={"script": {"h": {"outcome": "fail", "output": {"a": 1}}}})
    assert resp.status == 422
    problem = await resp.json(content_type=None)
    assert [e["loc"] for e in problem["errors"]] == [["body", "script", "h", "output"]]
    assert flowstage.journal.events == []


def test_bad_scripted_durations_and_sequences_raise_value_error() -> None:
    script = Script()
    with pytest.raises(ValueError, match="-1"):
        script.node("h").takes(-1)
    with pytest.raises(ValueError, match="nan"):
        script.node("h").fails("x", after=float("nan"))
    with pytest.raises(ValueError, match="at least one outcome"):
        script.node("h").sequence([])
    with pytest.raises(ValueError, match="explode"):
        script.node("h").sequence(["explode"])


# --- events -----------------------------------------------------------------------------------


async def test_events_named_first_and_last_with_a_node_filter(flowstage: Stage) -> None:
    run = await chain_run(flowstage)
    await run.run_until_complete()
    events = run.events

    assert [e["nodeId"] for e in events.named("node.started")] == ["t", "h", "o"]
    assert [e["event"] for e in events.named(node="h")] == ["node.queued", "node.started", "node.completed"]
    assert events.first("node.started", node="h")["seq"] == events.named("node.started")[1]["seq"]
    assert events.first()["event"] == "run.started"
    assert events.last(node="t")["event"] == "node.completed"
    assert events.last("node.completed")["nodeId"] == "o"
    assert len(events.named("node.failed")) == 0

    with pytest.raises(AssertionError, match=r"no node\.failed; events: Events"):
        events.first("node.failed")
    with pytest.raises(AssertionError, match=r"no node\.started of node 'zzz'"):
        events.first("node.started", node="zzz")
    with pytest.raises(AssertionError, match=r"no node\.skipped"):
        events.last("node.skipped")


async def test_node_of_an_unknown_id_names_the_nodes(flowstage: Stage) -> None:
    run = await chain_run(flowstage)
    with pytest.raises(KeyError, match=r"\['h', 'o', 't'\]"):
        run.node("zzz")


# --- SSE --------------------------------------------------------------------------------------


async def test_sse_reads_the_same_events_as_the_journal(flowstage: Stage) -> None:
    run = await chain_run(flowstage)

    streamed = await asyncio.wait_for(run.sse(until="run.completed"), REAL_BOUND)

    assert streamed.names() == run.events.names()
    assert streamed.names()[-1] == "run.completed"
    assert list(streamed) == list(run.events)


async def test_sse_ends_for_a_node_scripted_to_hang(flowstage: Stage) -> None:
    flowstage.script.node("h").hangs()
    run = await chain_run(flowstage)

    with pytest.raises(StageStalled) as stalled:
        await asyncio.wait_for(run.sse(until="run.completed"), REAL_BOUND)
    assert stalled.value.waiting == ["h", "o"]


async def test_sse_until_a_node_event_stops_there(flowstage: Stage) -> None:
    run = await chain_run(flowstage)
    streamed = await asyncio.wait_for(run.sse(until="edge.data"), REAL_BOUND)
    assert streamed.names() == ["run.started", "node.queued", "node.started", "node.completed", "edge.data"]


# --- journal ----------------------------------------------------------------------------------


async def test_the_journal_asserts_requests_made(flowstage: Stage) -> None:
    run = await chain_run(flowstage, seed=42)
    await run.run_until_complete()

    [made] = flowstage.journal.assert_request_made("POST", "/api/workflows/*/execute", count=1)
    assert (made.status, made.body) == (202, {"seed": 42})
    flowstage.journal.assert_request_made("post", "/api/workflows")
    flowstage.journal.assert_request_made("GET", "/api/runs/*", count=0)

    with pytest.raises(AssertionError) as caught:
        flowstage.journal.assert_request_made("POST", "/api/workflows/*/execute", count=2)
    message = str(caught.value)
    assert message.startswith("expected POST /api/workflows/*/execute 2 times, found 1; requests made:\n")
    assert "  POST /api/workflows -> 201\n" in message
    assert f"  POST /api/workflows/{run.workflow_id}/execute -> 202" in message

    with pytest.raises(AssertionError, match="expected DELETE /api/workflows/\\* at least once, found 0"):
        flowstage.journal.assert_request_made("DELETE", "/api/workflows/*")


async def test_the_journal_records_refusals_but_not_test_mode_requests(flowstage: Stage) -> None:
    await flowstage.client.post("/__flowstage/clock", json={"advance": 2})
    resp = await flowstage.client.get("/api/workflows/wf_missing")
    assert resp.status == 404

    assert [(r.method, r.path, r.status, r.at) for r in flowstage.journal.requests] == [
        ("GET", "/api/workflows/wf_missing", 404, 2.0)]


# --- the marker -------------------------------------------------------------------------------


@pytest.mark.flowstage(time="autojump")
async def test_autojump_completes_a_run_without_moving_time_by_hand(flowstage: Stage) -> None:
    assert flowstage.clock.autojump
    wf = await flowstage.create_workflow({
        "nodes": [{"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}},
                  {"id": "d", "type": "delay", "position": {"x": 1, "y": 0}, "data": {"config": {"ms": 600_000}}}],
        "connections": [{"id": "c", "source": "t", "target": "d"}],
    })
    run = await flowstage.execute(wf["id"])

    final = await asyncio.wait_for(run.run_until_complete(), REAL_BOUND)

    assert final["state"] == "completed"
    # Ten minutes of virtual time went by in a few real milliseconds.
    assert vt(run.events.first("node.completed", node="d")["ts"]) - \
        vt(run.events.first("node.started", node="d")["ts"]) == 600.0
    assert flowstage.clock.now >= 600.0


@pytest.mark.flowstage(time="autojump")
async def test_autojump_stalls_on_a_hang(flowstage: Stage) -> None:
    flowstage.script.node("h").hangs()
    run = await chain_run(flowstage)
    with pytest.raises(StageStalled) as stalled:
        await asyncio.wait_for(run.run_until_complete(), REAL_BOUND)
    assert stalled.value.waiting == ["h", "o"]


@pytest.mark.flowstage(time="realtime", speed=1000)
async def test_realtime_runs_on_the_wall_clock(flowstage: Stage) -> None:
    assert not flowstage.clock.autojump
    run = await chain_run(flowstage)

    final = await asyncio.wait_for(run.run_until_complete(), REAL_BOUND)

    assert final["state"] == "completed"
    assert final["speed"] == 1000.0
    assert final["startedAt"] != stamp(0.0)  # wall time, not the virtual origin
    with pytest.raises(RuntimeError, match="cannot be moved"):
        await flowstage.clock.advance(1)


@pytest.mark.flowstage(time="realtime", speed=1000)
async def test_realtime_stalls_on_a_hang_instead_of_waiting_an_hour(flowstage: Stage) -> None:
    # Nothing will ever end h: the run handle knows it at once, as under manual time. (Bounded
    # at 1 s of wall time: without the stall it would wait max_virtual = 3600 s.)
    flowstage.script.node("h").hangs()
    run = await chain_run(flowstage)
    with pytest.raises(StageStalled) as stalled:
        await asyncio.wait_for(run.run_until_complete(), 1.0)
    assert stalled.value.waiting == ["h", "o"]


@pytest.mark.flowstage(time="realtime", speed=1000)
async def test_realtime_stalls_on_a_paused_run(flowstage: Stage) -> None:
    flowstage.script.node("h").takes(100.0)
    run = await chain_run(flowstage)
    await flowstage.client.post(f"/api/runs/{run.id}/pause")
    with pytest.raises(StageStalled, match="it is paused"):
        await asyncio.wait_for(run.run_until_complete(), REAL_BOUND)


@pytest.mark.flowstage(time="realtime", settings={"speed": 500})
async def test_realtime_speed_from_settings(flowstage: Stage) -> None:
    run = await chain_run(flowstage)
    final = await asyncio.wait_for(run.run_until_complete(), REAL_BOUND)
    assert (final["state"], final["speed"]) == ("completed", 500.0)


@pytest.mark.flowstage(speed=4)
async def test_the_speed_marker_scales_simulated_durations(flowstage: Stage) -> None:
    flowstage.script.node("h").takes(2.0)
    run = await chain_run(flowstage)
    final = await run.run_until_complete()
    assert final["speed"] == 4.0
    assert vt(run.events.first("node.completed", node="h")["ts"]) - \
        vt(run.events.first("node.started", node="h")["ts"]) == 0.5


@pytest.mark.flowstage(seed=7)
async def test_the_seed_marker_sets_the_seeds_runs_draw(flowstage: Stage) -> None:
    seeded = (await chain_run(flowstage)).id
    seed_7 = (await flowstage.client.get(f"/api/runs/{seeded}"))
    first_seed = (await seed_7.json())["seed"]

    async def seed_after_reset(body: dict[str, Any]) -> int:
        await flowstage.client.post("/__flowstage/reset", json=body)
        run = await chain_run(flowstage)
        return int((await run.snapshot())["seed"])

    assert await seed_after_reset({"seed": 7}) == first_seed
    assert await seed_after_reset({}) == first_seed  # reset keeps the stage's seed
    assert await seed_after_reset({"seed": 0}) != first_seed


async def test_the_same_seed_gives_the_same_events_after_a_reset(flowstage: Stage) -> None:
    async def once() -> list[dict[str, Any]]:
        run = await chain_run(flowstage)
        await run.run_until_complete()
        return without_ids(list(run.events))

    first = await once()
    await flowstage.client.post("/__flowstage/reset", json={})
    second = await once()

    # Seeds, outputs and durations repeat, instant for instant relative to the run's start.
    assert [{**e, "ts": None} for e in second] == [{**e, "ts": None} for e in first]
    assert [round(vt(e["ts"]) - vt(second[0]["ts"]), 3) for e in second] == [vt(e["ts"]) for e in first]


async def test_a_reset_stage_stamps_events_as_a_new_stage_does(flowstage: Stage) -> None:
    # `now` starts again from 0 after a reset, and a new stage's runs start at the origin:
    # a run after a reset (each test on the shared live server) should carry the same `ts`.
    first = await chain_run(flowstage)
    await first.run_until_complete()
    first_stamps = [e["ts"] for e in first.events]
    assert first_stamps[0] == stamp(0.0)
    await flowstage.client.post("/__flowstage/reset", json={})
    second = await chain_run(flowstage)
    await second.run_until_complete()

    assert [e["ts"] for e in second.events] == first_stamps
    assert vt(second.events.last()["ts"]) == round(flowstage.clock.now, 3)


# --- /__flowstage/* over HTTP -----------------------------------------------------------------


async def clock_post(client: TestClient[Any, web.Application], body: Any) -> tuple[int, Any]:
    resp = await client.post("/__flowstage/clock", json=body)
    return resp.status, await resp.json(content_type=None)


async def test_the_clock_endpoint_reads_and_moves_the_stage_clock(flowstage: Stage) -> None:
    client = flowstage.client
    assert await clock_post(client, {}) == (200, {"now": 0.0, "autojump": False})
    assert await clock_post(client, {"advance": 1.5}) == (200, {"now": 1.5, "autojump": False})
    assert flowstage.clock.now == 1.5

    status, problem = await clock_post(client, {"advance": -1})
    assert status == 422
    assert problem["errors"] == [{"loc": ["body", "advance"], "msg": "must be a finite number >= 0"}]
    status, problem = await clock_post(client, {"advance": "soon"})
    assert (status, problem["errors"][0]["loc"]) == (422, ["body", "advance"])
    status, problem = await clock_post(client, {"rewind": 1})
    assert (status, problem["errors"][0]["loc"]) == (422, ["body", "rewind"])
    assert flowstage.clock.now == 1.5

    assert await clock_post(client, {"autojump": True}) == (200, {"now": 1.5, "autojump": True})
    assert flowstage.clock.autojump
    assert await clock_post(client, {"autojump": False}) == (200, {"now": 1.5, "autojump": False})


async def test_the_clock_endpoint_advance_fires_due_node_events(flowstage: Stage) -> None:
    run = await chain_run(flowstage, script={"t": {"outcome": "complete", "durationMs": 250}})
    assert await clock_post(flowstage.client, {"advance": 0.25}) == (200, {"now": 0.25, "autojump": False})
    assert vt(run.events.first("node.completed", node="t")["ts"]) == 0.25


async def test_reset_empties_the_stage(flowstage: Stage) -> None:
    flowstage.script.node("h").takes(5.0)
    flowstage.script.assert_all_used = True
    run = await chain_run(flowstage)
    await flowstage.clock.advance(2.0)
    assert flowstage.journal.requests and flowstage.journal.events

    resp = await flowstage.client.post("/__flowstage/reset")

    assert resp.status == 200
    assert await resp.json() == {"now": 0.0, "autojump": False}
    assert flowstage.clock.now == 0.0
    assert flowstage.clock.next_deadline() is None
    assert flowstage.script.rules == []
    assert flowstage.script.assert_all_used is False
    assert flowstage.journal.events == []
    assert flowstage.journal.requests == []
    assert (await (await flowstage.client.get("/api/workflows")).json())["items"] == []
    assert (await flowstage.client.get(f"/api/runs/{run.id}")).status == 404
    assert (await flowstage.client.get(f"/api/workflows/{run.workflow_id}")).status == 404


@pytest.mark.parametrize("path", ["/__flowstage/clock", "/__flowstage/reset"])
async def test_without_test_mode_the_endpoints_are_404(client: TestClient[Any, web.Application], path: str) -> None:
    resp = await client.post(path, json={})
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert (await resp.json(content_type=None))["status"] == 404


# --- the live server --------------------------------------------------------------------------


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REAL_BOUND) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_live_is_empty(live: LiveServer) -> None:
    assert http("GET", live.url + "/api/workflows") == (200, {"items": [], "nextCursor": None})
    assert live.clock() == {"now": 0.0, "autojump": False}


def test_the_live_server_answers_on_its_url(flowstage_live: LiveServer) -> None:
    assert flowstage_live.url.startswith("http://127.0.0.1:")
    assert int(flowstage_live.url.rsplit(":", 1)[1]) > 0
    status, health = http("GET", flowstage_live.url + "/api/health")
    assert (status, health["status"]) == (200, "ok")


def test_the_live_server_runs_under_manual_time(flowstage_live: LiveServer) -> None:
    assert_live_is_empty(flowstage_live)
    url = flowstage_live.url
    status, wf = http("POST", url + "/api/workflows", {"name": "live", "nodes": [
        {"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}},
        {"id": "o", "type": "output", "position": {"x": 1, "y": 0}}],
        "connections": [{"id": "c", "source": "t", "target": "o"}]})
    assert status == 201
    status, run = http("POST", f"{url}/api/workflows/{wf['id']}/execute",
                       {"script": {"t": {"outcome": "complete", "durationMs": 2000}}})
    assert (status, run["state"]) == (202, "running")

    assert flowstage_live.clock(advance=1.0)["now"] == 1.0
    assert http("GET", f"{url}/api/runs/{run['id']}")[1]["nodes"]["t"]["state"] == "running"
    flowstage_live.clock(advance=60.0)
    assert http("GET", f"{url}/api/runs/{run['id']}")[1]["state"] == "completed"


@pytest.mark.flowstage(time="autojump")
def test_the_live_server_with_autojump_completes_a_run_on_its_own(flowstage_live: LiveServer) -> None:
    url = flowstage_live.url
    assert http("GET", url + "/api/workflows")[1]["items"] == []  # reset between tests
    assert flowstage_live.clock() == {"now": 0.0, "autojump": True}
    status, wf = http("POST", url + "/api/workflows", {"name": "live", "nodes": [
        {"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}},
        {"id": "h", "type": "http_request", "position": {"x": 1, "y": 0}}],
        "connections": [{"id": "c", "source": "t", "target": "h"}]})
    assert status == 201
    _, run = http("POST", f"{url}/api/workflows/{wf['id']}/execute", {})

    deadline = time.monotonic() + REAL_BOUND
    while (state := http("GET", f"{url}/api/runs/{run['id']}")[1]["state"]) == "running":
        assert time.monotonic() < deadline, "the run did not complete under autojump"
        time.sleep(0.005)
    assert state == "completed"


def test_the_live_server_is_reset_between_tests(flowstage_live: LiveServer) -> None:
    assert_live_is_empty(flowstage_live)
    assert http("POST", flowstage_live.url + "/__flowstage/reset", {}) == (200, {"now": 0.0, "autojump": False})


@pytest.mark.flowstage(time="realtime")
def test_the_live_server_refuses_a_realtime_marker(request: pytest.FixtureRequest) -> None:
    with pytest.raises(pytest.UsageError, match="only seed= and time='manual'"):
        request.getfixturevalue("flowstage_live")


@pytest.mark.parametrize("options", [StageOptions(settings={"no_such_setting": 1}), StageOptions(speed=-1.0)])
def test_bad_stage_settings_name_where_they_came_from(options: StageOptions, tmp_path: Path) -> None:
    # Not "command line": the user wrote them in a marker or an ini option.
    with pytest.raises(SettingsError, match=r"^the flowstage marker or flowstage_\* ini options: "):
        stage_settings(options, tmp_path)


# --- what must fail a user's test (a pytester session of its own) -----------------------------

INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"


def run_inner(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest("-p", "no:cacheprovider")


def test_an_unused_script_fails_the_test_at_teardown(pytester: pytest.Pytester) -> None:
    result = run_inner(pytester, """
        async def test_never_uses_its_rule(flowstage):
            flowstage.script.assert_all_used = True
            flowstage.script.node("h").fails("never")
            wf = await flowstage.create_workflow([("t", "manual_trigger"), ("o", "output")])
            await (await flowstage.execute(wf["id"])).run_until_complete()

        async def test_uses_its_rule(flowstage):
            flowstage.script.assert_all_used = True
            flowstage.script.node("o").returns({"ok": True})
            wf = await flowstage.create_workflow([("t", "manual_trigger"), ("o", "output")])
            await (await flowstage.execute(wf["id"])).run_until_complete()
    """)
    result.assert_outcomes(passed=2, errors=1)
    output = result.stdout.str()
    assert "ERROR at teardown of test_never_uses_its_rule" in output
    assert "scripted rules never used: [<NodeScript node 'h': ['fail']>]" in output
    assert "ERROR at teardown of test_uses_its_rule" not in output


def test_an_error_flowstage_logged_fails_the_test_at_teardown(pytester: pytest.Pytester) -> None:
    # An event listener the test added raises: the run carries on, the engine logs the error,
    # and nobody handled it.
    result = run_inner(pytester, """
        from flowstage.server.keys import ENGINE

        async def test_a_listener_raises(flowstage):
            def listener(*args):
                raise RuntimeError("listener broke")
            flowstage.app[ENGINE].add_listener(listener)
            wf = await flowstage.create_workflow([("t", "manual_trigger"), ("o", "output")])
            final = await (await flowstage.execute(wf["id"])).run_until_complete()
            assert final["state"] == "completed"
    """)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*Flowstage logged errors nobody handled:*",
                                 "*flowstage.actors.eventlog: event listener * failed*"])


def test_an_unknown_marker_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_inner(pytester, """
        import pytest

        @pytest.mark.flowstage(sed=1)
        async def test_typo(flowstage):
            pass
    """)
    result.assert_outcomes(errors=1)
    assert "UsageError: @pytest.mark.flowstage has no option ['sed']" in result.stdout.str()


def test_an_unknown_time_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_inner(pytester, """
        import pytest

        @pytest.mark.flowstage(time="bogus")
        async def test_bogus_time(flowstage):
            pass
    """)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*UsageError: flowstage time must be one of ('manual', 'autojump', 'realtime'), not 'bogus'*"])


def test_ini_options_set_the_defaults(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest=INI + "flowstage_time = autojump\nflowstage_speed = 2\n")
    pytester.makepyfile(test_inner="""
        import pytest

        async def test_defaults(flowstage):
            assert flowstage.time == "autojump"
            assert flowstage.clock.autojump
            wf = await flowstage.create_workflow([("t", "manual_trigger"), ("o", "output")])
            final = await (await flowstage.execute(wf["id"])).run_until_complete()
            assert (final["state"], final["speed"]) == ("completed", 2.0)

        @pytest.mark.flowstage(time="manual")
        async def test_the_marker_wins(flowstage):
            assert flowstage.time == "manual"
            assert not flowstage.clock.autojump
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
