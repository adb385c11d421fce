"""Workflows through the HTTP API, as a React Flow editor uses them: create, read with ETags,
save (PUT), delete, and list with pagination and tag filtering."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from flowstage.actors.clock import ManualClock
from flowstage.server.store import new_id

Client = TestClient[Any, web.Application]
JAN_1_2026 = 1_767_225_600.0


@pytest.fixture
def clock() -> ManualClock:
    """conftest's `clocked` runs on this clock: stamps read as 2026-01-01."""
    return ManualClock(start=JAN_1_2026)


async def problem(resp: Any, status: int, loc: list[Any] | None = None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["status"] == status
    assert body["type"] and body["title"]
    if loc is not None:
        assert [e["loc"] for e in body["errors"]] == [loc], body
    return body


async def create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/workflows", json=body)
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


# --- create and read -------------------------------------------------------------------------


async def test_create_answers_201_with_location_etag_and_the_stored_workflow(
    clocked: Client, simple_workflow: dict[str, Any]
) -> None:
    resp = await clocked.post("/api/workflows", json=simple_workflow)
    assert resp.status == 201
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert resp.headers["Location"] == f"/api/workflows/{body['id']}"
    assert resp.headers["ETag"] == '"1"'
    assert body["version"] == 1
    assert body["createdAt"] == body["updatedAt"] == "2026-01-01T00:00:00.000Z"
    assert body["name"] == "Fetch and store"
    assert body["description"] == "A small chain"
    assert body["tags"] == ["demo"]
    assert [n["id"] for n in body["nodes"]] == ["t", "h", "o"]
    assert body["nodes"][1] == {
        "id": "h", "type": "http_request", "position": {"x": 200, "y": 0},
        "data": {"label": "Fetch", "config": {"url": "https://example.com/a"}},
    }
    # A node sent without data gets React Flow's shape: its type's label and an empty config.
    assert body["nodes"][0]["data"] == {"label": "Manual trigger", "config": {}}
    # c2 was sent without handles: single-handle node types resolve them.
    assert body["connections"] == [
        {"id": "c1", "source": "t", "target": "h", "sourceHandle": "out", "targetHandle": "in"},
        {"id": "c2", "source": "h", "target": "o", "sourceHandle": "out", "targetHandle": "in"},
    ]

    got = await clocked.get(resp.headers["Location"])
    assert got.status == 200
    assert await got.json() == body


async def test_create_ignores_server_owned_fields_sent_by_the_client(
    clocked: Client, simple_workflow: dict[str, Any]
) -> None:
    sent = {**simple_workflow, "id": "mine", "version": 99,
            "createdAt": "1999-01-01T00:00:00.000Z", "updatedAt": "1999-01-01T00:00:00.000Z"}
    body = await create(clocked, sent)
    assert body["id"] != "mine"
    assert body["id"].startswith("wf_")
    assert body["version"] == 1
    assert body["createdAt"] == body["updatedAt"] == "2026-01-01T00:00:00.000Z"
    assert (await clocked.get("/api/workflows/mine")).status == 404


async def test_create_with_only_a_name_gives_an_empty_graph(client: Client) -> None:
    body = await create(client, {"name": "Blank"})
    assert (body["description"], body["tags"], body["nodes"], body["connections"]) == ("", [], [], [])


async def test_create_keeps_each_tag_once_in_the_order_given(client: Client) -> None:
    body = await create(client, {"name": "Tags", "tags": ["b", "a", "b", "a"]})
    assert body["tags"] == ["b", "a"]


async def test_get_unknown_workflow_is_404_problem(client: Client) -> None:
    body = await problem(await client.get("/api/workflows/wf_nope"), 404)
    assert "wf_nope" in body["detail"]


# --- ETags -----------------------------------------------------------------------------------


async def test_get_sends_a_strong_etag_of_the_version(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    resp = await client.get(f"/api/workflows/{wf['id']}")
    assert resp.headers["ETag"] == '"1"'
    await client.put(f"/api/workflows/{wf['id']}", json={"name": "Renamed"})
    resp = await client.get(f"/api/workflows/{wf['id']}")
    assert resp.headers["ETag"] == '"2"'
    assert (await resp.json())["version"] == 2


@pytest.mark.parametrize("header", ['"1"', 'W/"1"', '"7", "1"', "*"])
async def test_if_none_match_of_the_current_etag_is_304_with_an_empty_body(
    client: Client, simple_workflow: dict[str, Any], header: str
) -> None:
    wf = await create(client, simple_workflow)
    resp = await client.get(f"/api/workflows/{wf['id']}", headers={"If-None-Match": header})
    assert resp.status == 304
    assert resp.headers["ETag"] == '"1"'
    assert await resp.read() == b""


async def test_if_none_match_of_an_old_etag_gives_the_new_body(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    await client.put(f"/api/workflows/{wf['id']}", json={"name": "Renamed"})
    resp = await client.get(f"/api/workflows/{wf['id']}", headers={"If-None-Match": '"1"'})
    assert resp.status == 200
    assert resp.headers["ETag"] == '"2"'
    assert (await resp.json())["name"] == "Renamed"


# --- PUT -------------------------------------------------------------------------------------


async def test_put_of_the_name_alone_keeps_the_graph_and_bumps_version_and_updated_at(
    clocked: Client, clock: ManualClock, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(clocked, simple_workflow)
    await clock.advance(61.25)
    resp = await clocked.put(f"/api/workflows/{wf['id']}", json={"name": "Renamed"})
    assert resp.status == 200
    assert resp.headers["ETag"] == '"2"'
    body = await resp.json()
    assert body == {
        **wf, "name": "Renamed", "version": 2, "updatedAt": "2026-01-01T00:01:01.250Z",
    }
    assert body["createdAt"] == "2026-01-01T00:00:00.000Z"
    assert await (await clocked.get(f"/api/workflows/{wf['id']}")).json() == body


async def test_put_of_nodes_and_connections_replaces_the_graph(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    graph = {
        "nodes": [
            {"id": "w", "type": "webhook_trigger", "position": {"x": 5, "y": 6},
             "data": {"label": "Hook", "config": {"path": "/in"}}},
            {"id": "c", "type": "condition", "position": {"x": 300, "y": 6}},
        ],
        "connections": [{"id": "k", "source": "w", "target": "c"}],
    }
    resp = await client.put(f"/api/workflows/{wf['id']}", json=graph)
    assert resp.status == 200
    body = await resp.json()
    assert body["version"] == 2
    assert (body["name"], body["description"], body["tags"]) == (wf["name"], wf["description"], wf["tags"])
    assert [n["id"] for n in body["nodes"]] == ["w", "c"]
    assert body["nodes"][0]["data"] == {"label": "Hook", "config": {"path": "/in"}}
    assert body["connections"] == [
        {"id": "k", "source": "w", "target": "c", "sourceHandle": "out", "targetHandle": "in"},
    ]


async def test_each_put_grows_the_version_by_exactly_one(client: Client) -> None:
    wf = await create(client, {"name": "v"})
    for expected in range(2, 6):
        resp = await client.put(f"/api/workflows/{wf['id']}", json={"description": f"v{expected}"})
        assert (await resp.json())["version"] == expected
        assert resp.headers["ETag"] == f'"{expected}"'


async def test_put_with_a_stale_if_match_is_412_and_changes_nothing(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    await client.put(f"/api/workflows/{wf['id']}", json={"name": "Second"})
    before = await (await client.get(f"/api/workflows/{wf['id']}")).json()

    resp = await client.put(f"/api/workflows/{wf['id']}", json={"name": "Lost update", "nodes": []},
                            headers={"If-Match": '"1"'})
    await problem(resp, 412)
    assert await (await client.get(f"/api/workflows/{wf['id']}")).json() == before


@pytest.mark.parametrize("header", ['"1"', "*", '"0", "1"'])
async def test_put_with_a_matching_if_match_succeeds(
    client: Client, simple_workflow: dict[str, Any], header: str
) -> None:
    wf = await create(client, simple_workflow)
    resp = await client.put(f"/api/workflows/{wf['id']}", json={"name": "Mine"},
                            headers={"If-Match": header})
    assert resp.status == 200
    assert (await resp.json())["version"] == 2


async def test_invalid_put_is_422_and_changes_nothing(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    resp = await client.put(f"/api/workflows/{wf['id']}", json={"name": ""})
    await problem(resp, 422, ["body", "name"])
    resp = await client.put(f"/api/workflows/{wf['id']}", json={
        "nodes": [{"id": "x", "type": "teleporter", "position": {"x": 0, "y": 0}}], "connections": [],
    })
    await problem(resp, 422, ["body", "nodes", 0, "type"])
    assert await (await client.get(f"/api/workflows/{wf['id']}")).json() == wf


async def test_a_put_of_nodes_alone_that_drops_a_connected_node_is_422_at_the_nodes_it_sent(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    # No connections in the body: the stored ones are kept, and c2 links o, which is left out.
    wf = await create(client, simple_workflow)
    kept = [n for n in wf["nodes"] if n["id"] != "o"]
    resp = await client.put(f"/api/workflows/{wf['id']}", json={"nodes": kept})
    body = await problem(resp, 422, ["body", "nodes"])  # not at connections, which it did not send
    assert "'c2'" in body["errors"][0]["msg"] and "'o'" in body["errors"][0]["msg"]
    assert await (await client.get(f"/api/workflows/{wf['id']}")).json() == wf


async def test_of_two_concurrent_saves_from_the_same_version_exactly_one_wins(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    url = f"/api/workflows/{wf['id']}"
    first, second = await asyncio.gather(
        client.put(url, json={"name": "Tab A"}, headers={"If-Match": '"1"'}),
        client.put(url, json={"name": "Tab B"}, headers={"If-Match": '"1"'}),
    )
    assert sorted([first.status, second.status]) == [200, 412]
    winner = first if first.status == 200 else second
    stored = await (await client.get(url)).json()
    assert stored["version"] == 2
    assert stored["name"] == (await winner.json())["name"]


async def test_concurrent_edits_without_if_match_are_all_kept(client: Client) -> None:
    wf = await create(client, {"name": "busy"})
    url = f"/api/workflows/{wf['id']}"
    answers = await asyncio.gather(*(
        client.post(f"{url}/nodes", json={"id": f"n{i}", "type": "delay", "position": {"x": i, "y": 0}})
        for i in range(10)
    ))
    assert [a.status for a in answers] == [201] * 10
    stored = await (await client.get(url)).json()
    assert stored["version"] == 11
    assert sorted(n["id"] for n in stored["nodes"]) == sorted(f"n{i}" for i in range(10))


async def test_put_unknown_workflow_is_404(client: Client) -> None:
    await problem(await client.put("/api/workflows/wf_nope", json={"name": "x"}), 404)


# --- DELETE ----------------------------------------------------------------------------------


async def test_delete_is_204_then_the_workflow_is_gone(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    resp = await client.delete(f"/api/workflows/{wf['id']}")
    assert resp.status == 204
    assert await resp.read() == b""
    await problem(await client.get(f"/api/workflows/{wf['id']}"), 404)
    await problem(await client.delete(f"/api/workflows/{wf['id']}"), 404)
    assert (await (await client.get("/api/workflows")).json())["items"] == []


async def test_delete_with_a_stale_if_match_is_412_and_keeps_the_workflow(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    await problem(await client.delete(f"/api/workflows/{wf['id']}", headers={"If-Match": '"2"'}), 412)
    assert (await client.get(f"/api/workflows/{wf['id']}")).status == 200
    resp = await client.delete(f"/api/workflows/{wf['id']}", headers={"If-Match": '"1"'})
    assert resp.status == 204


# --- lists -----------------------------------------------------------------------------------


def test_ids_made_in_the_same_millisecond_sort_in_the_order_they_were_made() -> None:
    # Lists sort by (createdAt, id); ids are the tie-break for workflows created in one ms.
    ids = [new_id("wf") for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_the_time_part_of_ids_stays_the_clocks_however_many_are_made() -> None:
    # 20,000 ids take a few ms here: a time part that moved on by one ms per id ran 20 s ahead.
    ids = [new_id("run") for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert int(ids[-1][len("run_"):len("run_") + 12], 16) <= time.time_ns() // 1_000_000
    assert {len(i) for i in ids} == {len("run_") + 22}


async def test_list_is_newest_first(client: Client) -> None:
    created = [(await create(client, {"name": f"w{i}"}))["id"] for i in range(20)]
    resp = await client.get("/api/workflows")
    assert resp.status == 200
    page = await resp.json()
    assert [w["id"] for w in page["items"]] == created[::-1]
    assert page["nextCursor"] is None


async def test_list_items_are_whole_workflows(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    page = await (await client.get("/api/workflows")).json()
    assert page == {"items": [wf], "nextCursor": None}


async def test_paging_with_limit_and_cursor_visits_every_workflow_once(client: Client) -> None:
    created = [(await create(client, {"name": f"w{i}"}))["id"] for i in range(7)]
    seen: list[str] = []
    sizes: list[int] = []
    url = "/api/workflows?limit=3"
    cursor: str | None = None
    for _ in range(3):
        resp = await client.get(url if cursor is None else f"{url}&cursor={cursor}")
        assert resp.status == 200
        page = await resp.json()
        sizes.append(len(page["items"]))
        seen.extend(w["id"] for w in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert cursor is None
    assert seen == created[::-1]


async def test_a_page_that_ends_exactly_at_the_last_item_has_no_next_cursor(client: Client) -> None:
    for i in range(4):
        await create(client, {"name": f"w{i}"})
    first = await (await client.get("/api/workflows?limit=2")).json()
    second = await (await client.get(f"/api/workflows?limit=2&cursor={first['nextCursor']}")).json()
    assert len(second["items"]) == 2
    assert second["nextCursor"] is None


async def test_a_cursor_stays_valid_when_its_item_is_deleted(client: Client) -> None:
    created = [(await create(client, {"name": f"w{i}"}))["id"] for i in range(5)]
    first = await (await client.get("/api/workflows?limit=2")).json()
    assert [w["id"] for w in first["items"]] == [created[4], created[3]]
    assert (await client.delete(f"/api/workflows/{created[3]}")).status == 204
    rest = await (await client.get(f"/api/workflows?limit=10&cursor={first['nextCursor']}")).json()
    assert [w["id"] for w in rest["items"]] == [created[2], created[1], created[0]]


@pytest.mark.parametrize("limit", ["0", "501", "abc", "-1", "1.5", ""])
async def test_a_limit_outside_1_to_500_is_422_at_query_limit(client: Client, limit: str) -> None:
    await problem(await client.get(f"/api/workflows?limit={limit}"), 422, ["query", "limit"])


@pytest.mark.parametrize("limit", ["1", "500"])
async def test_limits_at_the_bounds_are_accepted(client: Client, limit: str) -> None:
    assert (await client.get(f"/api/workflows?limit={limit}")).status == 200


@pytest.mark.parametrize("cursor", ["garbage", "%%%", "W10", "WyJhIl0", "eyJhIjoxfQ", "%C3%A9"])
async def test_a_cursor_the_server_never_gave_out_is_422_at_query_cursor(
    client: Client, cursor: str
) -> None:
    await problem(await client.get(f"/api/workflows?cursor={cursor}"), 422, ["query", "cursor"])


async def test_tag_filter_lists_only_workflows_with_that_tag(client: Client) -> None:
    a = await create(client, {"name": "a", "tags": ["red", "blue"]})
    await create(client, {"name": "b", "tags": ["green"]})
    c = await create(client, {"name": "c", "tags": ["blue"]})
    await create(client, {"name": "d"})

    blue = await (await client.get("/api/workflows?tag=blue")).json()
    assert [w["id"] for w in blue["items"]] == [c["id"], a["id"]]
    assert blue["nextCursor"] is None
    red = await (await client.get("/api/workflows?tag=red")).json()
    assert [w["id"] for w in red["items"]] == [a["id"]]
    assert (await (await client.get("/api/workflows?tag=bl")).json())["items"] == []

    first = await (await client.get("/api/workflows?tag=blue&limit=1")).json()
    assert [w["id"] for w in first["items"]] == [c["id"]]
    rest = await (await client.get(f"/api/workflows?tag=blue&limit=1&cursor={first['nextCursor']}")).json()
    assert [w["id"] for w in rest["items"]] == [a["id"]]
    assert rest["nextCursor"] is None


# --- React Flow documents and strict input ---------------------------------------------------


def react_flow_object(name: str | None = "From the editor") -> dict[str, Any]:
    """What React Flow's `toObject()` gives (v12, with what it adds for its own use), plus a
    name: nodes carry `measured`, `selected`, `dragging`, ...; edges carry their look."""
    doc: dict[str, Any] = {
        "nodes": [
            {"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 40},
             "data": {"label": "Start", "config": {}},
             "measured": {"width": 180, "height": 64}, "selected": True, "dragging": False,
             "width": 180, "height": 64, "sourcePosition": "right", "targetPosition": "left",
             "draggable": True, "zIndex": 3},
            {"id": "h", "type": "http_request", "position": {"x": 260.5, "y": 40},
             "data": {"label": "Fetch", "config": {"url": "https://example.com/a"}},
             "measured": {"width": 180, "height": 64}, "selected": False},
            {"id": "o", "type": "output", "position": {"x": 520, "y": 40}},
        ],
        "edges": [
            {"id": "xy-edge__t-h", "source": "t", "target": "h", "sourceHandle": None,
             "targetHandle": None, "animated": True, "style": {"stroke": "#f6ab6c"},
             "markerEnd": {"type": "arrowclosed"}, "type": "smoothstep", "selected": False},
            {"id": "xy-edge__h-o", "source": "h", "target": "o", "sourceHandle": "out",
             "targetHandle": "in", "label": "result"},
        ],
        "viewport": {"x": -120.5, "y": 33, "zoom": 1.25},
    }
    if name is not None:
        doc["name"] = name
    return doc


STORED_NODES = [
    {"id": "t", "type": "manual_trigger", "position": {"x": 0.0, "y": 40.0},
     "data": {"label": "Start", "config": {}}},
    {"id": "h", "type": "http_request", "position": {"x": 260.5, "y": 40.0},
     "data": {"label": "Fetch", "config": {"url": "https://example.com/a"}}},
    {"id": "o", "type": "output", "position": {"x": 520.0, "y": 40.0},
     "data": {"label": "Output", "config": {}}},
]
STORED_CONNECTIONS = [
    {"id": "xy-edge__t-h", "source": "t", "target": "h", "sourceHandle": "out", "targetHandle": "in"},
    {"id": "xy-edge__h-o", "source": "h", "target": "o", "sourceHandle": "out", "targetHandle": "in"},
]


async def count_workflows(client: Client) -> int:
    return len((await (await client.get("/api/workflows?limit=500")).json())["items"])


async def test_a_react_flow_object_is_saved_with_every_edge_and_its_viewport(clocked: Client) -> None:
    created = await create(clocked, react_flow_object())
    assert created == {
        "id": created["id"], "name": "From the editor", "description": "", "tags": [],
        "version": 1, "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z",
        "nodes": STORED_NODES, "connections": STORED_CONNECTIONS,
        "viewport": {"x": -120.5, "y": 33.0, "zoom": 1.25},
    }
    # Answers call the links `connections` (the contract's name), never `edges` as well.
    got = await (await clocked.get(f"/api/workflows/{created['id']}")).json()
    assert got == created
    assert "edges" not in got


async def test_without_a_viewport_the_workflow_answers_viewport_null(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    created = await create(client, simple_workflow)
    assert created["viewport"] is None
    assert (await (await client.get(f"/api/workflows/{created['id']}")).json())["viewport"] is None
    assert (await create(client, {"name": "x", "viewport": None}))["viewport"] is None


async def test_put_of_a_react_flow_object_replaces_the_graph_and_the_viewport(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    wf = await create(client, simple_workflow)
    url = f"/api/workflows/{wf['id']}"
    resp = await client.put(url, json=react_flow_object(name=None))
    assert resp.status == 200, await resp.text()
    saved = await resp.json()
    assert (saved["name"], saved["version"]) == ("Fetch and store", 2)
    assert (saved["nodes"], saved["connections"]) == (STORED_NODES, STORED_CONNECTIONS)
    assert saved["viewport"] == {"x": -120.5, "y": 33.0, "zoom": 1.25}

    # A PUT without a viewport keeps it; `null` forgets it.
    kept = await (await client.put(url, json={"name": "Renamed"})).json()
    assert (kept["viewport"], kept["version"]) == ({"x": -120.5, "y": 33.0, "zoom": 1.25}, 3)
    moved = await (await client.put(url, json={"viewport": {"x": 1, "y": 2, "zoom": 0.5}})).json()
    assert (moved["viewport"], moved["version"]) == ({"x": 1.0, "y": 2.0, "zoom": 0.5}, 4)
    assert moved["connections"] == STORED_CONNECTIONS
    forgot = await (await client.put(url, json={"viewport": None})).json()
    assert (forgot["viewport"], forgot["version"]) == (None, 5)
    assert await (await client.get(url)).json() == forgot


async def test_a_workflow_read_and_saved_back_whole_is_accepted_and_changes_nothing(client: Client) -> None:
    wf = await create(client, react_flow_object())
    resp = await client.put(f"/api/workflows/{wf['id']}", json=wf)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == wf  # server-owned fields are ignored; nothing changed: version 1


async def test_connections_and_edges_together_are_422_at_edges_and_store_nothing(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    both = {**react_flow_object(), "connections": STORED_CONNECTIONS}
    body = await problem(await client.post("/api/workflows", json=both), 422, ["body", "edges"])
    assert "not both" in body["detail"]
    assert await count_workflows(client) == 0

    wf = await create(client, simple_workflow)
    resp = await client.put(f"/api/workflows/{wf['id']}", json={"edges": [], "connections": []})
    await problem(resp, 422, ["body", "edges"])
    assert await (await client.get(f"/api/workflows/{wf['id']}")).json() == wf


async def test_errors_in_edges_are_located_in_edges(client: Client) -> None:
    doc = react_flow_object()
    doc["edges"][1]["target"] = "ghost"
    await problem(await client.post("/api/workflows", json=doc), 422, ["body", "edges", 1, "target"])
    doc = react_flow_object()
    del doc["edges"][0]["source"]
    await problem(await client.post("/api/workflows", json=doc), 422, ["body", "edges", 0, "source"])
    assert await count_workflows(client) == 0


@pytest.mark.parametrize(("viewport", "loc"), [
    ({"x": 0, "y": 0, "zoom": 0}, ["body", "viewport", "zoom"]),
    ({"x": 0, "y": 0, "zoom": -1.5}, ["body", "viewport", "zoom"]),
    ({"x": 0, "y": 0}, ["body", "viewport", "zoom"]),
    ({"x": "left", "y": 0, "zoom": 1}, ["body", "viewport", "x"]),
    ({"x": 0, "y": True, "zoom": 1}, ["body", "viewport", "y"]),
    ([0, 0, 1], ["body", "viewport"]),
])
async def test_an_invalid_viewport_is_422_at_its_field_and_stores_nothing(
    client: Client, viewport: Any, loc: list[Any]
) -> None:
    await problem(await client.post("/api/workflows", json={"name": "v", "viewport": viewport}), 422, loc)
    assert await count_workflows(client) == 0


async def test_an_infinite_zoom_is_422(client: Client) -> None:
    raw = b'{"name": "v", "viewport": {"x": 0, "y": 0, "zoom": 1e999}}'
    resp = await client.post("/api/workflows", data=raw, headers={"Content-Type": "application/json"})
    await problem(resp, 422, ["body", "viewport", "zoom"])


@pytest.mark.parametrize("field", ["edgez", "selectedNodes", "Connections", "viewPort"])
async def test_an_unknown_top_level_field_is_422_naming_it_and_stores_nothing(
    client: Client, simple_workflow: dict[str, Any], field: str
) -> None:
    body = await problem(await client.post("/api/workflows", json={**simple_workflow, field: []}),
                         422, ["body", field])
    assert field in body["detail"]
    assert await count_workflows(client) == 0

    wf = await create(client, simple_workflow)
    resp = await client.put(f"/api/workflows/{wf['id']}", json={"name": "Lost", field: []})
    await problem(resp, 422, ["body", field])
    assert await (await client.get(f"/api/workflows/{wf['id']}")).json() == wf
