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
        self._buckets: dict[str, list[float]] = {}  # client -> [tokens, last refill]
        # Requests that took their token elsewhere: in a cluster, one forwarded by the process
        # the client reached (server.cluster), which counted it under the client's address.
        self.exempt: Callable[[web.Request], bool] | None = None

    @staticmethod
    def applies_to(route: str) -> bool:
        """Whether requests to `route` (a pattern) take tokens: health checks and test mode's
        controls (`/__flowstage/*`, which a harness must always reach) are free."""
        return route != "/api/health" and not route.startswith("/__flowstage/")

    def take(self, client: str) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is available."""
        now = self._now()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= 100_000:
                self._forget_full(now)
            bucket = self._buckets[client] = [self.burst, now]
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def check(self, request: web.Request) -> None:
        """Take a token for `request`, or raise Throttled. Preflights and exempt requests are
        free; the edge does not call this for routes it does not apply to."""
        if request.method != "OPTIONS" and not (self.exempt is not None and self.exempt(request)):
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
            c: bucket for c, bucket in self._buckets.items()
            if bucket[0] + (now - bucket[1]) * self.rate < self.burst
        }
