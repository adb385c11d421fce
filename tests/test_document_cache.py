"""The cache of encoded workflow and template bodies (GET one is a lookup): every write is
seen by the next read, a refused write changes nothing, and the cache holds at most its size."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from flowstage.server.keys import STORE
from flowstage.server.store import Store, database_for
from flowstage.server.store.documents import DocumentRepo
from flowstage.simulation.models import Workflow

Client = TestClient[Any, web.Application]


async def read(client: Client, path: str) -> tuple[dict[str, Any], str]:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json(), resp.headers["ETag"]


async def test_every_edit_of_a_workflow_is_seen_by_the_next_get(client: Client, wf: str) -> None:
    path = f"/api/workflows/{wf}"
    _, etag = await read(client, path)  # now cached
    assert wf in client.app[STORE].workflows.cached_ids()

    edits: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PUT", path, {"name": "Renamed"}),
        ("POST", f"{path}/nodes", {"id": "n2", "type": "transform", "position": {"x": 9, "y": 9}}),
        ("PUT", f"{path}/nodes/n2", {"data": {"label": "Shaped"}}),
        ("POST", f"{path}/connections", {"id": "c3", "source": "h", "target": "n2"}),
        ("DELETE", f"{path}/connections/c3", None),
        ("DELETE", f"{path}/nodes/n2", None),
    ]
    seen = [etag]
    for method, url, body in edits:
        resp = await client.request(method, url, json=body)
        assert resp.status < 300, (method, url, await resp.text())
        doc, etag = await read(client, path)
        assert doc["version"] == len(seen) + 1, (method, url)
        seen.append(etag)
        if (method, url) == ("PUT", path):
            assert doc["name"] == "Renamed"
        if url.endswith("/nodes") and method == "POST":
            assert [n["id"] for n in doc["nodes"]] == ["t", "h", "o", "n2"]
        if url.endswith("/nodes/n2") and method == "PUT":
            assert doc["nodes"][-1]["data"]["label"] == "Shaped"
        if url.endswith("/connections"):
            assert [c["id"] for c in doc["connections"]] == ["c1", "c2", "c3"]
        if url.endswith("/connections/c3"):
            assert [c["id"] for c in doc["connections"]] == ["c1", "c2"]
        if url.endswith("/nodes/n2") and method == "DELETE":
            assert [n["id"] for n in doc["nodes"]] == ["t", "h", "o"]
    assert len(set(seen)) == len(seen)  # a new ETag for every version

    assert (await client.delete(path)).status == 204
    assert (await client.get(path)).status == 404
    assert wf not in client.app[STORE].workflows.cached_ids()


async def test_a_refused_edit_leaves_the_cached_workflow_as_it_was(client: Client, wf: str) -> None:
    path = f"/api/workflows/{wf}"
    before, etag = await read(client, path)
    stale = await client.put(path, json={"name": "Lost"}, headers={"If-Match": '"99"'})
    assert stale.status == 412
    cyclic = await client.post(f"{path}/connections", json={"source": "o", "target": "t"})
    assert cyclic.status == 422
    assert await read(client, path) == (before, etag)


async def test_every_edit_of_a_template_is_seen_by_the_next_get(client: Client, wf: str) -> None:
    workflow, _ = await read(client, f"/api/workflows/{wf}")
    body = {k: workflow[k] for k in ("name", "description", "tags", "nodes", "connections")}
    resp = await client.post("/api/templates", json=body)
    assert resp.status == 201, await resp.text()
    path = f"/api/templates/{(await resp.json())['id']}"
    first, etag = await read(client, path)
    assert (await client.put(path, json={"description": "Edited"})).status == 200
    doc, new_etag = await read(client, path)
    assert (doc["description"], doc["version"]) == ("Edited", first["version"] + 1)
    assert new_etag != etag
    assert (await client.delete(path)).status == 204
    assert (await client.get(path)).status == 404


def _workflow(n: int) -> Workflow:
    stamp = "2026-01-01T00:00:00.000Z"
    return Workflow(id=f"wf_{n}", name=f"W{n}", description="", tags=[], nodes=[], connections=[],
                    version=1, created_at=stamp, updated_at=stamp)


async def test_the_cache_holds_at_most_its_size_and_drops_the_least_recently_read(tmp_path: Path) -> None:
    store = Store(database_for("memory", tmp_path), tmp_path / "files", time.time)
    await store.open()
    try:
        repo: DocumentRepo[Workflow] = DocumentRepo(store.db, "workflows", Workflow, "workflow", time.time,
                                                    cache_size=3)
        for n in range(5):
            await repo.create(_workflow(n))
        assert repo.cached_ids() == ["wf_2", "wf_3", "wf_4"]
        assert (await repo.get("wf_0")).name == "W0"  # evicted: read from the database again
        assert repo.cached_ids() == ["wf_3", "wf_4", "wf_0"]
        await repo.get("wf_3")
        assert repo.cached_ids() == ["wf_4", "wf_0", "wf_3"]
    finally:
        await store.close()
