"""Server-Sent Events: the hub every SSE stream reads from, and the three streams it opens.

Three streams (docs/sse.md has the client's view):
- `run`: one run, `id:` = the run's `seq`; resumable; replays from the engine's in-memory log,
  or from the store once the run left memory; ends after the run's terminal event.
- `workflow`: every event of every run of one workflow emitted while the stream is open,
  `id:` = that run's `seq` (so `Last-Event-ID` cannot resume it: ids of different runs overlap).
- `all`: every event (optionally filtered by run or workflow), `id:` = the hub's global
  position; resumable from the hub's ring, with a `stream.gap` event when that is impossible.

How the cost stays flat in the number of subscribers:
- The engine encodes each event's JSON once. The hub (an engine listener) appends a tuple
  to a bounded ring (`sse_feeds.EventRing`) and does nothing else on the engine's path. Each
  SSE frame is built once per id scheme, when the first subscriber needs it, and shared
  (`sse_feeds`); subscribers hold a cursor, not a queue (`sse_writer`).
- One loop timer per `sse_batch_ms` wakes the subscribers concerned (`sse_subscribers`), so a
  burst costs one write per subscriber, not one per event.
- A periodic sweep cuts off subscribers stuck in a write or too far behind
  (`sse_subscribers`); nothing a subscriber does ever waits the engine.

The parts: `sse_wire` (the bytes: frames, gap notices, ids), `sse_feeds` (the ring and the
per-run feeds), `sse_subscribers` (the open streams), `sse_writer` (writing one stream), and
this module's `EventHub`, which owns them, listens to the engine and runs the timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from flowstage.actors.engine import Engine
from flowstage.config import Settings
from flowstage.server.metrics import Metrics
from flowstage.server.sse_feeds import Entry, EventRing, RunEvents
from flowstage.server.sse_remote import RemoteRunLog
from flowstage.server.sse_subscribers import Subscriber, Subscribers
from flowstage.server.sse_wire import gap_frame, requested_event_id
from flowstage.server.sse_writer import SseWriter
from flowstage.server.store import BackendMissing, Store
from flowstage.simulation.errors import NotFound, Unavailable
from flowstage.simulation.messages import no_such

if TYPE_CHECKING:  # redis is the redis extra, imported only with bus = "redis"
    from flowstage.server.bus import RedisBus

__all__ = ["EventHub"]

# How long shutdown waits for streams to end (they end in a few loop turns).
_SHUTDOWN_GRACE = 1.0
# bus = "redis": following the global stream stops this long after the last stream that
# needed it ended (a client reconnecting in between finds it still followed).
_FOLLOW_LINGER = 30.0


class EventHub:
    """Engine listener, owner of the ring of recent events and of every open SSE stream."""

    def __init__(self, settings: Settings, engine: Engine, store: Store, metrics: Metrics) -> None:
        self._engine = engine
        self._store = store
        self._batch = settings.sse_batch_ms / 1000
        write_timeout = settings.sse_write_timeout_seconds
        self._sweep_every = max(0.01, min(1.0, write_timeout / 4))
        self._ring = EventRing(settings.event_ring_size)
        self._subscribers = Subscribers(metrics, write_timeout, settings.sse_buffer_events)
        self._writer = SseWriter(self._ring, self._subscribers, store,
                                 ping_seconds=settings.sse_ping_seconds, write_timeout=write_timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._closing = False
        # bus = "redis": the ring holds the global stream, as every process numbers it; this
        # process's events reach it through Redis, and their local streams are woken directly.
        self.bus: RedisBus | None = None
        if settings.bus == "redis":
            try:
                from flowstage.server.bus import RedisBus
            except ImportError:
                raise BackendMissing('bus = "redis" needs redis-py: pip install \'flowstage[redis]\'') from None
            self.bus = RedisBus(settings.redis_url, settings.event_ring_size, self._on_bus_event)
        self._local_runs: set[str] = set()
        self._remote: dict[str, RemoteRunLog] = {}
        self._background: set[asyncio.Task[None]] = set()  # refills, and stopping to follow
        self._wanted_at = 0.0  # when a stream last needed the bus followed (loop time)

    # --- the engine's side ------------------------------------------------------------------

    def on_event(self, run_id: str, workflow_id: str, seq: int, name: str, data: bytes) -> None:
        """Engine listener: append, and make sure a wake-up is scheduled. Nothing else."""
        if self.bus is not None:
            self.bus.publish((run_id, workflow_id, seq, name, data))
            self._local_runs.add(run_id)
        else:
            ring = self._ring
            if ring.append((run_id, workflow_id, seq, name, data)):
                self._subscribers.after_trim(ring.first - 1, ring.notified)
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_later(self._batch, self._flush)

    def _on_bus_event(self, position: int, entry: Entry) -> None:
        """An event of any process, from the global stream, at its global position."""
        ring = self._ring
        if ring.append_at(position, entry):
            self._subscribers.after_trim(ring.first - 1, ring.notified)
        remote = self._remote.get(entry[0])
        if remote is not None:
            if not remote.add(entry[2], entry[3], entry[4]):
                remote.refill()
                task = asyncio.get_running_loop().create_task(self._refill(remote))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            if remote.finished:
                del self._remote[entry[0]]
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_later(self._batch, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._subscribers.wake(self._ring)
        if self._local_runs:
            self._subscribers.wake_runs(self._local_runs)
            self._local_runs = set()

    # --- what tests and test mode read ------------------------------------------------------

    @property
    def head(self) -> int:
        """The position of the newest event (0 before the first)."""
        return self._ring.head

    @property
    def notified(self) -> int:
        """Subscribers have been woken for every event up to this position: it reaches `head`
        within `sse_batch_ms` of the last event."""
        return self._ring.notified

    @property
    def cut_off(self) -> int:
        """Subscribers cut off so far (slow or stalled)."""
        return self._subscribers.cut_off

    def subscriber_count(self) -> int:
        return self._subscribers.count()

    def waiting_count(self) -> int:
        """Subscribers that have caught up and are waiting for events."""
        return self._subscribers.waiting()

    def writing(self) -> bool:
        """Whether a write to some subscriber is under way (test mode's autojump waits)."""
        return self._subscribers.writing()

    # --- streams ----------------------------------------------------------------------------

    async def run_stream(self, request: web.Request, run_id: str) -> web.StreamResponse:
        after = requested_event_id(request)
        self._check_open()
        event_log: RunEvents | None = self._engine.events(run_id)
        # The log object stays readable after its run leaves memory, so there is no race
        # between this look-up and the reads. A run not in memory was persisted whole before
        # it was evicted (or belongs to an earlier process), so the store has all of it.
        if event_log is None and self.bus is not None:
            event_log = await self._remote_log(run_id)
        if event_log is None:
            if await self._store.runs.get(run_id) is None:
                raise NotFound(no_such("run", run_id))
            last = await self._store.runs.last_seq(run_id)
            # A client ahead of the store saw events a crashed process never saved; the run
            # was ended at the next start with events numbered from the store's end. It still
            # gets that terminal event, so its stream ends the way every run stream does.
            cursor = last - 1 if after is not None and after > last else after or 0
            sub = Subscriber("run", request, cursor)
            sub.run_id = run_id
            return await self._writer.serve(sub)
        # An id beyond the last event continues from the end (a finished run: closes at once).
        sub = Subscriber("run", request, min(after or 0, event_log.last_seq))
        sub.run_id = run_id
        sub.feed = self._subscribers.feed_for(run_id, event_log)
        return await self._writer.serve(sub)

    async def _remote_log(self, run_id: str) -> RemoteRunLog | None:
        """A run that another process is running (the Redis bus): its log, read from its
        Redis stream and followed. None when the store has the run ended, or nobody has it."""
        remote = self._remote.get(run_id)
        if remote is not None:
            return remote
        await self._following()  # before reading its stream: nothing after is missed
        stored = await self._store.runs.get(run_id)
        if stored is not None and stored.state not in ("running", "paused"):
            return None  # ended, and stored whole
        remote = self._remote[run_id] = RemoteRunLog(run_id)
        try:
            found = await self._fill(remote)
        except BaseException:
            self._remote.pop(run_id, None)
            raise
        # Stored as active, it is live somewhere even before its first events reach Redis
        # (they are published every few milliseconds): follow it.
        live = found or stored is not None
        if not live or remote.finished:
            self._remote.pop(run_id, None)
        return remote if live else None

    async def _refill(self, remote: RemoteRunLog) -> None:
        """An event of a followed run went missing (trimmed before it was read): read the
        run's stream again, until Redis answers."""
        from flowstage.server.bus import BusUnavailable

        while True:
            try:
                await self._fill(remote)
                return
            except BusUnavailable:
                await asyncio.sleep(0.5)

    async def _fill(self, remote: RemoteRunLog) -> bool:
        """Fill `remote` from its run's Redis stream; whether the stream had any event."""
        assert self.bus is not None
        events = await self.bus.run_events(remote.run_id)
        remote.fill(events)
        return bool(events)

    async def workflow_stream(self, request: web.Request, workflow_id: str) -> web.StreamResponse:
        self._check_open()
        await self._store.workflows.get(workflow_id)  # NotFound
        await self._following()
        head = self._ring.head
        sub = Subscriber("workflow", request, head)
        sub.workflows = frozenset((workflow_id,))
        sub.seq_ids = True
        if requested_event_id(request) is not None:
            # A reconnect: this stream cannot replay (its ids are per-run seqs), so say that
            # events may have been missed instead of resuming silently.
            sub.pending = gap_frame("not-resumable", 0, head + 1, seq_ids=True)
        return await self._writer.serve(sub)

    async def all_stream(self, request: web.Request, run_ids: Iterable[str],
                         workflow_ids: Iterable[str]) -> web.StreamResponse:
        after = requested_event_id(request)
        self._check_open()
        await self._following()
        runs, workflows = frozenset(run_ids), frozenset(workflow_ids)
        head = self._ring.head
        # An id older than the ring is kept: the first collect reports the gap.
        cursor = head if after is None or after > head else after
        sub = Subscriber("all", request, cursor)
        if after is not None and after > head:
            sub.pending = gap_frame("unknown", after, head + 1, seq_ids=False)
        if runs or workflows:
            sub.runs, sub.workflows = runs, workflows
        return await self._writer.serve(sub)

    async def _following(self) -> None:
        """bus = "redis": make sure this process follows the global stream (every process's
        events), which it does only while a stream needs it (server.bus); then the ring is
        current. BusUnavailable (503) when Redis cannot be reached."""
        bus = self.bus
        if bus is None:
            return
        assert self._loop is not None
        self._wanted_at = self._loop.time()
        if not bus.following:
            await bus.follow()
            if self._ring.head < bus.position:  # nothing recent held: go on from the bus's count
                self._ring.clear(bus.position)

    def _check_open(self) -> None:
        if self._closing or self._loop is None:
            raise Unavailable("The server is shutting down.")

    # --- lifecycle --------------------------------------------------------------------------

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._subscribers.sweep(now, self._ring.head)
        bus = self.bus
        if (bus is not None and bus.following and not self._remote and not self._subscribers.count()
                and now - self._wanted_at > _FOLLOW_LINGER):
            task = self._loop.create_task(bus.stop_following())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._sweep_handle = self._loop.call_later(self._sweep_every, self._sweep)

    def reset(self) -> None:
        """Test mode: end every stream and forget the ring. Positions keep growing, so an id
        from before the reset is reported as a gap, never confused with a later event."""
        self._subscribers.stop_all()
        self._ring.clear()

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Bind to the running loop at start-up; at the end, stop every timer."""
        self._loop = loop = asyncio.get_running_loop()
        self._sweep_handle = loop.call_later(self._sweep_every, self._sweep)
        yield
        for handle in (self._flush_handle, self._sweep_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._sweep_handle = None
        self._loop = None

    async def bus_lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """bus = "redis": reach Redis before anything else starts (unreachable: the process
        stops before touching the store), and stop after the engine, so that the events of
        its shutdown are published too."""
        if self.bus is None:
            yield
            return
        await self.bus.start()
        yield
        await self.bus.stop()

    async def on_shutdown(self, app: web.Application) -> None:
        """Stop every stream (aborting any stuck in a write) and wait briefly for them to end,
        so the server's wait for open requests does not last as long as a stream would."""
        self._closing = True
        await self._subscribers.end_all(_SHUTDOWN_GRACE)
