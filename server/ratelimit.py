"""Rate limiting: a per-client token bucket; a client over its rate gets 429 with
`Retry-After` (`server.edge` checks every request; `server.problems` writes the answer)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from flowstage.server.errors import Throttled

__all__ = ["TokenBuckets"]


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

    def check(self, request: web.Request, route: str) -> None:
        """Take a token for `request`, matched to `route` (its pattern), or raise Throttled.
        Preflights and health checks are free. The route, not `request.path`: the edge has
        it already, where the path would be percent-decoded for this alone."""
        if route != "/api/health" and request.method != "OPTIONS":
            wait = self.take(request.remote or "unknown")
            if wait > 0:
                raise Throttled(
                    f"More than {self.rate:g} requests a second from this client; "
                    f"retry in {wait:.2f} s.",
                    retry_after=wait,
                )

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket; dropping those bounds memory.
        self._buckets = {
            c: (t, last) for c, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate < self.burst
        }
