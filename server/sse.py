"""Server-Sent Events: the hub every SSE stream reads from, and the streams themselves.

Three streams (docs/sse.md has the client's view):
- `run`: one run, `id:` = the run's `seq`; resumable; replays from the engine's in-memory log,
  or from the store once the run left memory; ends after the run's terminal event.
- `workflow`: every event of every run of one workflow emitted while the stream is open,
  `id:` = that run's `seq` (so `Last-Event-ID` cannot resume it: ids of different runs overlap).
- `all`: every event (optionally filtered by run or workflow), `id:` = the hub's global
  position; resumable from the hub's ring, with a `stream.gap` event when that is impossible.

How the cost stays flat in the number of subscribers:
- The engine encodes each event's JSON once. The hub (an engine listener) appends a tuple
  to a bounded ring and does nothing else on the engine's path. Each SSE frame
  (`id: n\\nevent: name\\ndata: json\\n\\n`) is built once per id scheme, when the first
  subscriber needs it, and shared: frames of the ring (position ids, and run-seq ids built on
  demand) and, per run with subscribers, the run's frames. Subscribers hold a cursor, not a
  queue; a write is `b"".join(frames[cursor:end])`, and consecutive subscribers at the same
  cursor share that join too.
- One loop timer per `sse_batch_ms` wakes subscribers, each through its own future (a future
  shared by all would be cancelled with the first handler aiohttp cancels), so a burst costs
  one write per subscriber, not one per event.
- A subscriber whose write does not complete within `sse_write_timeout_seconds`, or that falls
  more than `sse_buffer_events` behind once it was live, is cut off (its transport aborted);
  it resumes with `Last-Event-ID`. Nothing a subscriber does ever waits the engine: the run
  appends and moves on. A periodic sweep does those checks, so a write costs no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from itertools import islice
from typing import Any, Literal

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp_sse import EventSourceResponse

from flowstage.actors.engine import Engine
from flowstage.actors.eventlog import EVENT_NAMES, EventLog
from flowstage.config import Settings
from flowstage.server.metrics import Metrics
from flowstage.server.store import Store
from flowstage.simulation.errors import NotFound, Unavailable

__all__ = ["EventHub", "StreamGap", "StreamKind", "frame", "parse_event_id", "requested_event_id"]

log = logging.getLogger("flowstage.sse")

StreamKind = Literal["run", "workflow", "all"]
# (run_id, workflow_id, seq, name, data): one event as the engine's listeners receive it.
Entry = tuple[str, str, int, str, bytes]

_NAMES: dict[str, bytes] = {name: name.encode() for name in EVENT_NAMES}
# One write carries at most this many frames: with aiohttp's 64 KiB of transport buffer
# (beyond which a write waits for the socket to drain) that bounds what a subscriber holds.
_MAX_WRITE_EVENTS = 1024
# A filtered subscriber scans at most this many ring entries before it yields to the loop.
_MAX_SCAN = 8192
# An id with more digits than this is simply "greater than anything sent".
_MAX_ID_DIGITS = 18
_HUGE_ID = 10**_MAX_ID_DIGITS
_EMPTY: frozenset[str] = frozenset()
# How long shutdown waits for streams to end (they end in a few loop turns).
_SHUTDOWN_GRACE = 1.0


class StreamGap(msgspec.Struct, frozen=True, rename="camel", tag="stream.gap", tag_field="event"):
    """Sent on `/api/events` when events the client asked for cannot be replayed.

    `reason` is `evicted` (older than the hub's ring), `unknown` (newer than anything this
    server sent: typically an id from before a restart) or, on a workflow stream reconnecting
    with an id, `not-resumable`. Events after `lastEventId` and before
    `resumedAt` are lost; the next event has position `resumedAt`. On a workflow stream (whose
    ids are run seqs) both positions are null."""

    reason: str
    last_event_id: int | None
    resumed_at: int | None


_gap_encoder = msgspec.json.Encoder()


def frame(event_id: int, name: str, data: bytes) -> bytes:
    """One SSE message. `data` is one line of JSON (msgspec never writes a raw newline)."""
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (event_id, _NAMES.get(name) or name.encode(), data)


def parse_event_id(raw: str | None) -> int | None:
    """A non-negative decimal id, or None if absent or malformed (treated as not sent)."""
    if raw is None:
        return None
    text = raw.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= _MAX_ID_DIGITS else _HUGE_ID


def requested_event_id(request: web.Request) -> int | None:
    """`Last-Event-ID` (what a reconnecting browser sends) wins over `?lastEventId=` (the URL
    keeps the first connection's value); a malformed value counts as absent."""
    from_header = parse_event_id(request.headers.get("Last-Event-ID"))
    if from_header is not None:
        return from_header
    return parse_event_id(request.query.get("lastEventId"))


class _RunFeed:
    """A live run's frames, built once from its event log and shared by its subscribers."""

    __slots__ = ("chunk", "frames", "key", "log", "users")

    def __init__(self, event_log: EventLog) -> None:
        self.log = event_log
        self.frames: list[bytes] = []
        self.users = 0
        self.key = (0, 0)
        self.chunk = b""

    def collect(self, cursor: int, limit: int) -> tuple[bytes, int]:
        last = self.log.last_seq
        if cursor >= last:
            return b"", 0
        frames = self.frames
        if len(frames) < last:
            frames.extend([frame(seq, name, data) for seq, name, data in self.log.events_after(len(frames))])
        end = min(last, cursor + limit)
        if self.key != (cursor, end):
            self.key = (cursor, end)
            self.chunk = b"".join(frames[cursor:end])
        return self.chunk, end - cursor


class _Subscriber:
    __slots__ = ("closed", "cursor", "feed", "future", "in_flight", "kind", "live", "pending", "request",
                 "response", "run_id", "runs", "seq_ids", "workflows", "writing_since")

    def __init__(self, kind: StreamKind, request: web.Request, cursor: int) -> None:
        self.kind = kind
        self.request = request
        self.response: EventSourceResponse | None = None
        self.cursor = cursor  # the last id delivered (a run seq, or a hub position)
        self.future: asyncio.Future[None] | None = None  # set while waiting for events
        self.closed = False
        self.live = False  # has caught up with the head once (lag counts from then on)
        self.writing_since = 0.0  # loop time a write started; 0 when not writing
        # Events in the write under way. The cursor moves past them when they are collected,
        # before the client has them: a write stuck with a thousand events is that far behind.
        self.in_flight = 0
        self.pending = b""  # a frame to send before anything else (a gap notice)
        self.feed: _RunFeed | None = None  # run streams of runs in memory
        self.run_id: str | None = None  # run streams
        self.runs: frozenset[str] | None = None  # hub streams: filters (None = no filter)
        self.workflows: frozenset[str] | None = None
        self.seq_ids = False  # hub streams: ids are run seqs (workflow stream), not positions


def _wake(sub: _Subscriber) -> None:
    future = sub.future
    if future is not None and not future.done():
        future.set_result(None)


def _wake_keyed(subscribers: dict[str, set[_Subscriber]], keys: set[str]) -> None:
    """Wake the subscribers of each key (a run id or a workflow id)."""
    for key in keys:
        for sub in subscribers.get(key, ()):
            _wake(sub)


class _Stream(EventSourceResponse):
    """aiohttp-sse's response, telling the hub when its ping task ends: the client went away
    (a ping failed) or the stream was stopped."""

    def __init__(self, on_end: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_end = on_end

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        first = not self.prepared
        writer = await super().prepare(request)
        if first and self._ping_task is not None:
            self._ping_task.add_done_callback(lambda _task: self._on_end())
        return writer


class EventHub:
    """Engine listener, ring of recent events, and owner of every open SSE stream."""

    def __init__(self, settings: Settings, engine: Engine, store: Store, metrics: Metrics) -> None:
        self._engine = engine
        self._store = store
        self._ping = settings.sse_ping_seconds
        self._batch = settings.sse_batch_ms / 1000
        self._max_lag = settings.sse_buffer_events
        self._per_write = _MAX_WRITE_EVENTS
        self._write_timeout = settings.sse_write_timeout_seconds
        self._ring_size = settings.event_ring_size
        # Trim in steps of an eighth of the ring: `del list[:n]` moves the rest.
        self._trim_at = settings.event_ring_size + settings.event_ring_size // 8
        self._entries: list[Entry] = []
        self._first = 1  # the position of _entries[0]; positions start at 1
        self._notified = 0  # subscribers were woken for every position up to this
        self._frames_pos: list[bytes] = []  # frames with position ids, built from the front
        self._frames_seq: list[bytes | None] = []  # frames with run-seq ids, built on demand
        self._chunk_key = (0, 0)
        self._chunk = b""
        self._subs: set[_Subscriber] = set()
        self._hub_subs: set[_Subscriber] = set()
        self._all: set[_Subscriber] = set()
        self._by_run: dict[str, set[_Subscriber]] = {}
        self._by_workflow: dict[str, set[_Subscriber]] = {}
        self._run_feeds: dict[str, _RunFeed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._idle: asyncio.Event | None = None
        self._closing = False
        self.cut_off = 0  # subscribers cut off so far (slow or stalled)
        self._gauges = {k: metrics.sse_subscribers.labels(k) for k in ("run", "workflow", "all")}
        self._delivered = {k: metrics.events_delivered.labels(k) for k in ("run", "workflow", "all")}
        self._unreported = dict.fromkeys(self._delivered, 0)

    # --- the engine's side ------------------------------------------------------------------

    def on_event(self, run_id: str, workflow_id: str, seq: int, name: str, data: bytes) -> None:
        """Engine listener: append, and make sure a wake-up is scheduled. Nothing else."""
        entries = self._entries
        entries.append((run_id, workflow_id, seq, name, data))
        if len(entries) > self._trim_at:
            self._trim()
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_later(self._batch, self._flush)

    @property
    def head(self) -> int:
        """The position of the newest event (0 before the first)."""
        return self._first + len(self._entries) - 1

    def _trim(self) -> None:
        drop = len(self._entries) - self._ring_size
        if drop <= 0:
            return
        del self._entries[:drop]
        del self._frames_pos[:drop]
        del self._frames_seq[:drop]
        self._first += drop
        floor = self._first - 1
        for sub in self._hub_subs:
            # A waiting filtered subscriber had nothing up to _notified (it would have been
            # woken); move it on, so it is not told of a gap in events that were never its own.
            if sub.cursor < floor and sub.future is not None and not sub.future.done():
                sub.cursor = max(sub.cursor, self._notified)

    def _flush(self) -> None:
        self._flush_handle = None
        entries = self._entries
        start = self._notified + 1 - self._first
        self._notified = self.head
        for sub in self._all:
            _wake(sub)
        if not (self._by_run or self._by_workflow):
            return
        if start < 0:  # events trimmed before anyone was woken for them: wake everyone
            for subs in (*self._by_run.values(), *self._by_workflow.values()):
                for sub in subs:
                    _wake(sub)
            return
        batch = entries if start == 0 else entries[start:]
        if self._by_run:
            _wake_keyed(self._by_run, {entry[0] for entry in batch})
        if self._by_workflow:
            _wake_keyed(self._by_workflow, {entry[1] for entry in batch})

    # --- streams ----------------------------------------------------------------------------

    async def run_stream(self, request: web.Request, run_id: str) -> web.StreamResponse:
        after = requested_event_id(request)
        self._check_open()
        event_log = self._engine.events(run_id)
        # The log object stays readable after its run leaves memory, so there is no race
        # between this look-up and the reads. A run not in memory was persisted whole before
        # it was evicted (or belongs to an earlier process), so the store has all of it.
        if event_log is None:
            if await self._store.runs.get(run_id) is None:
                raise NotFound(f"No run with id {run_id!r}.")
            last = await self._store.runs.last_seq(run_id)
            # A client ahead of the store saw events a crashed process never saved; the run
            # was ended at the next start with events numbered from the store's end. It still
            # gets that terminal event, so its stream ends the way every run stream does.
            cursor = last - 1 if after is not None and after > last else after or 0
            sub = _Subscriber("run", request, cursor)
            sub.run_id = run_id
            return await self._serve(sub)
        # An id beyond the last event continues from the end (a finished run: closes at once).
        sub = _Subscriber("run", request, min(after or 0, event_log.last_seq))
        sub.run_id = run_id
        feed = self._run_feeds.get(run_id)
        if feed is None or feed.log is not event_log:
            feed = self._run_feeds[run_id] = _RunFeed(event_log)
        sub.feed = feed
        return await self._serve(sub)

    async def workflow_stream(self, request: web.Request, workflow_id: str) -> web.StreamResponse:
        self._check_open()
        await self._store.workflows.get(workflow_id)  # NotFound
        sub = _Subscriber("workflow", request, self.head)
        sub.workflows = frozenset((workflow_id,))
        sub.seq_ids = True
        if requested_event_id(request) is not None:
            # A reconnect: this stream cannot replay (its ids are per-run seqs), so say that
            # events may have been missed instead of resuming silently.
            sub.pending = self._gap_frame(sub, 0, self.head + 1, "not-resumable")
        return await self._serve(sub)

    async def all_stream(self, request: web.Request, run_ids: Iterable[str],
                         workflow_ids: Iterable[str]) -> web.StreamResponse:
        after = requested_event_id(request)
        self._check_open()
        runs, workflows = frozenset(run_ids), frozenset(workflow_ids)
        head = self.head
        # An id older than the ring is kept: the first collect reports the gap.
        cursor = head if after is None or after > head else after
        sub = _Subscriber("all", request, cursor)
        if after is not None and after > head:
            sub.pending = self._gap_frame(sub, after, head + 1, "unknown")
        if runs or workflows:
            sub.runs, sub.workflows = runs, workflows
        return await self._serve(sub)

    def _check_open(self) -> None:
        if self._closing or self._loop is None:
            raise Unavailable("The server is shutting down.")

    async def _serve(self, sub: _Subscriber) -> web.StreamResponse:
        request = sub.request
        resp = _Stream(lambda: self._close(sub), sep="\n", ping_interval=self._ping,
                       send_timeout=self._write_timeout, allow_all_methods=True)
        sub.response = resp
        await resp.prepare(request)
        if request.method == "HEAD":  # the headers only
            async with resp:
                return resp
        self._add(sub)
        try:
            async with resp:
                if sub.feed is None and sub.run_id is not None:
                    await self._replay_stored(sub, sub.run_id)
                else:
                    await self._pump(sub)
        finally:
            self._remove(sub)
        return resp

    async def _pump(self, sub: _Subscriber) -> None:
        loop = asyncio.get_running_loop()
        feed = sub.feed
        while not sub.closed:
            if feed is not None:
                chunk, count = feed.collect(sub.cursor, self._per_write)
                sub.cursor += count
            else:
                chunk, count, more = self._collect(sub)
                if sub.pending:
                    chunk, sub.pending = sub.pending + chunk, b""
                if not chunk and more:
                    continue  # a filter matched nothing in this stretch; scan on
            if chunk and not await self._write(sub, chunk, count):
                return
            # Checked after the write: a flush may have come and gone while it waited.
            if feed is not None:
                if sub.cursor < feed.log.last_seq:
                    continue
                if feed.log.finished:
                    return  # the terminal event is out
            elif sub.cursor < self._first + len(self._entries) - 1:
                continue
            sub.live = True
            future = sub.future = loop.create_future()
            try:
                await future
            finally:
                sub.future = None

    async def _replay_stored(self, sub: _Subscriber, run_id: str) -> None:
        """A run that left memory: everything is in the store, and nothing more will come."""
        while not sub.closed:
            rows = await self._store.runs.events_after(run_id, sub.cursor, self._per_write)
            if not rows:
                return
            chunk = b"".join([frame(seq, name, data) for seq, name, data in rows])
            sub.cursor = rows[-1][0]
            if not await self._write(sub, chunk, len(rows)):
                return

    async def _write(self, sub: _Subscriber, chunk: bytes, count: int) -> bool:
        assert self._loop is not None and sub.response is not None
        sub.writing_since = self._loop.time()
        sub.in_flight = count
        try:
            await sub.response.write(chunk)
        except ConnectionError:  # the client went away, or was cut off mid-write
            sub.closed = True
            return False
        finally:
            sub.writing_since = 0.0
            sub.in_flight = 0
        # Counted here, added to the Prometheus counter by the sweep and when a stream ends:
        # its lock, once per write per subscriber, showed in profiles of 1,000 subscribers.
        self._unreported[sub.kind] += count
        return not sub.closed

    def _collect(self, sub: _Subscriber) -> tuple[bytes, int, bool]:
        """The next frames for a hub subscriber: (chunk, events, more pending)."""
        entries = self._entries
        first = self._first
        floor = first - 1
        gap = b""
        if sub.cursor < floor:  # the ring moved past what this subscriber still needed
            gap = self._gap_frame(sub, sub.cursor, first, "evicted")
            sub.cursor = floor
        i = sub.cursor - floor
        n = len(entries)
        if i >= n:
            return gap, 0, False
        if sub.runs is None and sub.workflows is None:  # everything, ids = positions
            end = min(n, i + self._per_write)
            self._build_position_frames(end)
            key = (sub.cursor, floor + end)
            if self._chunk_key != key:
                self._chunk_key = key
                self._chunk = b"".join(self._frames_pos[i:end])
            sub.cursor = floor + end
            return gap + self._chunk, end - i, end < n
        runs = sub.runs or _EMPTY
        workflows = sub.workflows or _EMPTY
        stop = min(n, i + _MAX_SCAN)
        limit = self._per_write
        out: list[bytes] = []
        if sub.seq_ids:
            frames = self._frames_seq
            if len(frames) < stop:
                frames.extend([None] * (stop - len(frames)))
            while i < stop:
                entry = entries[i]
                i += 1
                if entry[1] in workflows or entry[0] in runs:
                    cached = frames[i - 1]
                    if cached is None:
                        cached = frames[i - 1] = frame(entry[2], entry[3], entry[4])
                    out.append(cached)
                    if len(out) >= limit:
                        break
        else:
            self._build_position_frames(stop)
            position_frames = self._frames_pos
            while i < stop:
                entry = entries[i]
                i += 1
                if entry[0] in runs or entry[1] in workflows:
                    out.append(position_frames[i - 1])
                    if len(out) >= limit:
                        break
        sub.cursor = floor + i
        return gap + b"".join(out), len(out), i < n

    def _build_position_frames(self, end: int) -> None:
        frames = self._frames_pos
        have = len(frames)
        if have < end:
            base = self._first
            frames.extend([frame(base + i, e[3], e[4])
                           for i, e in enumerate(islice(self._entries, have, end), have)])

    def _gap_frame(self, sub: _Subscriber, last_id: int, resumed_at: int, reason: str) -> bytes:
        if sub.seq_ids:  # positions mean nothing to a workflow stream's client
            data = _gap_encoder.encode(StreamGap(reason, None, None))
            return b"event: stream.gap\ndata: %b\n\n" % data
        data = _gap_encoder.encode(StreamGap(reason, last_id, resumed_at))
        return frame(resumed_at - 1, "stream.gap", data)

    # --- bookkeeping ------------------------------------------------------------------------

    def _add(self, sub: _Subscriber) -> None:
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

    def _remove(self, sub: _Subscriber) -> None:
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
        self._report()
        if not self._subs and self._idle is not None:
            self._idle.set()

    def _close(self, sub: _Subscriber) -> None:
        sub.closed = True
        _wake(sub)

    def _cut(self, sub: _Subscriber, why: str) -> None:
        self.cut_off += 1
        log.info("SSE %s stream cut off (%s) at id %d", sub.kind, why, sub.cursor)
        transport = sub.request.transport
        if transport is not None:
            transport.abort()
        self._close(sub)

    def _lag(self, sub: _Subscriber) -> int:
        """Events the client has not received: those not yet collected, and those collected
        into a write that has not completed."""
        if sub.feed is not None:
            return sub.feed.log.last_seq - sub.cursor + sub.in_flight
        if sub.run_id is not None:
            return 0
        return self.head - sub.cursor + sub.in_flight

    def _report(self) -> None:
        for kind, count in self._unreported.items():
            if count:
                self._delivered[kind].inc(count)
                self._unreported[kind] = 0

    def _sweep(self) -> None:
        """Cut off subscribers stuck in a write, or live ones that fell too far behind."""
        assert self._loop is not None
        self._report()
        now = self._loop.time()
        for sub in list(self._subs):
            if sub.closed:
                continue
            if sub.writing_since and now - sub.writing_since > self._write_timeout:
                self._cut(sub, f"no write progress for {self._write_timeout:g} s")
            elif sub.live and sub.future is None and self._lag(sub) > self._max_lag:
                self._cut(sub, f"more than {self._max_lag} events behind")
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        interval = max(0.01, min(1.0, self._write_timeout / 4))
        self._sweep_handle = self._loop.call_later(interval, self._sweep)

    # --- lifecycle --------------------------------------------------------------------------

    def subscriber_count(self) -> int:
        return len(self._subs)

    def writing(self) -> bool:
        """Whether a write to some subscriber is under way (test mode's autojump waits)."""
        return any(sub.writing_since for sub in self._subs)

    def reset(self) -> None:
        """Test mode: end every stream and forget the ring. Positions keep growing, so an id
        from before the reset is reported as a gap, never confused with a later event."""
        for sub in list(self._subs):
            if sub.response is not None and sub.response.prepared:
                sub.response.stop_streaming()
            self._close(sub)
        self._first = self.head + 1
        self._notified = self.head
        self._entries.clear()
        self._frames_pos.clear()
        self._frames_seq.clear()
        self._chunk_key = (0, 0)
        self._run_feeds.clear()

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Bind to the running loop at start-up; at the end, stop every timer."""
        self._loop = asyncio.get_running_loop()
        self._schedule_sweep()
        yield
        for handle in (self._flush_handle, self._sweep_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._sweep_handle = None
        self._loop = None

    async def on_shutdown(self, app: web.Application) -> None:
        """Stop every stream (aborting any stuck in a write) and wait briefly for them to end,
        so the server's wait for open requests does not last as long as a stream would."""
        self._closing = True
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
            self._close(sub)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SHUTDOWN_GRACE):
                await self._idle.wait()
