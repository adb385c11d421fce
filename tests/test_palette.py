"""The node-type palette as an editor draws it: icons, colours, handle sides, titled config
properties, one type by name, types by category, and new nodes named after their type."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[Any, web.Application]
CATEGORIES = ("trigger", "integration", "logic", "file", "output")


async def all_types(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/api/node-types")
    assert resp.status == 200
    return list((await resp.json())["items"])


async def test_every_type_has_an_icon_a_colour_handle_sides_and_titled_properties(client: Client) -> None:
    for t in await all_types(client):
        assert re.fullmatch(r"[a-z][a-z-]*", t["icon"]), t["type"]
        assert re.fullmatch(r"#[0-9a-f]{6}", t["color"]), t["type"]
        assert {h["position"] for h in t["inputs"]} <= {"left"}, t["type"]
        assert {h["position"] for h in t["outputs"]} <= {"right"}, t["type"]
        properties = t["configSchema"]["properties"]
        assert properties, t["type"]
        for name, schema in properties.items():
            assert schema["title"].strip(), (t["type"], name)
            assert schema["description"].strip(), (t["type"], name)


async def test_a_property_keeps_its_type_beside_its_title(client: Client) -> None:
    http = next(t for t in await all_types(client) if t["type"] == "http_request")
    assert http["icon"] == "globe"
    assert http["configSchema"]["properties"]["timeoutMs"] == {
        "type": "integer", "minimum": 1, "title": "Timeout (ms)",
        "description": "Give up after this many milliseconds.",
    }
    condition = next(t for t in await all_types(client) if t["type"] == "condition")
    assert condition["outputs"] == [{"id": "true", "label": "True", "position": "right"},
                                    {"id": "false", "label": "False", "position": "right"}]


async def test_one_node_type_by_name_with_its_etag(client: Client) -> None:
    listed = {t["type"]: t for t in await all_types(client)}
    resp = await client.get("/api/node-types/delay")
    assert resp.status == 200
    assert await resp.json() == listed["delay"]
    etag = resp.headers["ETag"]
    again = await client.get("/api/node-types/delay", headers={"If-None-Match": etag})
    assert again.status == 304


async def test_an_unknown_node_type_is_a_404_problem(client: Client) -> None:
    resp = await client.get("/api/node-types/teleport")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["status"] == 404
    assert "teleport" in body["detail"]


async def test_category_filters_the_list(client: Client) -> None:
    everything = await all_types(client)
    for category in CATEGORIES:
        resp = await client.get(f"/api/node-types?category={category}")
        assert resp.status == 200
        page = await resp.json()
        assert page == {"items": [t for t in everything if t["category"] == category], "nextCursor": None}
        assert page["items"], category


async def test_an_unknown_category_is_422_at_the_query_parameter(client: Client) -> None:
    resp = await client.get("/api/node-types?category=magic")
    assert resp.status == 422
    body = await resp.json(content_type=None)
    assert [e["loc"] for e in body["errors"]] == [["query", "category"]]


async def test_new_nodes_without_a_label_are_named_after_their_type(client: Client, wf: str) -> None:
    missing = await client.post(f"/api/workflows/{wf}/nodes", json={"type": "delay", "position": {"x": 0, "y": 0}})
    empty = await client.post(f"/api/workflows/{wf}/nodes", json={
        "type": "llm_prompt", "position": {"x": 0, "y": 0}, "data": {"label": "", "config": {"prompt": "Hi"}}})
    named = await client.post(f"/api/workflows/{wf}/nodes", json={
        "type": "delay", "position": {"x": 0, "y": 0}, "data": {"label": "Wait a bit"}})
    assert (missing.status, empty.status, named.status) == (201, 201, 201)
    assert (await missing.json())["data"] == {"label": "Delay", "config": {}}
    assert (await empty.json())["data"] == {"label": "LLM prompt", "config": {"prompt": "Hi"}}
    assert (await named.json())["data"]["label"] == "Wait a bit"


async def test_workflow_bodies_get_default_labels_too(client: Client) -> None:
    resp = await client.post("/api/workflows", json={"name": "labels", "nodes": [
        {"id": "a", "type": "webhook_trigger", "position": {"x": 0, "y": 0}},
        {"id": "b", "type": "output", "position": {"x": 0, "y": 0}, "data": {"label": "Done"}}]})
    assert resp.status == 201
    assert [n["data"]["label"] for n in (await resp.json())["nodes"]] == ["Webhook", "Done"]
    wf = (await resp.json())["id"]
    put = await client.put(f"/api/workflows/{wf}", json={"nodes": [
        {"id": "c", "type": "merge", "position": {"x": 0, "y": 0}, "data": {"label": ""}}]})
    assert [n["data"]["label"] for n in (await put.json())["nodes"]] == ["Merge"]


async def test_a_label_emptied_by_an_edit_stays_empty(client: Client, wf: str) -> None:
    # Renaming a stored node to "" is the user's choice: neither that edit nor a later one
    # elsewhere in the graph puts the type's label back.
    resp = await client.put(f"/api/workflows/{wf}/nodes/h", json={"data": {"label": ""}})
    assert resp.status == 200
    assert (await resp.json())["data"]["label"] == ""
    added = await client.post(f"/api/workflows/{wf}/nodes", json={"type": "delay", "position": {"x": 0, "y": 0}})
    assert added.status == 201
    doc = await (await client.get(f"/api/workflows/{wf}")).json()
    assert {n["id"]: n["data"]["label"] for n in doc["nodes"]}["h"] == ""
