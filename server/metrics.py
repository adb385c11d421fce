"""Prometheus metrics (`GET /metrics`): runs, node transitions, events emitted and delivered,
SSE subscribers, mailbox depth, event-loop lag, and HTTP requests by route and status.

Each app has its own registry, so several apps in one process (tests) never share counts.
Run and node figures are counted from the engine's event stream, so they agree with the
events a client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from server.keys import ENGINE

__all__ = ["METRICS", "Metrics", "metrics_handler", "metrics_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TERMINAL = {"run.completed": "completed", "run.failed": "failed", "run.stopped": "stopped"}


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.runs_started = Counter("flowstage_runs_started", "Runs started", registry=r)
        self.runs_finished = Counter("flowstage_runs_finished", "Runs finished, by final state",
                                     ["state"], registry=r)
        self.runs_active = Gauge("flowstage_runs_active", "Runs running or paused now", registry=r)
        self.node_transitions = Counter("flowstage_node_transitions",
                                        "Node state changes, by the state entered", ["state"], registry=r)
        self.events_emitted = Counter("flowstage_events_emitted", "Run events emitted", registry=r)
        self.events_delivered = Counter("flowstage_events_delivered",
                                        "Run events written to SSE subscribers", ["stream"], registry=r)
        self.sse_subscribers = Gauge("flowstage_sse_subscribers", "Open SSE streams", ["stream"], registry=r)
        self.mailbox_depth = Gauge("flowstage_mailbox_depth",
                                   "Control messages waiting in run actors' mailboxes", registry=r)
        self.loop_lag = Histogram(
            "flowstage_event_loop_lag_seconds", "How late a 100 ms timer fires",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=r)
        self.http_requests = Counter("flowstage_http_requests", "HTTP requests, by route and status",
                                     ["method", "route", "status"], registry=r)
        self.http_latency = Histogram(
            "flowstage_http_request_duration_seconds", "Time to answer, by route",
            ["method", "route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r)
        self._started = self.runs_started
        self._node_counters = {
            name: self.node_transitions.labels(name.split(".")[1])
            for name in ("node.queued", "node.started", "node.completed", "node.failed",
                         "node.skipped", "node.stopped")
        }
        self._finished = {name: self.runs_finished.labels(state) for name, state in _TERMINAL.items()}

    def on_event(self, run_id: str, workflow_id: str, seq: int, name: str, data: bytes) -> None:
        """An engine listener: called once for every event of every run."""
        self.events_emitted.inc()
        node = self._node_counters.get(name)
        if node is not None:
            node.inc()
        elif name == "run.started":
            self._started.inc()
            self.runs_active.inc()
        elif name in self._finished:
            self._finished[name].inc()
            self.runs_active.dec()

    async def watch_loop_lag(self, interval: float = 0.1) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self.loop_lag.observe(max(0.0, loop.time() - start - interval))

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


def metrics_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            # The route's pattern, not the URL: ids would make every label unique.
            route = resource.canonical if resource is not None else "unmatched"
            metrics.http_requests.labels(request.method, route, str(status)).inc()
            metrics.http_latency.labels(request.method, route).observe(time.perf_counter() - start)

    return middleware


async def metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    # Read at scrape time: mailboxes change on every control message, and a scrape is rare.
    engine = request.app.get(ENGINE)
    if engine is not None:
        metrics.mailbox_depth.set(engine.mailbox_depth())
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def lag_watcher(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[METRICS].watch_loop_lag(), name="flowstage-loop-lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
