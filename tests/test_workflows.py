"""Workflows through the HTTP API, as a React Flow editor uses them: create, read with ETags,
save (PUT), delete, and list with pagination and tag filtering."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ClientFactory
from flowstage.actors.clock import ManualClock
from flowstage.config import Settings
from flowstage.server.app import create_app
from flowstage.server.store import new_id

Client = TestClient[Any, web.Application]
JAN_1_2026 = 1_767_225_600.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=JAN_1_2026)


@pytest.fixture
async def clocked(aiohttp_client: ClientFactory, settings: Settings, clock: ManualClock) -> Client:
    return await aiohttp_client(create_app(settings, clock=clock))


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
    # A node sent without data gets React Flow's shape, with an empty label and config.
    assert body["nodes"][0]["data"] == {"label": "", "config": {}}
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
