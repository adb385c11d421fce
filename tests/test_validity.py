"""One rule for a valid graph: what the editor refuses to store, the plan compiler refuses to
run, with the same messages at the same places; and a run also needs the graph acyclic."""

from __future__ import annotations

import pytest

from flowstage.simulation.errors import Invalid
from flowstage.simulation.models import Connection, Node, NodeData, Position, Workflow
from flowstage.simulation.plan import compile_plan
from flowstage.simulation.validity import build_graph, execution_order

P = Position(0, 0)
TS = "2026-01-01T00:00:00.000Z"


def graph(nodes: list[Node], connections: list[Connection]) -> Workflow:
    return Workflow("wf", "wf", "", [], 1, TS, TS, nodes, connections)


def problems(exc: Invalid) -> list[tuple[tuple[str | int, ...], str]]:
    return [(e.loc, e.msg) for e in exc.errors]


BROKEN = graph(
    [Node("a", "manual_trigger", P), Node("a", "transform", P), Node("c", "teleport", P),
     Node("d", "delay", P, NodeData(config={"ms": "soon"}))],
    [Connection("x", "a", "ghost", "out", "in"), Connection("x", "a", "d", "out", "side")],
)
EXPECTED = [
    (("body", "nodes", 1, "id"), "duplicate node id 'a'"),
    (("body", "nodes", 2, "type"), "unknown node type 'teleport'"),
    (("body", "nodes", 3, "data", "config", "ms"), "must be of type integer"),
    (("body", "connections", 0, "target"), "no node 'ghost' in this workflow"),
    (("body", "connections", 1, "id"), "duplicate connection id 'x'"),
    (("body", "connections", 1, "targetHandle"), "no input handle 'side' on this node (has: in)"),
]


def test_the_editor_names_every_broken_rule_where_it_was_sent() -> None:
    with pytest.raises(Invalid) as stored:
        build_graph(BROKEN.nodes, BROKEN.connections)
    assert stored.value.detail == "6 problems in the graph"
    assert problems(stored.value) == EXPECTED


def test_the_plan_compiler_refuses_the_same_graph_with_the_same_errors() -> None:
    with pytest.raises(Invalid) as planned:
        compile_plan(BROKEN)
    assert planned.value.detail == "6 problems in the graph"
    assert problems(planned.value) == EXPECTED


def test_a_cycle_can_be_stored_but_not_run() -> None:
    loop = graph([Node("a", "transform", P), Node("b", "transform", P)],
                 [Connection("ab", "a", "b", "out", "in"), Connection("ba", "b", "a", "out", "in")])
    nodes, connections = build_graph(loop.nodes, loop.connections)
    assert ([n.id for n in nodes], [c.id for c in connections]) == (["a", "b"], ["ab", "ba"])
    with pytest.raises(Invalid) as planned:
        compile_plan(loop)
    assert planned.value.detail == "The workflow has a cycle: a → b → a"
    assert problems(planned.value) == [(("body",), "a workflow must be acyclic to run; cycle: a → b → a")]


def test_a_single_node_run_names_a_node_of_the_graph() -> None:
    one = graph([Node("a", "manual_trigger", P)], [])
    with pytest.raises(Invalid) as planned:
        compile_plan(one, only_node="zzz")
    assert planned.value.detail == "Node 'zzz' is not in workflow 'wf'"
    assert problems(planned.value) == [(("path", "nodeId"), "no such node in this workflow")]
    assert [n.id for n in compile_plan(one, only_node="a").nodes] == ["a"]


def test_execution_order_starts_each_node_after_its_inputs_and_breaks_ties_by_listing_order() -> None:
    order = execution_order(["out", "b", "a", "root"], [("root", "a"), ("root", "b"), ("a", "out"), ("b", "out")])
    assert order == ["root", "b", "a", "out"]
