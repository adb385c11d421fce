"""Inspection: one node of one run, as a debugger shows it, live or finished."""

from __future__ import annotations

from aiohttp import web

from flowstage.server.http import hashed_response
from flowstage.server.inspection import NodeInspector
from flowstage.server.keys import ENGINE, STORE
from flowstage.server.openapi import Route
from flowstage.server.routes.workflows import IF_NONE_MATCH
from flowstage.simulation.models import NodeInspection

__all__ = ["ROUTES"]


async def get_run_node(request: web.Request) -> web.Response:
    inspector = NodeInspector(request.app[ENGINE], request.app[STORE])
    view = await inspector.inspect(request.match_info["runId"], request.match_info["nodeId"])
    return hashed_response(request, view)


ROUTES = (
    Route("GET", "/api/runs/{runId}/nodes/{nodeId}", get_run_node,
          "One node of a run, as a debugger shows it: state, simulated timings, the data delivered on "
          "each incoming connection, output, error, attempt, and the connections it still waits for",
          "runs", operation_id="getRunNode", response=NodeInspection, headers=IF_NONE_MATCH,
          errors=(304, 404)),
)
