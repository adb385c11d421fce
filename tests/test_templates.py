"""Templates through the HTTP API: saving (whole or from a workflow), versions and ETags,
paging, applying into new and existing workflows, export and import, refusals that leave the
store as it was, and the gallery seeded on first start."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ClientFactory, make_settings

from flowstage.server.app import create_app

Client = TestClient[Any, Any]
JSON = dict[str, Any]


# --- helpers ----------------------------------------------------------------------------------


async def post(client: Client, path: str, body: Any, status: int, **headers: str) -> JSON:
    resp = await client.post(path, json=body, headers=headers)
    assert resp.status == status, await resp.text()
    answer: JSON = await resp.json()
    return answer


async def get(client: Client, path: str) -> JSON:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    answer: JSON = await resp.json()
    return answer


async def count(client: Client, path: str) -> int:
    return len((await get(client, f"{path}?limit=500"))["items"])


def shape(doc: JSON) -> tuple[list[Any], list[Any]]:
    """A graph with its ids replaced by node positions in the list, to compare copies."""
    index = {n["id"]: i for i, n in enumerate(doc["nodes"])}
    nodes = [(n["type"], n["position"], n["data"]) for n in doc["nodes"]]
    connections = [
        (index[c["source"]], c["sourceHandle"], index[c["target"]], c["targetHandle"])
        for c in doc["connections"]
    ]
    return nodes, connections


def node_ids(doc: JSON) -> set[str]:
    return {n["id"] for n in doc["nodes"]}


def connection_ids(doc: JSON) -> set[str]:
    return {c["id"] for c in doc["connections"]}


def branching_template(name: str = "Branch and notify", tags: list[str] | None = None) -> JSON:
    """webhook -> condition -(true)-> email, -(false)-> http, at known positions."""
    return {
        "name": name,
        "description": "Routes events",
        "tags": tags if tags is not None else ["alerts"],
        "nodes": [
            {"id": "hook", "type": "webhook_trigger", "position": {"x": 10, "y": 20},
             "data": {"label": "Incoming", "config": {"path": "/hooks/x"}}},
            {"id": "check", "type": "condition", "position": {"x": 250, "y": 20}},
            {"id": "mail", "type": "send_email", "position": {"x": 500, "y": -60},
             "data": {"label": "Mail", "config": {"to": ["a@example.com"], "subject": "Hi"}}},
            {"id": "call", "type": "http_request", "position": {"x": 500, "y": 100}},
        ],
        "connections": [
            {"id": "c1", "source": "hook", "target": "check"},
            {"id": "c2", "source": "check", "target": "mail", "sourceHandle": "true"},
            {"id": "c3", "source": "check", "target": "call", "sourceHandle": "false"},
        ],
    }


@pytest.fixture
async def template(client: Client) -> JSON:
    return await post(client, "/api/templates", branching_template(), 201)


@pytest.fixture
async def workflow(client: Client, simple_workflow: JSON) -> JSON:
    return await post(client, "/api/workflows", simple_workflow, 201)


# --- saving -----------------------------------------------------------------------------------


async def test_template_from_workflow_copies_its_graph_and_not_its_later_edits(
    client: Client, workflow: JSON
) -> None:
    body = {"fromWorkflowId": workflow["id"], "name": "Saved"}
    resp = await client.post("/api/templates", json=body)
    assert resp.status == 201
    saved = await resp.json()
    assert resp.headers["Location"] == f"/api/templates/{saved['id']}"
    assert resp.headers["ETag"] == '"1"'
    assert (saved["name"], saved["version"]) == ("Saved", 1)
    assert (saved["description"], saved["tags"]) == (workflow["description"], workflow["tags"])
    assert (saved["nodes"], saved["connections"]) == (workflow["nodes"], workflow["connections"])

    wf_path = f"/api/workflows/{workflow['id']}"
    assert (await client.put(wf_path, json={"nodes": [], "connections": []})).status == 200
    assert (await client.delete(wf_path)).status == 204

    again = await get(client, f"/api/templates/{saved['id']}")
    assert (again["nodes"], again["connections"]) == (workflow["nodes"], workflow["connections"])
    assert again["version"] == 1


async def test_template_from_workflow_takes_given_description_and_tags(
    client: Client, workflow: JSON
) -> None:
    body = {"fromWorkflowId": workflow["id"], "name": "Saved", "description": "Mine",
            "tags": ["x", "x", "y"]}
    saved = await post(client, "/api/templates", body, 201)
    assert (saved["description"], saved["tags"]) == ("Mine", ["x", "y"])


async def test_whole_template_body_is_saved_with_its_ids(client: Client) -> None:
    saved = await post(client, "/api/templates", branching_template(), 201)
    assert node_ids(saved) == {"hook", "check", "mail", "call"}
    assert saved["connections"][1] == {"id": "c2", "source": "check", "target": "mail",
                                       "sourceHandle": "true", "targetHandle": "in"}
    assert await get(client, f"/api/templates/{saved['id']}") == saved


# --- versions, ETags, paging -------------------------------------------------------------------


async def test_every_change_bumps_the_version_and_etags_guard_it(
    client: Client, template: JSON
) -> None:
    path = f"/api/templates/{template['id']}"
    resp = await client.get(path)
    assert resp.headers["ETag"] == '"1"'
    resp = await client.get(path, headers={"If-None-Match": '"1"'})
    assert resp.status == 304

    resp = await client.put(path, json={"name": "Renamed"}, headers={"If-Match": '"1"'})
    assert resp.status == 200
    assert resp.headers["ETag"] == '"2"'
    assert ((await resp.json())["name"], (await resp.json())["version"]) == ("Renamed", 2)
    assert (await client.get(path, headers={"If-None-Match": '"1"'})).status == 200

    moved = copy.deepcopy(branching_template()["nodes"])
    moved[0]["position"] = {"x": 99, "y": 99}
    resp = await client.put(path, json={"nodes": moved})
    assert (await resp.json())["version"] == 3
    assert (await resp.json())["nodes"][0]["position"] == {"x": 99, "y": 99}

    stale = await client.put(path, json={"name": "Lost"}, headers={"If-Match": '"2"'})
    assert stale.status == 412
    assert stale.content_type == "application/problem+json"
    unknown_type = {"type": "teleport", "position": {"x": 0, "y": 0}}
    broken = await client.put(path, json={"nodes": [unknown_type]})
    assert broken.status == 422
    current = await get(client, path)
    assert (current["name"], current["version"]) == ("Renamed", 3)

    assert (await client.delete(path, headers={"If-Match": '"2"'})).status == 412
    assert (await client.delete(path, headers={"If-Match": '"3"'})).status == 204
    assert (await client.get(path)).status == 404


async def test_list_pages_newest_first_and_filters_by_tag(client: Client) -> None:
    made = []
    for i in range(5):
        tags = ["even"] if i % 2 == 0 else ["odd"]
        made.append(await post(client, "/api/templates", branching_template(f"T{i}", tags), 201))

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await get(client, f"/api/templates{query}")
        assert len(page["items"]) <= 2
        seen += [t["id"] for t in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [t["id"] for t in reversed(made)]

    even = await get(client, "/api/templates?tag=even")
    assert [t["name"] for t in even["items"]] == ["T4", "T2", "T0"]
    bad = await client.get("/api/templates?limit=0")
    assert bad.status == 422


# --- apply ------------------------------------------------------------------------------------


async def test_apply_without_workflow_creates_a_new_one(client: Client, template: JSON) -> None:
    resp = await client.post(f"/api/templates/{template['id']}/apply", json={})
    assert resp.status == 201
    created = await resp.json()
    assert resp.headers["Location"] == f"/api/workflows/{created['id']}"
    assert await get(client, resp.headers["Location"]) == created
    assert (created["name"], created["version"]) == (template["name"], 1)
    assert created["tags"] == template["tags"]
    assert shape(created) == shape(template)

    named = await post(client, f"/api/templates/{template['id']}/apply",
                       {"name": "From template", "offset": {"x": 5, "y": -5}}, 201)
    assert named["name"] == "From template"
    assert [n["position"] for n in named["nodes"]] == [
        {"x": n["position"]["x"] + 5, "y": n["position"]["y"] - 5} for n in template["nodes"]]
    assert await count(client, "/api/workflows") == 2


async def test_apply_replace_swaps_the_graph_and_bumps_the_version_once(
    client: Client, template: JSON, workflow: JSON
) -> None:
    body = {"workflowId": workflow["id"], "mode": "replace"}
    resp = await client.post(f"/api/templates/{template['id']}/apply", json=body,
                             headers={"If-Match": '"1"'})
    assert resp.status == 200
    replaced = await resp.json()
    assert resp.headers["ETag"] == '"2"'
    assert (replaced["id"], replaced["name"]) == (workflow["id"], workflow["name"])
    assert replaced["version"] == 2
    assert shape(replaced) == shape(template)
    assert node_ids(replaced).isdisjoint(node_ids(workflow))
    assert await get(client, f"/api/workflows/{workflow['id']}") == replaced


async def test_apply_merge_with_offset_adds_remapped_copies_at_exact_positions(
    client: Client, template: JSON, workflow: JSON
) -> None:
    body = {"workflowId": workflow["id"], "mode": "merge", "offset": {"x": 100, "y": 400}}
    merged = await post(client, f"/api/templates/{template['id']}/apply", body, 200)

    assert merged["version"] == workflow["version"] + 1
    kept = merged["nodes"][: len(workflow["nodes"])]
    added = {**merged, "nodes": merged["nodes"][len(workflow["nodes"]):],
             "connections": merged["connections"][len(workflow["connections"]):]}
    assert kept == workflow["nodes"]
    assert merged["connections"][: len(workflow["connections"])] == workflow["connections"]
    assert len(node_ids(merged)) == len(merged["nodes"])
    assert node_ids(added).isdisjoint(node_ids(workflow) | node_ids(template))
    assert connection_ids(added).isdisjoint(connection_ids(workflow) | connection_ids(template))
    ends = {c["source"] for c in added["connections"]} | {c["target"] for c in added["connections"]}
    assert ends <= node_ids(added)
    assert [n["position"] for n in added["nodes"]] == [
        {"x": n["position"]["x"] + 100, "y": n["position"]["y"] + 400} for n in template["nodes"]]
    pairs = zip(added["nodes"], template["nodes"], strict=True)
    moved_back = {**added, "nodes": [{**n, "position": t["position"]} for n, t in pairs]}
    assert shape(moved_back) == shape(template)


async def test_apply_merge_without_offset_places_copies_right_of_existing_nodes(
    client: Client, template: JSON, workflow: JSON
) -> None:
    body = {"workflowId": workflow["id"]}  # merge is the default mode
    merged = await post(client, f"/api/templates/{template['id']}/apply", body, 200)
    added = merged["nodes"][len(workflow["nodes"]):]
    assert len(added) == len(template["nodes"])

    right_edge = max(n["position"]["x"] for n in workflow["nodes"])
    top = min(n["position"]["y"] for n in workflow["nodes"])
    # A node is about 200 px wide: every copy starts beyond the rightmost existing node's box.
    assert min(n["position"]["x"] for n in added) > right_edge + 200
    assert min(n["position"]["y"] for n in added) == top
    # The template's own arrangement survives the move.
    dx = added[0]["position"]["x"] - template["nodes"][0]["position"]["x"]
    dy = added[0]["position"]["y"] - template["nodes"][0]["position"]["y"]
    assert [n["position"] for n in added] == [
        {"x": t["position"]["x"] + dx, "y": t["position"]["y"] + dy} for t in template["nodes"]]


async def test_applying_twice_gives_two_disjoint_copies(
    client: Client, template: JSON, workflow: JSON
) -> None:
    path = f"/api/templates/{template['id']}/apply"
    await post(client, path, {"workflowId": workflow["id"]}, 200)
    twice = await post(client, path, {"workflowId": workflow["id"]}, 200)
    assert twice["version"] == 3

    base, size = len(workflow["nodes"]), len(template["nodes"])
    first = {n["id"] for n in twice["nodes"][base:base + size]}
    second = {n["id"] for n in twice["nodes"][base + size:]}
    assert len(first) == len(second) == size
    assert first.isdisjoint(second)
    assert len(connection_ids(twice)) == len(twice["connections"])
    conn_base = len(workflow["connections"])
    conn_size = len(template["connections"])
    for block, ids in ((twice["connections"][conn_base:conn_base + conn_size], first),
                       (twice["connections"][conn_base + conn_size:], second)):
        assert {c["source"] for c in block} | {c["target"] for c in block} <= ids

    fresh_a = await post(client, path, {}, 201)
    fresh_b = await post(client, path, {}, 201)
    assert node_ids(fresh_a).isdisjoint(node_ids(fresh_b))


async def test_apply_refusals_leave_the_workflow_as_it_was(
    client: Client, template: JSON, workflow: JSON
) -> None:
    path = f"/api/templates/{template['id']}/apply"
    resp = await client.post(path, json={"workflowId": workflow["id"]}, headers={"If-Match": '"7"'})
    assert resp.status == 412

    resp = await client.post(path, json={"workflowId": "wf_missing"})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "workflowId"]

    resp = await client.post(path, json={"workflowId": workflow["id"], "mode": "overwrite"})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "mode"]

    resp = await client.post("/api/templates/tpl_missing/apply",
                             json={"workflowId": workflow["id"]})
    assert resp.status == 404

    assert await get(client, f"/api/workflows/{workflow['id']}") == workflow
    assert await count(client, "/api/workflows") == 1


# --- export and import ------------------------------------------------------------------------


async def test_export_is_a_download_with_the_template_and_its_node_types(client: Client) -> None:
    saved = await post(client, "/api/templates", branching_template("Alerts: Überblick / v2"), 201)
    resp = await client.get(f"/api/templates/{saved['id']}/export")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert resp.headers["Content-Disposition"] == (
        'attachment; filename="alerts-uberblick-v2.flowstage.json"')
    doc = await resp.json()
    assert doc["formatVersion"] == 1
    assert doc["exportedAt"].endswith("Z")
    assert doc["template"] == saved
    catalogue = {t["type"]: t for t in (await get(client, "/api/node-types"))["items"]}
    used = {"webhook_trigger", "condition", "send_email", "http_request"}
    assert {t["type"] for t in doc["nodeTypes"]} == used
    assert all(t == catalogue[t["type"]] for t in doc["nodeTypes"])
    assert (await client.get("/api/templates/tpl_missing/export")).status == 404


async def test_an_export_of_the_same_version_is_the_same_bytes_and_304_until_the_template_changes(
    client: Client,
) -> None:
    saved = await post(client, "/api/templates", branching_template("Alerts"), 201)
    url = f"/api/templates/{saved['id']}/export"
    first, again = await client.get(url), await client.get(url)
    assert await first.read() == await again.read()
    etag = first.headers["ETag"]
    assert again.headers["ETag"] == etag and (await first.json())["exportedAt"] == saved["updatedAt"]
    cached = await client.get(url, headers={"If-None-Match": etag})
    assert cached.status == 304 and cached.headers["ETag"] == etag
    changed = await client.put(f"/api/templates/{saved['id']}", json={"name": "Alerts, renamed"})
    assert changed.status == 200, await changed.text()
    fresh = await client.get(url, headers={"If-None-Match": etag})
    assert fresh.status == 200 and fresh.headers["ETag"] != etag
    assert (await fresh.json())["template"]["name"] == "Alerts, renamed"


async def test_export_then_import_gives_an_equal_graph_with_fresh_ids(
    client: Client, template: JSON
) -> None:
    exported = await get(client, f"/api/templates/{template['id']}/export")
    resp = await client.post("/api/templates/import", json=exported)
    assert resp.status == 201
    imported = await resp.json()
    assert resp.headers["Location"] == f"/api/templates/{imported['id']}"
    assert imported["id"] != template["id"]
    assert imported["version"] == 1
    assert (imported["name"], imported["description"], imported["tags"]) == (
        template["name"], template["description"], template["tags"])
    assert shape(imported) == shape(template)
    assert node_ids(imported).isdisjoint(node_ids(template))
    assert connection_ids(imported).isdisjoint(connection_ids(template))
    assert await count(client, "/api/templates") == 2


def react_flow_document() -> JSON:
    """What React Flow's toObject() gives for trigger -> transform -> output."""
    return {
        "nodes": [
            {"id": "1", "type": "manual_trigger", "position": {"x": 0, "y": 50},
             "data": {"label": "Start"}, "width": 150, "height": 40, "selected": False},
            {"id": "2", "type": "transform", "position": {"x": 220.5, "y": 50},
             "data": {"label": "Map", "config": {"language": "python"}}},
            {"id": "3", "type": "output", "position": {"x": 440, "y": 50},
             "data": {"label": "Done"}},
        ],
        "edges": [
            {"id": "reactflow__edge-1-2", "source": "1", "target": "2",
             "sourceHandle": None, "targetHandle": None},
            {"id": "reactflow__edge-2-3", "source": "2", "target": "3",
             "sourceHandle": "out", "targetHandle": "in", "animated": True},
        ],
        "viewport": {"x": 12, "y": -4, "zoom": 1.25},
    }


async def test_react_flow_document_imports_with_fresh_ids_and_remapped_edges(
    client: Client,
) -> None:
    imported = await post(client, "/api/templates/import", react_flow_document(), 201)
    assert imported["name"] == "Imported workflow"
    assert [(n["type"], n["position"], n["data"]["label"]) for n in imported["nodes"]] == [
        ("manual_trigger", {"x": 0, "y": 50}, "Start"),
        ("transform", {"x": 220.5, "y": 50}, "Map"),
        ("output", {"x": 440, "y": 50}, "Done"),
    ]
    assert node_ids(imported).isdisjoint({"1", "2", "3"})
    ids = [n["id"] for n in imported["nodes"]]
    joined = [(c["source"], c["sourceHandle"], c["target"], c["targetHandle"])
              for c in imported["connections"]]
    assert joined == [(ids[0], "out", ids[1], "in"), (ids[1], "out", ids[2], "in")]
    assert not connection_ids(imported) & {"reactflow__edge-1-2", "reactflow__edge-2-3"}

    body = {**react_flow_document(), "name": "From editor"}
    named = await post(client, "/api/templates/import", body, 201)
    assert named["name"] == "From editor"


def _export_of(template: JSON) -> JSON:
    return {"formatVersion": 1, "exportedAt": "2026-01-01T00:00:00.000Z",
            "template": template, "nodeTypes": []}


def _with(doc: JSON, path: list[Any], value: Any) -> JSON:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


EXPORT = _export_of(branching_template())
REFUSED_IMPORTS = [
    pytest.param(_with(EXPORT, ["formatVersion"], 2),
                 ["body", "formatVersion"], id="newer-format-version"),
    pytest.param(_with(EXPORT, ["template", "nodes", 2, "type"], "teleport"),
                 ["body", "template", "nodes", 2, "type"], id="export-unknown-type"),
    pytest.param(_with(EXPORT, ["template", "connections", 1, "target"], "ghost"),
                 ["body", "template", "connections", 1, "target"], id="export-dangling-connection"),
    pytest.param(_with(react_flow_document(), ["nodes", 2, "type"], "teleport"),
                 ["body", "nodes", 2, "type"], id="react-flow-unknown-type"),
    pytest.param(_with(react_flow_document(), ["edges", 1, "source"], "42"),
                 ["body", "edges", 1, "source"], id="react-flow-dangling-edge"),
    pytest.param({"viewport": {"x": 0, "y": 0, "zoom": 1}}, ["body"], id="neither-format"),
]


@pytest.mark.parametrize(("document", "loc"), REFUSED_IMPORTS)
async def test_refused_import_names_the_field_and_creates_nothing(
    client: Client, template: JSON, document: JSON, loc: list[Any]
) -> None:
    resp = await client.post("/api/templates/import", json=document)
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    assert loc in [e["loc"] for e in (await resp.json())["errors"]]
    assert await count(client, "/api/templates") == 1


@pytest.mark.parametrize("path", ["/api/templates", "/api/templates/import"])
async def test_unreadable_bodies_are_refused_and_create_nothing(
    client: Client, template: JSON, path: str
) -> None:
    body = json.dumps(react_flow_document() if path.endswith("import") else branching_template())
    broken = await client.post(path, data=body[:-3], headers={"Content-Type": "application/json"})
    assert broken.status == 400
    wrong_type = await client.post(path, data=body, headers={"Content-Type": "text/plain"})
    assert wrong_type.status == 415
    assert broken.content_type == wrong_type.content_type == "application/problem+json"
    assert await count(client, "/api/templates") == 1


async def test_invalid_template_bodies_name_the_field_and_create_nothing(
    client: Client, template: JSON
) -> None:
    resp = await client.post("/api/templates", json={"fromWorkflowId": "wf_missing", "name": "X"})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "fromWorkflowId"]
    resp = await client.post("/api/templates",
                             json={"fromWorkflowId": "wf_x", "name": "X", "nodes": []})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "nodes"]
    bad_graph = _with(branching_template(), ["nodes", 1, "type"], "teleport")
    resp = await client.post("/api/templates", json=bad_graph)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "nodes", 1, "type"]
    assert await count(client, "/api/templates") == 1


# --- React Flow names, viewports and unknown fields -------------------------------------------


async def test_a_template_body_may_send_its_links_as_edges(client: Client, template: JSON) -> None:
    doc = branching_template("As edges")
    doc["edges"] = doc.pop("connections")
    saved = await post(client, "/api/templates", doc, 201)
    assert saved["connections"] == template["connections"]
    assert "edges" not in saved and "viewport" not in saved

    resp = await client.put(f"/api/templates/{saved['id']}",
                            json={"edges": [{"id": "only", "source": "hook", "target": "check"}]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["connections"] == [
        {"id": "only", "source": "hook", "target": "check", "sourceHandle": "out", "targetHandle": "in"}]


async def test_a_template_read_and_saved_back_whole_is_accepted_and_changes_nothing(
    client: Client, template: JSON
) -> None:
    resp = await client.put(f"/api/templates/{template['id']}", json=template)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == template


@pytest.mark.parametrize(("extra", "loc"), [
    ({"viewport": {"x": 0, "y": 0, "zoom": 1}}, ["body", "viewport"]),  # a template has no camera
    ({"bogus": 1}, ["body", "bogus"]),
    ({"connections": [], "edges": []}, ["body", "edges"]),
])
async def test_template_bodies_refuse_unknown_fields_by_name_and_keep_nothing(
    client: Client, template: JSON, extra: JSON, loc: list[Any]
) -> None:
    resp = await client.post("/api/templates", json={**branching_template(), **extra})
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json())["errors"]] == [loc]
    resp = await client.put(f"/api/templates/{template['id']}", json={"name": "Lost", **extra})
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json())["errors"]] == [loc]
    assert await count(client, "/api/templates") == 1
    assert await get(client, f"/api/templates/{template['id']}") == template


async def test_templates_keep_no_viewport_and_applying_one_keeps_the_workflows(client: Client) -> None:
    wf = await post(client, "/api/workflows",
                    {**branching_template("Looked at"), "viewport": {"x": 5, "y": 6, "zoom": 2}}, 201)
    saved = await post(client, "/api/templates", {"fromWorkflowId": wf["id"], "name": "Copy"}, 201)
    assert "viewport" not in saved
    fresh = await post(client, f"/api/templates/{saved['id']}/apply", {}, 201)
    assert fresh["viewport"] is None
    merged = await post(client, f"/api/templates/{saved['id']}/apply",
                        {"workflowId": wf["id"], "mode": "merge"}, 200)
    assert merged["viewport"] == {"x": 5.0, "y": 6.0, "zoom": 2.0}


def react_flow_v12_document() -> JSON:
    """A React Flow 12 toObject(): nodes carry `measured`, `selected`, `dragging`, ...; edges
    their look; and the viewport."""
    doc = react_flow_document()
    for node in doc["nodes"]:
        node.update({"measured": {"width": 150, "height": 40}, "selected": True, "dragging": False,
                     "sourcePosition": "right", "targetPosition": "left"})
    doc["edges"][0].update({"type": "smoothstep", "style": {"strokeWidth": 2},
                            "markerEnd": {"type": "arrowclosed"}, "label": "go"})
    return doc


async def test_a_react_flow_12_object_imports_every_edge(client: Client) -> None:
    imported = await post(client, "/api/templates/import", react_flow_v12_document(), 201)
    ids = [n["id"] for n in imported["nodes"]]
    assert [(c["source"], c["sourceHandle"], c["target"], c["targetHandle"])
            for c in imported["connections"]] == [(ids[0], "out", ids[1], "in"), (ids[1], "out", ids[2], "in")]
    assert "viewport" not in imported


@pytest.mark.parametrize(("document", "loc"), [
    pytest.param({**react_flow_document(), "bogus": 1}, ["body", "bogus"], id="react-flow-unknown-field"),
    pytest.param(_with(react_flow_document(), ["viewport", "zoom"], 0), ["body", "viewport", "zoom"],
                 id="react-flow-zero-zoom"),
    pytest.param({**EXPORT, "bogus": 1}, ["body", "bogus"], id="export-unknown-field"),
    pytest.param(_with(EXPORT, ["template", "bogus"], 1), ["body", "template", "bogus"],
                 id="export-template-unknown-field"),
])
async def test_an_import_with_an_unknown_or_invalid_field_is_422_at_it(
    client: Client, template: JSON, document: JSON, loc: list[Any]
) -> None:
    resp = await client.post("/api/templates/import", json=document)
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json())["errors"]] == [loc]
    assert await count(client, "/api/templates") == 1


# --- gallery and documentation ----------------------------------------------------------------


async def test_gallery_is_seeded_once_into_an_empty_store(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage="sqlite", seed_demo_data=True)
    client = await aiohttp_client(create_app(settings))
    gallery = (await get(client, "/api/templates"))["items"]
    assert len(gallery) >= 6
    assert len({t["name"] for t in gallery}) == len(gallery)
    assert all("gallery" in t["tags"] for t in gallery)
    assert all(len(t["nodes"]) >= 3 and t["connections"] for t in gallery)
    assert await count(client, "/api/workflows") > 0
    applied = await post(client, f"/api/templates/{gallery[0]['id']}/apply", {}, 201)
    assert shape(applied) == shape(gallery[0])
    assert (await client.delete(f"/api/templates/{gallery[0]['id']}")).status == 204
    await client.close()

    restarted = await aiohttp_client(create_app(settings))
    assert await count(restarted, "/api/templates") == len(gallery) - 1


async def test_no_gallery_when_demo_data_is_off(client: Client) -> None:
    assert await count(client, "/api/templates") == 0


async def test_openapi_documents_every_template_operation(client: Client) -> None:
    spec = await get(client, "/api/openapi.json")
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    assert set(paths["/api/templates"]) == {"get", "post"}
    assert set(paths["/api/templates/{id}"]) == {"get", "put", "delete"}
    assert set(paths["/api/templates/{id}/apply"]) == {"post"}
    assert set(paths["/api/templates/{id}/export"]) == {"get"}
    assert set(paths["/api/templates/import"]) == {"post"}
    def body_schemas(path: str) -> list[Any]:
        """The alternatives a body may be, each a named schema."""
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return [schemas[s["$ref"].rpartition("/")[2]] for s in body["anyOf"]]

    create_body = body_schemas("/api/templates")
    assert ["fromWorkflowId", "name"] in [s.get("required") for s in create_body]
    import_body = body_schemas("/api/templates/import")
    assert any("edges" in s["properties"] for s in import_body)


async def test_an_offset_that_moves_nodes_out_of_range_is_422_and_changes_nothing(
    client: Client,
) -> None:
    created = await client.post("/api/templates", json={
        "name": "One node", "nodes": [{"id": "a", "type": "output", "position": {"x": 10, "y": 0}}]})
    tpl = (await created.json())["id"]
    before = (await (await client.get("/api/workflows")).json())["items"]
    for body in ({"offset": {"x": 1e9, "y": 0}}, {"offset": {"x": 999_999_995, "y": 0}}):
        resp = await client.post(f"/api/templates/{tpl}/apply", json=body)
        assert resp.status == 422, body
        assert (await resp.json())["errors"][0]["loc"] == ["body", "offset"]
    assert (await (await client.get("/api/workflows")).json())["items"] == before
