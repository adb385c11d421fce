"""Typed application state: what `create_app` puts on the app and handlers read."""

from __future__ import annotations

from aiohttp import web

from config import Settings
from server.store import Store

__all__ = ["NOW", "SETTINGS", "STARTED_AT", "STORE"]

from collections.abc import Callable

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
NOW = web.AppKey("now", Callable[[], float])
STARTED_AT = web.AppKey("started_at", float)
