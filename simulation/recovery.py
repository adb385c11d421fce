"""Startup recovery: runs that were running or paused when the process died end `failed`
with ErrorInfo(code="interrupted").

The engine saves a run's snapshot when it starts, pauses, resumes or ends, and every event
in between; so a stored "running" snapshot can be behind its events. `interrupt_stored`
first replays the stored events onto the snapshot (simulation.history), then settles what was unfinished
the way a stop does (running/paused nodes `stopped`, the others `skipped`), and returns
the failed snapshot with the events that say so, numbered after the last stored one.
Finished runs are returned untouched. Every state change is one of simulation.states' tables.
Pure: the caller reads and writes the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from flowstage.simulation.history import RunHistory
from flowstage.simulation.messages import INTERRUPTED_ERROR
from flowstage.simulation.models import Event, NodeRun, NodeSkipped, NodeStopped, Run, RunFailed, event_name
from flowstage.simulation.progress import node_work, run_progress
from flowstage.simulation.states import NODE_TABLE, RUN_FINISHED, RUN_INTERRUPTED, node_transition, run_transition
from flowstage.simulation.timefmt import iso_ms

__all__ = ["interrupt_stored"]

_decode_event = msgspec.json.Decoder(Event).decode
_encode = msgspec.json.Encoder().encode


def _replay(run: Run, events: Sequence[tuple[int, str, bytes]]) -> tuple[Run, int, set[str]]:
    """The run with its stored events applied (simulation.history), its last seq, and the nodes
    skipped because their branch was not taken."""
    history = RunHistory(run)
    last = 0
    for seq, _name, data in sorted(events, key=lambda e: e[0]):
        last = max(last, seq)
        history.apply(_decode_event(data))
    return history.run(), last, history.not_taken


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
    if run.state in RUN_FINISHED:  # its terminal event was stored, its last snapshot was not
        return run, []
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
                                     error=INTERRUPTED_ERROR, progress=run_progress(done, len(nodes)),
                                     paused_at=None)
    return failed, out
