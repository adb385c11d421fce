"""The service's own endpoints: the OpenAPI document agrees with the router and the contract,
health reports version and uptime, and the node-type catalogue is complete."""

from __future__ import annotations

import io
import json
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from PIL import Image

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


# The run viewer's page and files (docs/viewer.md) are not API operations: not documented.
VIEWER = {("GET", "/"), ("GET", _shape("/viewer/{name}"))}


def _routed(client: Client) -> set[tuple[str, str]]:
    # "*": the edge's last route of each path, which only answers 405 (or 404 for any path).
    return {
        (route.method, _shape(route.resource.canonical))
        for route in client.app.router.routes()
        if route.method not in ("OPTIONS", "HEAD", "*") and route.resource is not None
    } - VIEWER


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
            assert set(handle) == {"id", "label", "position"}
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


# --- a document a client generator can trust ------------------------------------------------

VERBS = {"list", "get", "create", "update", "delete", "add", "execute", "pause", "resume", "stop",
         "process", "apply", "export", "import", "upload", "stream", "step", "set", "retry", "replay"}


def _operations(spec: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {op["operationId"]: (method, path, op)
            for path, ops in spec["paths"].items() for method, op in ops.items()}


def _schema(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rpartition("/")[2]]
    return node


async def test_every_get_that_sends_an_etag_answers_and_documents_304(
    client: Client, spec: dict[str, Any], wf: str,
) -> None:
    run = (await (await client.post(f"/api/workflows/{wf}/execute", json={"speed": 1000})).json())["id"]
    image = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(image, "PNG")
    form = FormData()
    form.add_field("file", image.getvalue(), filename="red.png", content_type="image/png")
    file_id = (await (await client.post("/api/files/upload", data=form)).json())["items"][0]["id"]
    template = await (await client.post("/api/templates", json={"fromWorkflowId": wf, "name": "T"})).json()
    ids = {"/api/workflows/": wf, "/api/templates/": template["id"], "/api/files/": file_id,
           "/api/node-types/": "manual_trigger"}
    checked = []
    for path, operations in spec["paths"].items():
        if "get" not in operations or path.endswith("/events"):
            continue  # a stream has no representation to cache
        url = path.replace("{runId}", run).replace("{nodeId}", "t")
        for prefix, value in ids.items():
            if url.startswith(prefix):
                url = url.replace("{id}", value).replace("{type}", value)
        resp = await client.get(url)
        if resp.status != 200 or "ETag" not in resp.headers:
            continue
        cached = await client.get(url, headers={"If-None-Match": resp.headers["ETag"]})
        assert cached.status == 304, url
        assert "304" in operations["get"]["responses"], f"{path} answers 304 but does not say so"
        checked.append(path)
    assert {"/api/workflows/{id}/dataflow", "/api/files/{id}/content", "/api/files/{id}/thumbnail",
            "/api/templates/{id}/export", "/api/runs/{runId}"} <= set(checked)


def test_operation_ids_are_unique_camel_case_verbs(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for operation_id in ids:
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)+", operation_id), operation_id
        assert re.match(r"[a-z]+", operation_id)[0] in VERBS, operation_id  # type: ignore[index]
    operations = _operations(spec)
    assert {k: v[:2] for k, v in operations.items() if k in {
        "listWorkflows", "getWorkflow", "createWorkflow", "updateWorkflow", "deleteWorkflow",
        "executeWorkflow", "pauseWorkflow", "pauseRun", "getRun", "uploadFiles", "listFiles",
        "createTemplate"}} == {
        "listWorkflows": ("get", "/api/workflows"), "createWorkflow": ("post", "/api/workflows"),
        "getWorkflow": ("get", "/api/workflows/{id}"), "updateWorkflow": ("put", "/api/workflows/{id}"),
        "deleteWorkflow": ("delete", "/api/workflows/{id}"),
        "executeWorkflow": ("post", "/api/workflows/{id}/execute"),
        "pauseWorkflow": ("post", "/api/workflows/{id}/pause"), "pauseRun": ("post", "/api/runs/{runId}/pause"),
        "getRun": ("get", "/api/runs/{runId}"), "uploadFiles": ("post", "/api/files/upload"),
        "listFiles": ("get", "/api/files"), "createTemplate": ("post", "/api/templates"),
    }


def test_bodies_are_required_only_where_the_server_requires_one(spec: dict[str, Any]) -> None:
    optional = {op_id for op_id, (_, _, op) in _operations(spec).items()
                if "requestBody" in op and not op["requestBody"]["required"]}
    assert optional == {"executeWorkflow", "applyTemplate", "stepRun", "retryRun", "replayRun", "replayRecording"}


async def test_execute_and_apply_accept_an_empty_post(client: Client, wf: str) -> None:
    assert (await client.post(f"/api/workflows/{wf}/execute")).status == 202
    template = await (await client.post("/api/templates", json={"name": "t"})).json()
    assert (await client.post(f"/api/templates/{template['id']}/apply")).status == 201


def test_request_fields_with_defaults_are_optional_and_say_their_default(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    execute = schemas["ExecuteRequest"]
    assert execute["required"] == []
    assert execute["properties"]["failureRate"]["description"] == "Default: `0.0`."
    assert schemas["DocumentIn"]["required"] == ["name"]
    node_in = schemas["NodeIn"]
    assert node_in["required"] == ["type", "position"]
    assert node_in["properties"]["data"]["$ref"] == "#/components/schemas/NodeDataInput"
    assert schemas["NodeDataInput"]["required"] == []
    # openapi-typescript makes a property with a `default` required; no request schema has one.
    request_schemas = {"ExecuteRequest", "DocumentIn", "DocumentPatch", "NodeIn", "NodePatch",
                       "NodeDataInput", "NodeDataPatch", "ConnectionIn", "ApplyTemplate",
                       "ProcessFilesRequest", "TemplateFromWorkflow", "ExportIn", "ReactFlowDocument"}
    assert request_schemas <= set(schemas)
    for name in request_schemas:
        assert all("default" not in p for p in schemas[name]["properties"].values()), name


def test_answers_require_every_field_the_server_always_sends(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name in ("Workflow", "Node", "NodeData", "Run", "NodeRun", "FileInfo", "NodeType"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name
    # node.completed says `reused` or `pinned` only when true (debugging's outputs taken, not made).
    completed = schemas["NodeCompleted"]
    assert set(completed["properties"]) - set(completed["required"]) == {"reused", "pinned"}
    # A problem leaves out `detail` and `errors` when it has none.
    assert schemas["Problem"]["required"] == ["type", "title", "status"]


def test_free_form_objects_allow_any_keys(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    free = [schemas["NodeType"]["properties"]["configSchema"], schemas["NodeType"]["properties"]["defaults"],
            schemas["NodeData"]["properties"]["config"], schemas["NodeDataInput"]["properties"]["config"],
            schemas["ExecuteRequest"]["properties"]["inputs"], schemas["FileInfo"]["properties"]["metadata"]]
    assert all(s["additionalProperties"] is True for s in free)

    def objects(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, list):
            return [o for item in node for o in objects(item)]
        if not isinstance(node, dict):
            return []
        found = [node] if node.get("type") == "object" else []
        return found + [o for k, v in node.items() if k not in ("enum", "const", "default") for o in objects(v)]

    for schema in objects(spec):
        assert {"properties", "additionalProperties"} & set(schema), schema


async def test_every_typed_query_parameter_is_enforced_as_documented(client: Client, spec: dict[str, Any]) -> None:
    checked = []
    for path, ops in spec["paths"].items():
        url = re.sub(r"\{\w+\}", "x", path)
        for method, op in ops.items():
            for param in op.get("parameters", []):
                schema, name = param["schema"], param["name"]
                if param["in"] != "query":
                    continue
                bad: list[str] = []
                if "enum" in schema:
                    bad = ["pdf"]
                elif schema.get("type") == "integer":
                    bad = ["abc", str(schema["minimum"] - 1), str(schema["maximum"] + 1)]
                elif schema.get("type") == "array":
                    bad = ["a"] * (schema["maxItems"] + 1)
                    resp = await client.request(method, url, params=[(name, v) for v in bad])
                    await _query_problem(resp, name)
                    checked.append((op["operationId"], name))
                    continue
                for value in bad:
                    await _query_problem(await client.request(method, url, params={name: value}), name)
                if bad:
                    checked.append((op["operationId"], name))
    assert ("listFiles", "kind") in checked
    assert ("listWorkflows", "limit") in checked
    assert ("streamEvents", "workflowId") in checked


async def _query_problem(resp: Any, name: str) -> None:
    assert resp.status == 422, (name, await resp.text())
    assert resp.content_type == "application/problem+json"
    assert [e["loc"] for e in (await resp.json())["errors"]] == [["query", name]]


async def test_a_kind_that_is_not_one_of_the_documented_kinds_is_422(client: Client) -> None:
    resp = await client.get("/api/files", params={"kind": "pdf"})
    assert resp.status == 422
    body = await resp.json()
    assert body["errors"] == [{"loc": ["query", "kind"], "msg": "Invalid enum value 'pdf'"}]
    assert (await client.get("/api/files", params={"kind": "image"})).status == 200


def test_the_upload_requires_its_file_part_and_binary_answers_are_any_bytes(spec: dict[str, Any]) -> None:
    upload = spec["paths"]["/api/files/upload"]["post"]["requestBody"]
    assert upload["required"] is True
    form = upload["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["format"] == "binary"
    content = spec["paths"]["/api/files/{id}/content"]["get"]["responses"]["200"]["content"]
    assert content == {"*/*": {}}  # no schema: the bytes as uploaded, never read as JSON
    thumbnail = spec["paths"]["/api/files/{id}/thumbnail"]["get"]["responses"]["200"]["content"]
    assert thumbnail == {"image/webp": {}}


def test_every_event_is_a_schema_in_a_union_discriminated_by_event(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    run_events = {"run.started": "RunStarted", "run.paused": "RunPaused", "run.resumed": "RunResumed",
                  "run.completed": "RunCompleted", "run.failed": "RunFailed", "run.stopped": "RunStopped",
                  "node.queued": "NodeQueued", "node.started": "NodeStarted", "node.progress": "NodeProgress",
                  "node.completed": "NodeCompleted", "node.failed": "NodeFailed", "node.skipped": "NodeSkipped",
                  "node.stopped": "NodeStopped", "edge.data": "EdgeData"}
    for union, events in (("RunEvent", run_events), ("StreamEvent", {**run_events, "stream.gap": "StreamGap"})):
        refs = {event: f"#/components/schemas/{name}" for event, name in events.items()}
        assert schemas[union]["discriminator"] == {"propertyName": "event", "mapping": refs}
        assert [s["$ref"] for s in schemas[union]["oneOf"]] == list(refs.values())
        for event, name in events.items():
            assert schemas[name]["properties"]["event"] == {"enum": [event]}
            optional = {"reused", "pinned"} if name == "NodeCompleted" else set()
            assert set(schemas[name]["required"]) == set(schemas[name]["properties"]) - optional
    assert set(schemas["EdgeData"]["properties"]) == {
        "event", "runId", "workflowId", "seq", "ts", "connectionId", "source", "target", "items", "bytes"}
    assert set(schemas["StreamGap"]["properties"]) == {"event", "reason", "lastEventId", "resumedAt"}
    for path, union in (("/api/runs/{runId}/events", "RunEvent"), ("/api/workflows/{id}/events", "StreamEvent"),
                        ("/api/events", "StreamEvent")):
        stream = spec["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]
        assert stream["x-itemSchema"] == {"$ref": f"#/components/schemas/{union}"}
        assert f"#/components/schemas/{union}" in stream["schema"]["description"]


async def test_the_event_schemas_match_what_a_run_sends(
    client: Client, spec: dict[str, Any], wf: str
) -> None:
    from openapi_schema_validator import OAS31Validator  # openapi-spec-validator's own dependency

    run = await (await client.post(f"/api/workflows/{wf}/execute", json={"speed": 1e6})).json()
    resp = await client.get(f"/api/runs/{run['id']}/events")
    datas = [json.loads(line[len("data: "):]) for line in (await resp.text()).splitlines()
             if line.startswith("data: ")]
    assert datas[-1]["event"] == "run.completed"
    union = {"$ref": "#/components/schemas/RunEvent", "components": spec["components"]}
    validator = OAS31Validator(union)
    for data in datas:
        validator.validate(data)
    names = {d["event"] for d in datas}
    assert {"run.started", "node.queued", "node.started", "node.completed", "edge.data", "run.completed"} <= names


def test_creates_link_to_the_operations_that_use_the_new_id(spec: dict[str, Any]) -> None:
    operations = _operations(spec)

    def links(operation_id: str, status: str) -> dict[str, dict[str, str]]:
        response = operations[operation_id][2]["responses"][status]
        return {name: link["parameters"] for name, link in response["links"].items()}

    new_run = {"runId": "$response.body#/id"}
    assert links("executeWorkflow", "202") == {
        "getRun": new_run, "pauseRun": new_run, "resumeRun": new_run, "stopRun": new_run,
        "streamRunEvents": new_run, "stepRun": new_run, "setRunBreakpoints": new_run, "retryRun": new_run,
        "getRunRecording": new_run, "replayRun": new_run}
    # The node a process-files run ran is the request's: its inspection is linked too.
    assert links("processFiles", "202") == {
        **links("executeWorkflow", "202"), "getRunNode": {**new_run, "nodeId": "$request.path.nodeId"}}
    assert links("replayRun", "202") == links("replayRecording", "202") == links("executeWorkflow", "202")
    assert links("importRecording", "201") == {"replayRecording": {"id": "$response.body#/id"}}
    new_workflow = {"id": "$response.body#/id"}
    created = links("createWorkflow", "201")
    assert created["getWorkflow"] == created["executeWorkflow"] == created["addNode"] == new_workflow
    assert "updateNode" not in created  # it needs a node id the answer does not name
    assert links("applyTemplate", "201") == links("applyTemplate", "200") == created
    assert links("addNode", "201") == {
        name: {"id": "$request.path.id", "nodeId": "$response.body#/id"}
        for name in ("updateNode", "deleteNode", "processFiles")}
    assert links("addConnection", "201") == {
        "deleteConnection": {"id": "$request.path.id", "connectionId": "$response.body#/id"}}
    new_file = {"id": "$response.body#/items/0/id"}
    assert links("uploadFiles", "201") == dict.fromkeys(
        ("getFile", "deleteFile", "getFileContent", "getFileThumbnail"), new_file)
    new_template = {"id": "$response.body#/id"}
    assert links("createTemplate", "201") == links("importTemplate", "201") == dict.fromkeys(
        ("getTemplate", "updateTemplate", "deleteTemplate", "applyTemplate", "exportTemplate"), new_template)
    for operation_id, (_, _, op) in operations.items():
        for response in op["responses"].values():
            for link in response.get("links", {}).values():
                assert link["operationId"] in operations, operation_id
