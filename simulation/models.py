"""The domain's data shapes, as the HTTP contract spells them: workflow graphs, templates,
files, runs and run events.

Frozen msgspec Structs with camelCase names on the wire. The server encodes them as they are,
the engine builds them, the store keeps them, and the OpenAPI document is generated from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "EVENT_TYPES",
    "Connection",
    "EdgeData",
    "EdgeFlow",
    "Event",
    "FileInfo",
    "Node",
    "NodeCompleted",
    "NodeData",
    "NodeFailed",
    "NodeInspection",
    "NodeProgress",
    "NodeQueued",
    "NodeRun",
    "NodeSkipped",
    "NodeStarted",
    "NodeState",
    "NodeStopped",
    "PauseReason",
    "PausedAt",
    "Position",
    "Run",
    "RunCompleted",
    "RunFailed",
    "RunPaused",
    "RunResumed",
    "RunStarted",
    "RunState",
    "RunStopped",
    "Template",
    "Viewport",
    "Workflow",
    "event_name",
]

Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Description = Annotated[str, Meta(max_length=10_000)]
Tag = Annotated[str, Meta(min_length=1, max_length=64)]
Tags = Annotated[list[Tag], Meta(max_length=50)]
Coordinate = Annotated[float, Meta(ge=-1e9, le=1e9)]
Timestamp = Annotated[str, Meta(description="RFC 3339 UTC with milliseconds")]


class Position(msgspec.Struct, frozen=True, rename="camel"):
    x: Coordinate
    y: Coordinate


class NodeData(msgspec.Struct, frozen=True, rename="camel"):
    label: Annotated[str, Meta(max_length=200)] = ""
    config: dict[str, Any] = {}


class Node(msgspec.Struct, frozen=True, rename="camel"):
    id: Id
    type: Annotated[str, Meta(min_length=1, max_length=64)]
    position: Position
    data: NodeData = NodeData()


# An editor's camera: the pan (x, y, in screen pixels) and the zoom factor. The bounds only keep
# the numbers finite (a JSON 1e999 reads as infinity); React Flow's own zoom range is 0.5 to 2.
ViewportOffset = Annotated[float, Meta(ge=-1e12, le=1e12)]
Zoom = Annotated[float, Meta(gt=0, le=1e6)]


class Viewport(msgspec.Struct, frozen=True, rename="camel"):
    """Where an editor looked at a workflow (React Flow's `{x, y, zoom}`)."""

    x: ViewportOffset
    y: ViewportOffset
    zoom: Zoom


class Connection(msgspec.Struct, frozen=True, rename="camel"):
    id: Id
    source: Id
    target: Id
    source_handle: str
    target_handle: str


class Workflow(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    name: str
    description: str
    tags: list[str]
    version: int
    created_at: Timestamp
    updated_at: Timestamp
    nodes: list[Node]
    connections: list[Connection]
    # null until an editor saves one; stored documents from before it existed read as null.
    viewport: Viewport | None = None


class Template(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    name: str
    description: str
    tags: list[str]
    version: int
    created_at: Timestamp
    updated_at: Timestamp
    nodes: list[Node]
    connections: list[Connection]


class FileInfo(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    name: str
    size: int
    mime_type: str
    sha256: str
    created_at: Timestamp
    metadata: dict[str, Any]
    content_url: str
    thumbnail_url: str | None


RunState = Literal["running", "paused", "completed", "failed", "stopped"]
NodeState = Literal["idle", "queued", "running", "paused", "completed", "failed", "skipped", "stopped"]


class ErrorInfo(msgspec.Struct, frozen=True, rename="camel"):
    """Why a node or a run failed: a stable `code` for programs and a `message` for people."""

    code: str
    message: str
    node_id: str | None = None


class NodeRun(msgspec.Struct, frozen=True, rename="camel"):
    state: NodeState
    progress: float
    started_at: Timestamp | None
    finished_at: Timestamp | None
    output: Any
    error: ErrorInfo | None


PauseReason = Literal["breakpoint", "step", "user"]


class PausedAt(msgspec.Struct, frozen=True, rename="camel"):
    """Where a paused run stopped: before `node_id` at a breakpoint, after a step (the node that
    started or finished), or where a client's pause found it (`node_id` null)."""

    node_id: str | None
    reason: PauseReason


class Run(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    workflow_id: str
    workflow_version: int
    state: RunState
    seed: int
    speed: float
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    progress: Annotated[float, Meta(ge=0, le=1)]
    nodes: dict[str, NodeRun]
    failure_rate: float = 0.0
    error: ErrorInfo | None = None
    # "workflow" for execute; "process-files" for a run of one node over uploaded files;
    # "replay" for a recording played back (read-only).
    kind: Literal["workflow", "process-files", "replay"] = "workflow"
    # Debugging: where a paused run stopped, the nodes it pauses before, the run a retry
    # started from, and what a replay plays back (a run id or a recording id).
    paused_at: PausedAt | None = None
    breakpoints: list[str] = []
    parent_run_id: str | None = None
    replay_of: str | None = None


class NodeInspection(msgspec.Struct, frozen=True, rename="camel"):
    """One node of one run, as a debugger shows it (`GET /api/runs/{id}/nodes/{nodeId}`)."""

    node_id: str
    state: NodeState
    queued_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    # Simulated milliseconds the node has run (paused time left out); null before it starts.
    duration_ms: float | None
    # What arrived on each incoming connection that delivered data, by connection id.
    inputs: dict[str, Any]
    output: Any
    error: ErrorInfo | None
    # Executions of this node in its retry lineage (this run and its parents); 0 if never run.
    attempt: int
    # Incoming connections that have not delivered yet (and may still).
    waiting_for: list[str]
    reused: bool = False
    pinned: bool = False


class EdgeFlow(msgspec.Struct, frozen=True, rename="camel"):
    connection_id: str
    source: str
    target: str
    state: Literal["idle", "active", "done", "skipped"]
    items: int
    bytes: int
    last_payload: Any


# --- Events -------------------------------------------------------------------------------
# One Struct per event name; the tag is the SSE `event:` name and is also in the JSON data.


class _Event(msgspec.Struct, frozen=True, rename="camel", tag_field="event"):
    run_id: str
    workflow_id: str
    seq: int
    ts: Timestamp


class RunStarted(_Event, frozen=True, tag="run.started"):
    workflow_version: int
    seed: int
    speed: float


class RunPaused(_Event, frozen=True, tag="run.paused"):
    # The node a breakpoint or a step stopped at (null for a client's pause) and why.
    node_id: str | None = None
    reason: PauseReason = "user"


class RunResumed(_Event, frozen=True, tag="run.resumed"):
    pass


class RunCompleted(_Event, frozen=True, tag="run.completed"):
    pass


class RunFailed(_Event, frozen=True, tag="run.failed"):
    error: ErrorInfo


class RunStopped(_Event, frozen=True, tag="run.stopped"):
    pass


class NodeQueued(_Event, frozen=True, tag="node.queued"):
    node_id: str


class NodeStarted(_Event, frozen=True, tag="node.started"):
    node_id: str


class NodeProgress(_Event, frozen=True, tag="node.progress"):
    node_id: str
    progress: float


class NodeCompleted(_Event, frozen=True, tag="node.completed", omit_defaults=True, kw_only=True):
    node_id: str
    # Not executed: its output was taken from an earlier run (a retry, or a run from a node),
    # or pinned by the execute. Both are left out when false.
    reused: bool = False
    pinned: bool = False
    # Last, always: the engine slices a node's output out of its encoded event.
    output: Any


class NodeFailed(_Event, frozen=True, tag="node.failed"):
    node_id: str
    error: ErrorInfo


class NodeSkipped(_Event, frozen=True, tag="node.skipped"):
    node_id: str
    reason: str


class NodeStopped(_Event, frozen=True, tag="node.stopped"):
    node_id: str
    progress: float


class EdgeData(_Event, frozen=True, tag="edge.data"):
    connection_id: str
    source: str
    target: str
    items: int
    bytes: int


Event = (
    RunStarted
    | RunPaused
    | RunResumed
    | RunCompleted
    | RunFailed
    | RunStopped
    | NodeQueued
    | NodeStarted
    | NodeProgress
    | NodeCompleted
    | NodeFailed
    | NodeSkipped
    | NodeStopped
    | EdgeData
)

EVENT_TYPES: tuple[type[_Event], ...] = (
    RunStarted, RunPaused, RunResumed, RunCompleted, RunFailed, RunStopped,
    NodeQueued, NodeStarted, NodeProgress, NodeCompleted, NodeFailed, NodeSkipped, NodeStopped,
    EdgeData,
)


def event_name(event: _Event) -> str:
    """The SSE `event:` name of an event, e.g. "node.started"."""
    return event.__struct_config__.tag  # type: ignore[return-value]  # every event is tagged with a str
