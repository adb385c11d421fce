"""The layer every request passes: it times and counts the request (`/metrics`), takes a
rate-limit token when limiting is on, and turns what the handler raised into problem+json
(`server.problems`).

It wraps each route's handler where the route is added (`Edge.add`), not as an aiohttp
middleware: a middleware costs every request aiohttp's per-request chain (a cached lookup,
a partial, and a frame of its own that sets the request's current app), which was 6% of
the throughput of GET /api/workflows/{id}. Wrapping also knows each route's pattern, the
metrics label, once instead of per request.

Requests no route takes still get problem+json and are counted: `Edge.seal`, called once
every route is added, gives each resource a last route for any other method (405, with
`Allow`) and the router a last resource for any other path (404, labelled `unmatched`).
The order of the layers is what it was as middlewares: the rate limit runs inside the error
mapping (a 429 is a problem like any other), and the metrics see the final status.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from flowstage.server.metrics import Metrics
from flowstage.server.problems import problem_response
from flowstage.server.ratelimit import TokenBuckets

__all__ = ["UNMATCHED", "Edge", "Handler", "Layer"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Wraps one route's handler, given the route's pattern (e.g. the cluster's forwarding).
Layer = Callable[[Handler, str], Handler]

UNMATCHED = "unmatched"  # the metrics label of a request no route takes
_ANY_PATH = "/{tail:.*}"


class Edge:
    """`buckets` None: no rate limit. `inner`, if set before routes are added, wraps each
    handler inside the edge (its errors are problems too, and timed)."""

    def __init__(self, metrics: Metrics, buckets: TokenBuckets | None) -> None:
        self._metrics = metrics
        self._buckets = buckets
        self.inner: Layer | None = None
        self._sealed = False

    def add(self, resource: web.Resource, method: str, handler: Handler) -> web.AbstractRoute:
        """Add `method` to `resource`, served by `handler` behind the edge."""
        if self.inner is not None:
            handler = self.inner(handler, resource.canonical)
        return resource.add_route(method, self.wrap(handler, resource.canonical))

    def add_get(self, router: web.UrlDispatcher, path: str, handler: Handler) -> None:
        """GET and HEAD of `path` (HEAD answers like GET without a body)."""
        resource = router.add_resource(path)
        self.add(resource, hdrs.METH_GET, handler)
        self.add(resource, hdrs.METH_HEAD, handler)

    def add_post(self, router: web.UrlDispatcher, path: str, handler: Handler) -> None:
        self.add(router.add_resource(path), hdrs.METH_POST, handler)

    def seal(self, router: web.UrlDispatcher) -> None:
        """After the last route: 405 for another method of a known path, 404 for any other
        path, both as problems and counted. Once; calling it again changes nothing."""
        if self._sealed:
            return
        self._sealed = True
        for resource in router.resources():
            methods = {route.method for route in resource}
            if isinstance(resource, web.Resource) and hdrs.METH_ANY not in methods:
                resource.add_route(hdrs.METH_ANY, self.wrap(_not_allowed(methods), resource.canonical))
        router.add_route(hdrs.METH_ANY, _ANY_PATH, self.wrap(_not_found, UNMATCHED))

    def wrap(self, handler: Handler, route: str) -> Handler:
        """`handler` behind the edge; `route` is its pattern (the metrics label)."""
        observe = self._metrics.hot.route(route).observe
        buckets = self._buckets if self._buckets is not None and self._buckets.applies_to(route) else None

        async def edge(request: web.Request) -> web.StreamResponse:
            start = time.perf_counter()
            status = 500  # if the request is cancelled (the client went away)
            try:
                try:
                    if buckets is not None:
                        buckets.check(request)
                    response = await handler(request)
                except web.HTTPException as exc:
                    status = exc.status  # a redirect is re-raised with its own status
                    response = problem_response(request, exc)
                except Exception as error:
                    response = problem_response(request, error)
                status = response.status
                return response
            finally:
                observe(request.method, status, time.perf_counter() - start)

        return edge


def _not_allowed(methods: set[str]) -> Handler:
    allowed = frozenset(methods)

    async def not_allowed(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, allowed)

    return not_allowed


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()
