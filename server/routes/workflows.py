"""Workflows: list, create, read, replace, delete."""

from __future__ import annotations

from aiohttp import web

from flowstage.server.http import PageSize, decode_body, etag_response, json_response, page_params
from flowstage.server.keys import STORE
from flowstage.server.openapi import Param, Route
from flowstage.server.store import Page, new_id
from flowstage.server.store.common import etag_for
from flowstage.simulation.graph import WorkflowIn, WorkflowPatch, apply_workflow_patch, document_graph, unique_tags
from flowstage.simulation.models import Workflow

__all__ = ["IF_MATCH", "IF_NONE_MATCH", "LIST_PARAMS", "ROUTES"]

LIST_PARAMS = (
    Param("limit", "Page size (1–500, default 50)", PageSize),
    Param("cursor", "The nextCursor of the previous page"),
    Param("tag", "Only items carrying this tag"),
)
IF_MATCH = (Param("If-Match", "Only act if the ETag matches (else 412)"),)
IF_NONE_MATCH = (Param("If-None-Match", "304 if the ETag still matches"),)


async def list_workflows(request: web.Request) -> web.Response:
    limit, cursor = page_params(request)
    page = await request.app[STORE].workflows.list(limit, cursor, request.query.get("tag") or None)
    return json_response(page)


async def create_workflow(request: web.Request) -> web.Response:
    body = await decode_body(request, WorkflowIn)
    nodes, connections = document_graph(body)
    repo = request.app[STORE].workflows
    now = repo.now_iso()
    workflow = Workflow(
        id=new_id("wf"), name=body.name, description=body.description,
        tags=unique_tags(body.tags), version=1, created_at=now, updated_at=now,
        nodes=nodes, connections=connections, viewport=body.viewport,
    )
    await repo.create(workflow)
    headers = {"ETag": etag_for(workflow.version), "Location": f"/api/workflows/{workflow.id}"}
    return json_response(workflow, 201, headers)


async def get_workflow(request: web.Request) -> web.Response:
    cached = await request.app[STORE].workflows.get_cached(request.match_info["id"])
    return etag_response(request, cached.body, cached.etag)


async def update_workflow(request: web.Request) -> web.Response:
    patch = await decode_body(request, WorkflowPatch)
    workflow = await request.app[STORE].workflows.mutate(
        request.match_info["id"], lambda w: apply_workflow_patch(w, patch),
        request.headers.get("If-Match"),
    )
    return json_response(workflow, headers={"ETag": etag_for(workflow.version)})


async def delete_workflow(request: web.Request) -> web.Response:
    await request.app[STORE].workflows.delete(request.match_info["id"], request.headers.get("If-Match"))
    return web.Response(status=204)


ROUTES = (
    Route("GET", "/api/workflows", list_workflows, "List workflows, newest first", "workflows",
          operation_id="listWorkflows", response=Page[Workflow], query=LIST_PARAMS),
    Route("POST", "/api/workflows", create_workflow, "Create a workflow", "workflows",
          operation_id="createWorkflow", creates="/api/workflows/{id}",
          body=WorkflowIn, response=Workflow, status=201, errors=(400, 413, 415, 422),
          response_headers={"ETag": "Version tag", "Location": "The new workflow's URL"}),
    Route("GET", "/api/workflows/{id}", get_workflow, "Read a workflow", "workflows",
          operation_id="getWorkflow", response=Workflow, headers=IF_NONE_MATCH, errors=(304, 404),
          response_headers={"ETag": "Version tag"}),
    Route("PUT", "/api/workflows/{id}", update_workflow,
          "Change a workflow: the fields sent replace the stored ones", "workflows",
          operation_id="updateWorkflow", body=WorkflowPatch, response=Workflow, headers=IF_MATCH,
          errors=(400, 404, 412, 413, 415, 422), response_headers={"ETag": "Version tag"}),
    Route("DELETE", "/api/workflows/{id}", delete_workflow, "Delete a workflow", "workflows",
          operation_id="deleteWorkflow", status=204, headers=IF_MATCH, errors=(404, 412)),
)
