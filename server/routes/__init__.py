"""Every route of the API, by resource. `ALL_ROUTES` feeds both the router and OpenAPI."""

from __future__ import annotations

from flowstage.server.openapi import Route
from flowstage.server.routes import (
    debugging,
    events,
    files,
    inspection,
    meta,
    nodes,
    recordings,
    runs,
    templates,
    workflows,
)

__all__ = ["ALL_ROUTES"]

ALL_ROUTES: tuple[Route, ...] = (
    *meta.ROUTES,
    *workflows.ROUTES,
    *nodes.ROUTES,
    *runs.ROUTES,
    *debugging.ROUTES,
    *inspection.ROUTES,
    *recordings.ROUTES,
    *templates.ROUTES,
    *files.ROUTES,
    *events.ROUTES,
)
