"""The workflow under test: `build_workflow` draws one of K nodes in a chain, diamond or fan-out
from the server's node types, and `critical_path` gives the ideal makespan a run of any
workflow is measured against (the longest path, each node weighted by its point estimate)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from flowstage.loadtest.options import LoadtestError, Shape

__all__ = ["IDEAL_ESTIMATE", "build_workflow", "critical_path", "point_estimate_ms"]

# How point_estimate_ms turns each kind of timing into one number (the summary quotes it).
IDEAL_ESTIMATE = "fixed: ms exactly; uniform: mean; lognormal: median (capped at max)"

_MIDDLE_TYPES = ("http_request", "transform")


def _pick(types: Mapping[str, Any], preferred: str, want_inputs: bool, want_outputs: bool) -> str:
    if preferred in types:
        return preferred
    for name, spec in types.items():
        if bool(spec.get("inputs")) == want_inputs and bool(spec.get("outputs")) == want_outputs:
            return name
    raise LoadtestError(f"the server has no node type like {preferred!r}")


def build_workflow(shape: Shape, k: int, types: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A workflow body of `k` nodes: trigger first, then
    - chain:   trigger -> k-2 middle nodes in a line -> output
    - diamond: trigger -> two parallel lines sharing the k-2 middle nodes -> merge
    - fanout:  trigger -> k-2 parallel middle nodes -> output (fan-in on one input handle)
    Middle nodes alternate http_request (lognormal) and transform (uniform)."""
    trigger = _pick(types, "manual_trigger", False, True)
    sink = _pick(types, "output", True, False)
    middle = [t for t in _MIDDLE_TYPES if t in types] or [_pick(types, "transform", True, True)]
    nodes: list[dict[str, Any]] = []
    connections: list[dict[str, Any]] = []

    def node(kind: str, x: int, y: int) -> str:
        nid = f"n{len(nodes)}"
        nodes.append({"id": nid, "type": kind, "position": {"x": x, "y": y},
                      "data": {"label": f"{kind} {len(nodes)}", "config": {}}})
        return nid

    def connect(source: str, target: str) -> None:
        src = next(n for n in nodes if n["id"] == source)["type"]
        dst = next(n for n in nodes if n["id"] == target)["type"]
        connections.append({"id": f"c{len(connections)}", "source": source, "target": target,
                            "sourceHandle": types[src]["outputs"][0]["id"],
                            "targetHandle": types[dst]["inputs"][0]["id"]})

    start = node(trigger, 0, 0)
    inner = k - 2
    if shape == "chain":
        last = start
        for i in range(inner):
            nid = node(middle[i % len(middle)], 220 * (i + 1), 0)
            connect(last, nid)
            last = nid
        connect(last, node(sink, 220 * (inner + 1), 0))
    elif shape == "diamond":
        merge = _pick(types, "merge", True, True)
        branches = [(inner + 1) // 2, inner // 2]
        ends = []
        made = 0
        for b, length in enumerate(branches):
            last = start
            for i in range(length):
                nid = node(middle[made % len(middle)], 220 * (i + 1), 160 * b - 80)
                made += 1
                connect(last, nid)
                last = nid
            ends.append(last)
        end = node(merge, 220 * (max(branches) + 1), 0)
        for last in ends:
            connect(last, end)
    else:
        ends = []
        for i in range(inner):
            nid = node(middle[i % len(middle)], 220, 120 * i)
            connect(start, nid)
            ends.append(nid)
        end = node(sink, 440, 0)
        for nid in ends:
            connect(nid, end)
    return {"name": name, "description": f"flowstage loadtest: {shape} of {k} nodes",
            "tags": ["loadtest"], "nodes": nodes, "connections": connections}


def point_estimate_ms(kind: str, timing: Mapping[str, Any], config: Mapping[str, Any]) -> float:
    """One number for a node's duration at speed 1 (see IDEAL_ESTIMATE)."""
    if kind == "delay" and isinstance(config.get("ms"), int | float):
        return float(config["ms"])
    match timing.get("kind"):
        case "fixed":
            return float(timing["ms"])
        case "uniform":
            return (float(timing["minMs"]) + float(timing["maxMs"])) / 2
        case "lognormal":
            return min(float(timing["medianMs"]), float(timing["maxMs"]))
    return 0.0


def critical_path(workflow: Mapping[str, Any], types: Mapping[str, Any]) -> tuple[float, list[str]]:
    """The longest path through the workflow's DAG, weighting each node by its point
    estimate: (ms at speed 1, the node types along it). Both branches of a condition count,
    so with conditions it is an upper bound."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    weight = {nid: point_estimate_ms(n["type"], types.get(n["type"], {}).get("timing", {}),
                                     (n.get("data") or {}).get("config") or {})
              for nid, n in nodes.items()}
    after: dict[str, list[str]] = {nid: [] for nid in nodes}
    indegree = dict.fromkeys(nodes, 0)
    for c in workflow["connections"]:
        after[c["source"]].append(c["target"])
        indegree[c["target"]] += 1
    ready = deque(nid for nid, d in indegree.items() if d == 0)
    best = {nid: weight[nid] for nid in nodes}
    came_from: dict[str, str | None] = dict.fromkeys(nodes)
    seen = 0
    while ready:
        nid = ready.popleft()
        seen += 1
        for nxt in after[nid]:
            if best[nid] + weight[nxt] > best[nxt]:
                best[nxt] = best[nid] + weight[nxt]
                came_from[nxt] = nid
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if seen != len(nodes):
        raise LoadtestError(f"workflow {workflow.get('id')!r} has a cycle; it cannot run")
    if not nodes:
        return 0.0, []
    last = max(best, key=lambda nid: best[nid])
    path: list[str] = []
    step: str | None = last
    while step is not None:
        path.append(nodes[step]["type"])
        step = came_from[step]
    return best[last], path[::-1]
