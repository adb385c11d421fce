"""The one application factory, used by `flowstage serve` and by every test."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp_cors
import msgspec
from aiohttp import hdrs, web

from config import Settings
from server.demo import seed_demo_data
from server.keys import NOW, SETTINGS, STARTED_AT, STORE
from server.middlewares import TokenBuckets, problem_middleware, rate_limit_middleware
from server.openapi import build_openapi
from server.routes import ALL_ROUTES
from server.routes.meta import OPENAPI, VERSION
from server.store import Store

__all__ = ["create_app"]

log = logging.getLogger("flowstage")


def create_app(settings: Settings, *, now: Callable[[], float] = time.time) -> web.Application:
    """Build the app: routes, middlewares, CORS, and the store's start-up and shut-down."""
    middlewares = [problem_middleware]
    if settings.rate_limit_per_second > 0:
        buckets = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
        middlewares.append(rate_limit_middleware(buckets))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[NOW] = now
    app[STARTED_AT] = now()
    data_dir = Path(settings.data_dir)
    db_path = None if settings.storage == "memory" else data_dir / "flowstage.db"
    app[STORE] = Store(db_path, data_dir / "files", now)
    app[OPENAPI] = msgspec.json.encode(build_openapi(ALL_ROUTES, VERSION))
    app.cleanup_ctx.append(_store_lifecycle)
    _add_routes(app, settings)
    return app


def _add_routes(app: web.Application, settings: Settings) -> None:
    defaults = aiohttp_cors.ResourceOptions(
        allow_credentials=False, expose_headers="*", allow_headers="*", max_age=3600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: defaults for origin in settings.cors_origins})
    resources: dict[str, web.Resource] = {}
    for route in ALL_ROUTES:
        resource = resources.get(route.path)
        if resource is None:
            resource = resources[route.path] = app.router.add_resource(route.path)
        cors.add(resource.add_route(route.method, route.handler))
        if route.method == "GET":  # HEAD answers like GET without a body (curl -I, caches)
            cors.add(resource.add_route("HEAD", route.handler))
    # aiohttp-cors inspects every response, which alone cost ~30% of the throughput of
    # GET /api/workflows/{id}. A request without an Origin header gets no CORS headers from it
    # anyway, so it is only consulted when there is one; the answers are unchanged.
    cors_hook = app.on_response_prepare[-1]

    async def cors_when_cross_origin(request: web.Request, response: web.StreamResponse) -> None:
        if hdrs.ORIGIN in request.headers:
            await cors_hook(request, response)

    app.on_response_prepare[-1] = cors_when_cross_origin


async def _store_lifecycle(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    if app[SETTINGS].seed_demo_data:
        created = await seed_demo_data(store)
        if created:
            log.info("seeded %d demo workflows", created)
    yield
    await store.close()
