"""The service itself: health, the OpenAPI document, Prometheus metrics, and the node-type
catalogue."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import get_args

import msgspec
from aiohttp import web

from flowstage.server.http import content_etag, etag_response, json_response
from flowstage.server.keys import ENGINE, LIFETIME, METRICS, NOW, OPENAPI
from flowstage.server.metrics import CONTENT_TYPE
from flowstage.server.openapi import Param, Route
from flowstage.server.routes.workflows import IF_NONE_MATCH
from flowstage.server.store import Page
from flowstage.simulation.catalogue import CATALOGUE, Category, NodeType
from flowstage.simulation.errors import NotFound

__all__ = ["ROUTES", "VERSION", "Health"]

try:
    VERSION = version("flowstage")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"

class Health(msgspec.Struct, frozen=True, rename="camel"):
    status: str
    version: str
    uptime_seconds: float


_NODE_TYPES = msgspec.json.encode(Page(items=list(CATALOGUE.values()), next_cursor=None))
# The catalogue never changes while the server runs: every answer is encoded once.
_BY_CATEGORY = {
    category: msgspec.json.encode(Page(items=[t for t in CATALOGUE.values() if t.category == category],
                                       next_cursor=None))
    for category in get_args(Category)
}
_ONE_TYPE = {name: msgspec.json.encode(t) for name, t in CATALOGUE.items()}


async def health(request: web.Request) -> web.Response:
    uptime = request.app[NOW]() - request.app[LIFETIME].started_at
    return json_response(Health(status="ok", version=VERSION, uptime_seconds=round(uptime, 3)))


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    # Read at scrape time: mailboxes change on every control message, and a scrape is rare.
    registry.mailbox_depth.set(request.app[ENGINE].mailbox_depth())
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE})


async def node_types(request: web.Request) -> web.Response:
    category = request.query.get("category")  # checked against Category by the route table
    body = _NODE_TYPES if category is None else _BY_CATEGORY[category]
    return web.Response(body=body, content_type="application/json")


async def node_type(request: web.Request) -> web.Response:
    name = request.match_info["type"]
    body = _ONE_TYPE.get(name)
    if body is None:
        raise NotFound(f"No node type {name!r}; GET /api/node-types lists them.")
    return etag_response(request, body, content_etag(body))


ROUTES = (
    Route("GET", "/api/health", health, "Liveness, version and uptime", "meta",
          operation_id="getHealth", response=Health, errors=()),
    Route("GET", "/api/openapi.json", openapi, "This document", "meta",
          operation_id="getOpenApi", response_content={"application/json": {"type": "object"}}, errors=()),
    Route("GET", "/metrics", metrics, "Prometheus metrics (text exposition format)", "meta",
          operation_id="getMetrics", response_content={"text/plain": {"type": "string"}}, errors=()),
    Route("GET", "/api/node-types", node_types, "Every node type an editor can place", "meta",
          operation_id="listNodeTypes", response=Page[NodeType],
          query=(Param("category", "Only the node types of this category", Category),), errors=(422,)),
    Route("GET", "/api/node-types/{type}", node_type, "One node type", "meta",
          operation_id="getNodeType", response=NodeType, headers=IF_NONE_MATCH, errors=(304, 404)),
)
