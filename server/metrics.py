"""Prometheus metrics (`GET /metrics`): runs, node transitions, events emitted and delivered,
SSE subscribers, mailbox depth, event-loop lag, HTTP requests by route and status, and the
process's own CPU and memory.

Each app has its own registry, so several apps in one process (tests) never share counts.
Run and node figures are counted from the engine's event stream, so they agree with the
events a client sees. This module knows Prometheus, not the app: `GET /metrics` is served by
`server.routes.meta`, which reads the engine's mailbox depth at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator
from itertools import accumulate

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST  # of what `Metrics.render` returns

_TERMINAL = {"run.completed": "completed", "run.failed": "failed", "run.stopped": "stopped"}


_NODE_STATES = {"node.queued": "queued", "node.started": "started", "node.completed": "completed",
                "node.failed": "failed", "node.skipped": "skipped", "node.stopped": "stopped"}
_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _HotCounts:
    """Counts on the hot paths (every run event, every HTTP request) kept as plain integers
    and handed to Prometheus only when /metrics is scraped: a prometheus_client counter takes
    a lock on every increment, which cost a fifth of the throughput of the cheapest request."""

    def __init__(self) -> None:
        self.events = 0
        self.started = 0
        self.finished = dict.fromkeys(_TERMINAL.values(), 0)
        self.nodes = dict.fromkeys(_NODE_STATES.values(), 0)
        self.routes: dict[str, RouteCounts] = {}

    def route(self, route: str) -> RouteCounts:
        """The counts of one route pattern (the edge takes them once per route it wraps)."""
        counts = self.routes.get(route)
        if counts is None:
            counts = self.routes[route] = RouteCounts()
        return counts

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("flowstage_runs_started", "Runs started", value=self.started)
        finished = CounterMetricFamily("flowstage_runs_finished", "Runs finished, by final state",
                                       labels=["state"])
        for state, count in self.finished.items():
            finished.add_metric([state], count)
        yield finished
        yield GaugeMetricFamily("flowstage_runs_active", "Runs running or paused now",
                                value=self.started - sum(self.finished.values()))
        nodes = CounterMetricFamily("flowstage_node_transitions", "Node state changes, by the state entered",
                                    labels=["state"])
        for state, count in self.nodes.items():
            nodes.add_metric([state], count)
        yield nodes
        yield CounterMetricFamily("flowstage_events_emitted", "Run events emitted", value=self.events)
        requests = CounterMetricFamily("flowstage_http_requests", "HTTP requests, by route and status",
                                       labels=["method", "route", "status"])
        for route, counts in self.routes.items():
            for (method, status), count in counts.statuses.items():
                requests.add_metric([method, route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily("flowstage_http_request_duration_seconds", "Time to answer, by route",
                                        labels=["method", "route"])
        for route, counts in self.routes.items():
            for method, (times, total) in counts.latency.items():
                cumulative = list(accumulate(times))
                buckets = [(repr(bound), cumulative[i]) for i, bound in enumerate(_HTTP_BUCKETS)]
                buckets.append(("+Inf", cumulative[-1]))
                latency.add_metric([method, route], buckets, total[0])
        yield latency


class RouteCounts:
    """One route's requests by method and status, and its latency histogram by method."""

    __slots__ = ("latency", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[tuple[str, int], int] = {}
        # method -> [count per bucket ..., count above the last bucket], [total seconds]
        self.latency: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, method: str, status: int, seconds: float) -> None:
        key = (method, status)
        statuses = self.statuses
        statuses[key] = statuses.get(key, 0) + 1
        entry = self.latency.get(method)
        if entry is None:
            entry = self.latency[method] = ([0] * (len(_HTTP_BUCKETS) + 1), [0.0])
        entry[0][bisect_left(_HTTP_BUCKETS, seconds)] += 1
        entry[1][0] += seconds


class Metrics:
    """One app's metrics: its registry, the hot counts, and the Prometheus objects beside them."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.hot = _HotCounts()
        r.register(self.hot)  # a Collector: it has collect()
        # The process's CPU seconds, memory and open files (Prometheus's standard `process_*`,
        # read from /proc at scrape time): what a load tester compares its own CPU with.
        ProcessCollector(registry=r)
        self.events_delivered = Counter("flowstage_events_delivered",
                                        "Run events written to SSE subscribers", ["stream"], registry=r)
        self.sse_subscribers = Gauge("flowstage_sse_subscribers", "Open SSE streams", ["stream"], registry=r)
        self.mailbox_depth = Gauge("flowstage_mailbox_depth",
                                   "Control messages waiting in run actors' mailboxes", registry=r)
        self.loop_lag = Histogram(
            "flowstage_event_loop_lag_seconds", "How late a 100 ms timer fires",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=r)

    def on_event(self, run_id: str, workflow_id: str, seq: int, name: str, data: bytes) -> None:
        """An engine listener: called once for every event of every run."""
        hot = self.hot
        hot.events += 1
        state = _NODE_STATES.get(name)
        if state is not None:
            hot.nodes[state] += 1
        elif name == "run.started":
            hot.started += 1
        else:
            final = _TERMINAL.get(name)
            if final is not None:
                hot.finished[final] += 1

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """While the app runs, time how late a 100 ms timer fires: the event loop's lag."""
        task = asyncio.create_task(self._watch_loop_lag(0.1), name="flowstage-loop-lag")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _watch_loop_lag(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self.loop_lag.observe(max(0.0, loop.time() - start - interval))

    def render(self) -> bytes:
        return generate_latest(self.registry)
