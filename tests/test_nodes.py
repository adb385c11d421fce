"""Editing a workflow's graph one node or connection at a time, as a React Flow editor does on
drop, drag, connect and delete."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[Any, web.Application]


async def problem(resp: Any, status: int, loc: list[Any] | None = None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["status"] == status
    if loc is not None:
        assert [e["loc"] for e in body["errors"]] == [loc], body
    return body



async def stored(client: Client, wf: str) -> dict[str, Any]:
    resp = await client.get(f"/api/workflows/{wf}")
    assert resp.status == 200
    return dict(await resp.json())


async def add_node(client: Client, wf: str, node: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(f"/api/workflows/{wf}/nodes", json=node)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def connect(client: Client, wf: str, connection: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(f"/api/workflows/{wf}/connections", json=connection)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


# --- nodes -----------------------------------------------------------------------------------


async def test_adding_a_node_with_an_id_answers_201_with_the_node(client: Client, wf: str) -> None:
    resp = await client.post(f"/api/workflows/{wf}/nodes", json={
        "id": "mail", "type": "send_email", "position": {"x": 600, "y": 40.5},
        "data": {"label": "Tell ops", "config": {"to": ["ops@example.com"], "subject": "Done"}},
    })
    assert resp.status == 201
    assert resp.headers["ETag"] == '"2"'
    node = await resp.json()
    assert node == {
        "id": "mail", "type": "send_email", "position": {"x": 600, "y": 40.5},
        "data": {"label": "Tell ops", "config": {"to": ["ops@example.com"], "subject": "Done"}},
    }
    doc = await stored(client, wf)
    assert doc["version"] == 2
    assert doc["nodes"][-1] == node
    assert [n["id"] for n in doc["nodes"]] == ["t", "h", "o", "mail"]


async def test_adding_a_node_without_an_id_gets_a_server_id(client: Client, wf: str) -> None:
    first = await add_node(client, wf, {"type": "delay", "position": {"x": 1, "y": 2}})
    second = await add_node(client, wf, {"type": "delay", "position": {"x": 3, "y": 4}})
    assert first["id"] and second["id"]
    assert first["id"] != second["id"]
    assert first["id"] not in {"t", "h", "o"}
    assert first["data"] == {"label": "Delay", "config": {}}
    doc = await stored(client, wf)
    assert doc["version"] == 3
    assert [n["id"] for n in doc["nodes"]][-2:] == [first["id"], second["id"]]


async def test_a_duplicate_node_id_is_422_at_body_id(client: Client, wf: str) -> None:
    resp = await client.post(f"/api/workflows/{wf}/nodes",
                             json={"id": "h", "type": "delay", "position": {"x": 0, "y": 0}})
    await problem(resp, 422, ["body", "id"])
    assert (await stored(client, wf))["version"] == 1


async def test_an_unknown_node_type_is_422_at_body_type(client: Client, wf: str) -> None:
    resp = await client.post(f"/api/workflows/{wf}/nodes",
                             json={"type": "teleporter", "position": {"x": 0, "y": 0}})
    body = await problem(resp, 422, ["body", "type"])
    assert "teleporter" in body["errors"][0]["msg"]
    assert (await stored(client, wf))["version"] == 1


@pytest.mark.parametrize(
    ("node_type", "config", "loc_tail"),
    [
        ("http_request", {"url": "https://x.example", "timeoutMs": "x"}, ["timeoutMs"]),
        ("http_request", {"url": "https://x.example", "timeoutMs": 0}, ["timeoutMs"]),
        ("http_request", {"method": "BREW"}, ["method"]),
        ("http_request", {"headers": {"Accept": 5}}, ["headers", "Accept"]),
        ("image_resize", {"width": 0}, ["width"]),
        ("send_email", {"to": ["a@example.com", 7]}, ["to", 1]),
        ("csv_parse", {"delimiter": ";;"}, ["delimiter"]),
        ("condition", {"trueProbability": 1.5}, ["trueProbability"]),
        ("delay", {"bogus": 1}, ["bogus"]),
    ],
)
async def test_a_config_value_that_breaks_the_node_types_schema_is_422_at_its_loc(
    client: Client, wf: str, node_type: str, config: dict[str, Any], loc_tail: list[Any]
) -> None:
    resp = await client.post(f"/api/workflows/{wf}/nodes", json={
        "type": node_type, "position": {"x": 0, "y": 0}, "data": {"config": config},
    })
    await problem(resp, 422, ["body", "data", "config", *loc_tail])
    assert (await stored(client, wf))["version"] == 1


async def test_a_half_filled_config_can_be_saved(client: Client, wf: str) -> None:
    # Required keys fall back to the node type's defaults at run time.
    node = await add_node(client, wf, {"type": "http_request", "position": {"x": 0, "y": 0},
                                       "data": {"config": {"method": "POST"}}})
    assert node["data"]["config"] == {"method": "POST"}


async def test_moving_a_node_keeps_its_data(client: Client, wf: str) -> None:
    resp = await client.put(f"/api/workflows/{wf}/nodes/h", json={"position": {"x": 250.5, "y": -80}})
    assert resp.status == 200
    assert resp.headers["ETag"] == '"2"'
    node = await resp.json()
    assert node == {
        "id": "h", "type": "http_request", "position": {"x": 250.5, "y": -80},
        "data": {"label": "Fetch", "config": {"url": "https://example.com/a"}},
    }
    doc = await stored(client, wf)
    assert doc["version"] == 2
    assert doc["nodes"][1] == node
    assert len(doc["connections"]) == 2


async def test_renaming_a_node_keeps_its_config_and_position(client: Client, wf: str) -> None:
    resp = await client.put(f"/api/workflows/{wf}/nodes/h", json={"data": {"label": "Get orders"}})
    assert resp.status == 200
    assert await resp.json() == {
        "id": "h", "type": "http_request", "position": {"x": 200, "y": 0},
        "data": {"label": "Get orders", "config": {"url": "https://example.com/a"}},
    }


async def test_a_node_config_sent_on_put_replaces_the_whole_config(client: Client, wf: str) -> None:
    resp = await client.put(f"/api/workflows/{wf}/nodes/h", json={"data": {"config": {"timeoutMs": 50}}})
    assert (await resp.json())["data"] == {"label": "Fetch", "config": {"timeoutMs": 50}}


async def test_a_bad_config_on_put_is_422_and_keeps_the_node(client: Client, wf: str) -> None:
    resp = await client.put(f"/api/workflows/{wf}/nodes/h", json={"data": {"config": {"timeoutMs": "x"}}})
    await problem(resp, 422, ["body", "data", "config", "timeoutMs"])
    assert (await stored(client, wf))["version"] == 1


async def test_put_of_an_unknown_node_is_404(client: Client, wf: str) -> None:
    resp = await client.put(f"/api/workflows/{wf}/nodes/ghost", json={"position": {"x": 1, "y": 1}})
    await problem(resp, 404)
    assert (await stored(client, wf))["version"] == 1


async def test_node_edits_in_an_unknown_workflow_are_404(client: Client) -> None:
    await problem(await client.post("/api/workflows/wf_nope/nodes",
                                    json={"type": "delay", "position": {"x": 0, "y": 0}}), 404)
    await problem(await client.put("/api/workflows/wf_nope/nodes/a", json={}), 404)
    await problem(await client.delete("/api/workflows/wf_nope/nodes/a"), 404)
    await problem(await client.post("/api/workflows/wf_nope/connections",
                                    json={"source": "a", "target": "b"}), 404)
    await problem(await client.delete("/api/workflows/wf_nope/connections/c"), 404)


async def test_deleting_a_node_removes_its_connections(client: Client, wf: str) -> None:
    await add_node(client, wf, {"id": "o2", "type": "output", "position": {"x": 400, "y": 100}})
    await connect(client, wf, {"id": "c3", "source": "t", "target": "o2"})
    resp = await client.delete(f"/api/workflows/{wf}/nodes/h")
    assert resp.status == 204
    assert await resp.read() == b""
    assert resp.headers["ETag"] == '"4"'
    doc = await stored(client, wf)
    assert doc["version"] == 4
    assert [n["id"] for n in doc["nodes"]] == ["t", "o", "o2"]
    assert [c["id"] for c in doc["connections"]] == ["c3"]
    await problem(await client.delete(f"/api/workflows/{wf}/nodes/h"), 404)


async def test_node_edits_honour_if_match(client: Client, wf: str) -> None:
    resp = await client.post(f"/api/workflows/{wf}/nodes", headers={"If-Match": '"5"'},
                             json={"type": "delay", "position": {"x": 0, "y": 0}})
    await problem(resp, 412)
    resp = await client.put(f"/api/workflows/{wf}/nodes/h", headers={"If-Match": '"5"'},
                            json={"position": {"x": 9, "y": 9}})
    await problem(resp, 412)
    await problem(await client.delete(f"/api/workflows/{wf}/nodes/h", headers={"If-Match": '"5"'}), 412)
    assert (await stored(client, wf))["version"] == 1
    resp = await client.put(f"/api/workflows/{wf}/nodes/h", headers={"If-Match": '"1"'},
                            json={"position": {"x": 9, "y": 9}})
    assert resp.status == 200


# --- connections -----------------------------------------------------------------------------


async def test_connecting_with_explicit_handles_answers_201_with_the_connection(
    client: Client, wf: str
) -> None:
    await add_node(client, wf, {"id": "m", "type": "merge", "position": {"x": 300, "y": 200}})
    resp = await client.post(f"/api/workflows/{wf}/connections", json={
        "id": "tm", "source": "t", "target": "m", "sourceHandle": "out", "targetHandle": "in",
    })
    assert resp.status == 201
    assert resp.headers["ETag"] == '"3"'
    conn = await resp.json()
    assert conn == {"id": "tm", "source": "t", "target": "m", "sourceHandle": "out", "targetHandle": "in"}
    doc = await stored(client, wf)
    assert doc["version"] == 3
    assert doc["connections"][-1] == conn


async def test_null_handles_are_resolved_for_single_handle_nodes(client: Client, wf: str) -> None:
    await add_node(client, wf, {"id": "m", "type": "merge", "position": {"x": 0, "y": 0}})
    conn = await connect(client, wf, {"source": "t", "target": "m",
                                      "sourceHandle": None, "targetHandle": None})
    assert conn["sourceHandle"] == "out"
    assert conn["targetHandle"] == "in"
    assert conn["id"] not in {"c1", "c2"}


async def test_a_condition_needs_its_true_or_false_source_handle(client: Client, wf: str) -> None:
    await add_node(client, wf, {"id": "if", "type": "condition", "position": {"x": 0, "y": 0}})
    await add_node(client, wf, {"id": "no", "type": "output", "position": {"x": 0, "y": 0}})
    body = await problem(await client.post(f"/api/workflows/{wf}/connections",
                                           json={"source": "if", "target": "o"}),
                         422, ["body", "sourceHandle"])
    assert "true" in body["errors"][0]["msg"]
    assert "false" in body["errors"][0]["msg"]
    yes = await connect(client, wf, {"source": "if", "target": "o", "sourceHandle": "true"})
    no = await connect(client, wf, {"source": "if", "target": "no", "sourceHandle": "false"})
    assert (yes["sourceHandle"], no["sourceHandle"]) == ("true", "false")
    assert (await stored(client, wf))["version"] == 5


async def test_an_unknown_source_handle_is_422_at_body_source_handle(client: Client, wf: str) -> None:
    await add_node(client, wf, {"id": "if", "type": "condition", "position": {"x": 0, "y": 0}})
    resp = await client.post(f"/api/workflows/{wf}/connections",
                             json={"source": "if", "target": "o", "sourceHandle": "maybe"})
    await problem(resp, 422, ["body", "sourceHandle"])


async def test_an_unknown_target_handle_is_422_at_body_target_handle(client: Client, wf: str) -> None:
    resp = await client.post(f"/api/workflows/{wf}/connections",
                             json={"source": "t", "target": "o", "targetHandle": "side"})
    await problem(resp, 422, ["body", "targetHandle"])


async def test_a_trigger_has_no_input_and_an_output_node_no_output(client: Client, wf: str) -> None:
    await problem(await client.post(f"/api/workflows/{wf}/connections",
                                    json={"source": "h", "target": "t"}), 422, ["body", "targetHandle"])
    await problem(await client.post(f"/api/workflows/{wf}/connections",
                                    json={"source": "o", "target": "h"}), 422, ["body", "sourceHandle"])


@pytest.mark.parametrize(
    ("connection", "loc"),
    [
        ({"source": "ghost", "target": "o"}, ["body", "source"]),
        ({"source": "t", "target": "ghost"}, ["body", "target"]),
    ],
)
async def test_a_dangling_connection_is_422_at_the_missing_end(
    client: Client, wf: str, connection: dict[str, Any], loc: list[Any]
) -> None:
    await problem(await client.post(f"/api/workflows/{wf}/connections", json=connection), 422, loc)
    assert (await stored(client, wf))["version"] == 1


@pytest.mark.parametrize(
    "again",
    [
        {"source": "t", "target": "h", "sourceHandle": "out", "targetHandle": "in"},
        {"source": "t", "target": "h"},
        {"source": "t", "target": "h", "sourceHandle": None, "targetHandle": "in"},
    ],
)
async def test_joining_the_same_pair_of_handles_twice_is_422(
    client: Client, wf: str, again: dict[str, Any]
) -> None:
    await problem(await client.post(f"/api/workflows/{wf}/connections", json=again), 422)
    assert len((await stored(client, wf))["connections"]) == 2


async def test_a_duplicate_connection_id_is_422_at_body_id(client: Client, wf: str) -> None:
    await add_node(client, wf, {"id": "o2", "type": "output", "position": {"x": 0, "y": 0}})
    resp = await client.post(f"/api/workflows/{wf}/connections",
                             json={"id": "c1", "source": "t", "target": "o2"})
    await problem(resp, 422, ["body", "id"])


async def test_deleting_a_connection_is_204_then_404(client: Client, wf: str) -> None:
    resp = await client.delete(f"/api/workflows/{wf}/connections/c1")
    assert resp.status == 204
    assert resp.headers["ETag"] == '"2"'
    doc = await stored(client, wf)
    assert [c["id"] for c in doc["connections"]] == ["c2"]
    assert [n["id"] for n in doc["nodes"]] == ["t", "h", "o"]
    await problem(await client.delete(f"/api/workflows/{wf}/connections/c1"), 404)
    assert (await stored(client, wf))["version"] == 2


async def test_a_cycle_can_be_saved_while_editing(client: Client, wf: str) -> None:
    await add_node(client, wf, {"id": "a", "type": "transform", "position": {"x": 0, "y": 300}})
    await add_node(client, wf, {"id": "b", "type": "transform", "position": {"x": 200, "y": 300}})
    await connect(client, wf, {"id": "ab", "source": "a", "target": "b"})
    await connect(client, wf, {"id": "ba", "source": "b", "target": "a"})
    doc = await stored(client, wf)
    assert {"ab", "ba"} <= {c["id"] for c in doc["connections"]}

    resp = await client.put(f"/api/workflows/{wf}", json={
        "nodes": [{"id": "x", "type": "delay", "position": {"x": 0, "y": 0}},
                  {"id": "y", "type": "delay", "position": {"x": 1, "y": 0}}],
        "connections": [{"source": "x", "target": "y"}, {"source": "y", "target": "x"}],
    })
    assert resp.status == 200


async def test_an_input_handle_takes_several_connections(client: Client, wf: str) -> None:
    await add_node(client, wf, {"id": "h2", "type": "http_request", "position": {"x": 200, "y": 100}})
    await connect(client, wf, {"id": "th2", "source": "t", "target": "h2"})
    fan_in = await connect(client, wf, {"id": "h2o", "source": "h2", "target": "o",
                                        "targetHandle": "in"})
    assert fan_in["targetHandle"] == "in"
    doc = await stored(client, wf)
    into_o = [c for c in doc["connections"] if c["target"] == "o"]
    assert [(c["source"], c["targetHandle"]) for c in into_o] == [("h", "in"), ("h2", "in")]


async def test_a_new_type_that_orphans_connections_blames_the_type_sent(client: Client) -> None:
    resp = await client.post("/api/workflows", json={
        "name": "Branch",
        "nodes": [{"id": "c", "type": "condition", "position": {"x": 0, "y": 0}},
                  {"id": "o", "type": "output", "position": {"x": 200, "y": 0}}],
        "connections": [{"id": "c-o", "source": "c", "target": "o", "sourceHandle": "true"}],
    })
    wf = (await resp.json())["id"]
    changed = await client.put(f"/api/workflows/{wf}/nodes/c", json={"type": "transform"})
    assert changed.status == 422
    errors = (await changed.json())["errors"]
    assert [e["loc"] for e in errors] == [["body", "type"]]
    assert "true" in errors[0]["msg"]
    assert (await stored(client, wf))["version"] == 1
