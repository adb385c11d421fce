"""Recordings and replay through the HTTP API: a recording's exact shape and simulated offsets;
export, import and replay at another speed, event by event on the manual clock; a replay's
snapshot as its events play; its SSE streams; replays of runs that left memory or outlived the
process; replays interrupted by a shutdown or a crash; every bad recording refused at its first
bad field; and a replay refusing every command."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import FormData
from conftest import T0, Client, ClientFactory, create, make_settings
from test_runs_http import DeadSink

from flowstage.actors.clock import ManualClock
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE
from flowstage.simulation.timefmt import iso_ms, parse_iso

WAIT = 10.0  # bound on a wait for the store or a stream; never what a test asserts


def node(node_id: str, type_: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "position": {"x": 0, "y": 0}, "data": {"config": config}}


CHAIN = {
    "name": "Chain",
    "nodes": [node("t", "manual_trigger"), node("h", "http_request", url="https://example.com"), node("o", "output")],
    "connections": [{"id": "c1", "source": "t", "target": "h"}, {"id": "c2", "source": "h", "target": "o"}],
}
# Simulated durations: 100 ms, 2 s and 200 ms; at speed 2 the run takes 1.15 s of clock time.
SCRIPT = {"t": {"outcome": "complete", "durationMs": 100},
          "h": {"outcome": "complete", "durationMs": 2000, "output": {"n": 1}},
          "o": {"outcome": "complete", "durationMs": 200}}
# The chain's events at speed 2, as (simulated offset in ms, event, node or connection).
CHAIN_EVENTS = [
    (0.0, "run.started", None), (0.0, "node.queued", "t"), (0.0, "node.started", "t"),
    (100.0, "node.completed", "t"), (100.0, "edge.data", "c1"), (100.0, "node.queued", "h"),
    (100.0, "node.started", "h"), (600.0, "node.progress", "h"), (1100.0, "node.progress", "h"),
    (1600.0, "node.progress", "h"), (2100.0, "node.completed", "h"), (2100.0, "edge.data", "c2"),
    (2100.0, "node.queued", "o"), (2100.0, "node.started", "o"), (2300.0, "node.completed", "o"),
    (2300.0, "run.completed", None),
]
READ_ONLY = "A replay is read-only: it plays a recording back and takes no commands."





async def execute(client: Client, wf_id: str, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/workflows/{wf_id}/execute", json=body)
    assert resp.status == 202, await resp.text()
    return dict(await resp.json())


async def get(client: Client, url: str) -> Any:
    resp = await client.get(url)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def recorded_chain(client: Client, clock: ManualClock, **script: Any) -> tuple[str, dict[str, Any]]:
    """The chain run to its end at speed 2; its workflow id and the run's recording."""
    wf_id = await create(client, CHAIN)
    run = await execute(client, wf_id, speed=2, seed=5, script={**SCRIPT, **script})
    await clock.run_until_idle()
    return wf_id, await get(client, f"/api/runs/{run['id']}/recording")


async def import_recording(client: Client, recording: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/recordings", json=recording)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def replay(client: Client, url: str, **body: Any) -> dict[str, Any]:
    resp = await client.post(url, json=body)
    assert resp.status == 202, await resp.text()
    run: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == f"/api/runs/{run['id']}"
    return run


def sse(body: bytes) -> list[tuple[int, str, dict[str, Any]]]:
    """A finished stream's messages as (id, event, data)."""
    frames = []
    for block in body.decode().strip("\n").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        frames.append((int(lines["id"]), lines["event"], json.loads(lines["data"])))
    return frames


def what(data: dict[str, Any]) -> tuple[str, Any, Any]:
    """An event as a person compares two runs: its name, its node (or connection), its output."""
    return data["event"], data.get("nodeId", data.get("connectionId")), data.get("output")


def played(client: Client, run_id: str) -> int:
    event_log = client.app[ENGINE].events(run_id)
    assert event_log is not None
    return event_log.last_seq


async def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    return dict(await resp.json())


# --- the recording ---------------------------------------------------------------------------


async def test_a_recording_is_the_run_its_graph_and_every_event_at_its_simulated_offset(
    clocked: Client, clock: ManualClock
) -> None:
    wf_id = await create(clocked, CHAIN)
    run = await execute(clocked, wf_id, speed=2, seed=5, script=SCRIPT)
    await clock.run_until_idle()
    resp = await clocked.get(f"/api/runs/{run['id']}/recording")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{run["id"]}.flowstage-recording.json"'
    recording = await resp.json()
    assert list(recording) == ["formatVersion", "run", "workflow", "events"]
    assert recording["formatVersion"] == 1
    assert recording["run"] == await get(clocked, f"/api/runs/{run['id']}")
    assert recording["workflow"] == await get(clocked, f"/api/workflows/{wf_id}")
    # Offsets are simulated: twice the clock time at speed 2 (h's 2 s took 1 s of the clock).
    assert [(e["offsetMs"], e["event"], e["data"].get("nodeId", e["data"].get("connectionId")))
            for e in recording["events"]] == CHAIN_EVENTS
    for e in recording["events"]:
        assert list(e) == ["offsetMs", "event", "data"]
        assert (parse_iso(e["data"]["ts"]) - T0) * 1000 * 2 == pytest.approx(e["offsetMs"])
    stream = await (await clocked.get(f"/api/runs/{run['id']}/events")).read()
    assert [data for _, _, data in sse(stream)] == [e["data"] for e in recording["events"]]
    # A finished run's recording does not change: its tag answers If-None-Match.
    again = await clocked.get(f"/api/runs/{run['id']}/recording", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304


async def test_only_a_finished_run_has_a_recording(clocked: Client, clock: ManualClock) -> None:
    run = await execute(clocked, await create(clocked, CHAIN), script=SCRIPT)
    body = await problem(await clocked.get(f"/api/runs/{run['id']}/recording"), 409)
    assert body["detail"] == f"Run {run['id']!r} is running: only a finished run has a recording."
    await problem(await clocked.post(f"/api/runs/{run['id']}/replay"), 409)
    await problem(await clocked.get("/api/runs/run_nope/recording"), 404)
    await problem(await clocked.post("/api/runs/run_nope/replay"), 404)
    await problem(await clocked.post("/api/recordings/rec_nope/replay"), 404)


# --- export, import, replay ------------------------------------------------------------------


async def test_an_imported_recording_replays_the_same_events_retimed_by_speed(
    clocked: Client, clock: ManualClock
) -> None:
    wf_id, recording = await recorded_chain(clocked, clock)
    info = await import_recording(clocked, recording)
    created = info.pop("createdAt")
    assert info == {"id": info["id"], "formatVersion": 1, "runId": recording["run"]["id"], "workflowId": wf_id,
                    "workflowVersion": 1, "runState": "completed", "eventCount": 16, "durationMs": 2300.0}
    assert info["id"].startswith("rec_") and created == iso_ms(clock.now())
    assert (await import_recording(clocked, recording))["id"] != info["id"]  # each import is its own

    start = clock.now()
    run = await replay(clocked, f"/api/recordings/{info['id']}/replay", speed=4)
    original = recording["run"]
    assert run["id"] != original["id"]
    assert {k: run[k] for k in ("kind", "replayOf", "workflowId", "workflowVersion", "state", "speed", "seed",
                                "startedAt", "finishedAt", "progress")} == {
        "kind": "replay", "replayOf": info["id"], "workflowId": wf_id, "workflowVersion": 1, "state": "running",
        "speed": 4.0, "seed": 5, "startedAt": iso_ms(start), "finishedAt": None, "progress": 0.0}
    # At speed 4 an event plays offsetMs / 4000 clock seconds after the start; those at one
    # offset play together. Between two instants, exactly those before are out.
    for seconds, count in ((0.0125, 3), (0.1, 7), (0.2, 8), (0.35, 9), (0.45, 10), (0.55, 14), (0.6, 16)):
        await clock.advance_to(start + seconds)
        assert played(clocked, run["id"]) == count, seconds
    events = sse(await (await clocked.get(f"/api/runs/{run['id']}/events")).read())
    assert [what(data) for _, _, data in events] == [what(e["data"]) for e in recording["events"]]
    for (seq, name, data), e in zip(events, recording["events"], strict=True):
        assert data == {**e["data"], "runId": run["id"], "seq": seq, "ts": iso_ms(start + e["offsetMs"] / 4000)}
        assert name == e["event"]
    assert [seq for seq, _, _ in events] == list(range(1, 17))


async def test_a_replays_snapshot_follows_the_events_played_so_far(clocked: Client, clock: ManualClock) -> None:
    _, recording = await recorded_chain(clocked, clock)
    start = clock.now()
    run = await replay(clocked, f"/api/runs/{recording['run']['id']}/replay", speed=4)
    assert run["replayOf"] == recording["run"]["id"]
    assert run["nodes"] == {n: {"state": "idle", "progress": 0.0, "startedAt": None, "finishedAt": None,
                                "output": None, "error": None} for n in ("t", "h", "o")}

    await clock.advance_to(start + 0.3)  # 1200 ms simulated: h reported half of its work
    mid = await get(clocked, f"/api/runs/{run['id']}")
    assert mid["state"] == "running" and mid["finishedAt"] is None
    at = {ms: iso_ms(start + ms / 4000) for ms in (0, 100, 2100, 2300)}
    assert mid["nodes"] == {
        "t": {"state": "completed", "progress": 1.0, "startedAt": at[0], "finishedAt": at[100], "output": {},
              "error": None},
        "h": {"state": "running", "progress": 0.5, "startedAt": at[100], "finishedAt": None, "output": None,
              "error": None},
        "o": {"state": "idle", "progress": 0.0, "startedAt": None, "finishedAt": None, "output": None,
              "error": None},
    }
    assert mid["progress"] == 0.5  # (1 + 0.5 + 0) / 3

    await clock.run_until_idle()
    done = await get(clocked, f"/api/runs/{run['id']}")
    original = recording["run"]
    assert done["state"] == "completed" and done["progress"] == 1.0 and done["finishedAt"] == at[2300]
    assert {n: (v["state"], v["output"]) for n, v in done["nodes"].items()} == {
        n: (v["state"], v["output"]) for n, v in original["nodes"].items()}
    assert (done["nodes"]["h"]["startedAt"], done["nodes"]["h"]["finishedAt"]) == (at[100], at[2100])
    # Listed and served like any run.
    listed = await get(clocked, f"/api/runs?workflowId={original['workflowId']}")
    assert [(r["id"], r["kind"]) for r in listed["items"]] == [(run["id"], "replay"), (original["id"], "workflow")]
    flow = await get(clocked, f"/api/workflows/{original['workflowId']}/dataflow")
    assert flow["runId"] == run["id"] and [e["state"] for e in flow["edges"]] == ["done", "done"]


async def test_a_failed_run_replays_its_failure(clocked: Client, clock: ManualClock) -> None:
    _, recording = await recorded_chain(clocked, clock, h={"outcome": "fail", "durationMs": 400, "error": "Boom"})
    assert [e["event"] for e in recording["events"]][-3:] == ["node.failed", "node.skipped", "run.failed"]
    run = await replay(clocked, f"/api/runs/{recording['run']['id']}/replay", speed=1)
    await clock.run_until_idle()
    done = await get(clocked, f"/api/runs/{run['id']}")
    original = recording["run"]
    assert done["state"] == "failed" and done["error"] == original["error"]
    assert done["error"]["message"] == "Boom"
    assert {n: (v["state"], v["error"]) for n, v in done["nodes"].items()} == {
        n: (v["state"], v["error"]) for n, v in original["nodes"].items()}
    assert done["progress"] == original["progress"]


async def test_a_paused_run_replays_its_pause(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, CHAIN)
    run = await execute(clocked, wf_id, speed=2, script=SCRIPT)
    await clock.advance(0.3)  # h is under way
    assert (await clocked.post(f"/api/runs/{run['id']}/pause")).status == 200
    await clock.advance(1.0)
    assert (await clocked.post(f"/api/runs/{run['id']}/resume")).status == 200
    await clock.run_until_idle()
    recording = await get(clocked, f"/api/runs/{run['id']}/recording")
    offsets = {e["event"]: e["offsetMs"] for e in recording["events"]}
    assert (offsets["run.paused"], offsets["run.resumed"]) == (600.0, 2600.0)  # a 1 s pause, simulated 2 s

    start = clock.now()
    again = await replay(clocked, f"/api/runs/{run['id']}/replay", speed=2)
    await clock.advance_to(start + 0.8)  # inside the recorded pause
    paused = await get(clocked, f"/api/runs/{again['id']}")
    assert paused["state"] == "paused" and paused["pausedAt"] == {"nodeId": None, "reason": "user"}
    assert paused["nodes"]["h"]["state"] == "paused"
    await problem(await clocked.post(f"/api/runs/{again['id']}/resume"), 409)  # only the recording resumes it
    await clock.advance_to(start + 1.4)
    resumed = await get(clocked, f"/api/runs/{again['id']}")
    assert resumed["state"] == "running" and resumed["pausedAt"] is None
    await clock.run_until_idle()
    assert (await get(clocked, f"/api/runs/{again['id']}"))["state"] == "completed"


async def test_a_process_files_run_of_one_node_replays(clocked: Client, clock: ManualClock) -> None:
    wf_id = await create(clocked, CHAIN)
    form = FormData()
    form.add_field("file", b"hello", filename="notes.txt", content_type="text/plain")
    file_id = (await (await clocked.post("/api/files/upload", data=form)).json())["items"][0]["id"]
    resp = await clocked.post(f"/api/workflows/{wf_id}/nodes/h/process-files", json={"fileIds": [file_id]})
    assert resp.status == 202
    await clock.run_until_idle()
    recording = await get(clocked, f"/api/runs/{(await resp.json())['id']}/recording")
    assert list(recording["run"]["nodes"]) == ["h"] and len(recording["workflow"]["nodes"]) == 3
    info = await import_recording(clocked, recording)
    run = await replay(clocked, f"/api/recordings/{info['id']}/replay")
    await clock.run_until_idle()
    done = await get(clocked, f"/api/runs/{run['id']}")
    assert (done["state"], list(done["nodes"])) == ("completed", ["h"])
    assert done["nodes"]["h"]["output"] == recording["run"]["nodes"]["h"]["output"]


# --- streams ---------------------------------------------------------------------------------


async def test_a_replay_is_on_the_run_workflow_and_global_streams(clocked: Client, clock: ManualClock) -> None:
    wf_id, recording = await recorded_chain(clocked, clock)
    # Live streams carry what happens once they are open: the replay's first events play as it starts.
    workflow_stream = await clocked.get(f"/api/workflows/{wf_id}/events")
    all_stream = await clocked.get(f"/api/events?workflowId={wf_id}")
    start = clock.now()
    run = await replay(clocked, f"/api/runs/{recording['run']['id']}/replay", speed=4)
    run_stream = await clocked.get(f"/api/runs/{run['id']}/events")
    await clock.advance_to(start + 0.35)
    resumed_from = played(clocked, run["id"])
    await clock.run_until_idle()
    async with asyncio.timeout(WAIT):
        body = await run_stream.read()  # the run stream ends after run.completed
    expected = [(i + 1, e["event"], {**e["data"], "runId": run["id"], "seq": i + 1,
                                     "ts": iso_ms(start + e["offsetMs"] / 4000)})
                for i, e in enumerate(recording["events"])]
    assert sse(body) == expected
    tail = await (await clocked.get(f"/api/runs/{run['id']}/events",
                                    headers={"Last-Event-ID": str(resumed_from)})).read()
    assert sse(tail) == expected[resumed_from:]
    for stream in (workflow_stream, all_stream):
        async with asyncio.timeout(WAIT):
            chunk = b""
            while chunk.count(b"\n\n") < len(expected):
                chunk += await stream.content.readany()
        stream.close()
        assert [(name, data) for _, name, data in sse(chunk)] == [(name, data) for _, name, data in expected]


# --- stored runs and restarts ----------------------------------------------------------------


async def test_a_run_that_left_memory_has_the_same_recording_and_replays(clocked: Client, clock: ManualClock) -> None:
    engine = clocked.app[ENGINE]
    engine.config = msgspec.structs.replace(engine.config, retain_finished=0)
    _, live = await recorded_chain(clocked, clock)
    run_id = live["run"]["id"]
    async with asyncio.timeout(WAIT):  # persisted, then evicted
        while engine.events(run_id) is not None:
            await engine.flush()
            await clock.advance(0.1)
    assert await get(clocked, f"/api/runs/{run_id}/recording") == live
    replayed = await replay(clocked, f"/api/runs/{run_id}/replay", speed=4)
    await clock.run_until_idle()
    async with asyncio.timeout(WAIT):  # the replay too, once it ended
        while engine.events(replayed["id"]) is not None:
            await engine.flush()
            await clock.advance(0.1)
    stored = await get(clocked, f"/api/runs/{replayed['id']}")
    assert (stored["state"], stored["kind"], stored["replayOf"], stored["progress"]) == (
        "completed", "replay", run_id, 1.0)
    events = sse(await (await clocked.get(f"/api/runs/{replayed['id']}/events")).read())
    assert [what(data) for _, _, data in events] == [what(e["data"]) for e in live["events"]]
    # A replay has a recording too, whose graph is the recorded one.
    again = await get(clocked, f"/api/runs/{replayed['id']}/recording")
    assert again["workflow"] == live["workflow"]
    assert [(e["offsetMs"], e["event"]) for e in again["events"]] == [
        (e["offsetMs"], e["event"]) for e in live["events"]]


async def test_recordings_and_replays_survive_a_restart(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, storage="sqlite")
    clock = ManualClock(start=T0)
    first: Client = await aiohttp_client(create_app(settings, clock=clock))
    _, recording = await recorded_chain(first, clock)
    info = await import_recording(first, recording)
    # A replay under way when the server shuts down ends failed, interrupted, as a run does.
    start = clock.now()
    cut = await replay(first, f"/api/recordings/{info['id']}/replay", speed=4)
    await clock.advance_to(start + 0.3)
    await first.close()

    later = ManualClock(start=T0 + 60)
    second: Client = await aiohttp_client(create_app(settings, clock=later))
    ended = await get(second, f"/api/runs/{cut['id']}")
    assert (ended["state"], ended["error"]["code"]) == ("failed", "interrupted")
    assert ended["finishedAt"] == iso_ms(start + 0.3)  # ended by the shutdown itself
    assert {n: v["state"] for n, v in ended["nodes"].items()} == {"t": "completed", "h": "stopped", "o": "skipped"}
    assert ended["nodes"]["h"]["progress"] == 0.5
    events = sse(await (await second.get(f"/api/runs/{cut['id']}/events")).read())
    assert [name for _, name, _ in events][9:] == ["node.stopped", "node.skipped", "run.failed"]
    # The recording and the run are still there to replay.
    assert await get(second, f"/api/runs/{recording['run']['id']}/recording") == recording
    for url in (f"/api/recordings/{info['id']}/replay", f"/api/runs/{recording['run']['id']}/replay"):
        run = await replay(second, url, speed=100)
        await later.run_until_idle()
        async with asyncio.timeout(WAIT):
            body = await (await second.get(f"/api/runs/{run['id']}/events")).read()
        assert [what(data) for _, _, data in sse(body)] == [what(e["data"]) for e in recording["events"]]


async def test_a_replay_lost_in_a_crash_ends_interrupted_at_the_next_start(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage="sqlite")
    clock = ManualClock(start=T0)
    app = create_app(settings, clock=clock)
    first: Client = await aiohttp_client(app)
    _, recording = await recorded_chain(first, clock)
    start = clock.now()
    run = await replay(first, f"/api/runs/{recording['run']['id']}/replay", speed=4)
    await clock.advance_to(start + 0.3)
    engine = app[ENGINE]
    await engine.flush()
    engine.sink = DeadSink()  # killed: nothing written from here on lands
    await first.close()

    second: Client = await aiohttp_client(create_app(settings, clock=ManualClock(start=T0 + 60)))
    lost = await get(second, f"/api/runs/{run['id']}")
    assert (lost["state"], lost["kind"], lost["error"]["code"]) == ("failed", "replay", "interrupted")
    assert lost["finishedAt"] == iso_ms(T0 + 60)
    assert {n: v["state"] for n, v in lost["nodes"].items()} == {"t": "completed", "h": "stopped", "o": "skipped"}


# --- controls ------------------------------------------------------------------------------


async def test_a_replay_takes_no_commands(clocked: Client, clock: ManualClock) -> None:
    wf_id, recording = await recorded_chain(clocked, clock)
    run = await replay(clocked, f"/api/runs/{recording['run']['id']}/replay", speed=4)
    for action in ("pause", "resume", "stop"):
        body = await problem(await clocked.post(f"/api/runs/{run['id']}/{action}"), 409)
        assert body["detail"] == READ_ONLY
        # It is its workflow's latest run, so the workflow's controls reach it too.
        assert (await problem(await clocked.post(f"/api/workflows/{wf_id}/{action}"), 409))["detail"] == READ_ONLY
    assert (await get(clocked, f"/api/runs/{run['id']}"))["state"] == "running"
    await clock.run_until_idle()
    assert (await get(clocked, f"/api/runs/{run['id']}"))["state"] == "completed"
    await problem(await clocked.post(f"/api/runs/{run['id']}/stop"), 409)


@pytest.mark.parametrize("body", [{"speed": 0}, {"speed": 1e7}, {"speed": "fast"}, {"speedy": 2}])
async def test_a_replay_speed_has_executes_bounds(clocked: Client, clock: ManualClock, body: dict[str, Any]) -> None:
    _, recording = await recorded_chain(clocked, clock)
    resp = await clocked.post(f"/api/runs/{recording['run']['id']}/replay", json=body)
    assert (await problem(resp, 422))["errors"][0]["loc"] == ["body", next(iter(body))]


async def test_a_replay_without_a_body_plays_at_the_default_speed(clocked: Client, clock: ManualClock) -> None:
    _, recording = await recorded_chain(clocked, clock)
    resp = await clocked.post(f"/api/runs/{recording['run']['id']}/replay")
    assert resp.status == 202
    assert (await resp.json())["speed"] == 1.0


# --- bad recordings ----------------------------------------------------------------------------


def _set(path: list[Any], value: Any) -> Any:
    def change(recording: dict[str, Any]) -> None:
        target = recording
        for key in path[:-1]:
            target = target[key]
        if value is _DROP:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return change


_DROP = object()


def _swap(i: int, j: int) -> Any:
    def change(recording: dict[str, Any]) -> None:
        events = recording["events"]
        events[i], events[j] = events[j], events[i]
    return change


def _add_cycle(recording: dict[str, Any]) -> None:
    recording["workflow"]["connections"].append({"id": "loop", "source": "h", "target": "h",
                                                 "sourceHandle": "out", "targetHandle": "in"})


def _start_with_the_second(recording: dict[str, Any]) -> None:
    recording["events"][0] = recording["events"][1]


def _drop_last(recording: dict[str, Any]) -> None:
    recording["events"].pop()


def _add_run_node(recording: dict[str, Any]) -> None:
    recording["run"]["nodes"]["x"] = recording["run"]["nodes"]["t"]


BAD = {
    "a newer format": (_set(["formatVersion"], 2), ["body", "formatVersion"]),
    "no format": (_set(["formatVersion"], _DROP), ["body", "formatVersion"]),
    "an unknown field": (_set(["comment"], "hi"), ["body", "comment"]),
    "a run still running": (_set(["run", "state"], "running"), ["body", "run", "state"]),
    "an unknown node type": (_set(["workflow", "nodes", 1, "type"], "nope"), ["body", "workflow", "nodes", 1, "type"]),
    "a cycle": (_add_cycle, ["body", "workflow", "connections"]),
    "another workflow": (_set(["run", "workflowId"], "wf_other"), ["body", "run", "workflowId"]),
    "another version": (_set(["run", "workflowVersion"], 2), ["body", "run", "workflowVersion"]),
    "a run node the graph lacks": (_add_run_node, ["body", "run", "nodes", "x"]),
    "a graph node the run lacks": (_set(["run", "nodes", "o"], _DROP), ["body", "run", "nodes"]),
    "events swapped": (_swap(7, 8), ["body", "events", 7, "data", "seq"]),
    "a seq skipped": (_set(["events", 4, "data", "seq"], 6), ["body", "events", 4, "data", "seq"]),
    "an offset going back": (_set(["events", 8, "offsetMs"], 500.0), ["body", "events", 8, "offsetMs"]),
    "an unknown node": (_set(["events", 5, "data", "nodeId"], "zzz"), ["body", "events", 5, "data", "nodeId"]),
    "an unknown connection": (_set(["events", 11, "data", "connectionId"], "zzz"),
                              ["body", "events", 11, "data", "connectionId"]),
    "an edge between other nodes": (_set(["events", 4, "data", "target"], "o"),
                                    ["body", "events", 4, "data", "target"]),
    "another run's event": (_set(["events", 9, "data", "runId"], "run_other"), ["body", "events", 9, "data", "runId"]),
    "a name that is not its data's": (_set(["events", 3, "event"], "node.failed"), ["body", "events", 3, "event"]),
    "an event without its ts": (_set(["events", 2, "data", "ts"], _DROP), ["body", "events", 2, "data", "ts"]),
    "no run.started first": (_start_with_the_second, ["body", "events", 0, "event"]),
    "no end": (_drop_last, ["body", "events", 14, "event"]),
    "an end that is not the run's": (_set(["run", "state"], "stopped"), ["body", "events", 15, "event"]),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_a_bad_recording_is_refused_at_its_first_bad_field(
    clocked: Client, clock: ManualClock, case: str
) -> None:
    _, recording = await recorded_chain(clocked, clock)
    change, loc = BAD[case]
    bad = copy.deepcopy(recording)
    change(bad)
    body = await problem(await clocked.post("/api/recordings", json=bad), 422)
    assert [e["loc"] for e in body["errors"]] == [loc]


async def test_a_newer_format_is_refused_whatever_else_it_holds(clocked: Client) -> None:
    body = await problem(await clocked.post("/api/recordings", json={"formatVersion": 2, "frames": []}), 422)
    assert body["errors"] == [{"loc": ["body", "formatVersion"], "msg": "format 2 is newer than this server reads: "
                                                                       "upgrade Flowstage (it reads format 1)"}]


async def test_a_recording_over_max_request_bytes_is_413(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    clock = ManualClock(start=T0)
    client: Client = await aiohttp_client(create_app(make_settings(tmp_path, max_request_bytes=4096), clock=clock))
    _, recording = await recorded_chain(client, clock)
    raw = json.dumps(recording).encode()
    assert len(raw) > 4096
    resp = await client.post("/api/recordings", data=raw, headers={"Content-Type": "application/json"})
    assert (await problem(resp, 413))["type"] == "urn:flowstage:problem:payload-too-large"
