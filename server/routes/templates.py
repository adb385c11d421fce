"""Templates: list, create (whole, or copied from a workflow), read, replace, delete, apply into
a workflow, export to a file and import from one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from flowstage.server.http import convert_body, decode_body, etag_response, hashed_response, json_response, page_params
from flowstage.server.keys import STORE
from flowstage.server.openapi import Route
from flowstage.server.routes.workflows import IF_MATCH, IF_NONE_MATCH, LIST_PARAMS
from flowstage.server.store import Page, Store, new_id
from flowstage.server.store.common import etag_for
from flowstage.simulation import templates
from flowstage.simulation.errors import FieldError, Invalid, NotFound
from flowstage.simulation.graph import DocumentIn, DocumentPatch, apply_document_patch
from flowstage.simulation.models import Template, Workflow
from flowstage.simulation.templates import (
    ApplyTemplate,
    ExportDocument,
    ExportIn,
    ReactFlowDocument,
    TemplateFromWorkflow,
)

__all__ = ["ROUTES"]



@contextmanager
def _reference(field: str) -> Iterator[None]:
    """A body field naming a missing resource is invalid input (422): the URL itself exists."""
    try:
        yield
    except NotFound as exc:
        raise Invalid(exc.detail, [FieldError(("body", field), exc.detail)]) from None


def _version_headers(doc: Template | Workflow, location: str | None = None) -> dict[str, str]:
    headers = {"ETag": etag_for(doc.version)}
    if location is not None:
        headers["Location"] = location
    return headers


async def _create(store: Store, draft: templates.Draft) -> web.Response:
    template = templates.new_template(draft, new_id("tpl"), store.templates.now_iso())
    await store.templates.create(template)
    return json_response(template, 201, _version_headers(template, f"/api/templates/{template.id}"))


async def list_templates(request: web.Request) -> web.Response:
    limit, cursor = page_params(request)
    page = await request.app[STORE].templates.list(limit, cursor, request.query.get("tag"))
    return json_response(page)


async def create_template(request: web.Request) -> web.Response:
    raw = await decode_body(request, dict[str, Any])
    body = convert_body(raw, templates.create_format(raw))
    store = request.app[STORE]
    match body:
        case TemplateFromWorkflow():
            with _reference("fromWorkflowId"):
                workflow = await store.workflows.get(body.from_workflow_id)
            draft = templates.draft_from_workflow(workflow, body)
        case DocumentIn():
            draft = templates.draft_from_document(body)
    return await _create(store, draft)


async def get_template(request: web.Request) -> web.Response:
    cached = await request.app[STORE].templates.get_cached(request.match_info["id"])
    return etag_response(request, cached.body, cached.etag)


async def update_template(request: web.Request) -> web.Response:
    patch = await decode_body(request, DocumentPatch)
    template = await request.app[STORE].templates.mutate(
        request.match_info["id"], lambda t: apply_document_patch(t, patch),
        request.headers.get("If-Match"),
    )
    return json_response(template, headers=_version_headers(template))


async def delete_template(request: web.Request) -> web.Response:
    await request.app[STORE].templates.delete(
        request.match_info["id"], request.headers.get("If-Match"))
    return web.Response(status=204)


async def apply_template(request: web.Request) -> web.Response:
    body = await decode_body(request, ApplyTemplate, optional=True)
    store = request.app[STORE]
    template = await store.templates.get(request.match_info["id"])
    if body.workflow_id is None:
        workflow = templates.new_workflow(template, body, new_id("wf"), store.workflows.now_iso())
        await store.workflows.create(workflow)
        location = f"/api/workflows/{workflow.id}"
        return json_response(workflow, 201, _version_headers(workflow, location))
    with _reference("workflowId"):
        workflow = await store.workflows.mutate(
            body.workflow_id, lambda w: templates.apply_to_workflow(w, template, body),
            request.headers.get("If-Match"))
    return json_response(workflow, headers=_version_headers(workflow))


async def export_template(request: web.Request) -> web.Response:
    repo = request.app[STORE].templates
    template = await repo.get(request.match_info["id"])
    filename = templates.export_filename(template.name)
    # The same version exports to the same bytes (exportedAt is when that version was saved):
    # its ETag then names it, and If-None-Match gives 304, as for every single-resource GET.
    return hashed_response(
        request, templates.export_document(template, template.updated_at),
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def import_template(request: web.Request) -> web.Response:
    raw = await decode_body(request, dict[str, Any])
    document = convert_body(raw, templates.import_format(raw))
    return await _create(request.app[STORE], templates.draft_from_import(document))


_CREATED = {"ETag": "Version tag", "Location": "The new template's URL"}
_WRITE_ERRORS = (400, 413, 415, 422)

ROUTES = (
    Route("GET", "/api/templates", list_templates, "List templates, newest first", "templates",
          operation_id="listTemplates", response=Page[Template], query=LIST_PARAMS),
    Route("POST", "/api/templates", create_template,
          "Save a template: a whole graph, or a copy of a workflow (fromWorkflowId)", "templates",
          operation_id="createTemplate", creates="/api/templates/{id}",
          body=(DocumentIn, TemplateFromWorkflow),
          body_description="A whole template, or (with fromWorkflowId) a copy of a workflow's graph.",
          response=Template, status=201, errors=_WRITE_ERRORS, response_headers=_CREATED),
    Route("GET", "/api/templates/{id}", get_template, "Read a template", "templates",
          operation_id="getTemplate", response=Template, headers=IF_NONE_MATCH, errors=(304, 404),
          response_headers={"ETag": "Version tag"}),
    Route("PUT", "/api/templates/{id}", update_template,
          "Change a template: the fields sent replace the stored ones", "templates",
          operation_id="updateTemplate", body=DocumentPatch, response=Template, headers=IF_MATCH,
          errors=(400, 404, 412, 413, 415, 422), response_headers={"ETag": "Version tag"}),
    Route("DELETE", "/api/templates/{id}", delete_template, "Delete a template", "templates",
          operation_id="deleteTemplate", status=204, headers=IF_MATCH, errors=(404, 412)),
    Route("POST", "/api/templates/{id}/apply", apply_template,
          "Apply a template: without workflowId into a new workflow (201 with Location), "
          "else into that workflow (200), replacing or merging its graph", "templates",
          operation_id="applyTemplate", creates="/api/workflows/{id}",
          body=ApplyTemplate, body_required=False, response=Workflow, headers=IF_MATCH, also=(201,),
          errors=(400, 404, 412, 413, 415, 422),
          response_headers={"ETag": "The workflow's version tag",
                            "Location": "The new workflow's URL (201 only)"}),
    Route("GET", "/api/templates/{id}/export", export_template,
          "Export a template as a file, with the node types it uses", "templates",
          operation_id="exportTemplate", response=ExportDocument, headers=IF_NONE_MATCH, errors=(304, 404),
          response_headers={"Content-Disposition": 'attachment; filename="<name>.flowstage.json"'}),
    Route("POST", "/api/templates/import", import_template,
          "Import a template from an export or a React Flow document (fresh ids)", "templates",
          operation_id="importTemplate", creates="/api/templates/{id}",
          body=(ExportIn, ReactFlowDocument),
          body_description="A document of GET /api/templates/{id}/export, or a React Flow "
          "toObject() document (nodes, edges, viewport, and optionally name).",
          response=Template, status=201, errors=_WRITE_ERRORS, response_headers=_CREATED),
)
