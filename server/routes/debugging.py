"""Debugging a run: step it, set its breakpoints, retry it (server.debugging has the rules)."""

from __future__ import annotations

from aiohttp import web

from flowstage.actors.messages import SetBreakpoints, Step
from flowstage.server.debugging import BreakpointsRequest, RetryRequest, StepRequest, retry
from flowstage.server.http import decode_body
from flowstage.server.keys import RUNS
from flowstage.server.openapi import Route
from flowstage.server.routes.runs import run_response
from flowstage.simulation.models import Run

__all__ = ["ROUTES"]


async def step_run(request: web.Request) -> web.Response:
    body = await decode_body(request, StepRequest, optional=True)
    run = await request.app[RUNS].control(request.match_info["runId"], Step(body.node_id), "step")
    return run_response(request, run)


async def set_breakpoints(request: web.Request) -> web.Response:
    body = await decode_body(request, BreakpointsRequest)
    command = SetBreakpoints(tuple(body.node_ids))
    run = await request.app[RUNS].control(request.match_info["runId"], command, "set breakpoints")
    return run_response(request, run)


async def retry_run(request: web.Request) -> web.Response:
    body = await decode_body(request, RetryRequest, optional=True)
    run = await retry(request.app[RUNS], request.match_info["runId"], body)
    return run_response(request, run, 202, {"Location": f"/api/runs/{run.id}"})


ROUTES = (
    Route("POST", "/api/runs/{runId}/step", step_run,
          "A paused run runs until the next node starts or finishes (or, with nodeId, until that node "
          "finishes), then pauses again with reason \"step\"", "debugging", operation_id="stepRun",
          body=StepRequest, body_required=False, response=Run, errors=(400, 404, 409, 415, 422, 503)),
    Route("PUT", "/api/runs/{runId}/breakpoints", set_breakpoints,
          "Replace the nodes a live run pauses before", "debugging", operation_id="setRunBreakpoints",
          body=BreakpointsRequest, response=Run, errors=(400, 404, 409, 415, 422, 503)),
    Route("POST", "/api/runs/{runId}/retry", retry_run,
          "Run a failed or stopped run again as a new run (parentRunId): nodes that completed are reused, "
          "the rest run", "debugging", operation_id="retryRun", creates="/api/runs/{runId}",
          body=RetryRequest, body_required=False, response=Run, status=202,
          errors=(400, 404, 409, 413, 415, 422, 503),
          response_headers={"Location": "The new run's URL", "ETag": "The run's current tag"}),
)
