"""Templates: reusable graphs saved from workflows or sent whole, applied into workflows, and
moved between servers as export files (Flowstage's own format, or a React Flow `toObject()`
document an editor saved).

Pure functions over the domain Structs. Every graph copied into a workflow gets fresh node and
connection ids (connections follow their nodes), so applying a template twice gives two
independent copies, and a merge never collides with the nodes already there.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from flowstage.simulation.catalogue import CATALOGUE, NodeType
from flowstage.simulation.errors import FieldError, Invalid, Loc
from flowstage.simulation.graph import ConnectionIn, DocumentIn, NodeIn, document_graph, unique_tags
from flowstage.simulation.models import (
    Connection,
    Description,
    Id,
    Name,
    Node,
    NodeData,
    Position,
    Tags,
    Template,
    Timestamp,
    Viewport,
    Workflow,
)
from flowstage.simulation.validity import COORDINATE_LIMIT, build_graph

__all__ = [
    "FORMAT_VERSION",
    "NODE_WIDTH",
    "PLACEMENT_GAP",
    "ApplyTemplate",
    "Draft",
    "ExportDocument",
    "ExportIn",
    "FlowEdge",
    "FlowNode",
    "ImportIn",
    "ReactFlowDocument",
    "TemplateFromWorkflow",
    "Viewport",
    "apply_to_workflow",
    "copy_graph",
    "create_format",
    "draft_from_document",
    "draft_from_import",
    "draft_from_workflow",
    "export_document",
    "export_filename",
    "import_format",
    "new_template",
    "new_workflow",
]

FORMAT_VERSION = 1
# Stored positions are a node's top-left corner and carry no size; an editor's node is at most
# about this wide, so a merge placed this far right of the rightmost node cannot overlap it.
NODE_WIDTH = 240.0
PLACEMENT_GAP = 120.0
IMPORTED_NAME = "Imported workflow"


# --- shapes on the wire -----------------------------------------------------------------------


class TemplateFromWorkflow(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`POST /api/templates` naming a workflow: the template is a copy of that workflow's graph
    at its current version. `description` and `tags` default to the workflow's."""

    from_workflow_id: Id
    name: Name
    description: Description | UnsetType = UNSET
    tags: Tags | UnsetType = UNSET


class ApplyTemplate(msgspec.Struct, frozen=True, rename="camel"):
    """`POST /api/templates/{id}/apply`. Without `workflowId` the template becomes a new
    workflow (named `name`, else the template's name). With it, `replace` swaps the target's
    graph for the template's and `merge` adds the template's nodes beside the existing ones:
    shifted by `offset`, or, without one, placed right of the existing nodes. `name`, when
    given, also renames the target."""

    workflow_id: Id | None = None
    mode: Literal["replace", "merge"] = "merge"
    offset: Position | None = None
    name: Name | None = None


class ExportDocument(msgspec.Struct, frozen=True, rename="camel"):
    """`GET /api/templates/{id}/export`: the template with the node types it uses, so the file
    says what each node is even where this catalogue is not at hand."""

    format_version: int
    exported_at: Timestamp
    template: Template
    node_types: list[NodeType]


class ExportIn(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """An export document as `POST /api/templates/import` reads it. The template's own id,
    version and timestamps are ignored (an import is a new template), and so is `nodeTypes`:
    node types are checked against this server's catalogue. Unknown fields are refused."""

    format_version: Annotated[int, Meta(ge=1)]
    template: DocumentIn
    exported_at: str | None = None
    node_types: list[Any] = []


class FlowNode(msgspec.Struct, frozen=True, rename="camel"):
    """A React Flow node; fields React Flow adds for its own use (`width`, `selected`,
    `measured`, ...) are ignored."""

    id: Annotated[str, Meta(min_length=1, max_length=256)]
    type: Annotated[str, Meta(min_length=1, max_length=64)]
    position: Position
    data: NodeData = NodeData()


class FlowEdge(msgspec.Struct, frozen=True, rename="camel"):
    """A React Flow edge; its look (`animated`, `style`, `markerEnd`, ...) is ignored."""

    source: Annotated[str, Meta(min_length=1, max_length=256)]
    target: Annotated[str, Meta(min_length=1, max_length=256)]
    id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    source_handle: str | None = None
    target_handle: str | None = None


class ReactFlowDocument(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """What React Flow's `toObject()` gives, plus optional `name`, `description` and `tags`.
    The viewport is checked and not kept: a template has no camera (it is applied into other
    workflows, beside their nodes). Other top-level fields are refused."""

    nodes: list[FlowNode]
    edges: list[FlowEdge] = []
    viewport: Viewport | None = None
    name: Name = IMPORTED_NAME
    description: Description = ""
    tags: Tags = []


ImportIn = ExportIn | ReactFlowDocument


class Draft(msgspec.Struct, frozen=True):
    """A checked graph with its name, before the store gives it an id and a version."""

    name: str
    description: str
    tags: list[str]
    nodes: list[Node]
    connections: list[Connection]


# --- which shape a body is ------------------------------------------------------------------


def create_format(body: Mapping[str, Any]) -> type[DocumentIn] | type[TemplateFromWorkflow]:
    """`POST /api/templates` takes a whole template, or a name and a workflow to copy."""
    return TemplateFromWorkflow if "fromWorkflowId" in body else DocumentIn


def import_format(body: Mapping[str, Any]) -> type[ExportIn] | type[ReactFlowDocument]:
    """Tell a Flowstage export from a React Flow document, refusing a newer export format
    before reading the rest of it (its shape may have changed)."""
    if "formatVersion" in body or "template" in body:
        version = body.get("formatVersion")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            msg = f"format version {version} is newer than this server reads ({FORMAT_VERSION})"
            raise Invalid(msg, [FieldError(("body", "formatVersion"), msg)])
        return ExportIn
    if "nodes" in body:
        return ReactFlowDocument
    msg = ("expected a Flowstage export (formatVersion, template) "
           "or a React Flow document (nodes, edges)")
    raise Invalid(msg, [FieldError(("body",), msg)])


# --- drafts ---------------------------------------------------------------------------------


def draft_from_document(doc: DocumentIn, prefix: Loc = ("body",)) -> Draft:
    nodes, connections = document_graph(doc, prefix)
    return Draft(doc.name, doc.description, unique_tags(doc.tags), nodes, connections)


def draft_from_workflow(workflow: Workflow, body: TemplateFromWorkflow) -> Draft:
    """A copy of the workflow's graph as it is now; later edits of the workflow don't reach it."""
    return Draft(
        name=body.name,
        description=(workflow.description if isinstance(body.description, UnsetType)
                     else body.description),
        tags=list(workflow.tags) if isinstance(body.tags, UnsetType) else unique_tags(body.tags),
        nodes=list(workflow.nodes),
        connections=list(workflow.connections),
    )


def draft_from_import(doc: ImportIn) -> Draft:
    """Check an imported document against the catalogue and give its graph fresh ids.

    Every problem is reported with the `loc` of the field in the document as it was sent.
    """
    match doc:
        case ExportIn(template=template):
            checked = draft_from_document(template, ("body", "template"))
        case ReactFlowDocument():
            nodes, connections = build_graph(
                [NodeIn(type=n.type, position=n.position, data=n.data, id=n.id) for n in doc.nodes],
                [ConnectionIn(source=e.source, target=e.target, source_handle=e.source_handle,
                              target_handle=e.target_handle, id=e.id) for e in doc.edges],
                lambda i: ("body", "nodes", i), lambda i: ("body", "edges", i),
            )
            checked = Draft(doc.name, doc.description, unique_tags(doc.tags), nodes, connections)
    nodes, connections = copy_graph(checked.nodes, checked.connections)
    return msgspec.structs.replace(checked, nodes=nodes, connections=connections)


def new_template(draft: Draft, template_id: str, now: str) -> Template:
    return Template(
        id=template_id, name=draft.name, description=draft.description, tags=draft.tags,
        version=1, created_at=now, updated_at=now, nodes=draft.nodes,
        connections=draft.connections,
    )


# --- applying -------------------------------------------------------------------------------


def copy_graph(
    nodes: Sequence[Node],
    connections: Sequence[Connection],
    dx: float = 0.0,
    dy: float = 0.0,
    taken_node_ids: Iterable[str] = (),
    taken_connection_ids: Iterable[str] = (),
) -> tuple[list[Node], list[Connection]]:
    """The graph with fresh ids (none of them in the taken ones), connections remapped to the
    new node ids, and every node moved by (dx, dy)."""
    taken_nodes, taken_connections = set(taken_node_ids), set(taken_connection_ids)
    new_ids = {n.id: _fresh("node", taken_nodes) for n in nodes}
    copied_nodes = [
        msgspec.structs.replace(
            n, id=new_ids[n.id], position=Position(x=n.position.x + dx, y=n.position.y + dy))
        for n in nodes
    ]
    copied_connections = [
        msgspec.structs.replace(
            c, id=_fresh("conn", taken_connections), source=new_ids[c.source],
            target=new_ids[c.target])
        for c in connections
    ]
    return copied_nodes, copied_connections


def _checked_offset(template: Template, body: ApplyTemplate) -> tuple[float, float] | None:
    """The requested shift, refused when it would move a node out of the editor's range."""
    if body.offset is None:
        return None
    dx, dy = body.offset.x, body.offset.y
    if any(abs(n.position.x + dx) > COORDINATE_LIMIT or abs(n.position.y + dy) > COORDINATE_LIMIT
           for n in template.nodes):
        raise Invalid("The offset moves nodes out of the editor's range.",
                      [FieldError(("body", "offset"), f"moves nodes beyond ±{COORDINATE_LIMIT:g}")])
    return dx, dy


def new_workflow(template: Template, body: ApplyTemplate, workflow_id: str, now: str) -> Workflow:
    """A new workflow holding a copy of the template (moved by `offset`, if given)."""
    dx, dy = _checked_offset(template, body) or (0.0, 0.0)
    nodes, connections = copy_graph(template.nodes, template.connections, dx, dy)
    return Workflow(
        id=workflow_id, name=body.name or template.name, description=template.description,
        tags=list(template.tags), version=1, created_at=now, updated_at=now, nodes=nodes,
        connections=connections,
    )


def apply_to_workflow(workflow: Workflow, template: Template, body: ApplyTemplate) -> Workflow:
    """The workflow with the template's graph in place of its own (`replace`) or beside it
    (`merge`). Version and timestamps are the store's."""
    kept_nodes: list[Node] = []
    kept_connections: list[Connection] = []
    if body.mode == "merge":
        kept_nodes, kept_connections = list(workflow.nodes), list(workflow.connections)
    dx, dy = _checked_offset(template, body) or _clear_of(kept_nodes, template.nodes)
    added_nodes, added_connections = copy_graph(
        template.nodes, template.connections, dx, dy,
        (n.id for n in kept_nodes), (c.id for c in kept_connections),
    )
    nodes, connections = build_graph(
        [*kept_nodes, *added_nodes], [*kept_connections, *added_connections],
        _stored("nodes"), _stored("connections"),
    )
    return msgspec.structs.replace(
        workflow, name=body.name or workflow.name, nodes=nodes, connections=connections)


def _clear_of(existing: Sequence[Node], incoming: Sequence[Node]) -> tuple[float, float]:
    """The shift that puts `incoming` right of the bounding box of `existing`, top-aligned
    with it; none when there is nothing to keep clear of."""
    if not existing or not incoming:
        return 0.0, 0.0
    left = max(n.position.x for n in existing) + NODE_WIDTH + PLACEMENT_GAP
    top = min(n.position.y for n in existing)
    return (left - min(n.position.x for n in incoming),
            top - min(n.position.y for n in incoming))


# --- export ---------------------------------------------------------------------------------


def export_document(template: Template, exported_at: str) -> ExportDocument:
    used = sorted({n.type for n in template.nodes})
    return ExportDocument(
        format_version=FORMAT_VERSION, exported_at=exported_at, template=template,
        node_types=[CATALOGUE[t] for t in used if t in CATALOGUE],
    )


_NOT_SAFE = re.compile(r"[^a-z0-9]+")


def export_filename(name: str) -> str:
    """`"Résumé → PDF!"` -> `"resume-pdf.flowstage.json"`: ASCII letters, digits and dashes,
    so the name is safe in a header and on any file system."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _NOT_SAFE.sub("-", ascii_name.lower()).strip("-")[:80].rstrip("-")
    return f"{slug or 'template'}.flowstage.json"


# --- helpers --------------------------------------------------------------------------------


def _fresh(prefix: str, taken: set[str]) -> str:
    while True:
        candidate = f"{prefix}_{secrets.token_hex(4)}"
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def _stored(field: str) -> Callable[[int], Loc]:
    return lambda i: ("stored", field, i)



