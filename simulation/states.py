"""The lifecycles of runs and nodes, each declared as ONE transition table.

A table maps an event (what happens) to the states it may happen in and the state it
leads to. A transition whose target is its source is a declared no-op: pausing a paused
run is accepted and changes nothing. Anything not in the table is illegal and raises
`IllegalTransition` ("Can't pause when completed"), a `Conflict`, so the server answers
409 without any state logic of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from flowstage.simulation.errors import Conflict
from flowstage.simulation.models import NodeState, RunState

__all__ = [
    "NODE_SETTLED",
    "NODE_TABLE",
    "RUN_FINISHED",
    "RUN_TABLE",
    "IllegalTransition",
    "NodeEvent",
    "RunEvent",
    "node_transition",
    "run_transition",
]

RunEvent = Literal["pause", "resume", "stop", "complete", "fail"]
NodeEvent = Literal["queue", "start", "pause", "resume", "complete", "fail", "skip", "stop"]


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
    "fail": {"queued": "failed", "running": "failed", "paused": "failed"},
    # Skipped: it never ran (an upstream failed, its branch was not taken, the run stopped).
    "skip": {"idle": "skipped", "queued": "skipped"},
    # Stopped: it was running (or paused mid-way) when the run stopped.
    "stop": {"running": "stopped", "paused": "stopped"},
}

RUN_FINISHED: Final[frozenset[str]] = frozenset({"completed", "failed", "stopped"})
NODE_SETTLED: Final[frozenset[str]] = frozenset({"completed", "failed", "skipped", "stopped"})


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
