"""Debugging as the HTTP layer sees it: an execute's breakpoints and given outputs checked and
resolved (`pinned`, `startAt` + `fromRun`), and a retry of a failed or stopped run.

The engine takes node ids already checked (actors.debugger); what to reuse from an earlier
run is simulation.rerun's rule.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from flowstage.actors.engine import DebugOptions
from flowstage.server.runs import RunService
from flowstage.server.store import new_id
from flowstage.simulation.errors import Conflict, FieldError, Invalid, NotFound
from flowstage.simulation.messages import no_such_node
from flowstage.simulation.models import Run, Workflow
from flowstage.simulation.rerun import check_nodes, check_pinned, reusable
from flowstage.simulation.script import ScriptedOutcome

__all__ = ["BreakpointsRequest", "NodeId", "NodeIds", "RetryRequest", "Speed", "StepRequest", "execute_options",
           "retry"]

_encode = msgspec.json.Encoder().encode
NodeId = Annotated[str, Meta(min_length=1, max_length=128)]
NodeIds = Annotated[list[NodeId], Meta(max_length=10_000)]
Seed = Annotated[int, Meta(ge=0, le=2**53)]
# A floor, not just > 0: at speed 5e-324 a node's duration overflows to infinity and its
# progress after a pause becomes NaN (sent as null). 1e-6 stretches a 1 s node to 11 days.
Speed = Annotated[float, Meta(ge=1e-6, le=1e6)]


class StepRequest(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`POST /api/runs/{id}/step`: run to the next node start or finish, or until `nodeId` finishes."""

    node_id: NodeId | None = None


class BreakpointsRequest(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`PUT /api/runs/{id}/breakpoints`: the nodes the run pauses before, replacing the old set."""

    node_ids: NodeIds


class RetryRequest(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`POST /api/runs/{id}/retry`; every field is optional. Speed and failure rate default to
    the parent's; the seed is new unless given (the parent's seed would fail the same way)."""

    seed: Seed | None = None
    speed: Speed | None = None
    failure_rate: Annotated[float, Meta(ge=0, le=1)] | None = None
    inputs: dict[str, Any] = {}
    script: dict[str, ScriptedOutcome] = {}
    breakpoints: NodeIds = []


async def execute_options(runs: RunService, workflow: Workflow, breakpoints: list[str], pinned: dict[str, Any],
                          start_at: str | None, from_run: str | None) -> DebugOptions | None:
    """An execute's debugging, checked against `workflow`; None when it asks for none."""
    if not (breakpoints or pinned or start_at or from_run):
        return None
    check_nodes(workflow, breakpoints, ["body", "breakpoints"])
    errors = check_pinned(workflow, pinned)
    if errors:
        raise Invalid("Pinned outputs name what this workflow cannot do", errors)
    if start_at is not None and not any(n.id == start_at for n in workflow.nodes):
        raise Invalid(no_such_node(start_at), [FieldError(["body", "startAt"], no_such_node(start_at))])
    if start_at is not None and from_run is None:
        raise Invalid("startAt needs fromRun", [FieldError(
            ["body", "fromRun"], "startAt runs a node with its upstream outputs from this earlier run")])
    given: dict[str, tuple[bytes, bool]] = {}
    if from_run is not None:
        earlier = await _earlier(runs, workflow, from_run)
        graph = await runs.store.runs.frozen_graph(earlier.workflow_id, earlier.workflow_version)
        if graph is not None:
            given.update((n, (raw, False)) for n, raw in reusable(workflow, graph, earlier, start_at).items())
    given.update((n, (_encode(output), True)) for n, output in pinned.items())
    return DebugOptions(frozenset(breakpoints), given, from_run)


async def retry(runs: RunService, run_id: str, body: RetryRequest) -> Run:
    """A new run of the parent's graph that reuses every node that completed there."""
    parent = await runs.get(run_id)
    if parent.kind != "workflow":
        raise Conflict(f"Can't retry a {parent.kind} run: only a workflow run is retried.")
    if parent.state not in ("failed", "stopped"):
        raise Conflict(f"Can't retry a {parent.state} run: only a failed or stopped run is retried.")
    graph = await runs.store.runs.frozen_graph(parent.workflow_id, parent.workflow_version)
    if graph is None:  # every executed run froze its graph first
        raise Conflict(f"The graph run {run_id!r} executed is not stored.")
    check_nodes(graph, body.breakpoints, ["body", "breakpoints"])
    given = {n: (raw, False) for n, raw in reusable(graph, graph, parent).items()}
    return await runs.engine.execute(
        graph, run_id=new_id("run"), seed=body.seed, speed=parent.speed if body.speed is None else body.speed,
        failure_rate=parent.failure_rate if body.failure_rate is None else body.failure_rate,
        inputs=body.inputs, script=body.script,
        debug=DebugOptions(frozenset(body.breakpoints), given, parent.id))


async def _earlier(runs: RunService, workflow: Workflow, run_id: str) -> Run:
    try:
        earlier: Run | None = await runs.get(run_id)
    except NotFound:
        earlier = None
    if earlier is None or earlier.workflow_id != workflow.id or earlier.kind != "workflow":
        raise Invalid("fromRun names no run of this workflow",
                      [FieldError(["body", "fromRun"], f"no run {run_id!r} of workflow {workflow.id!r}")])
    return earlier
