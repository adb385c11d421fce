"""Routes declared once, with their types, so the router and the OpenAPI 3.1 document are built
from the same table and cannot drift apart.

Schemas come from the msgspec types the handlers decode and encode
(`msgspec.json.schema_components`), in two views, so that a generated client reads each side
naturally:
- what a client sends: a field with a default is optional, and its default is written in its
  description rather than as `default` (openapi-typescript makes every property with a `default`
  required, as if it were reading an answer);
- what the server sends: every field it always writes is `required`.
A type that reads differently in the two views is two components: `Name` for the answer and
`NameInput` for the request (only `NodeData` today: `label` and `config` may be left out).

Query parameters are declared with a type too; `Route.endpoint` checks them against it before the
handler runs, so a documented constraint (an enum, a range) is an enforced one (422 at
`["query", name]`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, update_wrapper
from typing import Any

import msgspec
import msgspec.inspect as mi
from aiohttp import web

from flowstage.server.http import convert_param
from flowstage.server.problems import Problem

__all__ = ["EventStream", "Param", "Route", "build_openapi"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A query or header parameter. `type` is what the value must convert to (with msgspec,
    from its text): `str`, `Annotated[int, Meta(ge=1)]`, `Literal["a", "b"]`, or a list of one
    of those for a repeatable query parameter. The documented schema is generated from it."""

    name: str
    description: str
    type: Any = str
    location: str = "query"
    required: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.type, dict):
            raise TypeError(f"Param {self.name!r}: give a type (e.g. Literal['a', 'b']), not a JSON schema")

    @cached_property
    def repeatable(self) -> bool:
        return isinstance(mi.type_info(self.type), mi.ListType)

    @cached_property
    def schema(self) -> dict[str, Any]:
        return msgspec.json.schema(self.type)


@dataclass(frozen=True)
class EventStream:
    """A `text/event-stream` answer. Each message's `data` is one of `events` (Structs tagged by
    their `event` field); `union` names the discriminated union of them in the components."""

    union: str
    events: tuple[type[msgspec.Struct], ...]
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    # camelCase, a verb first (listRuns, getRun, pauseRun): what generated clients call it.
    operation_id: str = field(kw_only=True)
    # A JSON body's type, or a tuple of types the body may be any of.
    body: Any = None
    body_description: str = ""
    # False where the server reads an empty body as `{}` (decode_body(..., optional=True)).
    body_required: bool = True
    response: Any = None
    status: int = 200
    query: Sequence[Param] = ()
    headers: Sequence[Param] = ()
    # For bodies and answers that are not JSON: {"media/type": schema}.
    body_content: dict[str, Any] | None = None
    response_content: dict[str, Any] | None = None
    stream: EventStream | None = None
    errors: Sequence[int] = (422,)
    # Other success statuses with the same body (apply: 201 for a new workflow, else 200).
    also: Sequence[int] = ()
    response_headers: dict[str, str] = field(default_factory=dict)
    # The path of what this operation creates, e.g. "/api/runs/{runId}": the document links the
    # answer to every operation under that path, its last parameter being `created_id`.
    creates: str | None = None
    created_id: str = "$response.body#/id"

    @cached_property
    def endpoint(self) -> Handler:
        """The handler, behind a check of the declared query parameters."""
        if not self.query:
            return self.handler
        handler, params = self.handler, tuple(self.query)

        async def checked(request: web.Request) -> web.StreamResponse:
            for p in params:
                if p.repeatable:
                    values = request.query.getall(p.name, [])
                    if values:
                        convert_param(values, p.type, ("query", p.name))
                elif (value := request.query.get(p.name)) is not None:
                    convert_param(value, p.type, ("query", p.name))
                elif p.required:
                    convert_param(None, p.type, ("query", p.name))
            return await handler(request)

        return update_wrapper(checked, handler)


_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"\{(\w+)\}")
_OPERATION_ID = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)+$")
_ERROR_TITLES = {
    304: "Not modified", 400: "Malformed JSON or multipart", 404: "No such resource",
    409: "Conflicts with the resource's state", 412: "If-Match does not match",
    413: "Too large", 415: "Wrong content type", 422: "Well-formed but invalid",
    429: "Throttled", 503: "Busy; retry later",
}
# JSON Schema keywords whose values are data, not schemas: never rewritten.
_DATA_KEYWORDS = frozenset({"default", "const", "enum", "examples", "example"})


def build_openapi(routes: Iterable[Route], version: str) -> dict[str, Any]:
    routes = list(routes)
    _check_operation_ids(routes)
    request_types = [t for r in routes for t in _body_types(r.body)]
    response_types: list[Any] = [Problem]
    response_types += [r.response for r in routes if r.response is not None]
    streams = {r.stream.union: r.stream for r in routes if r.stream is not None}
    for stream in streams.values():
        response_types += stream.events

    answers, answer_components = msgspec.json.schema_components(response_types, ref_template=_REF)
    omitting = _omitting(response_types)
    answer_components = {
        name: _as_sent(schema, schema.get("title", "").partition("[")[0] in omitting)
        for name, schema in answer_components.items()
    }
    requests, request_components = msgspec.json.schema_components(request_types, ref_template=_REF)
    request_components = {name: _as_received(schema) for name, schema in request_components.items()}
    # A request type that reads differently is renamed, and so is one that refers to a renamed
    # one (a body holding a Run holds a RunInput), until nothing more changes.
    renamed: dict[str, str] = {}
    while more := {
        name: f"{name}Input" for name, schema in request_components.items()
        if name not in renamed and name in answer_components
        and answer_components[name] != _renamed(schema, renamed)
    }:
        renamed.update(more)
    request_components = {
        renamed.get(n, n): _renamed({**s, "title": renamed[n]} if n in renamed else s, renamed)
        for n, s in request_components.items()
    }
    request_schemas = [_renamed(s, renamed) for s in requests]
    components = {**answer_components, **request_components}
    for stream in streams.values():
        components[stream.union] = _union(stream.events)

    answer_of = dict(zip(map(id, response_types), answers, strict=True))
    request_of = dict(zip(map(id, request_types), request_schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(
            route, routes, request_of, answer_of)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Flowstage",
            "version": version,
            "description": "A workflow-execution simulator: the backend of a node-based "
            "workflow editor. Errors are RFC 9457 problem+json.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }
    return _free_form(document)


def _operation(route: Route, routes: list[Route], request_of: dict[int, Any],
               answer_of: dict[int, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
    }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(route.path)
    ]
    for p in (*route.query, *route.headers):
        parameters.append({"name": p.name, "in": "header" if p.location == "header" else "query",
                           "required": p.required, "description": p.description, "schema": p.schema})
    if parameters:
        operation["parameters"] = parameters

    body: dict[str, Any] | None = None
    if route.body is not None:
        schemas = [request_of[id(t)] for t in _body_types(route.body)]
        body = {"application/json": {"schema": schemas[0] if len(schemas) == 1 else {"anyOf": schemas}}}
    elif route.body_content is not None:
        body = {k: {"schema": v} for k, v in route.body_content.items()}
    if body is not None:
        operation["requestBody"] = {"required": route.body_required, "content": body}
        if route.body_description:
            operation["requestBody"]["description"] = route.body_description

    success: dict[str, Any] = {"description": "Success"}
    if route.response is not None:
        success["content"] = {"application/json": {"schema": answer_of[id(route.response)]}}
    elif route.response_content is not None:
        success["content"] = {
            k: {"schema": v} if v is not None else {} for k, v in route.response_content.items()
        }
    elif route.stream is not None:
        union = _REF.format(name=route.stream.union)
        success["content"] = {"text/event-stream": {
            "schema": {"type": "string", "description": f"{route.stream.description} Each "
                       f"message's `data` is a {route.stream.union} ({union}), discriminated "
                       "by its `event` field, which is also the message's `event:` name."},
            # OpenAPI 3.2's `itemSchema`: the schema of each message's data.
            "x-itemSchema": {"$ref": union},
        }}
    if route.response_headers:
        success["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in route.response_headers.items()
        }
    links = _links(route, routes)
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(route.status): success}
    for status in route.also:
        responses[str(status)] = success
    for status in sorted({*route.errors, 429}):
        entry: dict[str, Any] = {"description": _ERROR_TITLES.get(status, "Error")}
        if status != 304:
            entry["content"] = {"application/problem+json": {"schema": answer_of[id(Problem)]}}
        responses[str(status)] = entry
    operation["responses"] = responses
    return operation


def _check_operation_ids(routes: list[Route]) -> None:
    seen: set[str] = set()
    for route in routes:
        if not _OPERATION_ID.match(route.operation_id) or route.operation_id in seen:
            raise ValueError(f"{route.method} {route.path}: operation id {route.operation_id!r} "
                             "is not a new camelCase name")
        seen.add(route.operation_id)


def _body_types(body: Any) -> tuple[Any, ...]:
    if body is None:
        return ()
    return body if isinstance(body, tuple) else (body,)


def _links(route: Route, routes: list[Route]) -> dict[str, Any]:
    """Links from a create to every operation under what it created: the new id fills the last
    parameter of `creates`; the others come from the request's own path."""
    if route.creates is None:
        return {}
    new_param = _PATH_PARAM.findall(route.creates)[-1]
    known = set(_PATH_PARAM.findall(route.path))
    links: dict[str, Any] = {}
    for target in routes:
        if target.path != route.creates and not target.path.startswith(route.creates + "/"):
            continue
        needed = _PATH_PARAM.findall(target.path)
        if not set(needed) <= known | {new_param}:
            continue  # needs an id neither the request nor the answer has (a node of a new workflow)
        links[target.operation_id] = {
            "operationId": target.operation_id,
            "parameters": {
                name: route.created_id if name == new_param else f"$request.path.{name}"
                for name in needed
            },
        }
    if not links:
        raise ValueError(f"{route.operation_id} creates {route.creates}, which no route serves")
    return links


def _omitting(types: list[Any]) -> set[str]:
    """Names of the Structs that leave out fields at their default (`omit_defaults`), as their
    schemas' `title`s spell them (a generic's title is `Page[Run]`)."""
    titles: set[str] = set()
    seen: set[int] = set()

    def walk(t: Any) -> None:
        if isinstance(t, mi.StructType):
            if id(t) in seen:
                return
            seen.add(id(t))
            cls = getattr(t.cls, "__origin__", t.cls)
            if cls.__struct_config__.omit_defaults:
                titles.add(cls.__name__)
            for f in t.fields:
                walk(f.type)
            return
        if isinstance(t, mi.Type):
            for name in t.__struct_fields__:
                value = getattr(t, name)
                for item in value if isinstance(value, tuple) else (value,):
                    walk(item)

    for info in mi.multi_type_info(types):
        walk(info)
    return titles


def _as_sent(schema: dict[str, Any], omits_defaults: bool) -> dict[str, Any]:
    """An answer's Struct: every field the server writes is required (a Struct that leaves out
    fields at their default reads like a request: those fields are optional)."""
    properties = schema.get("properties")
    if properties is None or omits_defaults:
        return _as_received(schema)
    required = schema.get("required", [])
    return {**schema, "required": [name for name, prop in properties.items()
                                   if name in required or "default" in prop]}


def _as_received(schema: dict[str, Any]) -> dict[str, Any]:
    """A request's Struct: defaults said in words, so generators keep those fields optional."""
    properties = schema.get("properties")
    if properties is None:
        return schema
    plain: dict[str, Any] = {}
    for name, prop in properties.items():
        if "default" in prop:
            prop = {k: v for k, v in prop.items() if k != "default"}
            said = f"Default: `{msgspec.json.encode(properties[name]['default']).decode()}`."
            prop["description"] = f"{prop['description']} {said}" if "description" in prop else said
        plain[name] = prop
    return {**schema, "properties": plain}


def _renamed(node: Any, renamed: dict[str, str]) -> Any:
    """`node` with its references to renamed components pointing at the new names."""
    refs = {_REF.format(name=old): _REF.format(name=new) for old, new in renamed.items()}

    def repoint(d: dict[str, Any]) -> dict[str, Any]:
        mapping = d.get("mapping")  # a discriminator's, naming components by reference too
        if isinstance(mapping, dict) and all(isinstance(v, str) for v in mapping.values()):
            d = {**d, "mapping": {k: refs.get(v, v) for k, v in mapping.items()}}
        return {**d, "$ref": refs[d["$ref"]]} if d.get("$ref") in refs else d

    return _rewrite(node, repoint)


def _union(events: tuple[type[msgspec.Struct], ...]) -> dict[str, Any]:
    refs = {e.__struct_config__.tag: _REF.format(name=e.__name__) for e in events}
    return {
        "oneOf": [{"$ref": ref} for ref in refs.values()],
        "discriminator": {"propertyName": "event", "mapping": refs},
    }


def _free_form(document: dict[str, Any]) -> dict[str, Any]:
    """`{"type": "object"}` (msgspec's `dict[str, Any]`) says nothing of its keys; generators
    read that as "no keys at all" (`Record<string, never>`). Say "any keys"."""
    def allow_any(node: dict[str, Any]) -> dict[str, Any]:
        if node.get("type") == "object" and not {"properties", "additionalProperties",
                                                 "patternProperties"} & node.keys():
            return {**node, "additionalProperties": True}
        return node

    result: dict[str, Any] = _rewrite(document, allow_any)
    return result


def _rewrite(node: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """`node` with `change` applied to every object in it, innermost first, data left alone."""
    if isinstance(node, list):
        return [_rewrite(item, change) for item in node]
    if isinstance(node, dict):
        return change({k: v if k in _DATA_KEYWORDS else _rewrite(v, change) for k, v in node.items()})
    return node
