"""Typed application state: what `create_app` puts on the app and handlers read."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from flowstage.actors.clock import Clock
from flowstage.actors.engine import Engine
from flowstage.config import Settings
from flowstage.server.edge import Edge
from flowstage.server.metrics import Metrics
from flowstage.server.runs import RunService
from flowstage.server.sse import EventHub
from flowstage.server.store import Store

__all__ = ["CLOCK", "EDGE", "ENGINE", "LIFETIME", "METRICS", "NOW", "OPENAPI", "RUNS", "SETTINGS", "SSE", "STORE",
           "Lifetime"]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)


class Now(Protocol):
    """The clock's `now`: seconds since the epoch (an AppKey needs a class, not a Callable)."""

    def __call__(self) -> float: ...


NOW = web.AppKey("now", Now)


class Lifetime:
    """When the app started serving (set at start-up, when the clock can first be read)."""

    started_at: float = 0.0


LIFETIME = web.AppKey("lifetime", Lifetime)
ENGINE = web.AppKey("engine", Engine)
EDGE = web.AppKey("edge", Edge)
RUNS = web.AppKey("runs", RunService)
METRICS = web.AppKey("metrics", Metrics)
SSE = web.AppKey("sse", EventHub)
OPENAPI = web.AppKey("openapi_body", bytes)  # the document, encoded once per process
