"""A workflow graph compiled for execution: checked by simulation.validity, in topological
order, with each node's merged config, timing and connections resolved to indexes.

A plan is immutable and shared by every run of the same workflow version; per-run state
lives in the runtime. `edge_flows` derives the dataflow view of any run, live or stored,
from its node states and outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from flowstage.simulation.catalogue import CATALOGUE, NodeType, Timing
from flowstage.simulation.errors import FieldError, Invalid
from flowstage.simulation.models import EdgeFlow, NodeRun, Run, Workflow
from flowstage.simulation.outputs import count_items
from flowstage.simulation.rng import text_key
from flowstage.simulation.states import NODE_SETTLED
from flowstage.simulation.validity import build_graph, execution_order

__all__ = ["Plan", "PlanEdge", "PlanNode", "compile_plan", "edge_flows"]

_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder().decode


class PlanNode:
    """One node as the engine needs it; `index` is its position in topological order."""

    __slots__ = ("config", "id", "id_json", "in_edges", "in_sources", "index", "key", "kind", "merge",
                 "out_edges", "routes", "timing", "type")

    def __init__(self, index: int, node_id: str, node_type: NodeType, config: dict[str, Any],
                 timing: Timing) -> None:
        self.index = index
        self.id = node_id
        self.id_json = _ENCODE(node_id)  # the id as it appears in every event of this node
        self.type = node_type.type
        self.kind = node_type
        self.config = config
        self.timing = timing
        self.key = text_key(node_id)  # mixed with the run seed to give this node's seed
        self.merge = node_type.type == "merge"
        # Several output handles: the node's output names the one it takes ("branch").
        self.routes = len(node_type.outputs) > 1
        self.in_edges: tuple[int, ...] = ()
        self.in_sources: tuple[str, ...] = ()  # source node id of each incoming edge
        self.out_edges: tuple[int, ...] = ()


class PlanEdge:
    __slots__ = ("data_json", "id", "index", "slot", "source", "source_handle", "target", "target_handle")

    def __init__(self, index: int, conn_id: str, source: int, target: int,
                 source_handle: str, target_handle: str) -> None:
        self.index = index
        self.id = conn_id
        self.source = source
        self.target = target
        self.source_handle = source_handle
        self.target_handle = target_handle
        self.slot = 0  # this edge's position among its target's incoming edges
        # The fixed middle of this edge's edge.data events: connectionId, source, target.
        self.data_json = b""


_IDLE = NodeRun("idle", 0.0, None, None, None, None)


class Plan:
    __slots__ = ("by_id", "edges", "idle", "nodes", "roots", "version", "workflow_id")

    def __init__(self, workflow_id: str, version: int, nodes: tuple[PlanNode, ...],
                 edges: tuple[PlanEdge, ...]) -> None:
        self.workflow_id = workflow_id
        self.version = version
        self.nodes = nodes
        self.edges = edges
        self.by_id = {n.id: n for n in nodes}
        # Nodes with no incoming connection: they start with the run.
        self.roots = tuple(n.index for n in nodes if not n.in_edges)
        # The node states of a run that has not started anything yet (copy before use).
        self.idle: dict[str, NodeRun] = {n.id: _IDLE for n in nodes}


def compile_plan(
    workflow: Workflow,
    *,
    only_node: str | None = None,
    timings: Mapping[str, Timing] | None = None,
) -> Plan:
    """Check `workflow` (simulation.validity's rules: the editor's, and no cycle) and order it
    for execution; raise Invalid naming what is wrong.

    `only_node` plans a run of that one node alone (its inputs come from the run's inputs).
    `timings` overrides the catalogue's timing profile per node type.
    """
    graph_nodes, graph_connections = build_graph(workflow.nodes, workflow.connections)
    if only_node is not None and not any(n.id == only_node for n in graph_nodes):
        raise Invalid(f"Node {only_node!r} is not in workflow {workflow.id!r}",
                      [FieldError(["path", "nodeId"], "no such node in this workflow")])
    chosen = {n.id: n for n in graph_nodes if only_node is None or n.id == only_node}
    conns = [] if only_node is not None else graph_connections
    order = execution_order(list(chosen), [(c.source, c.target) for c in conns])

    timings = timings or {}
    nodes: list[PlanNode] = []
    topo = {nid: k for k, nid in enumerate(order)}
    for k, nid in enumerate(order):
        node = chosen[nid]
        kind = CATALOGUE[node.type]
        config = {**kind.defaults, **node.data.config}
        nodes.append(PlanNode(k, nid, kind, config, timings.get(node.type, kind.timing)))
    edges = tuple(PlanEdge(i, c.id, topo[c.source], topo[c.target], c.source_handle, c.target_handle)
                  for i, c in enumerate(conns))
    ins: list[list[int]] = [[] for _ in nodes]
    outs: list[list[int]] = [[] for _ in nodes]
    for e in edges:
        e.slot = len(ins[e.target])
        ins[e.target].append(e.index)
        outs[e.source].append(e.index)
    for n in nodes:
        n.in_edges = tuple(ins[n.index])
        n.in_sources = tuple(nodes[edges[i].source].id for i in n.in_edges)
        n.out_edges = tuple(outs[n.index])
    for e in edges:
        e.data_json = (b'"connectionId":' + _ENCODE(e.id) + b',"source":' + nodes[e.source].id_json
                       + b',"target":' + nodes[e.target].id_json)
    return Plan(workflow.id, workflow.version, tuple(nodes), edges)


def edge_flows(plan: Plan, run: Run) -> list[EdgeFlow]:
    """What crossed each connection of `run`, derived from its node states and outputs.

    A connection is `idle` until its source settles; `skipped` if the source did not
    complete or routed elsewhere; otherwise its payload crossed, and it is `active` while
    the target still has to finish with it and `done` afterwards.
    """
    flows: list[EdgeFlow] = []
    for e in plan.edges:
        src = plan.nodes[e.source]
        tgt = plan.nodes[e.target]
        s = run.nodes.get(src.id)
        t = run.nodes.get(tgt.id)
        state: str = "idle"
        items = size = 0
        payload: Any = None
        if s is not None and s.state == "completed":
            output = s.output
            if isinstance(output, msgspec.Raw):
                output = _DECODE(output)
            taken = True
            payload = output
            if src.routes:
                taken = isinstance(output, dict) and output.get("branch") == e.source_handle
                payload = output.get("data") if isinstance(output, dict) else None
            if taken:
                state = "active" if t is not None and t.state not in NODE_SETTLED else "done"
                items = count_items(payload)
                size = len(_ENCODE(payload))
            else:
                state, payload = "skipped", None
        elif s is not None and s.state in NODE_SETTLED:  # settled, and not completed
            state = "skipped"
        flows.append(EdgeFlow(e.id, src.id, tgt.id, state, items, size, payload))  # type: ignore[arg-type]
    return flows
