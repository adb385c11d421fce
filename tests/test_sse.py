"""Server-Sent Events on the wire: the exact bytes of a run's stream, its headers, resuming with
Last-Event-ID (header or ?lastEventId) mid-run, after the run ended, after it left memory and
after a restart; odd ids; the workflow stream; the multiplexed /api/events with filters,
resumption and gap notices; a stalled subscriber beside a reading one; 500 subscribers; pings;
metrics; and shutdown with streams open.

Simulated time is a ManualClock; only SSE batching (a few ms), the hub's sweep and pings use
real time. A test never sleeps in the hope that something happened: it waits for a state it can
see (`until`), and a wait that lasts `WAIT` seconds fails the test as hung."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse, ClientSession, TCPConnector, web
from aiohttp.test_utils import TestClient, TestServer
from conftest import ClientFactory, make_settings

from flowstage.actors.clock import ManualClock
from flowstage.actors.eventlog import EventLog
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE, METRICS, SSE
from flowstage.server.sse import EventHub

Client = TestClient[Any, web.Application]
Frame = dict[str, str]

START = 1_790_000_000.0
TERMINAL = {"run.completed", "run.failed", "run.stopped"}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse(body: bytes, *, pings: list[str] | None = None) -> list[Frame]:
    """Strict SSE parsing: every block is either comments only or exactly `id`, `event`, `data`
    in that order (a gap notice on a workflow stream has no id); LF line ends only."""
    assert b"\r" not in body
    text = body.decode()
    assert text == "" or text.endswith("\n\n"), text[-200:]
    frames: list[Frame] = []
    for block in text[:-2].split("\n\n") if text else []:
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            if pings is not None:
                pings.extend(lines)
            continue
        fields = [line.split(": ", 1) for line in lines]
        names = [f[0] for f in fields]
        assert names in (["id", "event", "data"], ["event", "data"]), block
        frames.append(dict(fields))
    return frames


def run_events_only(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f["event"] != "stream.gap"]


# How long a wait for a state may last before the test fails as hung. Generous (a loaded
# 2-core CI box), and never what a test asserts.
WAIT = 10.0


async def read_until(resp: ClientResponse, done: Callable[[list[Frame]], bool],
                     timeout: float = WAIT) -> tuple[bytes, list[Frame]]:
    """Read whole messages until `done(frames)` holds (the stream stays open)."""
    body = b""
    async with asyncio.timeout(timeout):
        while True:
            complete = body[:body.rfind(b"\n\n") + 2] if b"\n\n" in body else b""
            frames = parse(complete)
            if done(frames):
                return complete, frames
            chunk = await resp.content.readany()
            assert chunk, "the stream ended early"
            body += chunk


async def read_all(resp: ClientResponse, timeout: float = WAIT) -> bytes:
    async with asyncio.timeout(timeout):
        return await resp.read()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition()` holds, checking every few ms; fail after WAIT s."""
    try:
        async with asyncio.timeout(WAIT):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"still waiting after {WAIT:g} s: {what}") from None


async def until_all_live(hub: EventHub, count: int) -> None:
    """Every subscriber connected and caught up (waiting for events), so that what comes next
    is counted as lag: a subscriber that has never caught up is only subject to the write
    timeout."""
    await until(lambda: hub.subscriber_count() >= count and hub.waiting_count() == hub.subscriber_count(),
                f"{count} subscribers waiting for events")


async def until_flushed(hub: EventHub) -> None:
    """The hub's batch timer (`sse_batch_ms`, real time) has fired for every event so far:
    every subscriber concerned was woken."""
    await until(lambda: hub.notified == hub.head, "the hub's batch flush")


def sample(app: web.Application, name: str, stream: str) -> float:
    """A Prometheus sample of the app's registry, labelled by stream kind (0 if absent)."""
    return app[METRICS].registry.get_sample_value(name, {"stream": stream}) or 0.0


def two_nodes(payload: Any = None) -> dict[str, Any]:
    config = {} if payload is None else {"payload": payload}
    return {
        "name": "Two nodes",
        "nodes": [
            {"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0},
             "data": {"config": config}},
            {"id": "o", "type": "output", "position": {"x": 200, "y": 0}},
        ],
        "connections": [{"id": "c1", "source": "t", "target": "o"}],
    }


def with_delay(ms: int = 1000) -> dict[str, Any]:
    """trigger (20 ms) -> delay -> output (5 ms): events spread over simulated time."""
    return {
        "name": "Slow",
        "nodes": [
            {"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}},
            {"id": "d", "type": "delay", "position": {"x": 200, "y": 0},
             "data": {"config": {"ms": ms}}},
            {"id": "o", "type": "output", "position": {"x": 400, "y": 0}},
        ],
        "connections": [{"id": "c1", "source": "t", "target": "d"},
                        {"id": "c2", "source": "d", "target": "o"}],
    }


class Env:
    def __init__(self, client: Client, clock: ManualClock) -> None:
        self.client = client
        self.clock = clock
        self.app = client.app
        self.kept: dict[str, EventLog] = {}

    async def workflow(self, body: dict[str, Any]) -> str:
        resp = await self.client.post("/api/workflows", json=body)
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])

    async def execute(self, workflow_id: str, **body: Any) -> dict[str, Any]:
        resp = await self.client.post(f"/api/workflows/{workflow_id}/execute", json={"seed": 7, **body})
        assert resp.status == 202, await resp.text()
        return dict(await resp.json())

    async def finish(self) -> None:
        await self.clock.run_until_idle()

    def log(self, run_id: str) -> list[tuple[int, str, bytes]]:
        event_log = self.app[ENGINE].events(run_id) or self.kept.get(run_id)
        assert event_log is not None
        return event_log.events_after(0)

    def keep(self, run_id: str) -> None:
        """Hold on to a run's log, to compare with once the engine let go of it."""
        event_log = self.app[ENGINE].events(run_id)
        assert event_log is not None
        self.kept[run_id] = event_log

    def expected(self, run_id: str, after: int = 0) -> bytes:
        return b"".join(b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, name.encode(), data)
                        for seq, name, data in self.log(run_id) if seq > after)


MakeEnv = Callable[..., Awaitable[Env]]  # make_env(**setting overrides)


@pytest.fixture
def make_env(aiohttp_client: ClientFactory, tmp_path: Path) -> MakeEnv:
    async def make(**overrides: Any) -> Env:
        clock = ManualClock(start=START)
        settings = make_settings(tmp_path, **overrides)
        client: Client = await aiohttp_client(create_app(settings, clock=clock))
        return Env(client, clock)

    return make


@pytest.fixture
async def env(make_env: MakeEnv) -> Env:
    return await make_env()


# --- one run -------------------------------------------------------------------------------


async def test_a_short_runs_stream_is_exactly_these_bytes(env: Env) -> None:
    wf = await env.workflow(two_nodes({"n": 1}))
    run = await env.execute(wf)
    resp = await env.client.get(f"/api/runs/{run['id']}/events")
    assert resp.status == 200
    await env.finish()
    body = await read_all(resp)

    # Every byte, built from what the run API reports about the same run.
    r = await (await env.client.get(f"/api/runs/{run['id']}")).json()
    flow = await (await env.client.get(f"/api/workflows/{wf}/dataflow")).json()
    (edge,) = flow["edges"]
    t, o = r["nodes"]["t"], r["nodes"]["o"]
    ids = {"runId": r["id"], "workflowId": wf}
    events: list[tuple[str, dict[str, Any]]] = [
        ("run.started", {"ts": r["startedAt"], "workflowVersion": 1, "seed": 7, "speed": 1.0}),
        ("node.queued", {"ts": r["startedAt"], "nodeId": "t"}),
        ("node.started", {"ts": t["startedAt"], "nodeId": "t"}),
        ("node.completed", {"ts": t["finishedAt"], "nodeId": "t", "output": t["output"]}),
        ("edge.data", {"ts": t["finishedAt"], "connectionId": "c1", "source": "t", "target": "o",
                       "items": edge["items"], "bytes": edge["bytes"]}),
        ("node.queued", {"ts": t["finishedAt"], "nodeId": "o"}),
        ("node.started", {"ts": o["startedAt"], "nodeId": "o"}),
        ("node.completed", {"ts": o["finishedAt"], "nodeId": "o", "output": o["output"]}),
        ("run.completed", {"ts": r["finishedAt"]}),
    ]
    expected = ""
    for seq, (name, fields) in enumerate(events, 1):
        ts = fields.pop("ts")
        data = {"event": name, **ids, "seq": seq, "ts": ts, **fields}
        expected += f"id: {seq}\nevent: {name}\ndata: {dumps(data)}\n\n"
    assert body.decode() == expected
    assert r["finishedAt"] == "2026-09-21T14:13:20.025Z"  # 20 ms trigger + 5 ms output


async def test_the_stream_has_sse_headers_and_is_never_compressed(env: Env) -> None:
    run = await env.execute(await env.workflow(two_nodes()))
    resp = await env.client.get(f"/api/runs/{run['id']}/events",
                                headers={"Accept-Encoding": "gzip, deflate, br"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in resp.headers
    await env.finish()
    assert await read_all(resp) == env.expected(run["id"])


async def test_head_answers_the_headers_without_a_stream(env: Env) -> None:
    run = await env.execute(await env.workflow(two_nodes()))
    resp = await env.client.head(f"/api/runs/{run['id']}/events")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert await read_all(resp) == b""
    assert (await env.client.head("/api/runs/run_nope/events")).status == 404


async def test_an_unknown_run_is_a_404_problem(env: Env) -> None:
    resp = await env.client.get("/api/runs/run_nope/events", headers={"Last-Event-ID": "3"})
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["status"] == 404


@pytest.mark.parametrize("how", ["header", "query"])
async def test_reconnecting_mid_run_gets_every_later_event_once(env: Env, how: str) -> None:
    run = await env.execute(await env.workflow(with_delay()))
    url = f"/api/runs/{run['id']}/events"
    first = await env.client.get(url)
    await env.clock.advance(0.3)  # trigger done, the delay a quarter through
    part, frames = await read_until(first, lambda fs: len(fs) >= 6)
    first.close()  # the client goes away mid-run
    await env.clock.advance(0.5)  # events it misses while away
    last = frames[-1]["id"]
    if how == "header":
        second = await env.client.get(url, headers={"Last-Event-ID": last})
    else:
        second = await env.client.get(f"{url}?lastEventId={last}")
    await env.finish()
    rest = await read_all(second)
    assert part + rest == env.expected(run["id"])
    ids = [int(f["id"]) for f in parse(part + rest)]
    assert ids == list(range(1, len(env.log(run["id"])) + 1))
    assert parse(rest)[-1]["event"] == "run.completed"


async def test_the_header_wins_over_the_query_parameter(env: Env) -> None:
    # A browser keeps the URL's ?lastEventId and adds Last-Event-ID on each reconnect.
    run = await env.execute(await env.workflow(two_nodes()))
    await env.finish()
    resp = await env.client.get(f"/api/runs/{run['id']}/events?lastEventId=2",
                                headers={"Last-Event-ID": "6"})
    assert await read_all(resp) == env.expected(run["id"], after=6)
    resp = await env.client.get(f"/api/runs/{run['id']}/events?lastEventId=6",
                                headers={"Last-Event-ID": "bogus"})
    assert await read_all(resp) == env.expected(run["id"], after=6)


async def test_a_finished_run_replays_and_closes_and_resumes_after_any_id(env: Env) -> None:
    run = await env.execute(await env.workflow(two_nodes()))
    await env.finish()
    url = f"/api/runs/{run['id']}/events"
    full = await read_all(await env.client.get(url))
    assert full == env.expected(run["id"])
    assert [f["event"] for f in parse(full)][-1] == "run.completed"
    for after in range(10):
        resp = await env.client.get(url, headers={"Last-Event-ID": str(after)})
        assert await read_all(resp) == env.expected(run["id"], after=after)


@pytest.mark.parametrize("bad", ["abc", "-1", "", " ", "1.5", "0x10", "٣", "1e3"])
async def test_a_malformed_id_is_ignored_and_the_run_replays_from_the_start(env: Env, bad: str) -> None:
    run = await env.execute(await env.workflow(two_nodes()))
    await env.finish()
    url = f"/api/runs/{run['id']}/events"
    assert await read_all(await env.client.get(url, headers={"Last-Event-ID": bad})) \
        == env.expected(run["id"])
    assert await read_all(await env.client.get(url, params={"lastEventId": bad})) \
        == env.expected(run["id"])


async def test_an_id_beyond_the_last_event_closes_a_finished_run_and_follows_a_live_one(env: Env) -> None:
    wf = await env.workflow(with_delay())
    done = await env.execute(wf)
    await env.finish()
    for big in ("1000", "99999999999999999999999999"):
        resp = await env.client.get(f"/api/runs/{done['id']}/events", headers={"Last-Event-ID": big})
        assert resp.status == 200
        assert await read_all(resp) == b""

    live = await env.execute(wf)
    resp = await env.client.get(f"/api/runs/{live['id']}/events", headers={"Last-Event-ID": "500"})
    seen = len(env.log(live["id"]))  # what existed when it connected
    await env.finish()
    assert await read_all(resp) == env.expected(live["id"], after=seen)


async def test_a_run_that_left_memory_replays_from_the_store(env: Env) -> None:
    engine = env.app[ENGINE]
    engine.config = msgspec.structs.replace(engine.config, retain_finished=0)
    run = await env.execute(await env.workflow(two_nodes()))
    env.keep(run["id"])
    resp = await env.client.get(f"/api/runs/{run['id']}/events")  # connected while live
    await env.finish()
    expected = env.expected(run["id"])
    async with asyncio.timeout(WAIT):  # persisted, then evicted
        while engine.events(run["id"]) is not None:
            await engine.flush()
            await env.clock.advance(0.1)
    assert await read_all(resp) == expected  # the open stream kept its log
    url = f"/api/runs/{run['id']}/events"
    assert await read_all(await env.client.get(url)) == expected
    tail = expected[expected.index(b"id: 5\n"):]
    assert await read_all(await env.client.get(url, headers={"Last-Event-ID": "4"})) == tail
    assert await read_all(await env.client.get(f"{url}?lastEventId=9")) == b""


async def test_reconnecting_after_a_restart_replays_from_the_database(
        aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", storage="sqlite")
    clock = ManualClock(start=START)
    first: Client = await aiohttp_client(create_app(settings, clock=clock))
    env = Env(first, clock)
    run = await env.execute(await env.workflow(two_nodes()))
    resp = await first.get(f"/api/runs/{run['id']}/events")
    await env.clock.advance(0.021)  # the trigger completed, the output has not
    part, seen = await read_until(resp, lambda fs: len(fs) >= 4)
    await first.close()  # the server stops mid-run: the run ends failed (interrupted)

    second: Client = await aiohttp_client(create_app(settings, clock=ManualClock(start=START + 60)))
    resp = await second.get(f"/api/runs/{run['id']}/events", headers={"Last-Event-ID": seen[-1]["id"]})
    rest = await read_all(resp)
    frames = parse(part + rest)
    assert [int(f["id"]) for f in frames] == list(range(1, len(frames) + 1))
    assert all(json.loads(f["data"])["seq"] == int(f["id"]) for f in frames)
    assert frames[-1]["event"] == "run.failed"
    assert json.loads(frames[-1]["data"])["error"]["code"] == "interrupted"


# --- the workflow stream --------------------------------------------------------------------


async def test_the_workflow_stream_carries_every_run_started_while_open(env: Env) -> None:
    wf = await env.workflow(two_nodes())
    other = await env.workflow(two_nodes())
    resp = await env.client.get(f"/api/workflows/{wf}/events", headers={"Last-Event-ID": "3"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    a = await env.execute(wf)
    b = await env.execute(wf)
    await env.execute(other)  # not this workflow's
    await env.finish()
    _, frames = await read_until(resp, lambda fs: sum(f["event"] == "run.completed" for f in fs) == 2)
    # A reconnect (it sent an id) is told first that this stream cannot replay what it missed.
    gap, *frames = frames
    assert gap == {"event": "stream.gap", "data": dumps(
        {"event": "stream.gap", "reason": "not-resumable", "lastEventId": None, "resumedAt": None})}
    by_run: dict[str, list[Frame]] = {a["id"]: [], b["id"]: []}
    for f in frames:
        data = json.loads(f["data"])
        assert data["workflowId"] == wf
        assert int(f["id"]) == data["seq"]
        by_run[data["runId"]].append(f)
    for run in (a, b):
        assert b"".join(b"id: %s\nevent: %s\ndata: %s\n\n" % (f["id"].encode(), f["event"].encode(),
                                                              f["data"].encode())
                        for f in by_run[run["id"]]) == env.expected(run["id"])
    resp.close()


async def test_the_workflow_stream_of_an_unknown_workflow_is_a_404(env: Env) -> None:
    resp = await env.client.get("/api/workflows/wf_nope/events")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


# --- /api/events ----------------------------------------------------------------------------


async def test_all_events_filters_by_run_and_workflow(env: Env) -> None:
    wf1, wf2, wf3 = [await env.workflow(two_nodes()) for _ in range(3)]
    everything = await env.client.get("/api/events")
    by_wf = await env.client.get("/api/events", params=[("workflowId", wf1), ("workflowId", wf2)])
    r1 = await env.execute(wf1)
    r2 = await env.execute(wf2)
    r3 = await env.execute(wf3)
    by_run = await env.client.get("/api/events", params={"runId": r3["id"], "lastEventId": "0"})
    await env.finish()
    n = len(env.log(r1["id"]))
    _, all_frames = await read_until(everything, lambda fs: len(fs) == 3 * n)
    _, wf_frames = await read_until(by_wf, lambda fs: len(fs) == 2 * n)
    _, run_frames = await read_until(by_run, lambda fs: len(fs) == n)
    positions = [int(f["id"]) for f in all_frames]
    assert positions == list(range(positions[0], positions[0] + 3 * n))
    datas = [json.loads(f["data"]) for f in all_frames]
    assert {d["runId"] for d in datas} == {r1["id"], r2["id"], r3["id"]}
    for run in (r1, r2, r3):  # each run's events in seq order, exactly its log
        mine = [f for f in all_frames if json.loads(f["data"])["runId"] == run["id"]]
        assert [f["data"].encode() for f in mine] == [d for _, _, d in env.log(run["id"])]
    assert [f for f in all_frames if json.loads(f["data"])["workflowId"] in (wf1, wf2)] == wf_frames
    assert [f for f in all_frames if json.loads(f["data"])["runId"] == r3["id"]] == run_frames
    for resp in (everything, by_wf, by_run):
        resp.close()


async def test_all_events_resumes_after_a_position(env: Env) -> None:
    wf = await env.workflow(with_delay())
    resp = await env.client.get("/api/events")
    run = await env.execute(wf)
    await env.clock.advance(0.3)
    _, first = await read_until(resp, lambda fs: len(fs) >= 5)
    resp.close()
    await env.finish()
    last = first[-1]["id"]
    again = await env.client.get("/api/events", headers={"Last-Event-ID": last})
    total = len(env.log(run["id"]))
    _, rest = await read_until(again, lambda fs: len(first) + len(fs) == total)
    frames = first + rest
    assert [f["data"].encode() for f in frames] == [d for _, _, d in env.log(run["id"])]
    assert [int(f["id"]) for f in frames] == list(range(int(frames[0]["id"]), int(frames[0]["id"]) + total))
    again.close()
    # Without an id the stream is live only: nothing of the past.
    live = await env.client.get("/api/events")
    run2 = await env.execute(wf)
    await env.finish()
    _, frames = await read_until(live, lambda fs: len(fs) == total)
    assert {json.loads(f["data"])["runId"] for f in frames} == {run2["id"]}
    live.close()


async def test_an_evicted_or_unknown_position_sends_a_gap_event_first(make_env: MakeEnv) -> None:
    env: Env = await make_env(event_ring_size=4)
    run = await env.execute(await env.workflow(two_nodes()))
    await env.finish()  # 9 events, positions 1..9; the ring keeps 6..9
    resp = await env.client.get("/api/events", headers={"Last-Event-ID": "2"})
    _, frames = await read_until(resp, lambda fs: len(fs) == 5)
    gap = frames[0]
    assert gap["event"] == "stream.gap" and gap["id"] == "5"
    assert json.loads(gap["data"]) == {"event": "stream.gap", "reason": "evicted",
                                       "lastEventId": 2, "resumedAt": 6}
    assert [f["id"] for f in frames[1:]] == ["6", "7", "8", "9"]
    assert [f["data"].encode() for f in frames[1:]] == [d for _, _, d in env.log(run["id"])][5:]
    resp.close()

    resp = await env.client.get("/api/events", params={"lastEventId": "5"})  # just in the ring
    _, frames = await read_until(resp, lambda fs: len(fs) == 4)
    assert [f["id"] for f in frames] == ["6", "7", "8", "9"]
    resp.close()


async def test_an_id_newer_than_anything_sent_reports_a_gap_and_goes_live(env: Env) -> None:
    wf = await env.workflow(two_nodes())
    await env.execute(wf)
    await env.finish()  # positions 1..9
    resp = await env.client.get("/api/events", headers={"Last-Event-ID": "12345"})  # e.g. a restart
    _, frames = await read_until(resp, lambda fs: len(fs) == 1)
    assert frames[0]["id"] == "9"
    assert json.loads(frames[0]["data"]) == {"event": "stream.gap", "reason": "unknown",
                                             "lastEventId": 12345, "resumedAt": 10}
    run2 = await env.execute(wf)
    await env.finish()
    _, frames = await read_until(resp, lambda fs: len(fs) == 9)
    assert [f["id"] for f in frames] == [str(p) for p in range(10, 19)]
    assert [f["data"].encode() for f in frames] == [d for _, _, d in env.log(run2["id"])]
    resp.close()


async def test_a_filtered_stream_idle_while_the_ring_turns_over_reports_no_gap(
        make_env: MakeEnv) -> None:
    env: Env = await make_env(event_ring_size=12)  # holds one run (9 events), not four
    quiet, busy = await env.workflow(two_nodes()), await env.workflow(two_nodes())
    resp = await env.client.get("/api/events", params={"workflowId": quiet})
    hub = env.app[SSE]
    await until_all_live(hub, 1)  # idle, waiting for its workflow's events
    for _ in range(3):  # 27 events of another workflow through the ring
        await env.execute(busy)
        await env.finish()
        # The ring moves an idle filtered subscriber on only past events it was woken for;
        # this test is about events that were, so each run's batch is flushed before the next.
        await until_flushed(hub)
    run = await env.execute(quiet)
    await env.finish()
    _, frames = await read_until(resp, lambda fs: any(f["event"] == "run.completed" for f in fs))
    assert frames[0]["event"] == "run.started"
    assert {json.loads(f["data"])["runId"] for f in frames} == {run["id"]}
    resp.close()


async def test_a_filtered_stream_opened_after_a_test_mode_reset_gets_the_next_runs_events(
        make_env: MakeEnv) -> None:
    """A reset forgets the ring, and positions go on from where they were: the first events
    after it wake a filtered stream like any others (none is taken as already announced). A
    long batch: the whole run is in the first wake-up after the reset."""
    env = await make_env(test_mode=True, sse_batch_ms=300)
    hub = env.app[SSE]
    wf = await env.workflow(two_nodes())
    for _ in range(2):
        await env.execute(wf)
        await env.finish()
    assert hub.head == 18
    assert (await env.client.post("/__flowstage/reset")).status == 200
    wf = await env.workflow(two_nodes())
    resp = await env.client.get("/api/events", params={"workflowId": wf})
    await until_all_live(hub, 1)
    run = await env.execute(wf)
    await env.finish()
    _, frames = await read_until(resp, lambda frames: len(frames) == 9)
    assert [int(f["id"]) for f in frames] == list(range(19, 28))
    assert [f["data"].encode() for f in frames] == [data for _, _, data in env.log(run["id"])]


async def test_too_many_filters_is_a_422(env: Env) -> None:
    resp = await env.client.get("/api/events", params=[("runId", f"r{i}") for i in range(101)])
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"


# --- slow consumers, many consumers, pings, metrics, shutdown ----------------------------


class Stalled:
    """A client that sends one GET and never reads: its receive window is tiny, and the
    server's send buffer for it is kept small, so a few hundred KB fill both."""

    def __init__(self, app: web.Application) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        app.on_response_prepare.append(self._small_send_buffer)

    async def _small_send_buffer(self, request: web.Request, response: web.StreamResponse) -> None:
        # Loopback send buffers grow to megabytes unless set.
        transport = request.transport
        if transport is not None and transport.get_extra_info("peername") == self.sock.getsockname():
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)

    async def get(self, env: Env, url: str) -> None:
        loop = asyncio.get_running_loop()
        server = env.client.server
        await loop.sock_connect(self.sock, (server.host, server.port))
        await loop.sock_sendall(self.sock, f"GET {url} HTTP/1.1\r\nHost: test\r\n\r\n".encode())


async def stalled_env(aiohttp_client: Any, tmp_path: Path, **settings: Any) -> tuple[Env, Stalled]:
    clock = ManualClock(start=START)
    app = create_app(make_settings(tmp_path, **settings), clock=clock)
    stalled = Stalled(app)
    return Env(await aiohttp_client(app), clock), stalled


async def until_cut_off(hub: EventHub) -> None:
    await until(lambda: hub.cut_off >= 1, "a subscriber cut off")


@pytest.mark.parametrize(("path", "settings", "why"), [
    ("/api/runs/{run}/events", {"sse_write_timeout_seconds": 0.2}, "no write progress"),
    ("/api/events?lastEventId=0", {"sse_buffer_events": 20, "sse_write_timeout_seconds": 30}, "events behind"),
])
async def test_a_stalled_subscriber_is_cut_off_and_slows_nobody(
        aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        path: str, settings: dict[str, Any], why: str) -> None:
    caplog.set_level(logging.INFO, logger="flowstage.sse")
    env, stalled = await stalled_env(aiohttp_client, tmp_path, **settings)
    hub = env.app[SSE]
    big = await env.workflow(two_nodes({"blob": "x" * 300_000}))
    run = await env.execute(big)
    url = path.format(run=run["id"])
    await stalled.get(env, url)
    reader = await env.client.get(url)
    await until_all_live(hub, 2)
    # The reader reads all along, as a live client does: it is never the one sitting in a
    # write or behind, however much of a burst the kernel's socket buffers happen to take.
    everything = 36 if path.startswith("/api/events") else 9
    reading = asyncio.create_task(read_until(reader, lambda fs: len(fs) == everything))

    await env.finish()  # the engine never waits for subscribers
    status = env.app[ENGINE].snapshot(run["id"])
    assert status is not None
    assert (status.state, status.finished_at) == ("completed", "2026-09-21T14:13:20.025Z")
    if path.startswith("/api/events"):  # more events while the stalled one is stuck
        small = await env.workflow(two_nodes())
        more = [await env.execute(small) for _ in range(3)]
        await env.finish()
        _, frames = await reading
        for r in (run, *more):  # interleaved, each run whole and in order
            assert [f["data"].encode() for f in frames if r["id"] in f["data"]] == [
                d for _, _, d in env.log(r["id"])]
    else:
        body, _ = await reading
        # The reader got everything, and then the end of the stream.
        assert body + await read_all(reader) == env.expected(run["id"])
    # The sweep runs every second at most: the stalled one is cut off within one or two
    # (the reason logged says which check did it; the write timeout of the second case is 30 s).
    await until_cut_off(hub)
    assert hub.cut_off == 1
    assert why in caplog.text
    stalled.sock.close()
    reader.close()
    await until(lambda: hub.subscriber_count() == 0, "every stream ended")
    kind = "run" if path.startswith("/api/runs") else "all"
    assert sample(env.app, "flowstage_sse_subscribers", kind) == 0


async def test_events_stuck_in_a_write_count_as_behind(
        aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The flaky failure of the test above: every event reached the hub before its one flush,
    so the stalled subscriber collected all of them into one write and got stuck there. Its
    cursor had moved past them, its lag read 0, and only the write timeout could cut it off.

    Here that order is forced: the flush comes a second after the first event, long after the
    last. The write timeout (30 s) cannot be what cuts it off: the wait gives up long before,
    and the reason logged is the lag."""
    caplog.set_level(logging.INFO, logger="flowstage.sse")
    env, stalled = await stalled_env(aiohttp_client, tmp_path, sse_buffer_events=20,
                                     sse_write_timeout_seconds=30, sse_batch_ms=1000)
    hub = env.app[SSE]
    big = await env.workflow(two_nodes({"blob": "x" * 300_000}))
    small = await env.workflow(two_nodes())
    await stalled.get(env, "/api/events")
    await until_all_live(hub, 1)
    for workflow in (big, small, small, small):  # 4 runs of 9 events, more than 20 in all
        await env.execute(workflow)
        await env.finish()
    assert hub.head == 36
    await until_cut_off(hub)
    assert "stream cut off (more than 20 events behind)" in caplog.text
    stalled.sock.close()


async def test_five_hundred_subscribers_get_identical_streams(env: Env) -> None:
    run = await env.execute(await env.workflow(with_delay(500)))
    url = env.client.make_url(f"/api/runs/{run['id']}/events")
    async with ClientSession(connector=TCPConnector(limit=0)) as session:
        responses = await asyncio.gather(*(session.get(url) for _ in range(500)))
        assert all(r.status == 200 for r in responses)
        hub = env.app[SSE]
        await until(lambda: hub.subscriber_count() >= 500, "500 subscribers")
        await env.finish()
        bodies = await asyncio.gather(*(read_all(r, timeout=10) for r in responses))
    expected = env.expected(run["id"])
    assert all(body == expected for body in bodies)
    delivered = sample(env.app, "flowstage_events_delivered_total", "run")
    assert delivered == 500 * len(env.log(run["id"]))


async def test_an_idle_stream_gets_ping_comments(make_env: MakeEnv) -> None:
    env: Env = await make_env(sse_ping_seconds=0.05)
    run = await env.execute(await env.workflow(with_delay()))
    resp = await env.client.get(f"/api/runs/{run['id']}/events")
    body = b""
    async with asyncio.timeout(WAIT):
        while body.count(b": ping\n\n") < 2:
            body += await resp.content.readany()
    pings: list[str] = []
    frames = parse(body, pings=pings)
    assert [int(f["id"]) for f in frames] == [1, 2, 3]
    assert set(pings) == {": ping"}
    await env.finish()
    rest = await read_all(resp)
    assert run_events_only(parse(body + rest)) == parse(env.expected(run["id"]))


async def test_subscriber_gauges_follow_open_streams(env: Env) -> None:
    wf = await env.workflow(with_delay())
    run = await env.execute(wf)
    streams = [await env.client.get(f"/api/runs/{run['id']}/events"),
               await env.client.get(f"/api/workflows/{wf}/events"),
               await env.client.get("/api/events"),
               await env.client.get("/api/events", params={"runId": run["id"]})]

    def gauge(kind: str) -> float:
        return sample(env.app, "flowstage_sse_subscribers", kind)

    await until(lambda: (gauge("run"), gauge("workflow"), gauge("all")) == (1, 1, 2),
                "every stream counted")
    text = await (await env.client.get("/metrics")).text()
    assert re.search(r'flowstage_sse_subscribers\{stream="all"\} 2\.0', text)
    for resp in streams:
        resp.close()
    await env.finish()  # writes to the closed streams fail; the server lets them go
    await until(lambda: (gauge("run"), gauge("workflow"), gauge("all")) == (0, 0, 0),
                "every stream let go")
    assert env.app[SSE].subscriber_count() == 0


@pytest.fixture
async def raw_server(tmp_path: Path) -> AsyncIterator[tuple[TestServer, ManualClock]]:
    clock = ManualClock(start=START)
    server = TestServer(create_app(make_settings(tmp_path), clock=clock))
    await server.start_server()
    try:
        yield server, clock
    finally:
        await server.close()


async def test_shutdown_closes_open_streams_promptly(raw_server: tuple[TestServer, ManualClock],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Shutdown waits at most a grace period for streams to end. Made a minute here, so a stream
    # that did not end by itself (promptly: a few loop turns) keeps close() waiting far beyond
    # the test's wait, whatever the machine's load; no stopwatch is needed.
    monkeypatch.setattr("flowstage.server.sse._SHUTDOWN_GRACE", 60.0)
    server, _ = raw_server
    async with ClientSession() as session:
        wf = await (await session.post(server.make_url("/api/workflows"), json=with_delay())).json()
        run = await (await session.post(server.make_url(f"/api/workflows/{wf['id']}/execute"),
                                        json={})).json()
        streams = [await session.get(server.make_url(path)) for path in (
            f"/api/runs/{run['id']}/events", f"/api/workflows/{wf['id']}/events", "/api/events")]
        hub = server.app[SSE]
        await until(lambda: hub.subscriber_count() >= 3, "3 streams open")
        async with asyncio.timeout(WAIT):  # not the grace: the streams ended by themselves
            await server.close()
        for resp in streams:  # each stream ended cleanly
            body = await read_all(resp)
            parse(body)
        assert hub.subscriber_count() == 0


async def test_the_openapi_document_describes_the_streams_and_their_ids(env: Env) -> None:
    spec = await (await env.client.get("/api/openapi.json")).json()
    described = {}
    for path in ("/api/runs/{runId}/events", "/api/workflows/{id}/events", "/api/events"):
        ok = spec["paths"][path]["get"]["responses"]["200"]
        described[path] = ok["content"]["text/event-stream"]["schema"]["description"]
    assert "`id` = the run's `seq`" in described["/api/runs/{runId}/events"]
    assert "reason not-resumable" in described["/api/workflows/{id}/events"]
    assert "global event position" in described["/api/events"]
    assert "stream.gap" in described["/api/events"]
    names = {p["name"] for p in spec["paths"]["/api/events"]["get"]["parameters"]}
    assert names == {"workflowId", "runId", "lastEventId", "Last-Event-ID"}
