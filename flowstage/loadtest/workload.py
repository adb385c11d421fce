"""The workflow under test: `build_workflow` draws one of K nodes in a chain, diamond or fan-out
from the server's node types, `critical_path` gives the ideal makespan a run of any workflow
is measured against (the longest path, each node weighted by its point estimate), and
`idle_makespans` what an idle server's makespans would be (the longest path, each node's
duration drawn from its timing profile as the engine draws it)."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from flowstage.loadtest.options import LoadtestError, Shape

__all__ = ["IDEAL_ESTIMATE", "IDLE_SAMPLES", "build_workflow", "critical_path", "idle_makespans",
           "point_estimate_ms"]

# How point_estimate_ms turns each kind of timing into one number (the summary quotes it).
IDEAL_ESTIMATE = "fixed: ms exactly; uniform: mean; lognormal: median (capped at max)"

_MIDDLE_TYPES = ("http_request", "transform")
# Draws of a whole run for idle_makespans: its p99 to about 1 %, in ~0.15 s of the tester's
# CPU for 10 nodes; fewer for large workflows (a node's draw is ~1.5 µs), never under 1,000.
IDLE_SAMPLES = 10_000
_IDLE_NODE_DRAWS = 200_000
# The engine's default cap on one node's duration (its `max_duration_ms` setting).
_CAP_MS = 3_600_000.0


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
    weight = {nid: point_estimate_ms(n["type"], _timing(n, types), _config(n)) for nid, n in nodes.items()}
    best = {nid: weight[nid] for nid in nodes}
    came_from: dict[str, str | None] = dict.fromkeys(nodes)
    for nid, before in _topological(workflow):
        for prev in before:
            if best[prev] + weight[nid] > best[nid]:
                best[nid] = best[prev] + weight[nid]
                came_from[nid] = prev
    if not nodes:
        return 0.0, []
    last = max(best, key=lambda nid: best[nid])
    path: list[str] = []
    step: str | None = last
    while step is not None:
        path.append(nodes[step]["type"])
        step = came_from[step]
    return best[last], path[::-1]


def idle_makespans(workflow: Mapping[str, Any], types: Mapping[str, Any], samples: int | None = None,
                   seed: int = 0) -> list[float]:
    """`samples` makespans (ms at speed 1) of the workflow on an idle server (by default
    IDLE_SAMPLES, fewer for a workflow of more than 20 nodes, at least 1,000): each node's
    duration drawn from its timing profile (fixed: its ms; uniform: between its bounds;
    lognormal: median * e^(sigma * N(0, 1)), capped at max; a delay node: its configured ms),
    the run's length the longest path. A server that keeps time shows these makespans at any
    load; both branches of a condition count, as in `critical_path`."""
    order = _topological(workflow)
    by_id = {n["id"]: n for n in workflow["nodes"]}
    index = {nid: i for i, (nid, _) in enumerate(order)}
    steps = [(_sampler(by_id[nid]["type"], _timing(by_id[nid], types), _config(by_id[nid])),
              [index[prev] for prev in before]) for nid, before in order]
    if samples is None:
        samples = min(IDLE_SAMPLES, max(1_000, _IDLE_NODE_DRAWS // max(1, len(steps))))
    rng = random.Random(seed)
    out: list[float] = []
    finish = [0.0] * len(steps)
    for _ in range(samples):
        for i, (draw, before) in enumerate(steps):
            finish[i] = max([finish[j] for j in before], default=0.0) + draw(rng)
        out.append(max(finish, default=0.0))
    return out


def _timing(node: Mapping[str, Any], types: Mapping[str, Any]) -> Mapping[str, Any]:
    timing: Mapping[str, Any] = types.get(node["type"], {}).get("timing", {})
    return timing


def _config(node: Mapping[str, Any]) -> Mapping[str, Any]:
    config: Mapping[str, Any] = (node.get("data") or {}).get("config") or {}
    return config


def _sampler(kind: str, timing: Mapping[str, Any], config: Mapping[str, Any]) -> Callable[[random.Random], float]:
    """How one node's duration (ms at speed 1) is drawn; see idle_makespans."""
    if kind == "delay" and isinstance(config.get("ms"), int | float):
        fixed = min(max(float(config["ms"]), 0.0), _CAP_MS)
        return lambda rng: fixed
    match timing.get("kind"):
        case "uniform":
            low, high = float(timing["minMs"]), float(timing["maxMs"])
            return lambda rng: min(max(rng.uniform(low, high), 0.0), _CAP_MS)
        case "lognormal":
            median, sigma = float(timing["medianMs"]), float(timing["sigma"])
            cap = min(float(timing["maxMs"]), _CAP_MS)
            return lambda rng: min(median * math.exp(sigma * rng.gauss(0.0, 1.0)), cap)
    fixed = min(max(point_estimate_ms(kind, timing, config), 0.0), _CAP_MS)
    return lambda rng: fixed


def _topological(workflow: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """The workflow's nodes in topological order, each with the nodes it waits for;
    LoadtestError if it has a cycle."""
    ids = [n["id"] for n in workflow["nodes"]]
    after: dict[str, list[str]] = {nid: [] for nid in ids}
    before: dict[str, list[str]] = {nid: [] for nid in ids}
    indegree = dict.fromkeys(ids, 0)
    for c in workflow["connections"]:
        after[c["source"]].append(c["target"])
        before[c["target"]].append(c["source"])
        indegree[c["target"]] += 1
    ready = deque(nid for nid, d in indegree.items() if d == 0)
    order: list[tuple[str, list[str]]] = []
    while ready:
        nid = ready.popleft()
        order.append((nid, before[nid]))
        for nxt in after[nid]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if len(order) != len(ids):
        raise LoadtestError(f"workflow {workflow.get('id')!r} has a cycle; it cannot run")
    return order
