"""The run and node transition tables: what is legal, what is a no-op, what is refused."""

from __future__ import annotations

import pytest

from flowstage.simulation.errors import Conflict
from flowstage.simulation.states import (
    NODE_TABLE,
    NODE_TARGET,
    RUN_TABLE,
    RUN_TARGET,
    IllegalTransition,
    node_transition,
    run_transition,
)


@pytest.mark.parametrize(
    ("state", "event", "target"),
    [
        ("running", "pause", "paused"),
        ("paused", "resume", "running"),
        ("running", "stop", "stopped"),
        ("paused", "stop", "stopped"),
        ("running", "complete", "completed"),
        ("running", "fail", "failed"),
        ("paused", "fail", "failed"),
    ],
)
def test_legal_run_transitions(state: str, event: str, target: str) -> None:
    assert run_transition(state, event) == target


def test_pausing_a_paused_run_and_resuming_a_running_run_are_no_ops() -> None:
    assert run_transition("paused", "pause") == "paused"
    assert run_transition("running", "resume") == "running"


@pytest.mark.parametrize("state", ["completed", "failed", "stopped"])
@pytest.mark.parametrize("event", ["pause", "resume", "stop", "complete", "fail"])
def test_a_finished_run_refuses_everything(state: str, event: str) -> None:
    with pytest.raises(IllegalTransition) as info:
        run_transition(state, event)
    assert str(info.value) == f"Can't {event} when {state}"
    assert isinstance(info.value, Conflict)  # the server answers 409
    assert (info.value.event, info.value.state) == (event, state)


def test_a_paused_run_cannot_complete() -> None:
    with pytest.raises(IllegalTransition, match="Can't complete when paused"):
        run_transition("paused", "complete")


@pytest.mark.parametrize(
    ("state", "event", "target"),
    [
        ("idle", "queue", "queued"),
        ("queued", "start", "running"),
        ("running", "pause", "paused"),
        ("paused", "resume", "running"),
        ("running", "complete", "completed"),
        ("running", "fail", "failed"),
        ("idle", "skip", "skipped"),
        ("queued", "skip", "skipped"),
        ("running", "stop", "stopped"),
        ("paused", "stop", "stopped"),
    ],
)
def test_legal_node_transitions(state: str, event: str, target: str) -> None:
    assert node_transition(state, event) == target


@pytest.mark.parametrize(
    ("state", "event"),
    [("idle", "start"), ("idle", "stop"), ("completed", "fail"), ("skipped", "queue"),
     ("stopped", "resume"), ("failed", "complete"), ("paused", "complete")],
)
def test_illegal_node_transitions_raise_the_named_error(state: str, event: str) -> None:
    with pytest.raises(IllegalTransition, match=f"^Can't {event} when {state}$"):
        node_transition(state, event)


def test_tables_only_name_declared_states() -> None:
    run_states = {"running", "paused", "completed", "failed", "stopped"}
    node_states = {"idle", "queued", "running", "paused", "completed", "failed", "skipped", "stopped"}
    for table, states in ((RUN_TABLE, run_states), (NODE_TABLE, node_states)):
        for moves in table.values():
            assert set(moves) <= states
            assert set(moves.values()) <= states


def test_each_event_leads_to_one_state_whichever_state_it_leaves() -> None:
    assert RUN_TARGET == {"pause": "paused", "resume": "running", "stop": "stopped", "complete": "completed",
                          "fail": "failed"}
    assert NODE_TARGET == {"queue": "queued", "start": "running", "pause": "paused", "resume": "running",
                           "complete": "completed", "reuse": "completed", "fail": "failed", "skip": "skipped",
                           "stop": "stopped"}
