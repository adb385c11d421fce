"""Execution: start runs, control them (by workflow or by run), read status, history and
dataflow. Handlers translate HTTP into engine calls; `RunService` knows live from stored."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, cast

import msgspec
from aiohttp import web
from msgspec import Meta

from flowstage.actors.engine import Action
from flowstage.server.debugging import NodeId, NodeIds, Speed, execute_options
from flowstage.server.http import (
    content_etag,
    decode_body,
    hashed_response,
    json_response,
    page_params,
)
from flowstage.server.keys import ENGINE, RUNS, STORE
from flowstage.server.openapi import Param, Route
from flowstage.server.processing import files_for_run
from flowstage.server.routes.workflows import IF_NONE_MATCH, LIST_PARAMS
from flowstage.server.runs import Dataflow
from flowstage.server.store import Page, new_id
from flowstage.simulation.errors import NotFound
from flowstage.simulation.messages import node_not_in_workflow
from flowstage.simulation.models import FileInfo, Run, RunState
from flowstage.simulation.script import ScriptedOutcome

__all__ = ["ROUTES", "ExecuteRequest", "IdleStatus", "ProcessFilesRequest", "run_response"]

_encoder = msgspec.json.Encoder()
MAX_COUNT = 1000  # runs one execute may start
SEED_LIMIT = 2**53


class ExecuteRequest(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`POST .../execute` body; every field is optional."""

    seed: Annotated[int, Meta(ge=0, le=SEED_LIMIT)] | None = None
    speed: Speed | None = None
    failure_rate: Annotated[float, Meta(ge=0, le=1)] = 0.0
    inputs: dict[str, Any] = {}
    # node id -> how that node ends (simulation.script); for tests.
    script: dict[str, ScriptedOutcome] = {}
    # Debugging (server.debugging): pause before these nodes; outputs given instead of computed;
    # run from a node with what an earlier run computed upstream of it.
    breakpoints: NodeIds = []
    pinned: dict[str, Any] = {}
    start_at: NodeId | None = None
    from_run: NodeId | None = None
    # Load: start this many runs at once; the answer is then {"items": [Run, ...]}.
    count: Annotated[int, Meta(ge=1, le=MAX_COUNT)] | None = None


class ProcessFilesRequest(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    file_ids: Annotated[list[Annotated[str, Meta(min_length=1, max_length=128)]], Meta(min_length=1, max_length=1000)]
    seed: Annotated[int, Meta(ge=0, le=2**53)] | None = None
    speed: Speed | None = None


class IdleStatus(msgspec.Struct, frozen=True):
    state: str = "idle"


def run_response(request: web.Request, run: Run, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    if request.method == "GET":
        return hashed_response(request, run, headers)
    body = _encoder.encode(run)
    return web.Response(body=body, status=status, content_type="application/json",
                        headers={"ETag": content_etag(body), **(headers or {})})


async def execute(request: web.Request) -> web.Response:
    body = await decode_body(request, ExecuteRequest, optional=True)
    store = request.app[STORE]
    workflow = await store.workflows.get(request.match_info["id"])
    debug = await execute_options(request.app[RUNS], workflow, body.breakpoints, body.pinned, body.start_at,
                                  body.from_run)
    await store.runs.freeze_graph(workflow)
    engine = request.app[ENGINE]
    if body.count is None:
        run = await engine.execute(
            workflow, run_id=new_id("run"), seed=body.seed, speed=body.speed, failure_rate=body.failure_rate,
            inputs=body.inputs, script=body.script, debug=debug)
        return run_response(request, run, 202, {"Location": f"/api/runs/{run.id}"})
    # N runs: run i gets seed + i when a seed is given, so they differ and still repeat.
    seeds = [None if body.seed is None else (body.seed + i) % (SEED_LIMIT + 1) for i in range(body.count)]
    started = await asyncio.gather(*(
        engine.execute(workflow, run_id=new_id("run"), seed=seed, speed=body.speed, failure_rate=body.failure_rate,
                       inputs=body.inputs, script=body.script, debug=debug)
        for seed in seeds), return_exceptions=True)
    for outcome in started:
        if isinstance(outcome, BaseException):  # e.g. shutting down part-way: the others run on
            raise outcome
    # A list like every other (its one page: nextCursor is null).
    return json_response(Page(items=cast(list[Run], started), next_cursor=None), status=202)


async def process_files(request: web.Request) -> web.Response:
    body = await decode_body(request, ProcessFilesRequest)
    store = request.app[STORE]
    workflow = await store.workflows.get(request.match_info["id"])
    node_id = request.match_info["nodeId"]
    if not any(n.id == node_id for n in workflow.nodes):
        raise NotFound(node_not_in_workflow(node_id, workflow.id))
    files = await files_for_run(store, body.file_ids)
    await store.runs.freeze_graph(workflow)
    run = await request.app[ENGINE].execute(
        workflow, run_id=new_id("run"), seed=body.seed, speed=body.speed, only_node=node_id, kind="process-files",
        inputs={"fileIds": body.file_ids, "files": _file_inputs(files)})
    return run_response(request, run, 202, {"Location": f"/api/runs/{run.id}"})


def _file_inputs(files: list[FileInfo]) -> list[dict[str, Any]]:
    return [{"id": f.id, "name": f.name, "mimeType": f.mime_type, "size": f.size,
             "metadata": f.metadata} for f in files]


async def _control_latest(request: web.Request, action: Action) -> web.Response:
    run = await request.app[RUNS].control_latest(request.match_info["id"], action)
    return run_response(request, run)


async def pause_workflow(request: web.Request) -> web.Response:
    return await _control_latest(request, "pause")


async def resume_workflow(request: web.Request) -> web.Response:
    return await _control_latest(request, "resume")


async def stop_workflow(request: web.Request) -> web.Response:
    return await _control_latest(request, "stop")


async def _control(request: web.Request, action: Action) -> web.Response:
    run = await request.app[RUNS].control(request.match_info["runId"], action)
    return run_response(request, run)


async def pause_run(request: web.Request) -> web.Response:
    return await _control(request, "pause")


async def resume_run(request: web.Request) -> web.Response:
    return await _control(request, "resume")


async def stop_run(request: web.Request) -> web.Response:
    return await _control(request, "stop")


async def workflow_status(request: web.Request) -> web.Response:
    run = await request.app[RUNS].latest(request.match_info["id"])
    return hashed_response(request, IdleStatus() if run is None else run)


async def workflow_dataflow(request: web.Request) -> web.Response:
    return hashed_response(request, await request.app[RUNS].dataflow(request.match_info["id"]))


async def workflow_runs(request: web.Request) -> web.Response:
    limit, cursor = page_params(request)
    workflow_id = request.match_info["id"]
    await request.app[STORE].workflows.get(workflow_id)
    return json_response(await request.app[RUNS].page(limit, cursor, workflow_id=workflow_id))


async def list_runs(request: web.Request) -> web.Response:
    limit, cursor = page_params(request)
    state = cast(RunState | None, request.query.get("state"))  # checked against RunState by its Param
    workflow_id = request.query.get("workflowId") or None
    return json_response(await request.app[RUNS].page(limit, cursor, workflow_id=workflow_id, state=state))


async def get_run(request: web.Request) -> web.Response:
    return run_response(request, await request.app[RUNS].get(request.match_info["runId"]))


_EXECUTE_SCHEMA = {"application/json": {"anyOf": [
    {"$ref": "#/components/schemas/Run"},
    {"$ref": "#/components/schemas/Page_Run_", "description": "With `count`: every run started"},
]}}
_STATUS_SCHEMA = {"application/json": {"anyOf": [
    {"$ref": "#/components/schemas/Run"},
    {"type": "object", "properties": {"state": {"const": "idle"}}, "required": ["state"]},
]}}
_RUN_FILTERS = (
    Param("workflowId", "Only runs of this workflow (none if it has no runs, or does not exist)"),
    Param("state", "Only runs in this state", RunState),
)
_CONTROL_ERRORS = (404, 409, 503)

ROUTES = (
    Route("POST", "/api/workflows/{id}/execute", execute,
          "Start a new run of the workflow's current version", "runs",
          operation_id="executeWorkflow", creates="/api/runs/{runId}",
          body=ExecuteRequest, body_required=False, response_content=_EXECUTE_SCHEMA, status=202,
          errors=(400, 404, 413, 415, 422, 503),
          response_headers={"Location": "The run's URL (not with `count`)", "ETag": "The run's current tag"}),
    Route("POST", "/api/workflows/{id}/pause", pause_workflow,
          "Pause the workflow's latest run", "runs", operation_id="pauseWorkflow",
          response=Run, errors=_CONTROL_ERRORS),
    Route("POST", "/api/workflows/{id}/resume", resume_workflow,
          "Resume the workflow's latest run", "runs", operation_id="resumeWorkflow",
          response=Run, errors=_CONTROL_ERRORS),
    Route("POST", "/api/workflows/{id}/stop", stop_workflow,
          "Stop the workflow's latest run", "runs", operation_id="stopWorkflow",
          response=Run, errors=_CONTROL_ERRORS),
    Route("POST", "/api/workflows/{id}/nodes/{nodeId}/process-files", process_files,
          "Run one node over uploaded files: image nodes really transform them (results are "
          "new files listed in the node's output); other types simulate per file", "runs",
          operation_id="processFiles", creates="/api/runs/{runId}",
          body=ProcessFilesRequest, response=Run, status=202,
          errors=(400, 404, 413, 415, 422, 503),
          response_headers={"Location": "The run's URL", "ETag": "The run's current tag"}),
    Route("GET", "/api/workflows/{id}/status", workflow_status,
          'The latest run, or {"state": "idle"} if the workflow never ran', "runs",
          operation_id="getWorkflowStatus", response_content=_STATUS_SCHEMA,
          headers=IF_NONE_MATCH, errors=(304, 404)),
    Route("GET", "/api/workflows/{id}/dataflow", workflow_dataflow,
          "What crossed each connection in the latest run", "runs",
          operation_id="getWorkflowDataflow", response=Dataflow, headers=IF_NONE_MATCH, errors=(304, 404)),
    Route("GET", "/api/workflows/{id}/runs", workflow_runs, "The workflow's runs, newest first",
          "runs", operation_id="listWorkflowRuns", response=Page[Run], query=LIST_PARAMS[:2],
          errors=(404, 422)),
    Route("GET", "/api/runs", list_runs, "Runs of every workflow, newest first", "runs",
          operation_id="listRuns", response=Page[Run], query=(*LIST_PARAMS[:2], *_RUN_FILTERS),
          errors=(422,)),
    Route("GET", "/api/runs/{runId}", get_run, "A run's snapshot", "runs", operation_id="getRun",
          response=Run, headers=IF_NONE_MATCH, errors=(304, 404)),
    Route("POST", "/api/runs/{runId}/pause", pause_run, "Pause this run", "runs",
          operation_id="pauseRun", response=Run, errors=_CONTROL_ERRORS),
    Route("POST", "/api/runs/{runId}/resume", resume_run, "Resume this run", "runs",
          operation_id="resumeRun", response=Run, errors=_CONTROL_ERRORS),
    Route("POST", "/api/runs/{runId}/stop", stop_run, "Stop this run", "runs",
          operation_id="stopRun", response=Run, errors=_CONTROL_ERRORS),
)
