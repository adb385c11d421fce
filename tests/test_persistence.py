"""Storage survives a restart, on SQLite and on PostgreSQL (the `durable` fixture): a second
app on the same store reads back exactly what the first one stored; demo data is seeded once;
a newer schema is refused clearly."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import make_settings

from flowstage.config import Settings
from flowstage.server.app import create_app
from flowstage.server.store.db import MIGRATIONS

Client = TestClient[Any, web.Application]


@pytest.fixture
def on_disk(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", storage="sqlite")


async def start(aiohttp_client: Any, settings: Settings) -> Client:
    client: Client = await aiohttp_client(create_app(settings))
    return client


async def test_a_workflow_and_its_edits_survive_a_restart(
    aiohttp_client: Any, durable: Settings, simple_workflow: dict[str, Any]
) -> None:
    first = await start(aiohttp_client, durable)
    wf = await (await first.post("/api/workflows", json=simple_workflow)).json()
    url = f"/api/workflows/{wf['id']}"
    assert (await first.post(f"{url}/nodes", json={
        "id": "d", "type": "delay", "position": {"x": 1.5, "y": -2},
        "data": {"label": "Wait", "config": {"ms": 250}},
    })).status == 201
    assert (await first.put(f"{url}/nodes/h", json={"position": {"x": 210, "y": 5}})).status == 200
    assert (await first.delete(f"{url}/connections/c2")).status == 204
    before = await first.get(url)
    before_body = await before.read()
    before_list = await (await first.get("/api/workflows")).json()
    await first.close()

    second = await start(aiohttp_client, durable)
    after = await second.get(url)
    assert after.status == 200
    assert after.headers["ETag"] == before.headers["ETag"] == '"4"'
    assert await after.read() == before_body
    assert (await after.json())["version"] == 4
    assert await (await second.get("/api/workflows")).json() == before_list

    # And it can still be edited where it left off.
    resp = await second.put(url, json={"name": "After restart"}, headers={"If-Match": '"4"'})
    assert resp.status == 200
    assert (await resp.json())["version"] == 5


async def test_a_viewport_and_edges_saved_by_an_editor_survive_a_restart(
    aiohttp_client: Any, durable: Settings
) -> None:
    first = await start(aiohttp_client, durable)
    saved = await (await first.post("/api/workflows", json={
        "name": "Camera",
        "nodes": [{"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}, "selected": True},
                  {"id": "o", "type": "output", "position": {"x": 200, "y": 0}}],
        "edges": [{"id": "e1", "source": "t", "target": "o", "animated": True}],
        "viewport": {"x": -40.25, "y": 12, "zoom": 0.75},
    })).json()
    url = f"/api/workflows/{saved['id']}"
    await first.close()

    second = await start(aiohttp_client, durable)
    after = await (await second.get(url)).json()
    assert after == saved
    assert after["viewport"] == {"x": -40.25, "y": 12.0, "zoom": 0.75}
    assert after["connections"] == [
        {"id": "e1", "source": "t", "target": "o", "sourceHandle": "out", "targetHandle": "in"}]
    assert (await (await second.put(url, json={"viewport": None})).json())["viewport"] is None
    await second.close()

    third = await start(aiohttp_client, durable)
    assert (await (await third.get(url)).json())["viewport"] is None


async def test_a_version_1_database_is_migrated_keeping_every_row(
    aiohttp_client: Any, on_disk: Settings
) -> None:
    """A database written before viewports and the run-list indexes: its documents read as
    they were (with `viewport: null`), and its runs are listed."""
    db = Path(on_disk.data_dir) / "flowstage.db"
    db.parent.mkdir(parents=True)
    stamp = "2026-01-01T00:00:00.000Z"
    workflow = {"id": "wf_old", "name": "Old", "description": "", "tags": ["kept"], "version": 3,
                "createdAt": stamp, "updatedAt": stamp,
                "nodes": [{"id": "t", "type": "manual_trigger", "position": {"x": 1.0, "y": 2.0},
                           "data": {"label": "", "config": {}}}],
                "connections": []}
    run = {"id": "run_old", "workflowId": "wf_old", "workflowVersion": 3, "state": "completed",
           "seed": 1, "speed": 1.0, "createdAt": stamp, "startedAt": stamp, "finishedAt": stamp,
           "progress": 1.0, "nodes": {}, "failureRate": 0.0, "error": None, "kind": "workflow"}
    conn = sqlite3.connect(db)
    try:
        conn.executescript(MIGRATIONS[0])
        conn.execute("INSERT INTO workflows VALUES (?, ?, ?, ?, ?)",
                     ("wf_old", stamp, stamp, 3, json.dumps(workflow).encode()))
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
                     ("run_old", "wf_old", stamp, "completed", json.dumps(run).encode()))
        for seq, name in ((1, "run.started"), (2, "run.completed")):
            data = {"runId": "run_old", "workflowId": "wf_old", "seq": seq, "ts": stamp}
            conn.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)",
                         ("run_old", seq, name, json.dumps(data).encode()))
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    finally:
        conn.close()

    client = await start(aiohttp_client, on_disk)
    got = await client.get("/api/workflows/wf_old")
    assert got.headers["ETag"] == '"3"'
    assert await got.json() == {**workflow, "viewport": None}
    # Fields added since read as their defaults.
    debugging: dict[str, Any] = {"pausedAt": None, "breakpoints": [], "parentRunId": None, "replayOf": None}
    assert (await (await client.get("/api/runs")).json())["items"] == [{**run, **debugging}]
    assert (await (await client.get("/api/runs?state=completed")).json())["items"] == [{**run, **debugging}]
    stream = await (await client.get("/api/runs/run_old/events")).text()
    assert [line for line in stream.splitlines() if line.startswith(("id:", "event:"))] == [
        "id: 1", "event: run.started", "id: 2", "event: run.completed"]
    await client.close()

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"runs_newest", "runs_by_state_newest", "run_events_by_run"} <= indexes
        assert "runs_by_state" not in indexes
    finally:
        conn.close()


async def test_a_deleted_workflow_stays_deleted_after_a_restart(
    aiohttp_client: Any, durable: Settings, simple_workflow: dict[str, Any]
) -> None:
    first = await start(aiohttp_client, durable)
    keep = await (await first.post("/api/workflows", json=simple_workflow)).json()
    gone = await (await first.post("/api/workflows", json={"name": "temporary"})).json()
    assert (await first.delete(f"/api/workflows/{gone['id']}")).status == 204
    await first.close()

    second = await start(aiohttp_client, durable)
    assert (await second.get(f"/api/workflows/{gone['id']}")).status == 404
    page = await (await second.get("/api/workflows")).json()
    assert [w["id"] for w in page["items"]] == [keep["id"]]


async def test_the_database_lives_in_the_data_dir(
    aiohttp_client: Any, on_disk: Settings
) -> None:
    client = await start(aiohttp_client, on_disk)
    await client.post("/api/workflows", json={"name": "on disk"})
    await client.close()
    db = Path(on_disk.data_dir) / "flowstage.db"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("SELECT count(*) FROM workflows").fetchone()[0] == 1
    finally:
        conn.close()


async def test_memory_storage_keeps_nothing_between_starts(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage="memory")
    first = await start(aiohttp_client, settings)
    await first.post("/api/workflows", json={"name": "fleeting"})
    await first.close()
    second = await start(aiohttp_client, settings)
    assert (await (await second.get("/api/workflows")).json())["items"] == []
    assert not (tmp_path / "flowstage.db").exists()


async def test_demo_data_is_seeded_once_and_deleting_it_is_respected(
    aiohttp_client: Any, durable: Settings
) -> None:
    settings = msgspec.structs.replace(durable, seed_demo_data=True)
    first = await start(aiohttp_client, settings)
    page = await (await first.get("/api/workflows")).json()
    demo_ids = {w["id"] for w in page["items"]}
    assert len(demo_ids) == 5
    assert all(w["nodes"] and w["connections"] and w["version"] == 1 for w in page["items"])
    await first.close()

    second = await start(aiohttp_client, settings)
    page = await (await second.get("/api/workflows")).json()
    assert {w["id"] for w in page["items"]} == demo_ids
    for wf_id in demo_ids:
        assert (await second.delete(f"/api/workflows/{wf_id}")).status == 204
    await second.close()

    third = await start(aiohttp_client, settings)
    assert (await (await third.get("/api/workflows")).json())["items"] == []


async def test_demo_workflows_are_valid_graphs_an_editor_can_save_back(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path, seed_demo_data=True))
    for wf in (await (await client.get("/api/workflows")).json())["items"]:
        resp = await client.put(f"/api/workflows/{wf['id']}",
                                json={"nodes": wf["nodes"], "connections": wf["connections"]})
        assert resp.status == 200, await resp.text()
        saved = await resp.json()
        assert (saved["nodes"], saved["connections"]) == (wf["nodes"], wf["connections"])


async def test_a_database_from_a_newer_flowstage_is_refused(
    aiohttp_client: Any, on_disk: Settings
) -> None:
    first = await start(aiohttp_client, on_disk)
    await first.post("/api/workflows", json={"name": "from the future"})
    await first.close()
    db = Path(on_disk.data_dir) / "flowstage.db"
    newer = len(MIGRATIONS) + 1
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.commit()
    conn.close()

    # Started the way `web.run_app` starts it; the test client would leak its session here.
    runner = web.AppRunner(create_app(on_disk))
    with pytest.raises(RuntimeError, match=rf"schema version {newer} is newer.*upgrade Flowstage"):
        await runner.setup()
    # The refused start did not touch the data.
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == newer
        assert conn.execute("SELECT count(*) FROM workflows").fetchone()[0] == 1
    finally:
        conn.close()


async def test_a_postgres_schema_from_a_newer_flowstage_is_refused(
    aiohttp_client: Any, tmp_path: Path, postgres_url: str
) -> None:
    import psycopg

    settings = make_settings(tmp_path, storage="postgres", database_url=postgres_url)
    first = await start(aiohttp_client, settings)
    assert (await first.post("/api/workflows", json={"name": "from the future"})).status == 201
    await first.close()
    newer = len(MIGRATIONS) + 1
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(len(MIGRATIONS)),)
        conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(newer),))

    runner = web.AppRunner(create_app(settings))
    with pytest.raises(RuntimeError, match=rf"schema version {newer} is newer.*upgrade Flowstage"):
        await runner.setup()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM workflows").fetchone() == (1,)
