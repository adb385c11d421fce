"""One node of one run as a debugger shows it (`GET /api/runs/{id}/nodes/{nodeId}`), derived
from what every run has, live or stored: its snapshot, its events and its plan.

- state, startedAt, finishedAt, output and error are the snapshot's;
- queuedAt is the node's `node.queued` stamp; reused and pinned are its `node.completed`'s;
- inputs and waitingFor are the dataflow into the node (simulation.plan.edge_flows);
- durationMs is the simulated time the node has run: from its `node.started` to its end (or
  to now), leaving out every pause of the run, times the run's speed.

`attempt` counts the node's executions across a retry lineage, which takes other runs to
know: the caller counts them with `executed` and passes the sum in. Pure and synchronous.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from flowstage.simulation.models import NodeInspection, Run
from flowstage.simulation.plan import Plan, edge_flows
from flowstage.simulation.timefmt import parse_iso

__all__ = ["EventRecord", "executed", "inspect_node"]

EventRecord = tuple[int, str, bytes]
"""One event of a run as the engine's log and the store give it: (seq, name, encoded data)."""


class _Head(msgspec.Struct, frozen=True, rename="camel"):
    """The fields of an event that inspection reads; the rest (outputs) is skipped unbuilt."""

    ts: str
    node_id: str | None = None
    reused: bool = False
    pinned: bool = False


_decode_head = msgspec.json.Decoder(_Head).decode
_NODE_EVENTS = frozenset({"node.queued", "node.started", "node.completed"})
_DELIVERED = frozenset({"active", "done"})


def executed(events: Sequence[EventRecord], node_id: str) -> bool:
    """Whether the node was executed in the run these events are of: it has a `node.started`
    (a node reused or pinned from elsewhere has only its `node.completed`)."""
    return any(name == "node.started" and _decode_head(data).node_id == node_id for _seq, name, data in events)


class _Timeline(msgspec.Struct):
    """What a run's events say about one node, and the run's pauses (epoch milliseconds;
    a pause still open has `None` for its end)."""

    queued_at: str | None = None
    started_ms: int | None = None
    reused: bool = False
    pinned: bool = False
    pauses: list[tuple[int, int | None]] = []


def _timeline(events: Sequence[EventRecord], node_id: str) -> _Timeline:
    line = _Timeline()
    for _seq, name, data in sorted(events, key=lambda event: event[0]):
        if name in _NODE_EVENTS:
            head = _decode_head(data)
            if head.node_id != node_id:
                continue
            if name == "node.queued":
                line.queued_at = line.queued_at or head.ts
            elif name == "node.started":
                line.started_ms = _ms(head.ts)
            else:
                line.reused, line.pinned = head.reused, head.pinned
        elif name == "run.paused":
            line.pauses.append((_ms(_decode_head(data).ts), None))
        elif name == "run.resumed" and line.pauses and line.pauses[-1][1] is None:
            line.pauses[-1] = (line.pauses[-1][0], _ms(_decode_head(data).ts))
    return line


def _ms(ts: str) -> int:
    # Exact: a stamp has whole milliseconds, and a float's error at today's epoch (~1e-7 s)
    # is far below the half millisecond the rounding forgives.
    return round(parse_iso(ts) * 1000)


def _duration_ms(line: _Timeline, finished_at: str | None, now_ms: int, speed: float) -> float | None:
    """Simulated milliseconds from the node's start to its end (or now), pauses left out."""
    start = line.started_ms
    if start is None:
        return None
    end = _ms(finished_at) if finished_at is not None else max(now_ms, start)
    paused = 0
    for paused_at, resumed_at in line.pauses:
        # A pause still open lasts until the end: a paused node's time stands still.
        overlap = min(end, end if resumed_at is None else resumed_at) - max(start, paused_at)
        paused += max(overlap, 0)
    # Clock time times the speed is simulated time (at speed 2 a 2 s node takes 1 s).
    return round((end - start - paused) * speed, 3)


def inspect_node(plan: Plan | None, run: Run, events: Sequence[EventRecord], node_id: str, *,
                 now: float, attempt: int) -> NodeInspection:
    """Node `node_id` (one of `run.nodes`) of `run`, whose events are `events`, at instant
    `now` (epoch seconds; it matters only while the node runs). `plan` is the run's plan, for
    the connections into the node; None if its graph is unknown (no inputs, nothing awaited)."""
    node = run.nodes[node_id]
    line = _timeline(events, node_id)
    inputs: dict[str, Any] = {}
    waiting_for: list[str] = []
    planned = plan.by_id.get(node_id) if plan is not None else None
    if plan is not None and planned is not None and planned.in_edges:
        for flow in edge_flows(plan, run):
            if flow.target != node_id:
                continue
            if flow.state in _DELIVERED:
                inputs[flow.connection_id] = flow.last_payload
            # Only a node that has not started waits: once it starts, all it takes is in.
            elif flow.state == "idle" and node.state == "idle":
                waiting_for.append(flow.connection_id)
    return NodeInspection(
        node_id=node_id, state=node.state, queued_at=line.queued_at, started_at=node.started_at,
        finished_at=node.finished_at, duration_ms=_duration_ms(line, node.finished_at, round(now * 1000), run.speed),
        inputs=inputs, output=node.output, error=node.error, attempt=attempt, waiting_for=waiting_for,
        reused=line.reused, pinned=line.pinned)
