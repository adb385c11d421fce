"""What a valid workflow graph is: the one place that decides it, for the editor and the engine.

A graph that may be stored obeys these rules: every node type exists; node ids and connection
ids are unique; a connection joins an existing output handle of `source` to an existing input
handle of `target` (a handle left out is the node's only one on that side); the same pair of
handles is joined at most once; config values fit the node type's schema; positions are within
range. `build_graph` checks them all and reports every broken rule with the `loc` of the field,
so an editor can point at it.

A graph that may run obeys them too, and is acyclic: cycles are allowed while editing, and
`execution_order` refuses them when a run is planned (simulation.plan calls both).
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from flowstage.simulation.catalogue import CATALOGUE
from flowstage.simulation.errors import FieldError, Invalid, Loc
from flowstage.simulation.messages import no_such_node
from flowstage.simulation.models import Connection, Node, NodeData, Position

__all__ = [
    "COORDINATE_LIMIT",
    "LinkSpec",
    "NodeSpec",
    "build_graph",
    "execution_order",
]

COORDINATE_LIMIT = 1e9  # as simulation.models.Coordinate


class NodeSpec(Protocol):
    """A node to check: one a client sent (its id may be missing) or one already stored."""

    @property
    def id(self) -> str | None: ...
    @property
    def type(self) -> str: ...
    @property
    def position(self) -> Position: ...
    @property
    def data(self) -> NodeData: ...


class LinkSpec(Protocol):
    """A connection to check: one a client sent (id and handles may be missing) or one stored."""

    @property
    def id(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def source_handle(self) -> str | None: ...
    @property
    def target_handle(self) -> str | None: ...


def _new_node_id() -> str:
    return f"node_{secrets.token_hex(4)}"


def _new_connection_id() -> str:
    return f"conn_{secrets.token_hex(4)}"


# --- config schemas -------------------------------------------------------------------------

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _check_value(value: Any, schema: dict[str, Any], loc: Loc, errors: list[FieldError]) -> None:
    """The subset of JSON Schema the catalogue uses. `required` is not enforced: a missing key
    takes the node type's default when the node runs, so half-filled configs can be saved."""
    expected = schema.get("type")
    if expected is not None and not _JSON_TYPES[expected](value):
        errors.append(FieldError(loc, f"must be of type {expected}"))
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(FieldError(loc, f"must be one of {schema['enum']}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(FieldError(loc, f"must be >= {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(FieldError(loc, f"must be <= {schema['maximum']}"))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(FieldError(loc, f"must have at least {schema['minLength']} characters"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(FieldError(loc, f"must have at most {schema['maxLength']} characters"))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check_value(item, schema["items"], (*loc, i), errors)
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _check_value(item, properties[key], (*loc, key), errors)
            elif extra is False:
                errors.append(FieldError((*loc, key), "unknown config key"))
            elif isinstance(extra, dict):
                _check_value(item, extra, (*loc, key), errors)


def _check_config(type_name: str, config: dict[str, Any], loc: Loc) -> list[FieldError]:
    node_type = CATALOGUE.get(type_name)
    if node_type is None:
        return []
    errors: list[FieldError] = []
    _check_value(config, node_type.config_schema, loc, errors)
    return errors


# --- whole graphs ---------------------------------------------------------------------------


def _resolve_handle(
    given: str | None, handles: tuple[str, ...], side: str, loc: Loc, errors: list[FieldError]
) -> str:
    if given is None:
        if len(handles) == 1:
            return handles[0]
        choices = ", ".join(handles) if handles else "none"
        errors.append(FieldError(loc, f"required: the node has several or no {side} handles ({choices})"))
        return ""
    if given not in handles:
        choices = ", ".join(handles) if handles else "none"
        errors.append(FieldError(loc, f"no {side} handle {given!r} on this node (has: {choices})"))
    return given


def _labelled(item: NodeSpec) -> NodeData:
    """A node a client sends without a label (missing or empty) is named after its type, as an
    editor's palette names a dropped node. A stored node keeps what it has: an edit elsewhere in
    the graph does not rename it."""
    node_type = CATALOGUE.get(item.type)
    if item.data.label or isinstance(item, Node) or node_type is None:
        return item.data
    return NodeData(label=node_type.label, config=item.data.config)


def build_graph(
    nodes_in: Sequence[NodeSpec],
    connections_in: Sequence[LinkSpec],
    node_loc: Callable[[int], Loc] = lambda i: ("body", "nodes", i),
    connection_loc: Callable[[int], Loc] = lambda i: ("body", "connections", i),
) -> tuple[list[Node], list[Connection]]:
    """Check a whole graph and give it ids; raise Invalid listing every broken rule."""
    errors: list[FieldError] = []
    nodes: list[Node] = []
    by_id: dict[str, Node] = {}
    for i, item in enumerate(nodes_in):
        loc = node_loc(i)
        node_id = item.id or _new_node_id()
        if node_id in by_id:
            errors.append(FieldError((*loc, "id"), f"duplicate node id {node_id!r}"))
        if item.type not in CATALOGUE:
            errors.append(FieldError((*loc, "type"), f"unknown node type {item.type!r}"))
        errors.extend(_check_config(item.type, item.data.config, (*loc, "data", "config")))
        for axis, value in (("x", item.position.x), ("y", item.position.y)):
            # Shifts (template offsets) can push a decoded, valid position out of range.
            if not -COORDINATE_LIMIT <= value <= COORDINATE_LIMIT:
                errors.append(FieldError((*loc, "position", axis), f"must be within ±{COORDINATE_LIMIT:g}"))
        node = Node(id=node_id, type=item.type, position=item.position, data=_labelled(item))
        nodes.append(node)
        by_id.setdefault(node_id, node)

    connections: list[Connection] = []
    seen_ids: set[str] = set()
    seen_pairs: set[tuple[str, str, str, str]] = set()
    for i, link in enumerate(connections_in):
        loc = connection_loc(i)
        conn_id = link.id or _new_connection_id()
        if conn_id in seen_ids:
            errors.append(FieldError((*loc, "id"), f"duplicate connection id {conn_id!r}"))
        seen_ids.add(conn_id)
        source, target = by_id.get(link.source), by_id.get(link.target)
        if source is None:
            errors.append(FieldError((*loc, "source"), no_such_node(link.source)))
        if target is None:
            errors.append(FieldError((*loc, "target"), no_such_node(link.target)))
        source_handle = link.source_handle or ""
        target_handle = link.target_handle or ""
        if source is not None and source.type in CATALOGUE:
            outputs = CATALOGUE[source.type].output_ids()
            source_handle = _resolve_handle(link.source_handle, outputs, "output", (*loc, "sourceHandle"), errors)
        if target is not None and target.type in CATALOGUE:
            inputs = CATALOGUE[target.type].input_ids()
            target_handle = _resolve_handle(link.target_handle, inputs, "input", (*loc, "targetHandle"), errors)
        pair = (link.source, source_handle, link.target, target_handle)
        if pair in seen_pairs:
            errors.append(FieldError(loc, "these two handles are already connected"))
        seen_pairs.add(pair)
        connections.append(
            Connection(id=conn_id, source=link.source, target=link.target,
                       source_handle=source_handle, target_handle=target_handle)
        )
    if errors:
        raise Invalid(errors[0].msg if len(errors) == 1 else f"{len(errors)} problems in the graph", errors)
    return nodes, connections


def execution_order(node_ids: Sequence[str], links: Sequence[tuple[str, str]]) -> list[str]:
    """The node ids in the order a run starts them (each after everything upstream of it), or
    Invalid naming one cycle. `links` are (source, target) pairs between `node_ids`."""
    # Kahn's algorithm; among ready nodes the one listed first goes first, so the order (and
    # with it every tie between simultaneous events) is a function of the graph alone.
    index_of = {node_id: i for i, node_id in enumerate(node_ids)}
    indegree = [0] * len(node_ids)
    successors: list[list[int]] = [[] for _ in node_ids]
    for source, target in links:
        indegree[index_of[target]] += 1
        successors[index_of[source]].append(index_of[target])
    ready = [i for i, degree in enumerate(indegree) if degree == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(node_ids[i])
        for t in successors[i]:
            indegree[t] -= 1
            if indegree[t] == 0:
                heapq.heappush(ready, t)
    if len(order) < len(node_ids):
        text = " → ".join(_find_cycle(node_ids, successors))
        raise Invalid(f"The workflow has a cycle: {text}",
                      [FieldError(["body"], f"a workflow must be acyclic to run; cycle: {text}")])
    return order


def _find_cycle(node_ids: Sequence[str], successors: list[list[int]]) -> list[str]:
    """One cycle as a closed path [a, b, ..., a]; the graph must have one."""
    colour = [0] * len(node_ids)  # 0 new, 1 on the current path, 2 done
    for root in range(len(node_ids)):
        if colour[root]:
            continue
        # Iterative DFS: a long chain must not hit the recursion limit.
        path = [root]
        iters = [iter(successors[root])]
        colour[root] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                iters.pop()
            elif colour[nxt] == 1:
                return [node_ids[i] for i in (*path[path.index(nxt):], nxt)]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                iters.append(iter(successors[nxt]))
    raise AssertionError("execution_order found a cycle that _find_cycle did not")
