"""Routes declared once, with their types, so the router and the OpenAPI 3.1 document are built
from the same table and cannot drift apart.

Schemas come from the msgspec types the handlers decode and encode
(`msgspec.json.schema_components`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from flowstage.simulation.models import Problem

__all__ = ["Param", "Route", "build_openapi"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    location: str = "query"
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: Any = None
    response: Any = None
    status: int = 200
    query: Sequence[Param] = ()
    headers: Sequence[Param] = ()
    # For bodies and answers that are not JSON: {"media/type": schema}.
    body_content: dict[str, Any] | None = None
    response_content: dict[str, Any] | None = None
    errors: Sequence[int] = (422,)
    # Other success statuses with the same body (apply: 201 for a new workflow, else 200).
    also: Sequence[int] = ()
    response_headers: dict[str, str] = field(default_factory=dict)


_PATH_PARAM = re.compile(r"\{(\w+)\}")
_ERROR_TITLES = {
    304: "Not modified", 400: "Malformed JSON or multipart", 404: "No such resource",
    409: "Conflicts with the resource's state", 412: "If-Match does not match",
    413: "Too large", 415: "Wrong content type", 422: "Well-formed but invalid",
    429: "Throttled", 503: "Busy; retry later",
}


def build_openapi(routes: Iterable[Route], version: str) -> dict[str, Any]:
    routes = list(routes)
    types: list[Any] = [Problem]
    for route in routes:
        types.extend(t for t in (route.body, route.response) if t is not None)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip(map(id, types), schemas, strict=True))
    problem_ref = schema_of[id(Problem)]

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": f"{route.method.lower()}_{route.handler.__name__}",
            "summary": route.summary,
            "tags": [route.tag],
        }
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(route.path)
        ]
        for p in route.query:
            parameters.append({"name": p.name, "in": "query", "required": p.required,
                               "description": p.description, "schema": p.schema})
        for p in route.headers:
            parameters.append({"name": p.name, "in": "header", "required": p.required,
                               "description": p.description, "schema": p.schema})
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(route.body)]}},
            }
        elif route.body_content is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {k: {"schema": v} for k, v in route.body_content.items()},
            }
        success: dict[str, Any] = {"description": "Success"}
        if route.response is not None:
            success["content"] = {"application/json": {"schema": schema_of[id(route.response)]}}
        elif route.response_content is not None:
            success["content"] = {k: {"schema": v} for k, v in route.response_content.items()}
        if route.response_headers:
            success["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in route.response_headers.items()
            }
        responses: dict[str, Any] = {str(route.status): success}
        for status in route.also:
            responses[str(status)] = success
        for status in sorted({*route.errors, 429}):
            entry: dict[str, Any] = {"description": _ERROR_TITLES.get(status, "Error")}
            if status != 304:
                entry["content"] = {"application/problem+json": {"schema": problem_ref}}
            responses[str(status)] = entry
        operation["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = operation

    return {
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
