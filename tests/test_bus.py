"""The Redis bus (`bus = "redis"`): two Flowstage processes on one PostgreSQL and one Redis
(real servers, tests/servers.py) serve each other's run events over SSE: `/api/events` through
either numbers every run's events alike, a run's stream through the other process is its
events byte for byte and resumes with `Last-Event-ID`, and an outage of Redis loses and
duplicates nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import ClientFactory, make_settings
from servers import RedisServer, free_port
from test_sse import TERMINAL, Frame, parse, read_all, read_until, until, until_all_live, with_delay

from flowstage.config import Settings
from flowstage.server import sse
from flowstage.server.app import create_app
from flowstage.server.keys import SSE

Client = TestClient[Any, web.Application]


@pytest.fixture
def clustered(tmp_path: Path, postgres_url: str, redis_url: str) -> Settings:
    return make_settings(tmp_path / "shared", storage="postgres", database_url=postgres_url,
                         bus="redis", redis_url=redis_url)


async def worker(aiohttp_client: ClientFactory, settings: Settings) -> Client:
    """An app served on a port known before it starts, which it gives the others to reach it."""
    port = free_port()
    app = create_app(settings, cluster_address=f"127.0.0.1:{port}")
    return cast(Client, await aiohttp_client(TestServer(app, host="127.0.0.1", port=port)))


@pytest.fixture
async def pair(aiohttp_client: ClientFactory, clustered: Settings) -> tuple[Client, Client]:
    """Two apps, as two workers would be: each its own engine, hub and connections."""
    return await worker(aiohttp_client, clustered), await worker(aiohttp_client, clustered)


async def execute(client: Client, workflow: dict[str, Any], speed: float = 20.0) -> str:
    resp = await client.post("/api/workflows", json=workflow)
    assert resp.status == 201, await resp.text()
    wf = (await resp.json())["id"]
    resp = await client.post(f"/api/workflows/{wf}/execute", json={"speed": speed})
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["id"])


def ended(run_ids: set[str]) -> Any:
    def done(frames: list[Frame]) -> bool:
        return {f["data"].split('"runId":"')[1].split('"')[0] for f in frames if f["event"] in TERMINAL} >= run_ids
    return done


def by_run(frames: list[Frame]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for f in frames:
        if f["event"] != "stream.gap":
            run = f["data"].split('"runId":"')[1].split('"')[0]
            seqs.setdefault(run, []).append(int(f["data"].split('"seq":')[1].split(",")[0].rstrip("}")))
    return seqs


async def test_all_events_through_either_worker_has_every_run_with_the_same_ids(pair: tuple[Client, Client]) -> None:
    a, b = pair
    streams = [await a.get("/api/events"), await b.get("/api/events")]
    runs = {await execute(a, with_delay(200)), await execute(b, with_delay(200))}
    seen = [(await read_until(resp, ended(runs)))[1] for resp in streams]
    for resp in streams:
        resp.close()
    ids = [[int(f["id"]) for f in frames] for frames in seen]
    assert ids[0] == ids[1]  # one numbering, whichever process answers
    assert ids[0] == list(range(ids[0][0], ids[0][0] + len(ids[0])))
    assert [f["data"] for f in seen[0]] == [f["data"] for f in seen[1]]
    for seqs in by_run(seen[0]).values():
        assert seqs == list(range(1, len(seqs) + 1))
    assert set(by_run(seen[0])) == runs


async def test_a_run_streams_through_the_other_worker_and_resumes_there(pair: tuple[Client, Client]) -> None:
    a, b = pair
    run = await execute(a, with_delay(1500), speed=5.0)
    first = await b.get(f"/api/runs/{run}/events")
    assert first.status == 200
    _, head = await read_until(first, lambda frames: len(frames) >= 3)
    first.close()
    assert [int(f["id"]) for f in head[:3]] == [1, 2, 3]
    rest = await b.get(f"/api/runs/{run}/events", headers={"Last-Event-ID": "3"})
    tail = parse(await read_all(rest))
    assert tail[-1]["event"] == "run.completed"
    assert [int(f["id"]) for f in tail] == list(range(4, len(tail) + 4))
    # The same events, byte for byte, as the run's own process serves them.
    own = parse(await read_all(await a.get(f"/api/runs/{run}/events")))
    assert own == head[:3] + tail


async def test_an_unknown_run_is_a_404_through_any_worker(pair: tuple[Client, Client]) -> None:
    resp = await pair[1].get("/api/runs/run_0000000000000000000000/events")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


async def test_a_redis_outage_of_3_s_mid_run_loses_and_duplicates_no_event(
    pair: tuple[Client, Client], redis_server: RedisServer
) -> None:
    a, b = pair
    watching = await b.get("/api/events")
    bus = a.app[SSE].bus
    assert bus is not None
    run = await execute(a, with_delay(4000), speed=1.0)
    async with asyncio.timeout(10):
        while bus.published < 2:  # the run's first events are in Redis
            await asyncio.sleep(0.01)
    redis_server.stop()
    back_at = time.monotonic() + 3  # the outage: Redis away for 3 s mid-run
    try:
        later = await execute(a, with_delay(60_000), speed=1.0)  # started while Redis is away
        await until(lambda: not bus.available, "the bus to find Redis gone")
        while time.monotonic() < back_at:  # the runs go on in memory meanwhile
            await asyncio.sleep(0.05)
        assert not bus.available and bus.queued > 0
    finally:
        redis_server.start()
    _, frames = await read_until(watching, ended({run}), timeout=20)
    watching.close()
    ids = [int(f["id"]) for f in frames]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    seqs = by_run(frames)[run]
    assert seqs == list(range(1, len(seqs) + 1))
    through_b = parse(await read_all(await b.get(f"/api/runs/{run}/events")))
    own = parse(await read_all(await a.get(f"/api/runs/{run}/events")))
    assert through_b == own and own[-1]["event"] == "run.completed"
    # Its owner was recorded once Redis was back: the other worker reaches it.
    async with asyncio.timeout(10):
        while (paused := await b.post(f"/api/runs/{later}/pause")).status != 200:
            assert paused.status == 503, await paused.text()  # its owner not known yet
            await asyncio.sleep(0.1)
    assert (await (await a.get(f"/api/runs/{later}")).json())["state"] == "paused"


def test_serve_with_redis_unreachable_exits_2_naming_it_without_its_password(
    tmp_path: Path, postgres_url: str
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    done = subprocess.run([sys.executable, "-m", "flowstage", "serve", "--port", "0", "--storage", "postgres",
                           "--database-url", postgres_url, "--bus", "redis", "--redis-url", url,
                           "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    redacted = url.replace("s3cret", "***")
    assert done.stderr.startswith(f"flowstage: Redis at {redacted} is unreachable"), done.stderr
    assert done.stderr.count("\n") == 1 and "s3cret" not in done.stderr


async def test_a_run_is_controlled_through_any_worker_with_the_same_answers(pair: tuple[Client, Client]) -> None:
    a, b = pair
    run = await execute(a, with_delay(60_000), speed=1.0)
    paused = await b.post(f"/api/runs/{run}/pause")
    assert paused.status == 200, await paused.text()
    assert (await paused.json())["state"] == "paused"
    assert (await (await b.get(f"/api/runs/{run}")).json())["state"] == "paused"
    for node_id in ("t", "d"):  # paused: nothing moves between the two reads
        path = f"/api/runs/{run}/nodes/{node_id}"
        node, own_node = await b.get(path), await a.get(path)
        assert node.status == own_node.status == 200
        assert await node.json() == await own_node.json()
    resumed = await a.post(f"/api/runs/{run}/resume")
    assert resumed.status == 200 and (await resumed.json())["state"] == "running"
    workflow = (await (await b.get(f"/api/runs/{run}")).json())["workflowId"]
    dataflow = await b.get(f"/api/workflows/{workflow}/dataflow")
    assert dataflow.status == 200 and (await dataflow.json())["runId"] == run
    stopped = await b.post(f"/api/runs/{run}/stop")
    assert stopped.status == 200 and (await stopped.json())["state"] == "stopped"
    assert (await (await a.get(f"/api/runs/{run}")).json())["state"] == "stopped"
    again = await b.post(f"/api/runs/{run}/pause")  # the owner's 409, relayed as it is
    own = await a.post(f"/api/runs/{run}/pause")
    assert again.status == own.status == 409 and again.content_type == "application/problem+json"
    assert await again.json() == await own.json()


async def test_a_request_forwarded_to_its_owner_takes_one_token_where_the_client_sent_it(
    aiohttp_client: ClientFactory, clustered: Settings,
) -> None:
    # Six requests per client and worker, and (a token per 1,000 s) none refilled in the test.
    limited = msgspec.structs.replace(clustered, rate_limit_per_second=0.001, rate_limit_burst=6)
    a, b = await worker(aiohttp_client, limited), await worker(aiohttp_client, limited)
    run = await execute(a, with_delay(60_000), speed=1.0)  # two of the client's six at a
    for _ in range(6):  # the client's six at b, each forwarded to a, which owns the run
        resp = await b.get(f"/api/runs/{run}")
        assert resp.status == 200, await resp.text()
    throttled = await b.get(f"/api/runs/{run}")
    assert throttled.status == 429 and throttled.content_type == "application/problem+json"
    # At a, the client has its four left, and claiming to be a forwarding worker is no way round them.
    for _ in range(4):
        resp = await a.get(f"/api/runs/{run}", headers={"Flowstage-Forwarded-By": "w_000000000000"})
        assert resp.status == 200, await resp.text()
    assert (await a.get(f"/api/runs/{run}", headers={"Flowstage-Forwarded-By": "w_000000000000"})).status == 429
    # A key that is not the cluster's, even one no ASCII comparison takes, is a client's request.
    odd = await b.get(f"/api/runs/{run}", headers={"Flowstage-Forward-Key": "ключ"})
    assert odd.status == 429 and odd.content_type == "application/problem+json"


async def test_workers_agree_on_the_forwarding_key_again_after_redis_lost_it(
    aiohttp_client: ClientFactory, clustered: Settings, redis_url: str,
) -> None:
    limited = msgspec.structs.replace(clustered, rate_limit_per_second=0.001, rate_limit_burst=40)
    a = await worker(aiohttp_client, limited)
    with redis.Redis.from_url(redis_url) as client:
        client.delete("flowstage:forward-key")  # as a restart of Redis without persistence would
    b = await worker(aiohttp_client, limited)  # chooses a key of its own
    run = await execute(a, with_delay(60_000), speed=1.0)
    while (await a.get("/api/workflows")).status != 429:
        pass  # the client's tokens at a are spent: a answers b's forwards only once it knows b's key
    deadline = time.monotonic() + 5.0  # a reads the cluster's key again every second
    while (forwarded := await b.get(f"/api/runs/{run}")).status == 429:
        assert time.monotonic() < deadline, "a never took b's key: " + await forwarded.text()
        await asyncio.sleep(0.1)  # at most ~12 polls of b's 40 tokens
    assert forwarded.status == 200, await forwarded.text()
    for _ in range(3):
        assert (await b.get(f"/api/runs/{run}")).status == 200


async def test_a_runs_stream_opened_before_its_first_events_reach_redis_follows_it(
    pair: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    bus = a.app[SSE].bus
    assert bus is not None
    publish = vars(bus)["_append"]
    release = asyncio.Event()

    async def held(**kwargs: Any) -> Any:  # A publishes nothing until released
        await release.wait()
        return await publish(**kwargs)

    monkeypatch.setitem(vars(bus), "_append", held)
    run = await execute(a, with_delay(300), speed=1.0)  # stored as running; Redis has none of it
    stream = await b.get(f"/api/runs/{run}/events")
    assert stream.status == 200
    release.set()
    frames = parse(await read_all(stream))
    assert frames[-1]["event"] == "run.completed"
    assert [int(f["id"]) for f in frames] == list(range(1, len(frames) + 1))


async def test_a_worker_reads_the_global_stream_only_while_a_stream_needs_it(
    pair: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading every process's events costs a process about what publishing its own does: a
    process none of whose streams needs them does not read them. The first such stream starts
    with the recent history, so an id from before still resumes there; the process stops
    reading once no stream has needed it for a while."""
    a, b = pair
    bus_b = b.app[SSE].bus
    assert bus_b is not None and not bus_b.following
    watching = await a.get("/api/events")
    run = await execute(a, with_delay(200))
    _, seen = await read_until(watching, ended({run}))
    watching.close()
    assert not bus_b.following and b.app[SSE].head == 0
    resumed = await b.get("/api/events", headers={"Last-Event-ID": seen[0]["id"]})
    assert resumed.status == 200
    _, again = await read_until(resumed, ended({run}))
    assert bus_b.following
    assert [(f["id"], f["data"]) for f in again] == [(f["id"], f["data"]) for f in seen[1:]]
    monkeypatch.setattr(sse, "_FOLLOW_LINGER", 0.0)
    await until(lambda: bus_b.following, "b still follows while its stream is open")
    resumed.close()
    await until(lambda: not bus_b.following, "b stops following once no stream needs it")


async def test_a_burst_from_another_worker_reaches_streams_a_slice_at_a_time(
    aiohttp_client: ClientFactory, clustered: Settings
) -> None:
    """A worker reads the other workers' events in slices, and its streams write between
    them: a burst of thousands published at once never lands in the ring in one turn of the
    loop (read as one batch, tens of thousands did: more than a stream may lag, up to the
    whole ring, so a client that had kept up was cut off and resumed past the ring's end). A
    client that keeps up sees every event, with no cut-off and no gap."""
    a = await worker(aiohttp_client, clustered)
    b = await worker(aiohttp_client, msgspec.structs.replace(
        clustered, sse_buffer_events=1500, sse_write_timeout_seconds=0.04))
    hub_b = b.app[SSE]
    stream = await b.get("/api/events")
    await until_all_live(hub_b, 1)
    # The most events the ring took in one turn of b's loop.
    loop = asyncio.get_running_loop()
    largest, last, ticking = 0, hub_b.head, True

    def tick() -> None:
        nonlocal largest, last
        largest, last = max(largest, hub_b.head - last), hub_b.head
        if ticking:
            loop.call_soon(tick)

    tick()
    bus_a = a.app[SSE].bus
    assert bus_a is not None
    burst = 5000  # one event of each of 5,000 runs: 5,000 entries of the global stream
    for i in range(burst):
        run = f"run_burst{i:017d}"
        bus_a.publish((run, "wf_burst", 1, "run.started",
                       b'{"event":"run.started","runId":"%s","workflowId":"wf_burst","seq":1}' % run.encode()))
    try:
        _, frames = await read_until(stream, lambda frames: len(frames) >= burst)
    finally:
        ticking = False
        stream.close()
    assert [f["event"] for f in frames] == ["run.started"] * burst
    ids = [int(f["id"]) for f in frames]
    assert ids == list(range(ids[0], ids[0] + burst))
    assert hub_b.cut_off == 0
    assert 0 < largest <= 1000, f"{largest} events reached the ring in one turn, or all in the first"


async def test_a_worker_that_starts_following_reads_the_history_the_ring_keeps_a_slice_at_a_time(
    aiohttp_client: ClientFactory, clustered: Settings
) -> None:
    """A stream that makes a worker follow the global stream starts it with the recent
    history: the events its ring keeps (`event_ring_size`), not every entry Redis holds, and
    in slices, so the history lands in the ring while the loop goes on. A client resuming from
    before them is told of the gap and then gets each kept event once, in order."""
    a = await worker(aiohttp_client, clustered)
    b = await worker(aiohttp_client, msgspec.structs.replace(clustered, event_ring_size=2000))
    bus_a, bus_b, hub_b = a.app[SSE].bus, b.app[SSE].bus, b.app[SSE]
    assert bus_a is not None and bus_b is not None and not bus_b.following
    before = int(await bus_a.redis.get("flowstage:events:position") or 0)
    burst = 5000  # one event of each of 5,000 runs: 5,000 entries of the global stream
    for i in range(burst):
        run = f"run_history{i:017d}"
        bus_a.publish((run, "wf_history", 1, "run.started",
                       b'{"event":"run.started","runId":"%s","workflowId":"wf_history","seq":1}' % run.encode()))
    head = before + burst
    while int(await bus_a.redis.get("flowstage:events:position") or 0) < head:
        await asyncio.sleep(0.01)
    # The most events b's ring took in one turn of b's loop, after the turn that brought the
    # first of them (the ring's head jumps there, from nothing to the kept history's start).
    loop = asyncio.get_running_loop()
    largest, last, ticking = 0, hub_b.head, True

    def tick() -> None:
        nonlocal largest, last
        if last > head - 2000:
            largest = max(largest, hub_b.head - last)
        last = hub_b.head
        if ticking:
            loop.call_soon(tick)

    tick()
    stream = await b.get("/api/events", headers={"Last-Event-ID": str(before)})
    try:
        _, frames = await read_until(stream, lambda frames: sum(f["event"] == "run.started" for f in frames) >= 2000)
    finally:
        ticking = False
        stream.close()
    assert bus_b.following
    assert frames[0]["event"] == "stream.gap"
    ids = [int(f["id"]) for f in frames[1:]]
    assert ids == list(range(head - 1999, head + 1))
    assert 0 < largest <= 1000, f"{largest} events reached the ring in one turn, or all in the first"
