"""The service itself: health, the OpenAPI document, Prometheus metrics, and the node-type
catalogue."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import msgspec
from aiohttp import web

from flowstage.server.http import json_response
from flowstage.server.keys import ENGINE, LIFETIME, METRICS, NOW, OPENAPI
from flowstage.server.metrics import CONTENT_TYPE
from flowstage.server.openapi import Route
from flowstage.server.store import Page
from flowstage.simulation.catalogue import CATALOGUE, NodeType

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
    return web.Response(body=_NODE_TYPES, content_type="application/json")


ROUTES = (
    Route("GET", "/api/health", health, "Liveness, version and uptime", "meta",
          operation_id="getHealth", response=Health, errors=()),
    Route("GET", "/api/openapi.json", openapi, "This document", "meta",
          operation_id="getOpenApi", response_content={"application/json": {"type": "object"}}, errors=()),
    Route("GET", "/metrics", metrics, "Prometheus metrics (text exposition format)", "meta",
          operation_id="getMetrics", response_content={"text/plain": {"type": "string"}}, errors=()),
    Route("GET", "/api/node-types", node_types, "Every node type an editor can place", "meta",
          operation_id="listNodeTypes", response=Page[NodeType], errors=()),
)
