"""Nodes and connections inside a workflow. Each edit is a new version of the workflow;
`If-Match` is checked against the workflow's ETag, which the answer carries too."""

from __future__ import annotations

from aiohttp import web

from flowstage.server.http import decode_body, json_response
from flowstage.server.keys import STORE
from flowstage.server.openapi import Route
from flowstage.server.routes.workflows import IF_MATCH
from flowstage.server.store.common import etag_for
from flowstage.simulation import graph
from flowstage.simulation.graph import ConnectionIn, NodeIn, NodePatch
from flowstage.simulation.models import Connection, Node, Workflow

__all__ = ["ROUTES"]


def _node(workflow: Workflow, node_id: str) -> Node:
    return next(n for n in workflow.nodes if n.id == node_id)


def _version_headers(workflow: Workflow) -> dict[str, str]:
    return {"ETag": etag_for(workflow.version)}


async def add_node(request: web.Request) -> web.Response:
    body = await decode_body(request, NodeIn)
    before: set[str] = set()

    def change(w: Workflow) -> Workflow:
        before.update(n.id for n in w.nodes)
        return graph.add_node(w, body)

    workflow = await request.app[STORE].workflows.mutate(
        request.match_info["id"], change, request.headers.get("If-Match"))
    node = next(n for n in workflow.nodes if n.id not in before)
    return json_response(node, 201, _version_headers(workflow))


async def update_node(request: web.Request) -> web.Response:
    patch = await decode_body(request, NodePatch)
    node_id = request.match_info["nodeId"]
    workflow = await request.app[STORE].workflows.mutate(
        request.match_info["id"], lambda w: graph.update_node(w, node_id, patch),
        request.headers.get("If-Match"))
    return json_response(_node(workflow, node_id), headers=_version_headers(workflow))


async def delete_node(request: web.Request) -> web.Response:
    node_id = request.match_info["nodeId"]
    workflow = await request.app[STORE].workflows.mutate(
        request.match_info["id"], lambda w: graph.delete_node(w, node_id),
        request.headers.get("If-Match"))
    return web.Response(status=204, headers=_version_headers(workflow))


async def add_connection(request: web.Request) -> web.Response:
    body = await decode_body(request, ConnectionIn)
    workflow = await request.app[STORE].workflows.mutate(
        request.match_info["id"], lambda w: graph.add_connection(w, body),
        request.headers.get("If-Match"))
    return json_response(workflow.connections[-1], 201, _version_headers(workflow))


async def delete_connection(request: web.Request) -> web.Response:
    connection_id = request.match_info["connectionId"]
    workflow = await request.app[STORE].workflows.mutate(
        request.match_info["id"], lambda w: graph.delete_connection(w, connection_id),
        request.headers.get("If-Match"))
    return web.Response(status=204, headers=_version_headers(workflow))


_EDIT_ERRORS = (400, 404, 412, 413, 415, 422)
_VERSION = {"ETag": "The workflow's new version tag"}

ROUTES = (
    Route("POST", "/api/workflows/{id}/nodes", add_node, "Add a node", "nodes",
          operation_id="addNode", creates="/api/workflows/{id}/nodes/{nodeId}",
          body=NodeIn, response=Node, status=201, headers=IF_MATCH, errors=_EDIT_ERRORS,
          response_headers=_VERSION),
    Route("PUT", "/api/workflows/{id}/nodes/{nodeId}", update_node,
          "Change a node (e.g. move it); fields left out keep their value", "nodes",
          operation_id="updateNode", body=NodePatch, response=Node, headers=IF_MATCH,
          errors=_EDIT_ERRORS, response_headers=_VERSION),
    Route("DELETE", "/api/workflows/{id}/nodes/{nodeId}", delete_node,
          "Delete a node and its connections", "nodes", operation_id="deleteNode", status=204,
          headers=IF_MATCH, errors=(404, 412), response_headers=_VERSION),
    Route("POST", "/api/workflows/{id}/connections", add_connection, "Connect two handles",
          "connections", operation_id="addConnection",
          creates="/api/workflows/{id}/connections/{connectionId}", body=ConnectionIn,
          response=Connection, status=201, headers=IF_MATCH, errors=_EDIT_ERRORS,
          response_headers=_VERSION),
    Route("DELETE", "/api/workflows/{id}/connections/{connectionId}", delete_connection,
          "Delete a connection", "connections", operation_id="deleteConnection", status=204,
          headers=IF_MATCH, errors=(404, 412), response_headers=_VERSION),
)
