"""The lifecycles of runs and nodes, each declared as ONE transition table.

A table maps an event (what happens) to the states it may happen in and the state it
leads to. A transition whose target is its source is a declared no-op: pausing a paused
run is accepted and changes nothing. Anything not in the table is illegal and raises
`IllegalTransition` ("Can't pause when completed"), a `Conflict`, so the server answers
409 without any state logic of its own.

Every event leads to one state whatever state it leaves (`RUN_TARGET`, `NODE_TARGET`): replaying
a stored event (start-up recovery) needs only that. The hot path looks a row up once
(`NODE_TABLE["start"].get(state)`); `node_transition` and `run_transition` raise the named
error. Why a node was skipped is part of its lifecycle too: `UPSTREAM_FAILED`,
`BRANCH_NOT_TAKEN`, `RUN_STOPPED` and `RUN_INTERRUPTED` are the `reason`s of node.skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TypeVar

from flowstage.simulation.errors import Conflict
from flowstage.simulation.models import NodeState, RunState

__all__ = [
    "BRANCH_NOT_TAKEN",
    "NODE_SETTLED",
    "NODE_TABLE",
    "NODE_TARGET",
    "RUN_FINISHED",
    "RUN_INTERRUPTED",
    "RUN_STOPPED",
    "RUN_TABLE",
    "RUN_TARGET",
    "UPSTREAM_FAILED",
    "IllegalTransition",
    "node_transition",
    "run_transition",
]


class IllegalTransition(Conflict):
    """An event that the current state does not allow, e.g. stopping a completed run."""

    def __init__(self, event: str, state: str) -> None:
        super().__init__(f"Can't {event} when {state}")
        self.event = event
        self.state = state


# event -> {source state: target state}
RUN_TABLE: Final[Mapping[str, Mapping[str, RunState]]] = {
    "pause": {"running": "paused", "paused": "paused"},
    "resume": {"paused": "running", "running": "running"},
    "stop": {"running": "stopped", "paused": "stopped"},
    "complete": {"running": "completed"},
    # A paused run can fail too: an engine shutting down interrupts it.
    "fail": {"running": "failed", "paused": "failed"},
}

NODE_TABLE: Final[Mapping[str, Mapping[str, NodeState]]] = {
    # idle: waiting for upstream data; queued: ready, about to start.
    "queue": {"idle": "queued"},
    "start": {"queued": "running"},
    "pause": {"running": "paused"},
    "resume": {"paused": "running"},
    "complete": {"running": "completed"},
    # Reused: completed without running, its output taken from an earlier run or pinned.
    "reuse": {"idle": "completed", "queued": "completed"},
    "fail": {"queued": "failed", "running": "failed", "paused": "failed"},
    # Skipped: it never ran (an upstream failed, its branch was not taken, the run stopped).
    "skip": {"idle": "skipped", "queued": "skipped"},
    # Stopped: it was running (or paused mid-way) when the run stopped.
    "stop": {"running": "stopped", "paused": "stopped"},
}

RUN_FINISHED: Final[frozenset[str]] = frozenset({"completed", "failed", "stopped"})
NODE_SETTLED: Final[frozenset[str]] = frozenset({"completed", "failed", "skipped", "stopped"})

# Why a node was skipped (the `reason` of node.skipped).
UPSTREAM_FAILED: Final = "upstream_failed"
BRANCH_NOT_TAKEN: Final = "branch_not_taken"
RUN_STOPPED: Final = "run_stopped"
RUN_INTERRUPTED: Final = "run_interrupted"

_State = TypeVar("_State", RunState, NodeState)


def _targets(table: Mapping[str, Mapping[str, _State]]) -> Mapping[str, _State]:
    targets = {event: set(moves.values()) for event, moves in table.items()}
    assert all(len(t) == 1 for t in targets.values()), "an event leads to one state"
    return {event: target.pop() for event, target in targets.items()}


# event -> the state it leads to, from whichever state allows it
RUN_TARGET: Final = _targets(RUN_TABLE)
NODE_TARGET: Final = _targets(NODE_TABLE)


def run_transition(state: str, event: str) -> RunState:
    """The run state after `event`; raises IllegalTransition if `state` does not allow it."""
    target = RUN_TABLE[event].get(state)
    if target is None:
        raise IllegalTransition(event, state)
    return target


def node_transition(state: str, event: str) -> NodeState:
    """The node state after `event`; raises IllegalTransition if `state` does not allow it."""
    target = NODE_TABLE[event].get(state)
    if target is None:
        raise IllegalTransition(event, state)
    return target
