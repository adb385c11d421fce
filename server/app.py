"""The one application factory, used by `flowstage serve` and by every test."""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp_cors
import msgspec
from aiohttp import hdrs, web
from aiohttp_cors.urldispatcher_router_adapter import ResourcesUrlDispatcherRouterAdapter

from flowstage.actors.clock import Clock, ManualClock, SystemClock
from flowstage.actors.engine import Engine, EngineConfig
from flowstage.config import Settings
from flowstage.server.demo import seed_demo_data
from flowstage.server.edge import Edge, Handler
from flowstage.server.keys import (
    CLOCK,
    EDGE,
    ENGINE,
    LIFETIME,
    METRICS,
    NOW,
    OPENAPI,
    RUNS,
    SETTINGS,
    SSE,
    STORE,
    Lifetime,
)
from flowstage.server.metrics import Metrics
from flowstage.server.openapi import build_openapi
from flowstage.server.processing import register_file_handlers
from flowstage.server.ratelimit import TokenBuckets
from flowstage.server.routes import ALL_ROUTES
from flowstage.server.routes.meta import VERSION
from flowstage.server.runs import RunService, recover_interrupted
from flowstage.server.sse import EventHub
from flowstage.server.store import Store, database_for
from flowstage.server.testmode import enable_test_mode
from flowstage.server.viewer import add_viewer_routes

if TYPE_CHECKING:
    from flowstage.server.bus import RedisBus

__all__ = ["create_app"]

log = logging.getLogger("flowstage")


def create_app(settings: Settings, *, clock: Clock | None = None, cluster_address: str | None = None
               ) -> web.Application:
    """Build the app: routes behind the edge, CORS, and the start-up and shut-down of the store
    and the engine. Tests pass a `ManualClock` to control time: runs, and the rate limiter's
    token refill. In test mode server.testmode adds its parts, the clock is a new
    ManualClock unless one is given, and the rate limiter counts real time. With
    `bus = "redis"`, `cluster_address` (host:port) is where other processes reach this one
    (server.cluster; default: the host and port it serves on)."""
    if settings.test_mode and clock is None:
        clock = ManualClock()
    clock = clock or SystemClock()
    now = clock.now
    metrics = Metrics()
    buckets = None
    if settings.rate_limit_per_second > 0:
        # A client's rate is real time. Test mode's clock is the simulation's: it stands still,
        # jumps and goes back to 0 on a reset, which would lock clients out for good.
        refill = time.monotonic if settings.test_mode else now
        buckets = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst, refill)
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[EDGE] = edge = Edge(metrics, buckets)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[NOW] = now
    app[METRICS] = metrics
    app[LIFETIME] = Lifetime()
    data_dir = Path(settings.data_dir)
    database = database_for(settings.storage, data_dir, settings.database_url)
    app[STORE] = store = Store(database, data_dir / "files", now)
    engine_config = EngineConfig(default_speed=settings.speed, mailbox_size=settings.mailbox_size,
                                 failure_rates=dict(settings.failure_rates))
    app[ENGINE] = engine = Engine(clock, store.runs, engine_config)
    engine.add_listener(metrics.on_event)
    register_file_handlers(engine, store)
    app[RUNS] = RunService(engine, store)
    app[OPENAPI] = _openapi_document()
    app.cleanup_ctx.append(_store_lifecycle)
    app.cleanup_ctx.append(_engine_lifecycle)
    app.cleanup_ctx.append(metrics.cleanup_ctx)
    # SSE: the hub listens to the engine; streams are stopped on shutdown, before aiohttp
    # waits for open requests to finish.
    app[SSE] = hub = EventHub(settings, engine, store, metrics)
    engine.add_listener(hub.on_event)
    app.cleanup_ctx.insert(0, hub.bus_lifecycle)
    app.cleanup_ctx.append(hub.cleanup_ctx)
    if hub.bus is not None:
        _join_cluster(app, hub.bus, cluster_address or reachable_address(settings.host, settings.port), buckets)
    app.on_shutdown.append(hub.on_shutdown)
    _add_routes(app, settings)
    add_viewer_routes(app)
    if settings.test_mode:
        enable_test_mode(app, clock, engine, store, hub, autojump=settings.autojump)
    edge.seal(app.router)  # after the last route
    return app


def _join_cluster(app: web.Application, bus: RedisBus, address: str, buckets: TokenBuckets | None) -> None:
    """Runs owned by this process, reachable by the others (server.cluster). Its lease is
    held while the store is open (the reaper reads it), and given up after the engine
    closed, which ends this process's runs itself. A request another process forwarded took
    its rate-limit token there."""
    from flowstage.server.cluster import Cluster, OwningSink, owner_layer

    store, engine = app[STORE], app[ENGINE]
    cluster = Cluster(bus, store, app[NOW], address)
    engine.sink = OwningSink(store, cluster)
    app[EDGE].inner = owner_layer(cluster, engine)  # routes are added after this
    if buckets is not None:
        buckets.exempt = cluster.forwarded
    app.cleanup_ctx.insert(app.cleanup_ctx.index(_store_lifecycle) + 1, cluster.lifecycle)


def reachable_address(host: str, port: int) -> str:
    """host:port where other hosts reach a server listening on `host`: a wildcard host is
    this host's address."""
    if host in ("", "0.0.0.0", "::"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.cache
def _openapi_document() -> bytes:
    """Built once per process (24 ms, most of what building an app costs, which test suites
    do once per test): the route table and the version do not change while it runs."""
    return msgspec.json.encode(build_openapi(ALL_ROUTES, VERSION))


# aiohttp tries the patterns that share a prefix (every `/api/workflows/{id}/...`) one by one,
# in the order they were added: the most requested go first. No two patterns match one path,
# so the order changes nothing else (the OpenAPI document keeps ALL_ROUTES' order).
_HOT_PATHS = ("/api/workflows/{id}", "/api/workflows/{id}/execute", "/api/runs/{runId}")


class _EdgeCorsAdapter(ResourcesUrlDispatcherRouterAdapter):
    """aiohttp-cors answers preflights (OPTIONS) with a route it adds to each resource: put
    that route behind the edge too, so a refused preflight is a problem, and counted."""

    def __init__(self, router: web.UrlDispatcher, defaults: Mapping[str, aiohttp_cors.ResourceOptions],
                 edge: Edge) -> None:
        super().__init__(router, defaults)
        self._edge = edge
        self._preflights: dict[web.Resource, Handler] = {}  # one per resource, as aiohttp-cors checks

    def add_preflight_handler(self, routing_entity: Any, handler: Any, _webview: bool = False) -> None:
        if isinstance(routing_entity, web.Resource):
            wrapped = self._preflights.get(routing_entity)
            if wrapped is None:
                wrapped = self._preflights[routing_entity] = self._edge.wrap(handler, routing_entity.canonical)
            handler = wrapped
        super().add_preflight_handler(routing_entity, handler)


def _add_routes(app: web.Application, settings: Settings) -> None:
    defaults = dict.fromkeys(settings.cors_origins, aiohttp_cors.ResourceOptions(
        allow_credentials=False, expose_headers="*", allow_headers="*", max_age=3600,
    ))
    edge = app[EDGE]
    cors = aiohttp_cors.CorsConfig(app, defaults=defaults,
                                   router_adapter=_EdgeCorsAdapter(app.router, defaults, edge))
    resources: dict[str, web.Resource] = {}
    hot = {path: i for i, path in enumerate(_HOT_PATHS)}
    for route in sorted(ALL_ROUTES, key=lambda r: hot.get(r.path, len(hot))):
        resource = resources.get(route.path)
        if resource is None:
            resource = resources[route.path] = app.router.add_resource(route.path)
        cors.add(edge.add(resource, route.method, route.endpoint))
        if route.method == "GET":  # HEAD answers like GET without a body (curl -I, caches)
            cors.add(edge.add(resource, "HEAD", route.endpoint))
    # aiohttp-cors inspects every response, which alone cost ~30% of the throughput of
    # GET /api/workflows/{id}. A request without an Origin header gets no CORS headers from it
    # anyway, so it is only consulted when there is one; the answers are unchanged.
    cors_hook = app.on_response_prepare[-1]

    async def cors_when_cross_origin(request: web.Request, response: web.StreamResponse) -> None:
        if hdrs.ORIGIN in request.headers:
            await cors_hook(request, response)

    app.on_response_prepare[-1] = cors_when_cross_origin


async def _store_lifecycle(app: web.Application) -> AsyncIterator[None]:
    app[LIFETIME].started_at = app[NOW]()
    store = app[STORE]
    await store.open()
    if app[SETTINGS].seed_demo_data:
        created = await seed_demo_data(store)
        if created:
            log.info("seeded %d demo workflows", created)
    yield
    await store.close()


async def _engine_lifecycle(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    if store.db.shared:
        # Runs stored as active may be another live process's. With bus = "redis" the
        # processes hold leases, and runs of a process whose lease expired are ended by the
        # others (server.cluster); without, nobody can tell which runs are orphans.
        if app[SETTINGS].bus == "local":
            log.info("shared database: runs other processes left active are not ended at start")
    else:
        ended = await recover_interrupted(store, app[NOW]())
        if ended:
            log.warning("%d runs were active when the previous process stopped; marked failed", ended)
    engine = app[ENGINE]
    await engine.start()
    yield
    await engine.close()
