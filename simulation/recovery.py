"""Startup recovery: runs that were running or paused when the process died end `failed`
with ErrorInfo(code="interrupted").

The engine saves a run's snapshot when it starts, pauses, resumes or ends, and every event
in between; so a stored "running" snapshot can be behind its events. `interrupt_stored`
first replays the stored node events onto the snapshot, then settles what was unfinished
the way a stop does (running/paused nodes `stopped`, the others `skipped`), and returns
the failed snapshot with the events that say so, numbered after the last stored one.
Finished runs are returned untouched. Every state change is one of simulation.states' tables.
Pure: the caller reads and writes the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from flowstage.simulation.messages import INTERRUPTED_ERROR
from flowstage.simulation.models import (
    Event,
    NodeCompleted,
    NodeFailed,
    NodeProgress,
    NodeQueued,
    NodeRun,
    NodeSkipped,
    NodeStarted,
    NodeStopped,
    Run,
    RunFailed,
    RunPaused,
    RunResumed,
    event_name,
)
from flowstage.simulation.progress import node_work, run_progress
from flowstage.simulation.states import (
    BRANCH_NOT_TAKEN,
    NODE_TABLE,
    NODE_TARGET,
    RUN_FINISHED,
    RUN_INTERRUPTED,
    RUN_TARGET,
    node_transition,
    run_transition,
)
from flowstage.simulation.timefmt import iso_ms

__all__ = ["interrupt_stored"]

_decode_event = msgspec.json.Decoder(Event).decode
_encode = msgspec.json.Encoder().encode


def _replay(run: Run, events: Sequence[tuple[int, str, bytes]]) -> tuple[Run, int, set[str]]:
    """The run with its stored events applied, its last seq, and the nodes skipped because
    their branch was not taken (a snapshot does not say why a node was skipped)."""
    nodes = dict(run.nodes)
    state = run.state
    last = 0
    not_taken: set[str] = set()
    for seq, _name, data in sorted(events, key=lambda e: e[0]):
        last = max(last, seq)
        event = _decode_event(data)
        # The snapshot may already show some of these events, so each one sets the state it
        # leads to rather than checking that the state it finds allows it.
        match event:
            case NodeQueued(node_id=nid) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state=NODE_TARGET["queue"])
            case NodeStarted(node_id=nid, ts=ts) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state=NODE_TARGET["start"], started_at=ts)
            case NodeProgress(node_id=nid, progress=p) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], progress=p)
            case NodeCompleted(node_id=nid, ts=ts, output=out) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state=NODE_TARGET["complete"], progress=1.0,
                                                     finished_at=ts, output=out)
            case NodeFailed(node_id=nid, ts=ts, error=err) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state=NODE_TARGET["fail"], finished_at=ts,
                                                     error=err)
            case NodeSkipped(node_id=nid, ts=ts, reason=reason) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state=NODE_TARGET["skip"], finished_at=ts)
                if reason == BRANCH_NOT_TAKEN:
                    not_taken.add(nid)
            case NodeStopped(node_id=nid, ts=ts, progress=p) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state=NODE_TARGET["stop"], finished_at=ts,
                                                     progress=p)
            case RunPaused():
                state = RUN_TARGET["pause"]
            case RunResumed():
                state = RUN_TARGET["resume"]
            case _:
                pass
    if state == "paused":
        # A paused run's running nodes were paused with it.
        nodes = {k: (msgspec.structs.replace(v, state=node_transition(v.state, "pause"))
                     if v.state in NODE_TABLE["pause"] else v)
                 for k, v in nodes.items()}
    return msgspec.structs.replace(run, nodes=nodes, state=state), last, not_taken


def interrupt_stored(
    run: Run,
    events: Sequence[tuple[int, str, bytes]],
    now: float,
) -> tuple[Run, list[tuple[int, str, bytes]]]:
    """The failed snapshot of an interrupted run and its new events (seq, name, data).

    `events` are the run's stored events (any order); `now` is epoch seconds.
    """
    if run.state in RUN_FINISHED:
        return run, []
    run, last, not_taken = _replay(run, events)
    ts = iso_ms(now)
    out: list[tuple[int, str, bytes]] = []
    nodes: dict[str, NodeRun] = {}
    seq = last

    def emit(event: Event) -> None:
        out.append((event.seq, event_name(event), _encode(event)))

    # As a stop settles a run: what was under way is stopped, what was still to come skipped.
    for node_id, node in run.nodes.items():
        if node.state in NODE_TABLE["stop"]:
            seq += 1
            nodes[node_id] = msgspec.structs.replace(node, state=node_transition(node.state, "stop"), finished_at=ts)
            emit(NodeStopped(run.id, run.workflow_id, seq, ts, node_id, node.progress))
        elif node.state in NODE_TABLE["skip"]:
            seq += 1
            nodes[node_id] = msgspec.structs.replace(node, state=node_transition(node.state, "skip"), finished_at=ts)
            emit(NodeSkipped(run.id, run.workflow_id, seq, ts, node_id, RUN_INTERRUPTED))
        else:
            nodes[node_id] = node
    seq += 1
    emit(RunFailed(run.id, run.workflow_id, seq, ts, INTERRUPTED_ERROR))
    done = sum(node_work(n.progress, node_id in not_taken) for node_id, n in nodes.items())
    failed = msgspec.structs.replace(run, state=run_transition(run.state, "fail"), finished_at=ts, nodes=nodes,
                                     error=INTERRUPTED_ERROR, progress=run_progress(done, len(nodes)), paused_at=None)
    return failed, out
