"""The two middlewares: every error becomes RFC 9457 problem+json here and nowhere else, and
a per-client token bucket answers 429 with `Retry-After` when a client is too fast."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from flowstage.server.http import MalformedBody
from flowstage.simulation.errors import FlowstageError, Invalid, Throttled
from flowstage.simulation.models import Problem, ProblemError

__all__ = ["TokenBuckets", "problem_middleware", "problem_response", "rate_limit_middleware"]

log = logging.getLogger("flowstage.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()

_HTTP_DETAILS = {
    400: ("bad-request", "The request could not be read."),
    404: ("not-found", "No such resource."),
    405: ("method-not-allowed", "This resource does not support that method."),
    413: ("payload-too-large", "The request body is larger than this server accepts."),
    415: ("unsupported-media-type", "Wrong content type."),
}


def problem_response(
    status: int,
    title: str,
    detail: str,
    slug: str,
    errors: list[ProblemError] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = Problem(type=f"urn:flowstage:problem:{slug}", title=title, status=status,
                   detail=detail, errors=errors)
    return web.Response(
        body=_encoder.encode(body), status=status, headers=headers,
        content_type="application/problem+json",
    )


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    slug, default_detail = _HTTP_DETAILS.get(exc.status, ("http-error", exc.reason))
    text = exc.text or ""
    # aiohttp's default text is "404: Not Found"; prefer a sentence a person can act on.
    detail = default_detail if (not text or text.startswith(f"{exc.status}:")) else text
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{exc.method} is not allowed here; use {', '.join(allowed)}."
    return problem_response(exc.status, exc.reason, detail, slug, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except FlowstageError as exc:
        errors = None
        headers: dict[str, str] = {}
        if isinstance(exc, Invalid):
            errors = [ProblemError(loc=list(e.loc), msg=e.msg) for e in exc.errors]
        if isinstance(exc, Throttled):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return problem_response(exc.status, exc.title, exc.detail, exc.slug, errors, headers)
    except MalformedBody as exc:
        return problem_response(400, "Bad request", str(exc), "malformed-json")
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(500, "Internal error", "A bug in Flowstage; it has been logged.",
                                "internal")


class TokenBuckets:
    """One token bucket per client address: `rate` tokens a second, up to `burst`."""

    def __init__(self, rate: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._now = now
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last refill)

    def take(self, client: str) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is available."""
        now = self._now()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:
                self._forget_full(now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket; dropping those bounds memory.
        self._buckets = {
            c: (t, last) for c, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate < self.burst
        }


def rate_limit_middleware(buckets: TokenBuckets) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" and request.path != "/api/health":
            wait = buckets.take(request.remote or "unknown")
            if wait > 0:
                raise Throttled(
                    f"More than {buckets.rate:g} requests a second from this client; "
                    f"retry in {wait:.2f} s.",
                    retry_after=wait,
                )
        return await handler(request)

    return middleware
