"""The service's own endpoints: the OpenAPI document agrees with the router and the contract,
health reports version and uptime, and the node-type catalogue is complete."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from flowstage.actors.clock import ManualClock
from flowstage.config import Settings
from flowstage.server.app import create_app

Client = TestClient[Any, web.Application]

# The contract's paths (API.md), with {placeholders} named as the router names them.
CONTRACT: tuple[tuple[str, str], ...] = (
    ("GET", "/api/workflows"), ("POST", "/api/workflows"),
    ("GET", "/api/workflows/{id}"), ("PUT", "/api/workflows/{id}"),
    ("DELETE", "/api/workflows/{id}"),
    ("POST", "/api/workflows/{id}/execute"), ("POST", "/api/workflows/{id}/pause"),
    ("POST", "/api/workflows/{id}/resume"), ("POST", "/api/workflows/{id}/stop"),
    ("GET", "/api/workflows/{id}/status"), ("GET", "/api/workflows/{id}/dataflow"),
    ("GET", "/api/node-types"),
    ("POST", "/api/workflows/{id}/nodes"), ("PUT", "/api/workflows/{id}/nodes/{nodeId}"),
    ("DELETE", "/api/workflows/{id}/nodes/{nodeId}"),
    ("POST", "/api/workflows/{id}/connections"),
    ("DELETE", "/api/workflows/{id}/connections/{connectionId}"),
    ("GET", "/api/templates"), ("POST", "/api/templates"),
    ("GET", "/api/templates/{id}"), ("PUT", "/api/templates/{id}"),
    ("DELETE", "/api/templates/{id}"), ("POST", "/api/templates/{id}/apply"),
    ("POST", "/api/files/upload"), ("GET", "/api/files"), ("GET", "/api/files/{id}"),
    ("DELETE", "/api/files/{id}"), ("POST", "/api/workflows/{id}/nodes/{nodeId}/process-files"),
    ("GET", "/api/health"), ("GET", "/api/openapi.json"), ("GET", "/metrics"),
    ("GET", "/api/workflows/{id}/runs"), ("GET", "/api/runs/{runId}"),
    ("POST", "/api/runs/{runId}/pause"), ("POST", "/api/runs/{runId}/resume"),
    ("POST", "/api/runs/{runId}/stop"), ("GET", "/api/runs/{runId}/events"),
    ("GET", "/api/workflows/{id}/events"), ("GET", "/api/files/{id}/content"),
    ("GET", "/api/files/{id}/thumbnail"), ("GET", "/api/templates/{id}/export"),
    ("POST", "/api/templates/import"),
)
FOUNDATION = {
    ("GET", "/api/workflows"), ("POST", "/api/workflows"), ("GET", "/api/workflows/{id}"),
    ("PUT", "/api/workflows/{id}"), ("DELETE", "/api/workflows/{id}"),
    ("POST", "/api/workflows/{id}/nodes"), ("PUT", "/api/workflows/{id}/nodes/{nodeId}"),
    ("DELETE", "/api/workflows/{id}/nodes/{nodeId}"), ("POST", "/api/workflows/{id}/connections"),
    ("DELETE", "/api/workflows/{id}/connections/{connectionId}"),
    ("GET", "/api/node-types"), ("GET", "/api/health"), ("GET", "/api/openapi.json"),
}
_PLACEHOLDER = re.compile(r"\{[^}]+\}")


def _shape(path: str) -> str:
    """Paths compared by shape, so `{id}` and `{workflowId}` name the same route."""
    return _PLACEHOLDER.sub("{}", path)


@pytest.fixture
async def spec(client: Client) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    return dict(await resp.json())


def _documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), _shape(path)) for path, ops in spec["paths"].items() for method in ops}


def _routed(client: Client) -> set[tuple[str, str]]:
    return {
        (route.method, _shape(route.resource.canonical))
        for route in client.app.router.routes()
        if route.method not in ("OPTIONS", "HEAD") and route.resource is not None
    }


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_routed_operation_is_documented_and_nothing_else(
    client: Client, spec: dict[str, Any]
) -> None:
    routed = _routed(client)
    documented = _documented(spec)
    assert routed - documented == set(), "served but not documented"
    assert documented - routed == set(), "documented but not served"


def test_the_foundations_contract_paths_are_documented(spec: dict[str, Any]) -> None:
    documented = _documented(spec)
    missing = {(m, p) for m, p in FOUNDATION if (m, _shape(p)) not in documented}
    assert missing == set()


def test_every_contract_path_that_is_served_is_documented(client: Client, spec: dict[str, Any]) -> None:
    routed, documented = _routed(client), _documented(spec)
    served = {(m, _shape(p)) for m, p in CONTRACT} & routed
    assert served >= {(m, _shape(p)) for m, p in FOUNDATION}
    assert served - documented == set()


def test_documented_success_statuses_match_the_contract(spec: dict[str, Any]) -> None:
    def success(method: str, path: str) -> set[str]:
        return {s for s in spec["paths"][path][method]["responses"] if s.startswith("2")}

    assert success("post", "/api/workflows") == {"201"}
    assert success("put", "/api/workflows/{id}") == {"200"}
    assert success("delete", "/api/workflows/{id}") == {"204"}
    assert success("post", "/api/workflows/{id}/nodes") == {"201"}
    assert success("post", "/api/workflows/{id}/connections") == {"201"}
    assert success("delete", "/api/workflows/{id}/connections/{connectionId}") == {"204"}
    errors = spec["paths"]["/api/workflows"]["post"]["responses"]["422"]
    assert "application/problem+json" in errors["content"]


async def test_the_workflow_schema_names_the_fields_the_server_sends(
    client: Client, spec: dict[str, Any], simple_workflow: dict[str, Any]
) -> None:
    body = await (await client.post("/api/workflows", json=simple_workflow)).json()
    schemas = spec["components"]["schemas"]
    assert set(schemas["Workflow"]["properties"]) == set(body)
    assert set(schemas["Node"]["properties"]) == set(body["nodes"][0])
    assert set(schemas["Connection"]["properties"]) == set(body["connections"][0])


async def test_health_reports_status_version_and_uptime(aiohttp_client: Any, settings: Settings) -> None:
    clock = ManualClock(start=1_767_225_600.0)
    client = await aiohttp_client(create_app(settings, clock=clock))
    await clock.advance(12.5)
    resp = await client.get("/api/health")
    assert resp.status == 200
    body = await resp.json()
    try:
        expected = version("flowstage")
    except PackageNotFoundError:
        expected = "0.0.0"
    assert body == {"status": "ok", "version": expected, "uptimeSeconds": 12.5}


async def test_node_types_cover_every_category_with_complete_descriptions(client: Client) -> None:
    resp = await client.get("/api/node-types")
    assert resp.status == 200
    page = await resp.json()
    assert page["nextCursor"] is None
    items = page["items"]
    assert len(items) >= 12
    assert len({t["type"] for t in items}) == len(items)
    assert {t["category"] for t in items} == {"trigger", "integration", "logic", "file", "output"}
    for t in items:
        assert {"type", "label", "category", "description", "inputs", "outputs",
                "configSchema", "defaults", "timing"} <= set(t), t["type"]
        for handle in (*t["inputs"], *t["outputs"]):
            assert set(handle) == {"id", "label"}
        assert t["configSchema"]["type"] == "object"
        assert set(t["defaults"]) <= set(t["configSchema"]["properties"]), t["type"]
        assert t["timing"]["kind"] in {"fixed", "uniform", "lognormal"}
    by_type = {t["type"]: t for t in items}
    assert [h["id"] for h in by_type["condition"]["outputs"]] == ["true", "false"]
    assert by_type["manual_trigger"]["inputs"] == []
    assert by_type["output"]["outputs"] == []


async def test_node_type_defaults_are_valid_configs(client: Client) -> None:
    # An editor drops a node with the type's defaults as its config; the server must accept it.
    items = (await (await client.get("/api/node-types")).json())["items"]
    nodes = [{"type": t["type"], "position": {"x": 0, "y": 0}, "data": {"config": t["defaults"]}}
             for t in items]
    resp = await client.post("/api/workflows", json={"name": "all types", "nodes": nodes})
    assert resp.status == 201, await resp.text()
