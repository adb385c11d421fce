"""Typed application state: what `create_app` puts on the app and handlers read."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from actors.clock import Clock
from actors.engine import Engine
from config import Settings
from server.runs import RunService
from server.sse import EventHub
from server.store import Store

__all__ = ["CLOCK", "ENGINE", "NOW", "RUNS", "LIFETIME", "SETTINGS", "SSE", "STORE", "Lifetime"]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
NOW = web.AppKey("now", Callable[[], float])
class Lifetime:
    """When the app started serving (set at start-up, when the clock can first be read)."""

    started_at: float = 0.0


LIFETIME = web.AppKey("lifetime", Lifetime)
ENGINE = web.AppKey("engine", Engine)
RUNS = web.AppKey("runs", RunService)
SSE = web.AppKey("sse", EventHub)
