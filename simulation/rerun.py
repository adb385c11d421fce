"""Which outputs of an earlier run a new run may take instead of running the node again.

The rule of a build tool: a node's output is reused when the node completed in the earlier
run, is unchanged since (same type, same config, the same incoming connections), and every
node feeding it is reused too; a node a client names to run from (`startAt`), and everything
downstream of it, runs again. A retry is the same rule on the very graph its parent ran, so
every node that completed there is reused.

Pure: the caller reads the runs and graphs from the store.
"""

from __future__ import annotations

from typing import Any

import msgspec

from flowstage.simulation.catalogue import CATALOGUE
from flowstage.simulation.errors import FieldError, Invalid
from flowstage.simulation.messages import no_such_node
from flowstage.simulation.models import Node, Run, Workflow
from flowstage.simulation.plan import compile_plan

__all__ = ["check_nodes", "check_pinned", "reusable"]

_encode = msgspec.json.Encoder().encode


def reusable(graph: Workflow, earlier_graph: Workflow, earlier: Run, start_at: str | None = None) -> dict[str, bytes]:
    """node id -> its encoded output in `earlier`, for each node of `graph` that may reuse it."""
    plan = compile_plan(graph)  # its topological order; Invalid for a cycle, as execute would say
    before = {n.id: n for n in earlier_graph.nodes}
    now = {n.id: n for n in graph.nodes}
    rerun: set[str] = set()
    if start_at is not None:
        rerun.add(start_at)
    outputs: dict[str, bytes] = {}
    for p in plan.nodes:
        sources = {plan.nodes[plan.edges[e].source].id for e in p.in_edges}
        if sources & rerun:
            rerun.add(p.id)  # downstream of a node that runs again
            continue
        node = earlier.nodes.get(p.id)
        if (p.id in rerun or node is None or node.state != "completed" or p.id not in before
                or not _same(now[p.id], before[p.id]) or _inputs(graph, p.id) != _inputs(earlier_graph, p.id)
                or not sources <= outputs.keys()):
            continue
        output = node.output
        outputs[p.id] = bytes(output) if isinstance(output, msgspec.Raw) else _encode(output)
    return outputs


def check_pinned(graph: Workflow, pinned: dict[str, Any]) -> list[FieldError]:
    """Errors for pinned outputs of nodes the graph lacks, and for a router's output that names
    no branch it has (a pinned router must say which way it went: `{"branch", "data"}`)."""
    nodes = {n.id: n for n in graph.nodes}
    errors: list[FieldError] = []
    for node_id, output in pinned.items():
        loc: list[str | int] = ["body", "pinned", node_id]
        node = nodes.get(node_id)
        if node is None:
            errors.append(FieldError(loc, no_such_node(node_id)))
            continue
        kind = CATALOGUE.get(node.type)
        handles = [h.id for h in kind.outputs] if kind is not None else []
        if len(handles) > 1 and (not isinstance(output, dict) or output.get("branch") not in handles):
            errors.append(FieldError([*loc, "branch"], f"a {node.type} output names its branch, one of {handles}"))
    return errors


def _same(a: Node, b: Node) -> bool:
    return a.type == b.type and a.data.config == b.data.config


def _inputs(graph: Workflow, node_id: str) -> set[tuple[str, str, str]]:
    return {(c.source, c.source_handle, c.target_handle) for c in graph.connections if c.target == node_id}


def check_nodes(graph: Workflow, node_ids: list[str], loc: list[str | int]) -> None:
    """Invalid at `loc + [i]` for the first of `node_ids` the graph lacks."""
    known = {n.id for n in graph.nodes}
    for i, node_id in enumerate(node_ids):
        if node_id not in known:
            raise Invalid(no_such_node(node_id), [FieldError([*loc, i], no_such_node(node_id))])
