"""The flusher: group commit of every run's changes to the sink, off the per-event path.

Events are appended to a run's in-memory log and the run tells the flusher once that it
has something new (`mark_dirty`). About every `interval` seconds (or at once, when a caller
waits: `flush_soon`) one flush collects every dirty run's new events and the snapshots
that must be saved (new, paused/resumed/stopped and finished runs) into one `save_runs`
and one `append_events` call, or one `save` (a single transaction, one round trip to the
database thread and one fsync) when the sink has it. Every execute of a burst awaits the same
flush.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from flowstage.actors.clock import Clock, TimerHandle
from flowstage.actors.eventlog import EventRows
from flowstage.actors.runtime import Flushable
from flowstage.actors.sink import RunSink
from flowstage.simulation.errors import Unavailable
from flowstage.simulation.models import Run

__all__ = ["Flusher", "OneWriteSink"]

log = logging.getLogger(__name__)

# Work done between two turns of the loop, in units of ~1 µs: a run's new events are one
# unit, a snapshot built for a finished run ten.
_SLICE = 1000
_SNAPSHOT_COST = 10
_FREE_SLICE = 100  # saved snapshots freed between two turns of the loop


@runtime_checkable
class OneWriteSink(Protocol):
    """A sink that also takes snapshots and events in one write (the store's `RunRepo`)."""

    async def save(self, runs: list[Run], events: EventRows) -> None:
        ...


class Flusher:
    """`after` runs after every successful flush (the engine evicts finished runs there)."""

    def __init__(self, clock: Clock, sink: RunSink, interval: float, after: Callable[[], Awaitable[None]]) -> None:
        self._clock = clock
        self.sink = sink
        self.interval = interval
        self._after = after
        self._dirty: list[Flushable] = []
        self._timer: TimerHandle | None = None
        self._lock = asyncio.Lock()
        # One future per caller waiting for the next flush, and what it resolves to: a
        # caller that goes away cancels its own future only.
        self._waiters: list[tuple[asyncio.Future[Any], Any]] = []
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timed = False  # whether marking a run dirty sets the timer (open or closing)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wake = loop.create_future()
        self._task = loop.create_task(self._run(), name="flowstage-engine-flusher")
        self._timed = True

    async def stop(self) -> None:
        """Stop the flusher task (the caller then flushes a last time with `flush_once`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def close(self) -> None:
        """Nothing more is timed (the engine closed)."""
        self._timed = False

    def mark_dirty(self, run: Flushable) -> None:
        self._dirty.append(run)
        if self._timer is None and self._timed:
            self._timer = self._clock.call_later(self.interval, self.kick)

    def kick(self) -> None:
        """Flush now (at the flusher's next turn)."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def flush_soon(self) -> asyncio.Future[None]:
        """A future resolved by the next flush to start (which will carry everything
        pending now); concurrent callers share that flush."""
        waiter: asyncio.Future[None] = self._running_loop().create_future()
        self._waiters.append((waiter, None))
        self.kick()
        return waiter

    def answer_after_flush(self, answer: asyncio.Future[Any], value: Any) -> None:
        """Resolve `answer` with `value` once the next flush is done (without kicking it)."""
        self._waiters.append((answer, value))

    async def reset(self) -> None:
        """Forget everything pending (a test stage's reset); waiters get their answers."""
        async with self._lock:  # not in the middle of a flush to the store
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for waiter, value in self._waiters:
                if not waiter.done():
                    waiter.set_result(value)
            self._waiters.clear()
            self._dirty.clear()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        # asyncio.get_running_loop() costs a getpid() system call.
        assert self._loop is not None, "the flusher has not started"
        return self._loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            assert self._wake is not None
            await self._wake
            self._wake = loop.create_future()
            try:
                await self.flush_once()
            except Exception:
                log.exception("flush failed; will retry")

    async def _write(self, snapshots: list[Run], rows: EventRows) -> None:
        sink = self.sink
        if isinstance(sink, OneWriteSink):
            if snapshots or rows:
                await sink.save(snapshots, rows)
            return
        if snapshots:
            await sink.save_runs(snapshots)
        if rows:
            await sink.append_events(rows)

    async def flush_once(self) -> None:
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            runs, self._dirty = self._dirty, []
            waiters, self._waiters = self._waiters, []
            snapshots: list[Run] = []
            rows = EventRows()
            work = 0
            for run in runs:
                if work >= _SLICE:
                    # Building thousands of final snapshots is tens of milliseconds:
                    # let timers in between rather than stall every run at once.
                    work = 0
                    await asyncio.sleep(0)
                snapshot = run.collect(rows)
                if snapshot is not None:
                    snapshots.append(snapshot)
                    if snapshot.state != "running":  # built now; a new run's first one is reused
                        work += _SNAPSHOT_COST
                work += 1
            try:
                await self._write(snapshots, rows)
            except Exception as error:
                for run in runs:
                    run.unpersisted()
                for waiter, _ in waiters:
                    if not waiter.done():
                        waiter.set_exception(Unavailable(f"Could not persist runs: {error}"))
                raise
            for run in runs:
                run.persisted()
            for waiter, answer in waiters:
                if not waiter.done():
                    waiter.set_result(answer)
            # Freeing a thousand final snapshots at once is ~10 ms: free them in slices.
            del rows
            while len(snapshots) > _FREE_SLICE:
                del snapshots[-_FREE_SLICE:]
                await asyncio.sleep(0)
            await self._after()
