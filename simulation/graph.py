"""Workflow graphs as an editor changes them: the shapes clients send and the pure edits of a
stored graph (create, patch, add, update, delete a node or a connection).

Every edit returns a new graph checked by simulation.validity, the one place that says what a
valid graph is; this module only decides where an error points (the `loc` of the field sent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from flowstage.simulation.errors import FieldError, Invalid, Loc, NotFound
from flowstage.simulation.messages import node_not_in_workflow
from flowstage.simulation.models import Connection, Id, Node, NodeData, Position, Viewport, Workflow
from flowstage.simulation.validity import build_graph

__all__ = [
    "ConnectionIn",
    "DocumentIn",
    "DocumentPatch",
    "Links",
    "NodeDataPatch",
    "NodeIn",
    "NodePatch",
    "WorkflowIn",
    "WorkflowPatch",
    "add_connection",
    "add_node",
    "apply_document_patch",
    "apply_workflow_patch",
    "delete_connection",
    "delete_node",
    "document_graph",
    "unique_tags",
    "update_node",
]

TypeName = Annotated[str, Meta(min_length=1, max_length=64)]
HandleId = Annotated[str, Meta(min_length=1, max_length=64)]


class NodeIn(msgspec.Struct, frozen=True, rename="camel"):
    """A node as a client sends it: the id is optional (the server makes one)."""

    type: TypeName
    position: Position
    data: NodeData = NodeData()
    id: Id | None = None


class ConnectionIn(msgspec.Struct, frozen=True, rename="camel"):
    """A connection as a client sends it. A handle may be left out (or null, as React Flow
    does for single-handle nodes) when the node type has exactly one handle on that side."""

    source: Id
    target: Id
    source_handle: HandleId | None = None
    target_handle: HandleId | None = None
    id: Id | None = None


class NodeDataPatch(msgspec.Struct, frozen=True, rename="camel"):
    label: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    config: dict[str, Any] | UnsetType = UNSET


class NodePatch(msgspec.Struct, frozen=True, rename="camel"):
    """`PUT .../nodes/{nodeId}`: fields left out keep their value (dragging sends `position`
    alone). `data.config` replaces the whole config."""

    type: TypeName | UnsetType = UNSET
    position: Position | UnsetType = UNSET
    data: NodeDataPatch | UnsetType = UNSET


Name = Annotated[str, Meta(min_length=1, max_length=200)]
Description = Annotated[str, Meta(max_length=10_000)]
Tags = Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(max_length=50)]
Links = list[ConnectionIn]
# Fields a GET answers with and the server owns: a body may carry them back (an editor saves
# what it loaded), and they are ignored rather than refused.
ReadOnlyStr = Annotated[str, Meta(description="Read-only: ignored if sent (the server owns it)")]
ReadOnlyInt = Annotated[int, Meta(description="Read-only: ignored if sent (the server owns it)")]
_BOTH = "send the graph's links as connections or as edges (React Flow's name), not both"


class DocumentIn(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """A workflow or template as a client creates it. The links between nodes come as
    `connections`, or as `edges` (React Flow's name; the same items); answers always call
    them `connections`. A field this server does not know is refused (422), so a save never
    loses data silently; inside nodes and links, the fields an editor adds for its own use
    (`selected`, `measured`, `animated`, ...) are ignored."""

    name: Name
    description: Description = ""
    tags: Tags = []
    nodes: list[NodeIn] = []
    connections: Links | UnsetType = UNSET
    edges: Links | UnsetType = UNSET
    id: ReadOnlyStr | UnsetType = UNSET
    version: ReadOnlyInt | UnsetType = UNSET
    created_at: ReadOnlyStr | UnsetType = UNSET
    updated_at: ReadOnlyStr | UnsetType = UNSET


class WorkflowIn(DocumentIn, frozen=True):
    """A workflow as a client creates it: a document, and where the editor looked at it."""

    viewport: Viewport | None = None


class DocumentPatch(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`PUT` of a workflow or template: the fields sent replace the stored ones; fields left
    out keep their value (an editor saving its graph sends `nodes` and `connections`, or
    `edges`). Unknown fields are refused and server-owned ones ignored, as in DocumentIn."""

    name: Name | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    tags: Tags | UnsetType = UNSET
    nodes: list[NodeIn] | UnsetType = UNSET
    connections: Links | UnsetType = UNSET
    edges: Links | UnsetType = UNSET
    id: ReadOnlyStr | UnsetType = UNSET
    version: ReadOnlyInt | UnsetType = UNSET
    created_at: ReadOnlyStr | UnsetType = UNSET
    updated_at: ReadOnlyStr | UnsetType = UNSET


class WorkflowPatch(DocumentPatch, frozen=True):
    """`PUT /api/workflows/{id}`: a document patch, and the viewport (null forgets it)."""

    viewport: Viewport | UnsetType | None = UNSET


def _links_of(body: DocumentIn | DocumentPatch, prefix: Loc = ("body",)) -> tuple[Links | UnsetType, str]:
    """The links a body sent and the field it sent them in (`connections` or `edges`, for
    error locations); UNSET and `connections` when it sent neither."""
    if isinstance(body.edges, UnsetType):
        return body.connections, "connections"
    if not isinstance(body.connections, UnsetType):
        raise Invalid(_BOTH, [FieldError((*prefix, "edges"), _BOTH)])
    return body.edges, "edges"


def document_graph(doc: DocumentIn, prefix: Loc = ("body",)) -> tuple[list[Node], list[Connection]]:
    """The checked graph of a created document, every error located where it was sent."""
    links, field = _links_of(doc, prefix)
    return build_graph(
        doc.nodes, [] if isinstance(links, UnsetType) else links,
        lambda i: (*prefix, "nodes", i), lambda i: (*prefix, field, i),
    )


def unique_tags(tags: list[str]) -> list[str]:
    """Tags in the order given, each once."""
    return list(dict.fromkeys(tags))


def apply_document_patch(doc: Any, patch: DocumentPatch) -> Any:
    """The patched copy of a workflow or template (version and timestamps are the store's)."""
    links, field = _links_of(patch)
    nodes_in: Sequence[NodeIn | Node] = doc.nodes if isinstance(patch.nodes, UnsetType) else patch.nodes
    conns_in: Sequence[ConnectionIn | Connection] = doc.connections if isinstance(links, UnsetType) else links
    try:
        nodes, connections = build_graph(nodes_in, conns_in, connection_loc=lambda i: ("body", field, i))
    except Invalid as exc:
        if isinstance(links, UnsetType):  # the stored connections no longer fit the nodes sent
            raise _stored_links_refused(exc, conns_in) from None
        raise
    return msgspec.structs.replace(
        doc,
        name=doc.name if isinstance(patch.name, UnsetType) else patch.name,
        description=doc.description if isinstance(patch.description, UnsetType) else patch.description,
        tags=doc.tags if isinstance(patch.tags, UnsetType) else unique_tags(patch.tags),
        nodes=nodes,
        connections=connections,
    )


def _stored_links_refused(exc: Invalid, stored: Sequence[ConnectionIn | Connection]) -> Invalid:
    """A body that sent nodes but no connections is refused for the stored connections (one
    links a node the body left out): errors about them are located at the body's `nodes`,
    which is what the client sent, and name the connection."""
    errors = []
    for error in exc.errors:
        if error.loc[:2] == ("body", "connections"):
            index, *fields = error.loc[2:]  # build_graph's connection_loc: ("body", field, i)
            what = f" ({fields[0]})" if fields else ""
            error = FieldError(("body", "nodes"),
                               f"the stored connection {stored[int(index)].id!r}{what}: {error.msg}; "
                               "send connections too")
        errors.append(error)
    return Invalid(exc.detail if len(errors) > 1 else errors[0].msg, errors)


def apply_workflow_patch(workflow: Workflow, patch: WorkflowPatch) -> Workflow:
    """The patched copy of a workflow, viewport included."""
    patched: Workflow = apply_document_patch(workflow, patch)
    if isinstance(patch.viewport, UnsetType):
        return patched
    return msgspec.structs.replace(patched, viewport=patch.viewport)


# --- edits of a stored workflow -------------------------------------------------------------


def _node_index(workflow: Workflow, node_id: str) -> int:
    for i, node in enumerate(workflow.nodes):
        if node.id == node_id:
            return i
    raise NotFound(node_not_in_workflow(node_id, workflow.id))


def _body_loc_for_last(count: int) -> Callable[[int], Loc]:
    """Errors about the item being added point at the request body. The stored items were
    valid before, so an error can only involve them through the new one."""
    return lambda i: ("body",) if i == count - 1 else ("body", "id")


def add_node(workflow: Workflow, node_in: NodeIn) -> Workflow:
    nodes_in: list[NodeIn | Node] = [*workflow.nodes, node_in]
    nodes, connections = build_graph(nodes_in, workflow.connections, _body_loc_for_last(len(nodes_in)))
    return msgspec.structs.replace(workflow, nodes=nodes, connections=connections)


def update_node(workflow: Workflow, node_id: str, patch: NodePatch) -> Workflow:
    index = _node_index(workflow, node_id)
    old = workflow.nodes[index]
    data = old.data
    if not isinstance(patch.data, UnsetType):
        data = NodeData(
            label=data.label if isinstance(patch.data.label, UnsetType) else patch.data.label,
            config=data.config if isinstance(patch.data.config, UnsetType) else patch.data.config,
        )
    new = Node(
        id=old.id,
        type=old.type if isinstance(patch.type, UnsetType) else patch.type,
        position=old.position if isinstance(patch.position, UnsetType) else patch.position,
        data=data,
    )
    nodes_in = list(workflow.nodes)
    nodes_in[index] = new
    try:
        nodes, connections = build_graph(
            nodes_in, workflow.connections, lambda i: ("body",), lambda i: ("stored", i))
    except Invalid as exc:
        # A new type can orphan the node's connections; the field to blame is the type sent.
        errors = [e if e.loc[0] == "body" else FieldError(("body", "type"),
                  f"an existing connection does not fit the new type: {e.msg}") for e in exc.errors]
        raise Invalid(exc.detail, errors) from None
    return msgspec.structs.replace(workflow, nodes=nodes, connections=connections)


def delete_node(workflow: Workflow, node_id: str) -> Workflow:
    """Remove a node and every connection that touches it."""
    _node_index(workflow, node_id)
    return msgspec.structs.replace(
        workflow,
        nodes=[n for n in workflow.nodes if n.id != node_id],
        connections=[c for c in workflow.connections if node_id not in (c.source, c.target)],
    )


def add_connection(workflow: Workflow, connection_in: ConnectionIn) -> Workflow:
    conns: list[ConnectionIn | Connection] = [*workflow.connections, connection_in]
    last = len(conns) - 1
    nodes, connections = build_graph(
        workflow.nodes, conns, lambda i: ("body",),
        lambda i: ("body",) if i == last else ("body", "id"),
    )
    return msgspec.structs.replace(workflow, nodes=nodes, connections=connections)


def delete_connection(workflow: Workflow, connection_id: str) -> Workflow:
    remaining = [c for c in workflow.connections if c.id != connection_id]
    if len(remaining) == len(workflow.connections):
        raise NotFound(f"No connection {connection_id!r} in workflow {workflow.id!r}.")
    return msgspec.structs.replace(workflow, connections=remaining)
