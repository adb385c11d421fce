"""Two Flowstage processes on one PostgreSQL and one files directory (`storage = "postgres"`):
what one writes, the other reads at once, although each caches encoded documents; writes made
through both at the same time are all kept, each as a new version; files uploaded through one
are served by the other."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from conftest import ClientFactory, make_settings
from servers import PostgresServer
from test_sse import with_delay

from flowstage.config import Settings
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE, STORE

Client = TestClient[Any, web.Application]


@pytest.fixture
def shared(tmp_path: Path, postgres_url: str) -> Settings:
    return make_settings(tmp_path / "shared", storage="postgres", database_url=postgres_url)


@pytest.fixture
async def pair(aiohttp_client: ClientFactory, shared: Settings) -> tuple[Client, Client]:
    """Two apps, as two workers would be: each its own engine, cache and connection."""
    return await aiohttp_client(create_app(shared)), await aiohttp_client(create_app(shared))


async def ok(resp: Any, status: int = 200) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def created_and_cached(a: Client, b: Client, workflow: dict[str, Any]) -> str:
    """The path of `workflow`, created through `a` and read through `b` (now in b's cache)."""
    wf = await ok(await a.post("/api/workflows", json=workflow), 201)
    path = f"/api/workflows/{wf['id']}"
    assert (await ok(await b.get(path)))["version"] == 1
    return path


async def test_an_edit_through_one_worker_is_read_through_the_other(
    pair: tuple[Client, Client], simple_workflow: dict[str, Any]
) -> None:
    a, b = pair
    path = await created_and_cached(a, b, simple_workflow)
    await ok(await a.put(path, json={"name": "Renamed through A"}))
    seen = await b.get(path)
    assert (await ok(seen))["name"] == "Renamed through A"
    assert seen.headers["ETag"] == '"2"'
    # b's If-Match is checked against the stored version, not its cached one.
    stale = await b.put(path, json={"name": "Lost"}, headers={"If-Match": '"1"'})
    assert stale.status == 412
    await ok(await b.put(path, json={"name": "Kept"}, headers={"If-Match": '"2"'}))
    assert (await ok(await a.get(path)))["name"] == "Kept"
    assert (await a.delete(path)).status == 204
    assert (await b.get(path)).status == 404
    assert (await b.put(path, json={"name": "Ghost"})).status == 404


async def test_edits_made_through_both_workers_at_once_are_all_kept(
    pair: tuple[Client, Client], simple_workflow: dict[str, Any]
) -> None:
    a, b = pair
    path = await created_and_cached(a, b, simple_workflow)

    async def add(client: Client, n: int) -> None:
        node = {"id": f"n{n}", "type": "transform", "position": {"x": n, "y": 0}}
        await ok(await client.post(f"{path}/nodes", json=node), 201)

    await asyncio.gather(*(add(a if n % 2 else b, n) for n in range(20)))
    for client in (a, b):
        doc = await ok(await client.get(path))
        assert doc["version"] == 21
        assert {n["id"] for n in doc["nodes"]} == {"t", "h", "o"} | {f"n{n}" for n in range(20)}


async def test_lists_and_tags_read_the_shared_database(
    pair: tuple[Client, Client], simple_workflow: dict[str, Any]
) -> None:
    a, b = pair
    made = [await ok(await (a if i % 2 else b).post("/api/workflows", json={**simple_workflow, "name": f"W{i}",
                                                                          "tags": [f"t{i % 3}"]}), 201)
            for i in range(6)]
    for client in (a, b):
        page = await ok(await client.get("/api/workflows", params={"limit": "4"}))
        assert [w["id"] for w in page["items"]] == [w["id"] for w in reversed(made)][:4]
        rest = await ok(await client.get("/api/workflows", params={"cursor": page["nextCursor"]}))
        assert [w["id"] for w in rest["items"]] == [made[1]["id"], made[0]["id"]]
        tagged = await ok(await client.get("/api/workflows", params={"tag": "t1"}))
        assert [w["name"] for w in tagged["items"]] == ["W4", "W1"]


async def test_a_file_uploaded_through_one_worker_is_served_by_the_other(pair: tuple[Client, Client]) -> None:
    a, b = pair
    content = b"name,count\nwidgets,3\n"

    def form() -> FormData:
        data = FormData()
        data.add_field("file", content, filename="counts.csv", content_type="text/csv")
        return data

    first = (await ok(await a.post("/api/files/upload", data=form()), 201))["items"][0]
    same = (await ok(await b.post("/api/files/upload", data=form()), 201))["items"][0]
    assert first["sha256"] == same["sha256"] and first["id"] != same["id"]
    served = await b.get(f"/api/files/{first['id']}/content")
    assert served.status == 200 and await served.read() == content
    assert (await b.delete(f"/api/files/{first['id']}")).status == 204
    # The bytes stay while another row names them, whichever worker deleted the first.
    served = await a.get(f"/api/files/{same['id']}/content")
    assert served.status == 200 and await served.read() == content
    assert (await a.delete(f"/api/files/{same['id']}")).status == 204
    assert (await b.get(f"/api/files/{same['id']}/content")).status == 404


async def test_a_process_starting_on_the_shared_database_leaves_the_others_runs_running(
    aiohttp_client: ClientFactory, shared: Settings, pair: tuple[Client, Client], simple_workflow: dict[str, Any]
) -> None:
    a, _ = pair
    wf = await ok(await a.post("/api/workflows", json={**simple_workflow, "nodes": [
        {"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}},
        {"id": "d", "type": "delay", "position": {"x": 1, "y": 0}, "data": {"config": {"ms": 60_000}}},
    ], "connections": [{"id": "c", "source": "t", "target": "d"}]}), 201)
    run = await ok(await a.post(f"/api/workflows/{wf['id']}/execute", json={}), 202)
    async with asyncio.timeout(10):
        while (await listed_running(a, run["id"])) != "running":
            await asyncio.sleep(0.02)
    late = await aiohttp_client(create_app(shared))  # starts while the run is stored as running
    assert await listed_running(late, run["id"]) == "running"
    assert (await ok(await a.get(f"/api/runs/{run['id']}")))["state"] == "running"


async def listed_running(client: Client, run_id: str) -> str | None:
    """The run's state as stored (a process that does not run it reads the store)."""
    resp = await client.get("/api/runs", params={"state": "running"})
    items = (await ok(resp))["items"]
    return "running" if any(r["id"] == run_id for r in items) else None


async def test_a_postgres_outage_is_a_503_that_changes_nothing_and_loses_no_event(
    aiohttp_client: ClientFactory, shared: Settings, postgres_server: PostgresServer
) -> None:
    client = await aiohttp_client(create_app(shared))
    wf = await ok(await client.post("/api/workflows", json=with_delay(1500)), 201)
    run = (await ok(await client.post(f"/api/workflows/{wf['id']}/execute", json={}), 202))["id"]
    postgres_server.stop()
    try:
        for method, path, body in (("GET", "/api/workflows", None), ("POST", "/api/workflows", {"name": "Lost"}),
                                   ("PUT", f"/api/workflows/{wf['id']}", {"name": "Lost"})):
            resp = await client.request(method, path, json=body)
            assert resp.status == 503, (method, path, await resp.text())
            assert resp.content_type == "application/problem+json"
        async with asyncio.timeout(10):  # the run goes on in memory meanwhile
            while (await ok(await client.get(f"/api/runs/{run}")))["state"] != "completed":
                await asyncio.sleep(0.05)
    finally:
        postgres_server.start()
    store = client.app[STORE]
    async with asyncio.timeout(15):  # the engine's flush is retried until it lands
        while (stored := await store.runs.get(run)) is None or stored.state != "completed":
            await asyncio.sleep(0.1)
    events = client.app[ENGINE].events(run)
    assert events is not None
    assert await store.runs.events_after(run, 0) == events.events_after(0)
    listed = await ok(await client.get("/api/workflows"))
    assert [w["name"] for w in listed["items"]] == [wf["name"]]


async def test_reads_waiting_together_share_one_version_check_and_see_writes_made_before_it(
    pair: tuple[Client, Client], simple_workflow: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads of one cached workflow that wait for the database thread together are answered
    by one version query (64 executes of one workflow were 64 queries in a row); a write
    through the other process made before that query starts is still seen by all of them."""
    a, b = pair
    path = await created_and_cached(a, b, simple_workflow)
    wf_id = path.rsplit("/", 1)[1]
    store = b.app[STORE]
    gate = threading.Event()
    blocked = asyncio.ensure_future(store.db.read(lambda conn: gate.wait(10)))  # b's thread is busy
    queries = 0
    real_read = store.db.read

    async def counted(fn: Any) -> Any:
        nonlocal queries
        queries += 1
        return await real_read(fn)

    monkeypatch.setattr(store.db, "read", counted)
    before = [asyncio.ensure_future(store.workflows.get(wf_id)) for _ in range(10)]
    await ok(await a.put(path, json={"name": "Renamed through A"}))
    after = [asyncio.ensure_future(store.workflows.get(wf_id)) for _ in range(10)]
    for _ in range(3):
        await asyncio.sleep(0)
    gate.set()
    await blocked
    read = await asyncio.gather(*before, *after)
    assert queries == 1
    assert [(w.name, w.version) for w in read] == [("Renamed through A", 2)] * 20
