"""Startup recovery: runs that were running or paused when the process died end `failed`
with ErrorInfo(code="interrupted").

The engine saves a run's snapshot when it starts, pauses, resumes or ends, and every event
in between; so a stored "running" snapshot can be behind its events. `interrupt_stored`
first replays the stored node events onto the snapshot, then settles what was unfinished
the way a stop does (running/paused nodes `stopped`, the others `skipped`), and returns
the failed snapshot with the events that say so, numbered after the last stored one.
Finished runs are returned untouched. Pure: the caller reads and writes the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from flowstage.simulation.models import (
    ErrorInfo,
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
)
from flowstage.simulation.progress import BRANCH_NOT_TAKEN, node_work, run_progress
from flowstage.simulation.timefmt import iso_ms

__all__ = ["INTERRUPTED_MESSAGE", "interrupt_stored"]

INTERRUPTED_MESSAGE = "The server stopped while this run was active."

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
        match event:
            case NodeQueued(node_id=nid) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state="queued")
            case NodeStarted(node_id=nid, ts=ts) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state="running", started_at=ts)
            case NodeProgress(node_id=nid, progress=p) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], progress=p)
            case NodeCompleted(node_id=nid, ts=ts, output=out) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state="completed", progress=1.0,
                                                     finished_at=ts, output=out)
            case NodeFailed(node_id=nid, ts=ts, error=err) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state="failed", finished_at=ts, error=err)
            case NodeSkipped(node_id=nid, ts=ts, reason=reason) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state="skipped", finished_at=ts)
                if reason == BRANCH_NOT_TAKEN:
                    not_taken.add(nid)
            case NodeStopped(node_id=nid, ts=ts, progress=p) if nid in nodes:
                nodes[nid] = msgspec.structs.replace(nodes[nid], state="stopped", finished_at=ts, progress=p)
            case RunPaused():
                state = "paused"
            case RunResumed():
                state = "running"
            case _:
                pass
    if state == "paused":
        # A paused run's running nodes were paused with it.
        nodes = {k: (msgspec.structs.replace(v, state="paused") if v.state == "running" else v)
                 for k, v in nodes.items()}
    return msgspec.structs.replace(run, nodes=nodes, state=state), last, not_taken


def interrupt_stored(
    run: Run,
    events: Sequence[tuple[int, str, bytes]],
    now: float,
    message: str = INTERRUPTED_MESSAGE,
) -> tuple[Run, list[tuple[int, str, bytes]]]:
    """The failed snapshot of an interrupted run and its new events (seq, name, data).

    `events` are the run's stored events (any order); `now` is epoch seconds.
    """
    if run.state not in ("running", "paused"):
        return run, []
    run, last, not_taken = _replay(run, events)
    ts = iso_ms(now)
    error = ErrorInfo("interrupted", message)
    out: list[tuple[int, str, bytes]] = []
    nodes: dict[str, NodeRun] = {}
    seq = last

    def emit(name: str, event: Any) -> None:
        out.append((event.seq, name, _encode(event)))

    for node_id, node in run.nodes.items():
        if node.state in ("running", "paused"):
            seq += 1
            nodes[node_id] = msgspec.structs.replace(node, state="stopped", finished_at=ts)
            emit("node.stopped", NodeStopped(run.id, run.workflow_id, seq, ts, node_id, node.progress))
        elif node.state in ("idle", "queued"):
            seq += 1
            nodes[node_id] = msgspec.structs.replace(node, state="skipped", finished_at=ts)
            emit("node.skipped", NodeSkipped(run.id, run.workflow_id, seq, ts, node_id, "run_interrupted"))
        else:
            nodes[node_id] = node
    seq += 1
    emit("run.failed", RunFailed(run.id, run.workflow_id, seq, ts, error))
    done = sum(node_work(n.progress, node_id in not_taken) for node_id, n in nodes.items())
    failed = msgspec.structs.replace(run, state="failed", finished_at=ts, nodes=nodes, error=error,
                                     progress=run_progress(done, len(nodes)))
    return failed, out
