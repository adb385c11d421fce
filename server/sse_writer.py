"""Writing one SSE stream: prepare the response, write the frames of its feed as they come,
one write per batch, and end it.

A subscriber holds a cursor, not a queue: a write is the frames from its cursor on, at most
`_MAX_WRITE_EVENTS` of them. When it has caught up it waits on its own future, which the hub
resolves when events arrive (a future shared by all would be cancelled with the first handler
aiohttp cancels).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from flowstage.server.sse_feeds import EventRing
from flowstage.server.sse_subscribers import Subscriber, Subscribers
from flowstage.server.sse_wire import SseResponse, frame
from flowstage.server.store import Store

__all__ = ["SseWriter"]

# One write carries at most this many frames: with aiohttp's 64 KiB of transport buffer
# (beyond which a write waits for the socket to drain) that bounds what a subscriber holds.
_MAX_WRITE_EVENTS = 1024


class SseWriter:
    """Serves subscribers' streams from the ring, a run's feed, or the store."""

    def __init__(self, ring: EventRing, subscribers: Subscribers, store: Store, *,
                 ping_seconds: float, write_timeout: float) -> None:
        self._ring = ring
        self._subscribers = subscribers
        self._store = store
        self._ping = ping_seconds
        self._write_timeout = write_timeout

    async def serve(self, sub: Subscriber) -> web.StreamResponse:
        """Answer the subscriber's request with its stream, until the stream ends."""
        request = sub.request
        resp = SseResponse(sub.close, sep="\n", ping_interval=self._ping,
                           send_timeout=self._write_timeout, allow_all_methods=True)
        sub.response = resp
        await resp.prepare(request)
        if request.method == "HEAD":  # the headers only
            async with resp:
                return resp
        self._subscribers.add(sub)
        try:
            async with resp:
                if sub.feed is None and sub.run_id is not None:
                    await self._replay_stored(sub, sub.run_id)
                else:
                    await self._pump(sub)
        finally:
            self._subscribers.remove(sub)
        return resp

    async def _pump(self, sub: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        ring = self._ring
        collect = ring.collect
        entries = ring.entries  # the ring's one list, for its head: first + len(entries) - 1
        limit = _MAX_WRITE_EVENTS
        feed = sub.feed
        while not sub.closed:
            if feed is not None:
                chunk, count = feed.collect(sub.cursor, limit)
                sub.cursor += count
            else:
                chunk, count, more = collect(sub, limit)
                if sub.pending:
                    chunk, sub.pending = sub.pending + chunk, b""
                if not chunk and more:
                    continue  # a filter matched nothing in this stretch; scan on
            if chunk and not await self._write(loop, sub, chunk, count):
                return
            # Checked after the write: a flush may have come and gone while it waited.
            if feed is not None:
                if sub.cursor < feed.log.last_seq:
                    continue
                if feed.log.finished:
                    return  # the terminal event is out
            elif sub.cursor < ring.first + len(entries) - 1:  # ring.head, once per write
                continue
            sub.live = True
            future = sub.future = loop.create_future()
            try:
                await future
            finally:
                sub.future = None

    async def _replay_stored(self, sub: Subscriber, run_id: str) -> None:
        """A run that left memory: everything is in the store, and nothing more will come."""
        loop = asyncio.get_running_loop()
        while not sub.closed:
            rows = await self._store.runs.events_after(run_id, sub.cursor, _MAX_WRITE_EVENTS)
            if not rows:
                return
            chunk = b"".join([frame(seq, name, data) for seq, name, data in rows])
            sub.cursor = rows[-1][0]
            if not await self._write(loop, sub, chunk, len(rows)):
                return

    async def _write(self, loop: asyncio.AbstractEventLoop, sub: Subscriber, chunk: bytes, count: int) -> bool:
        assert sub.response is not None
        sub.writing_since = loop.time()
        sub.in_flight = count
        try:
            await sub.response.write(chunk)
        except ConnectionError:  # the client went away, or was cut off mid-write
            sub.closed = True
            return False
        finally:
            sub.writing_since = 0.0
            sub.in_flight = 0
        sub.unreported += count
        return not sub.closed
