"""Every request of a load test goes through `Http`: the lean client's connection pool
(wire.py) for requests, one aiohttp session for event streams, and the server's throttling
honoured. A 429 is counted as throttled (never as an error), waited out for its
`Retry-After` (at most `--max-retry-wait`, plus up to half as much again of jitter so that
throttled workers do not all come back at once) and retried, up to `MAX_THROTTLED_RETRIES`
times per request; only a request still throttled after that is answered 429 to its caller."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import msgspec
from yarl import URL

from flowstage.loadtest.figures import Tally
from flowstage.loadtest.wire import Pool

__all__ = ["CLIENT_ERRORS", "MAX_THROTTLED_RETRIES", "Answer", "Http", "error_kind",
           "retry_after_seconds"]

MAX_THROTTLED_RETRIES = 30
# What a 429 without a readable Retry-After waits.
_DEFAULT_RETRY_AFTER_S = 1.0
CLIENT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, msgspec.DecodeError)


def error_kind(exc: BaseException) -> str:
    return type(exc).__name__


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float:
    """`Retry-After` in seconds: delta-seconds or an HTTP date (RFC 9110); 1 s when absent
    or unreadable, 0 for a date in the past."""
    if value is None:
        return _DEFAULT_RETRY_AFTER_S
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return _DEFAULT_RETRY_AFTER_S
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if seconds == seconds else _DEFAULT_RETRY_AFTER_S  # NaN


class Answer(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    # from sending the last attempt (the one answered) to reading its body
    seconds: float
    etag: str | None = None


class Http:
    """The test's connections to the server, with throttled requests retried and counted."""

    def __init__(self, session: aiohttp.ClientSession, pool: Pool, base: str, tally: Tally,
                 max_retry_wait: float) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self._pool = pool
        self._tally = tally
        self._max_wait = max_retry_wait

    def url(self, path: str) -> URL:
        """An absolute URL of the server (for a stream), parsed once."""
        return URL(self.base + path)

    def encode(self, method: str, path: str, *, data: bytes | None = None,
               headers: dict[str, str] | None = None) -> bytes:
        """The bytes of a request, for `send` (a request sent many times is encoded once)."""
        return self._pool.encode(method, path, headers, data)

    async def _back_off(self, phase: str, retry_after: str | None) -> None:
        wait = min(retry_after_seconds(retry_after), self._max_wait)
        wait *= 1.0 + random.random() / 2
        self._tally.throttle(phase, wait)
        await asyncio.sleep(wait)

    async def send(self, phase: str, request: bytes) -> Answer:
        """Send one encoded request, retrying it while it is throttled; its answer. Raises
        CLIENT_ERRORS for the caller to count."""
        for attempt in range(MAX_THROTTLED_RETRIES + 1):
            sent = time.perf_counter()
            response = await self._pool.send(request)
            if response.status != 429 or attempt == MAX_THROTTLED_RETRIES:
                return Answer(response.status, response.body, time.perf_counter() - sent,
                              response.headers.get("etag"))
            await self._back_off(phase, response.headers.get("retry-after"))
        raise AssertionError("unreachable: the last attempt returns")

    async def request(self, phase: str, method: str, path: str, *, data: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Answer:
        """`send` a request encoded for the occasion."""
        return await self.send(phase, self.encode(method, path, data=data, headers=headers))

    @contextlib.asynccontextmanager
    async def stream(self, phase: str, url: URL | str, headers: dict[str, str],
                     limits: aiohttp.ClientTimeout) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a response to read as it comes (an event stream, with its own time `limits`),
        retrying while it is throttled; the caller checks its status."""
        for attempt in range(MAX_THROTTLED_RETRIES + 1):
            async with self.session.get(url, headers=headers, timeout=limits) as resp:
                if resp.status != 429 or attempt == MAX_THROTTLED_RETRIES:
                    yield resp
                    return
                retry_after = resp.headers.get("Retry-After")
            await self._back_off(phase, retry_after)
