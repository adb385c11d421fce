"""The open SSE streams: one `Subscriber` per stream, and the `Subscribers` that keep them
indexed (by run, by workflow, unfiltered), wake them when events arrive, count them for
Prometheus, and cut off the ones that cannot keep up.

Nothing a subscriber does ever waits the engine. A subscriber whose write does not complete
within `sse_write_timeout_seconds`, or that falls more than `sse_buffer_events` behind once it
was live, is cut off (its transport aborted) by a periodic sweep, so a write costs no timer;
it resumes with `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from aiohttp import web

from flowstage.server.metrics import Metrics
from flowstage.server.sse_feeds import EventRing, RunEvents, RunFeed
from flowstage.server.sse_wire import SseResponse

__all__ = ["StreamKind", "Subscriber", "Subscribers"]

log = logging.getLogger("flowstage.sse")

StreamKind = Literal["run", "workflow", "all"]
_KINDS: tuple[StreamKind, ...] = ("run", "workflow", "all")


class Subscriber:
    """One open stream: where it is, what it wants, and what its write is doing."""

    __slots__ = ("closed", "cursor", "feed", "future", "in_flight", "kind", "live", "pending", "request",
                 "response", "run_id", "runs", "seq_ids", "unreported", "workflows", "writing_since")

    def __init__(self, kind: StreamKind, request: web.Request, cursor: int) -> None:
        self.kind = kind
        self.request = request
        self.response: SseResponse | None = None
        self.cursor = cursor  # the last id delivered (a run seq, or a hub position)
        self.future: asyncio.Future[None] | None = None  # set while waiting for events
        self.closed = False
        self.live = False  # has caught up with the head once (lag counts from then on)
        self.writing_since = 0.0  # loop time a write started; 0 when not writing
        # Events in the write under way. The cursor moves past them when they are collected,
        # before the client has them: a write stuck with a thousand events is that far behind.
        self.in_flight = 0
        # Events written and not yet added to the Prometheus counter: `Subscribers` adds them
        # in its sweep and when the stream ends. The counter's lock, once per write per
        # subscriber, showed in profiles of 1,000 subscribers.
        self.unreported = 0
        self.pending = b""  # a frame to send before anything else (a gap notice)
        self.feed: RunFeed | None = None  # run streams of runs in memory
        self.run_id: str | None = None  # run streams
        self.runs: frozenset[str] | None = None  # hub streams: filters (None = no filter)
        self.workflows: frozenset[str] | None = None
        self.seq_ids = False  # hub streams: ids are run seqs (workflow stream), not positions

    def wake(self) -> None:
        """Let the stream's loop look for new events, if it is waiting for them."""
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)

    def close(self) -> None:
        """End the stream: its loop stops at its next look."""
        self.closed = True
        self.wake()


def _wake_keyed(subscribers: dict[str, set[Subscriber]], keys: set[str]) -> None:
    """Wake the subscribers of each key (a run id or a workflow id)."""
    for key in keys:
        for sub in subscribers.get(key, ()):
            sub.wake()


class Subscribers:
    """Every open stream of one hub, indexed for waking, counted for Prometheus."""

    def __init__(self, metrics: Metrics, write_timeout: float, max_lag: int) -> None:
        self._write_timeout = write_timeout
        self._max_lag = max_lag
        self._subs: set[Subscriber] = set()
        self._hub_subs: set[Subscriber] = set()  # streams that read the ring
        self._all: set[Subscriber] = set()  # ... with no filter
        self._by_run: dict[str, set[Subscriber]] = {}
        self._by_workflow: dict[str, set[Subscriber]] = {}
        self._run_feeds: dict[str, RunFeed] = {}
        self._idle: asyncio.Event | None = None
        self.cut_off = 0  # subscribers cut off so far (slow or stalled)
        self._gauges = {k: metrics.sse_subscribers.labels(k) for k in _KINDS}
        self._delivered = {k: metrics.events_delivered.labels(k) for k in _KINDS}

    def count(self) -> int:
        return len(self._subs)

    def waiting(self) -> int:
        """Subscribers caught up with their events and waiting for more."""
        return sum(1 for sub in self._subs if sub.future is not None)

    def writing(self) -> bool:
        """Whether a write to some subscriber is under way."""
        return any(sub.writing_since for sub in self._subs)

    def feed_for(self, run_id: str, event_log: RunEvents) -> RunFeed:
        """The feed a new stream of a run in memory reads: the one its other streams share."""
        feed = self._run_feeds.get(run_id)
        if feed is None or feed.log is not event_log:
            feed = self._run_feeds[run_id] = RunFeed(event_log)
        return feed

    def add(self, sub: Subscriber) -> None:
        self._subs.add(sub)
        self._gauges[sub.kind].inc()
        if sub.feed is not None:
            sub.feed.users += 1
        if sub.run_id is not None:
            if sub.feed is not None:
                self._by_run.setdefault(sub.run_id, set()).add(sub)
            return
        self._hub_subs.add(sub)
        if sub.runs is None and sub.workflows is None:
            self._all.add(sub)
            return
        for run_id in sub.runs or ():
            self._by_run.setdefault(run_id, set()).add(sub)
        for workflow_id in sub.workflows or ():
            self._by_workflow.setdefault(workflow_id, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        if sub not in self._subs:
            return
        self._subs.discard(sub)
        self._hub_subs.discard(sub)
        self._all.discard(sub)
        self._gauges[sub.kind].dec()
        sub.closed = True
        keys = [(self._by_run, r) for r in (sub.runs or ())]
        keys += [(self._by_workflow, w) for w in (sub.workflows or ())]
        if sub.feed is not None and sub.run_id is not None:
            keys.append((self._by_run, sub.run_id))
            sub.feed.users -= 1
            if sub.feed.users == 0 and self._run_feeds.get(sub.run_id) is sub.feed:
                del self._run_feeds[sub.run_id]
        for index, key in keys:
            subs = index.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del index[key]
        sub.feed = None
        sub.response = None
        if sub.unreported:
            self._delivered[sub.kind].inc(sub.unreported)
            sub.unreported = 0
        if not self._subs and self._idle is not None:
            self._idle.set()

    def after_trim(self, floor: int, notified: int) -> None:
        """The ring dropped every event up to position `floor`. A waiting subscriber had
        nothing up to `notified` (it would have been woken): move it on, so it is not told of
        a gap in events that were never its own."""
        for sub in self._hub_subs:
            if sub.cursor < floor and sub.future is not None and not sub.future.done():
                sub.cursor = max(sub.cursor, notified)

    def wake(self, ring: EventRing) -> None:
        """Wake the subscribers of the events the ring got since the last wake."""
        start = ring.mark_notified()
        for sub in self._all:
            sub.wake()
        by_run, by_workflow = self._by_run, self._by_workflow
        if not (by_run or by_workflow):
            return
        if start < 0:  # events dropped before anyone was woken for them: wake everyone
            for subs in (*by_run.values(), *by_workflow.values()):
                for sub in subs:
                    sub.wake()
            return
        entries = ring.entries
        batch = entries if start == 0 else entries[start:]
        if by_run:
            _wake_keyed(by_run, {entry[0] for entry in batch})
        if by_workflow:
            _wake_keyed(by_workflow, {entry[1] for entry in batch})

    def wake_runs(self, run_ids: set[str]) -> None:
        """Wake the streams of these runs (their events reached their logs, not the ring)."""
        if self._by_run:
            _wake_keyed(self._by_run, run_ids)

    def sweep(self, now: float, head: int) -> None:
        """Cut off subscribers stuck in a write since before `now` - the write timeout, or
        live ones that fell too far behind the ring's `head` (or their run's last event)."""
        self._report()
        for sub in list(self._subs):
            if sub.closed:
                continue
            if sub.writing_since and now - sub.writing_since > self._write_timeout:
                self._cut(sub, f"no write progress for {self._write_timeout:g} s")
            elif sub.live and sub.future is None and self._lag(sub, head) > self._max_lag:
                self._cut(sub, f"more than {self._max_lag} events behind")

    def _cut(self, sub: Subscriber, why: str) -> None:
        self.cut_off += 1
        log.info("SSE %s stream cut off (%s) at id %d", sub.kind, why, sub.cursor)
        transport = sub.request.transport
        if transport is not None:
            transport.abort()
        sub.close()

    @staticmethod
    def _lag(sub: Subscriber, head: int) -> int:
        """Events the client has not received: those not yet collected, and those collected
        into a write that has not completed."""
        if sub.feed is not None:
            return sub.feed.log.last_seq - sub.cursor + sub.in_flight
        if sub.run_id is not None:
            return 0
        return head - sub.cursor + sub.in_flight

    def _report(self) -> None:
        """Add what was written since the last report to the Prometheus counters."""
        written = dict.fromkeys(_KINDS, 0)
        for sub in self._subs:
            if sub.unreported:
                written[sub.kind] += sub.unreported
                sub.unreported = 0
        for kind, count in written.items():
            if count:
                self._delivered[kind].inc(count)

    def stop_all(self) -> None:
        """End every stream (test mode's reset)."""
        for sub in list(self._subs):
            if sub.response is not None and sub.response.prepared:
                sub.response.stop_streaming()
            sub.close()
        self._run_feeds.clear()

    async def end_all(self, grace: float) -> None:
        """Stop every stream, aborting any stuck in a write, and wait up to `grace` seconds
        for them to end."""
        if not self._subs:
            return
        self._idle = asyncio.Event()
        for sub in list(self._subs):
            if sub.writing_since:
                transport = sub.request.transport
                if transport is not None:
                    transport.abort()
            if sub.response is not None and sub.response.prepared:
                sub.response.stop_streaming()
            sub.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
