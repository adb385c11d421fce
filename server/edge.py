"""The one middleware every request passes: it times and counts the request (`/metrics`),
takes a rate-limit token when limiting is on, and turns what the handler raised into
problem+json (`server.problems`).

One coroutine instead of three: each aiohttp middleware is another await and frame on every
request, which on the hottest routes (GET a workflow, execute) was a few percent of their
cost. The order is what the three layers had: the rate limit runs inside the error mapping
(a 429 is a problem like any other), and the metrics see the final status.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from flowstage.server.metrics import Metrics
from flowstage.server.problems import problem_response
from flowstage.server.ratelimit import TokenBuckets

__all__ = ["edge_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def edge_middleware(metrics: Metrics, buckets: TokenBuckets | None) -> Middleware:
    """`buckets` None: no rate limit."""
    observe = metrics.hot.observe

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        resource = request.match_info.route.resource
        # The route's pattern, not the URL: ids would make every label unique.
        route = resource.canonical if resource is not None else "unmatched"
        status = 500  # if the request is cancelled (the client went away)
        try:
            try:
                if buckets is not None:
                    buckets.check(request, route)
                response = await handler(request)
            except web.HTTPException as exc:
                status = exc.status  # a redirect is re-raised with its own status
                response = problem_response(request, exc)
            except Exception as error:
                response = problem_response(request, error)
            status = response.status
            return response
        finally:
            observe(request.method, route, status, time.perf_counter() - start)

    return middleware
