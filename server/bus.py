"""The Redis event bus (`bus = "redis"`, `redis_url`): every process's run events in Redis
Streams, so that every process serves every run's events over SSE.

- A stream per run, `flowstage:run:<runId>`: each entry is a chunk of the run's consecutive
  events, its id `<first seq>-0`, its fields the last seq (`l`) and the events (`e`, a JSON
  array of [name, data], as the store keeps them: server.store.event_chunks). It expires a day
  after its last event (the store keeps runs' events for good).
- One global stream, `flowstage:events`: the same chunks, each entry's id `<position>-0`, the
  position of its first event; the positions are the ids of `GET /api/events`, the same in
  every process. It is trimmed to about `event_ring_size` entries.

A chunk per run per batch rather than an entry per event: Redis's work, and every process's
reading, is per entry (measured: 5,000 10-node runs cost Redis 6 s of CPU an event an entry).

Publishing: the engine's events are queued in memory and appended in batches by one task,
through a Lua script that appends each chunk to its run's stream and to the global stream in
one step, and skips a chunk its run's stream already has. A batch whose reply was lost is sent
again exactly as it was, so nothing is added twice. While Redis is unreachable the
queue keeps growing, runs go on in memory, and the batch is retried until Redis is back.

Reading: while some stream of this process needs other processes' events (server.sse: an
`/api/events` or workflow stream, or the stream of a run another process owns), one task
follows the global stream (XREAD BLOCK) from where it left off and hands each entry to the
hub. When following starts it reads the entries of the last `event_ring_size` events first (a
slice at a time), so a client can resume `/api/events` with an id from before this process
started (or started following).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from flowstage.config.settings import redact_url
from flowstage.server.sse_feeds import Entry
from flowstage.server.store.event_chunks import EventRow, chunks, events_of
from flowstage.simulation.errors import Unavailable

__all__ = ["GLOBAL_STREAM", "BusUnavailable", "RedisBus", "cancel_all", "run_stream_key"]

log = logging.getLogger(__name__)

GLOBAL_STREAM = "flowstage:events"
_COUNTER = "flowstage:events:position"
_RUN_PREFIX = "flowstage:run:"
_RUN_TTL_SECONDS = 86_400
_BATCH = 2_000  # events per script call
_GATHER_SECONDS = 0.010
# Entries per read of the global stream. Each is a chunk of a run's events (up to tens of
# them), and a read's events land in the SSE ring in one go: 5,000 entries behind, one read
# was tens of thousands of events, more than a subscriber may lag (sse_buffer_events) and up
# to the whole ring, so a stream that had kept up was cut off and resumed past the ring's end.
_READ_ENTRIES = 256
_CONNECTIONS = 64
_RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)
_LOST = (RedisConnectionError, RedisTimeout, OSError)
_Entries = list[tuple[bytes, dict[bytes, bytes]]]  # stream entries as redis-py returns them

# KEYS: the global stream, the position counter. ARGV: maxlen, run-stream prefix, ttl, then
# (run id, workflow id, first seq, last seq, events) per chunk, `events` a JSON array of
# [name, data] (server.store.event_chunks). A chunk whose first seq its run's stream already
# has is skipped (a batch is only ever sent again whole). Returns how many events were added.
_APPEND = """
local maxlen, prefix, ttl = ARGV[1], ARGV[2], ARGV[3]
local added = 0
for i = 4, #ARGV, 5 do
  local run, first, last = ARGV[i], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local key = prefix .. run
  local top = 0
  local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #newest > 0 then top = tonumber(newest[1][2][2]) end
  if first > top then
    redis.call('XADD', key, first .. '-0', 'l', last, 'e', ARGV[i + 4])
    redis.call('EXPIRE', key, ttl)
    local count = last - first + 1
    local position = redis.call('INCRBY', KEYS[2], count) - count + 1
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, position .. '-0',
               'r', run, 'w', ARGV[i + 1], 's', first, 'e', ARGV[i + 4])
    added = added + count
  end
end
return added
"""


class BusUnavailable(Unavailable):
    """Redis cannot be reached (a 503 problem where a request needs it)."""


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until they have ended. A task is cancelled again every
    half second until it has: on Python 3.11 a cancellation that arrives as a time-out expires
    (redis-py's socket time-out, under load) comes out as that TimeoutError, which the loops
    here take for a lost connection and retry; a process then never finished stopping."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s ended with an error while stopping", task.get_name(), exc_info=task.exception())


def run_stream_key(run_id: str) -> str:
    return _RUN_PREFIX + run_id


def _position(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class RedisBus:
    """Publishes this process's events and follows everybody's."""

    def __init__(self, url: str, ring_size: int, deliver: Callable[[int, Entry], None]) -> None:
        """`deliver(position, entry)` is called on the loop for every event of the global
        stream, in order."""
        self.url = url
        self._ring_size = ring_size
        self._deliver = deliver
        # At most _CONNECTIONS at once; a command beyond waits for one (a burst of requests
        # each asking Redis something must not open a connection each: "Too many connections").
        # A command on a connection Redis closed (it restarted) is sent again on a new one:
        # every command here may be repeated (the append script skips what it has).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=_CONNECTIONS, timeout=10, socket_connect_timeout=2, socket_timeout=10,
            health_check_interval=5, retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
            retry_on_error=[RedisConnectionError, RedisTimeout])
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._append = self._redis.register_script(_APPEND)
        self._queue: list[Entry] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._follower: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[None] | None = None
        self.position = 0  # the last global position delivered
        self.available = True
        self.published = 0

    @property
    def redis(self) -> aioredis.Redis:
        """The client, for what else this process keeps in the same Redis (server.cluster)."""
        return self._redis

    def unreachable(self, exc: BaseException | None = None) -> BusUnavailable:
        why = f": {exc}" if exc is not None and str(exc) else ""
        return BusUnavailable(f"Redis at {redact_url(self.url)} is unreachable{why}")

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Check Redis answers, start publishing. Following starts when something needs it
        (`follow`)."""
        try:
            await self._redis.ping()
        except _LOST as exc:
            await self._redis.aclose()
            raise self.unreachable(exc) from None
        self._tasks = [asyncio.create_task(self._publish_forever(), name="flowstage-bus-publish")]

    async def stop(self, grace: float = 2.0) -> None:
        """Publish what is queued (for up to `grace` s), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self._queue and self.available:
                    self._wake.set()
                    await asyncio.sleep(0.01)
        await self.stop_following()
        await cancel_all(self._tasks)
        await self._redis.aclose()

    @property
    def following(self) -> bool:
        return self._follower is not None

    async def follow(self) -> None:
        """Deliver the global stream from now on: first its recent history (the last
        `event_ring_size` events; what this process already delivered is skipped, and a
        jump past what was trimmed meanwhile is the ring's gap), then every new entry.
        Reading every process's events costs each process as much as publishing its own,
        so a process does it only while a stream needs it (server.sse). BusUnavailable when
        Redis cannot be reached."""
        if self._follower is not None:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._preload())
        try:
            await asyncio.shield(self._starting)
        except _LOST as exc:
            raise self.unreachable(exc) from None
        finally:
            if self._starting.done():
                self._starting = None
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow_forever(), name="flowstage-bus-follow")

    async def stop_following(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            await cancel_all([follower])

    # --- publishing -------------------------------------------------------------------------

    def publish(self, entry: Entry) -> None:
        """Queue one of this process's events (called by the hub for every engine event)."""
        self._queue.append(entry)
        if len(self._queue) == 1:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def _publish_forever(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                # Gather what the next few milliseconds bring into the same call: a call per
                # event or two cost more than the events (measured: 3 events a call, 2.5x).
                await asyncio.sleep(_GATHER_SECONDS)
            batch = self._queue[:_BATCH]
            args = [self._ring_size, _RUN_PREFIX, _RUN_TTL_SECONDS, *_chunk_args(batch)]
            while True:  # until Redis has it: sent again as it is, so nothing is added twice
                try:
                    await self._append(keys=[GLOBAL_STREAM, _COUNTER], args=args)
                except _LOST as exc:
                    failures = self._lost(exc, failures)
                    await asyncio.sleep(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS)) - 1])
                    continue
                except RedisError:
                    log.exception("Redis refused a batch of %d events; dropped", len(batch))
                break
            del self._queue[:len(batch)]
            self.published += len(batch)
            failures = self._recovered(failures)

    def _lost(self, exc: BaseException, failures: int) -> int:
        if self.available:
            log.warning("Redis at %s lost (%s); %d events wait", redact_url(self.url), exc, len(self._queue))
        self.available = False
        return failures + 1

    def _recovered(self, failures: int) -> int:
        if not self.available:
            log.warning("Redis at %s is back", redact_url(self.url))
        self.available = True
        return 0

    # --- following --------------------------------------------------------------------------

    async def _preload(self) -> None:
        """The global stream's last `ring_size` events (what the ring keeps), oldest first,
        read and delivered a slice at a time like the entries that follow: the history of a
        busy cluster is up to `ring_size` entries of many events each, and taken in one go it
        stalled the loop and went past the ring at once."""
        redis = self._redis
        head = int(await redis.get(_COUNTER) or 0)
        wanted = max(self.position, head - self._ring_size) + 1  # the first position to deliver
        # The entry holding `wanted` may start before it (an entry is a chunk of events).
        holding = cast(_Entries, await redis.xrevrange(GLOBAL_STREAM, max=f"{wanted}-0", count=1))
        start = holding[0][0] if holding else b"-"
        read = 0
        while True:
            entries = cast(_Entries, await redis.xrange(GLOBAL_STREAM, min=start, count=_READ_ENTRIES))
            for entry_id, fields in entries:
                self._take(entry_id, fields)
            read += len(entries)
            if len(entries) < _READ_ENTRIES or self.position >= head:
                break  # what came since is the follower's
            start = b"(" + entries[-1][0]
        if not read:  # nothing held (yet): positions go on from the counter's
            self.position = max(self.position, head)

    def _take(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """One entry of the global stream: a chunk of one run's events, from its position on."""
        position = _position(entry_id)
        events = events_of(int(fields[b"s"]), fields[b"e"])
        if position + len(events) - 1 <= self.position:
            return
        run_id, workflow_id = fields[b"r"].decode(), fields[b"w"].decode()
        deliver = self._deliver
        for offset, (seq, name, data) in enumerate(events):
            if position + offset > self.position:
                deliver(position + offset, (run_id, workflow_id, seq, name, data))
        self.position = position + len(events) - 1

    async def _follow_forever(self) -> None:
        failures = 0
        while True:
            try:
                found = cast(list[tuple[bytes, _Entries]], await self._redis.xread(
                    {GLOBAL_STREAM: f"{self.position}-0"}, count=_READ_ENTRIES, block=1_000))
            except _LOST as exc:
                failures = self._lost(exc, failures)
                await asyncio.sleep(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS)) - 1])
                continue
            failures = self._recovered(failures)
            read = 0
            for _stream, entries in found or ():
                read += len(entries)
                for entry_id, fields in entries:
                    self._take(entry_id, fields)
            if read < _READ_ENTRIES:
                # Caught up: let the next few milliseconds' entries gather (a read costs the
                # same for one entry as for hundreds). Behind: read on, a slice at a time,
                # while the streams write what the last slice brought.
                await asyncio.sleep(_GATHER_SECONDS)

    # --- a run's stream ---------------------------------------------------------------------

    async def run_events(self, run_id: str) -> list[tuple[int, str, bytes]]:
        """Every event of the run's stream: (seq, name, data). BusUnavailable when Redis is."""
        try:
            entries = cast(_Entries, await self._redis.xrange(run_stream_key(run_id)))
        except _LOST as exc:
            raise self.unreachable(exc) from None
        return [event for entry_id, fields in entries for event in events_of(_position(entry_id), fields[b"e"])]


def _chunk_args(batch: list[Entry]) -> list[Any]:
    """The script's arguments for `batch`: each run's events of the batch as one chunk (or
    more, should its seqs not follow on), runs in the order they first appear."""
    by_run: dict[str, list[EventRow]] = {}
    workflows: dict[str, str] = {}
    for run_id, workflow_id, seq, name, data in batch:
        rows = by_run.get(run_id)
        if rows is None:
            rows = by_run[run_id] = []
            workflows[run_id] = workflow_id
        rows.append((run_id, seq, name, data))
    args: list[Any] = []
    for run_id, first, last, events in chunks(row for rows in by_run.values() for row in rows):
        args += (run_id, workflows[run_id], first, last, events)
    return args
