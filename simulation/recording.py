"""Recordings: a finished run, the graph it executed and every event it sent, each at its
simulated offset, in one versioned JSON document that can be exported, imported and replayed.

`record` builds one from a run; `check_recording` decides whether one may be replayed (an
imported document may have been edited) and names the first bad field. Offsets are simulated
milliseconds since run.started: clock time times the run's speed, so a replay at any speed
divides them by its own. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final, Literal, get_args

import msgspec
from msgspec import Meta

from flowstage.simulation.errors import FieldError, Invalid, Loc
from flowstage.simulation.messages import no_such_node
from flowstage.simulation.models import (
    EVENT_TYPES,
    Connection,
    EdgeData,
    Event,
    Run,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunState,
    RunStopped,
    Timestamp,
    Workflow,
    event_name,
)
from flowstage.simulation.states import RUN_FINISHED
from flowstage.simulation.timefmt import parse_iso
from flowstage.simulation.validity import build_graph, execution_order

__all__ = ["FORMAT_VERSION", "FormatVersion", "RecordedEvent", "Recording", "RecordingInfo", "check_recording",
           "check_version", "record", "recording_info"]

FORMAT_VERSION: Final = 1
"""The format this server writes and reads. A reader refuses a newer one: it cannot know what
the new fields mean."""

EventName = Literal["run.started", "run.paused", "run.resumed", "run.completed", "run.failed", "run.stopped",
                    "node.queued", "node.started", "node.progress", "node.completed", "node.failed", "node.skipped",
                    "node.stopped", "edge.data"]
assert set(get_args(EventName)) == {t.__struct_config__.tag for t in EVENT_TYPES}, "every event, by name"
# Simulated milliseconds; the bound only keeps them finite (a JSON 1e999 reads as infinity).
OffsetMs = Annotated[float, Meta(ge=0, le=1e15)]

_decode_event = msgspec.json.Decoder(Event).decode
_ENDINGS: Final[dict[type[Event], RunState]] = {RunCompleted: "completed", RunFailed: "failed",
                                                RunStopped: "stopped"}


class RecordedEvent(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """One event of the run: when it happened (simulated ms since run.started), its name, and its
    data exactly as the run's SSE stream sent it."""

    offset_ms: OffsetMs
    event: EventName
    data: Event


class Recording(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`GET /api/runs/{id}/recording`, and the body of `POST /api/recordings`."""

    format_version: Literal[1]
    run: Run
    # The frozen graph the run executed (its workflowId and workflowVersion).
    workflow: Workflow
    events: list[RecordedEvent]


class FormatVersion(msgspec.Struct, frozen=True, rename="camel"):
    """A recording's version alone: read before the rest, whose shape depends on it."""

    format_version: int


class RecordingInfo(msgspec.Struct, frozen=True, rename="camel"):
    """An imported recording, as `POST /api/recordings` answers."""

    id: str
    format_version: int
    run_id: str
    workflow_id: str
    workflow_version: int
    # How the recorded run ended.
    run_state: RunState
    event_count: int
    # The simulated length of the run: the last event's offset.
    duration_ms: float
    created_at: Timestamp


def _ms(ts: str) -> int:
    return round(parse_iso(ts) * 1000)


def record(run: Run, workflow: Workflow, events: Sequence[tuple[int, str, bytes]]) -> Recording:
    """The recording of a finished `run` of `workflow` from its events (seq, name, data)."""
    decoded = [_decode_event(data) for _seq, _name, data in sorted(events, key=lambda e: e[0])]
    start_ts = next((e.ts for e in decoded if isinstance(e, RunStarted)), run.started_at or run.created_at)
    start = _ms(start_ts)
    recorded = [RecordedEvent(round((_ms(e.ts) - start) * run.speed, 3), event_name(e), e)  # type: ignore[arg-type]
                for e in decoded]
    return Recording(FORMAT_VERSION, run, workflow, recorded)


def recording_info(recording_id: str, recording: Recording, created_at: str) -> RecordingInfo:
    run = recording.run
    events = recording.events
    return RecordingInfo(recording_id, recording.format_version, run.id, run.workflow_id, run.workflow_version,
                         run.state, len(events), events[-1].offset_ms if events else 0.0, created_at)


def check_version(version: FormatVersion) -> None:
    """Invalid unless this server reads recordings of `version`'s format."""
    found = version.format_version
    if found != FORMAT_VERSION:
        why = "newer than this server reads: upgrade Flowstage" if found > FORMAT_VERSION else "no such format"
        raise _invalid(("body", "formatVersion"), f"format {found} is {why} (it reads format {FORMAT_VERSION})")


def check_recording(recording: Recording) -> None:
    """Invalid at the first field that makes `recording` unfit to replay: a run that has not
    ended, a graph the editor would refuse, a run that is not of that graph, or events that are
    not the run's own, in order, about that graph's nodes and connections, from run.started to
    the run's end."""
    run, workflow = recording.run, recording.workflow
    if run.state not in RUN_FINISHED:
        raise _invalid(("body", "run", "state"), f"a recording holds a finished run, not a {run.state} one")
    _check_graph(workflow)
    if run.workflow_id != workflow.id:
        raise _invalid(("body", "run", "workflowId"), f"must be the recorded workflow's id {workflow.id!r}")
    if run.workflow_version != workflow.version:
        raise _invalid(("body", "run", "workflowVersion"), f"must be the recorded workflow's version "
                                                           f"{workflow.version}")
    _check_nodes(run, workflow)
    _check_events(recording)


def _check_graph(workflow: Workflow) -> None:
    try:
        build_graph(workflow.nodes, workflow.connections, lambda i: ("body", "workflow", "nodes", i),
                    lambda i: ("body", "workflow", "connections", i))
        execution_order([n.id for n in workflow.nodes], [(c.source, c.target) for c in workflow.connections])
    except Invalid as error:
        first = error.errors[0] if error.errors else FieldError(("body", "workflow"), error.detail)
        loc = first.loc if first.loc[:2] == ("body", "workflow") else ("body", "workflow", "connections")
        raise _invalid(loc, first.msg) from None


def _check_nodes(run: Run, workflow: Workflow) -> None:
    """The run's nodes are the graph's (a process-files run has one of them)."""
    graph = [n.id for n in workflow.nodes]
    for node_id in run.nodes:
        if node_id not in graph:
            raise _invalid(("body", "run", "nodes", node_id), no_such_node(node_id))
    if run.kind == "process-files":
        if len(run.nodes) != 1:
            raise _invalid(("body", "run", "nodes"), "a process-files run has exactly one node")
        return
    missing = next((node_id for node_id in graph if node_id not in run.nodes), None)
    if missing is not None:
        raise _invalid(("body", "run", "nodes"), f"lacks node {missing!r} of the workflow")


def _check_events(recording: Recording) -> None:
    run, events = recording.run, recording.events
    if not events:
        raise _invalid(("body", "events"), "a recording holds at least the run's run.started and its end")
    connections = {c.id: c for c in recording.workflow.connections}
    previous = 0.0
    ended: int | None = None
    for i, recorded in enumerate(events):
        loc: Loc = ("body", "events", i)
        data = recorded.data
        name = event_name(data)
        if recorded.offset_ms < previous:
            raise _invalid((*loc, "offsetMs"), f"must not be less than the previous event's ({previous:g})")
        previous = recorded.offset_ms
        if recorded.event != name:
            raise _invalid((*loc, "event"), f"says {recorded.event!r} but its data is a {name!r} event")
        if i == 0 and not isinstance(data, RunStarted):
            raise _invalid((*loc, "event"), "the first event must be run.started")
        if ended is not None:
            raise _invalid((*loc, "event"), f"comes after the run ended (event {ended})")
        ending = _ENDINGS.get(type(data))
        if ending is not None:
            if ending != run.state:
                raise _invalid((*loc, "event"), f"ends the run {ending} but the run is {run.state}")
            ended = i
        if data.run_id != run.id:
            raise _invalid((*loc, "data", "runId"), f"must be the recorded run's id {run.id!r}")
        if data.workflow_id != run.workflow_id:
            raise _invalid((*loc, "data", "workflowId"), f"must be the recorded run's workflow {run.workflow_id!r}")
        if data.seq != i + 1:
            raise _invalid((*loc, "data", "seq"), f"must be {i + 1}: events are numbered 1, 2, 3... in order")
        node_id = getattr(data, "node_id", None)
        if node_id is not None and node_id not in run.nodes:
            raise _invalid((*loc, "data", "nodeId"), no_such_node(node_id))
        if isinstance(data, EdgeData):
            _check_edge(data, connections.get(data.connection_id), loc)
    if ended is None:
        raise _invalid(("body", "events", len(events) - 1, "event"),
                       "the last event must end the run (run.completed, run.failed or run.stopped)")


def _check_edge(data: EdgeData, connection: Connection | None, loc: Loc) -> None:
    if connection is None:
        raise _invalid((*loc, "data", "connectionId"), f"no connection {data.connection_id!r} in this workflow")
    for field, given, actual in (("source", data.source, connection.source),
                                 ("target", data.target, connection.target)):
        if given != actual:
            raise _invalid((*loc, "data", field), f"must be the connection's {field} {actual!r}")


def _invalid(loc: Loc, msg: str) -> Invalid:
    return Invalid(f"Not a recording this server can replay: {msg}", [FieldError(loc, msg)])
