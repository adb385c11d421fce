"""A run's event log in memory: every event of the run, encoded once, in `seq` order.

SSE streams read it: `events_after(n)` replays, `wait(n)` sleeps until something newer
arrives. Each waiter gets its own future, so one subscriber going away (its task
cancelled) never disturbs the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

__all__ = ["EventLog", "EventRow"]

# (run_id, seq, name, data): one stored event, as sinks receive them.
EventRow = tuple[str, int, str, bytes]


class EventLog:
    # Two parallel lists instead of one tuple per event: 16 bytes of slots per event
    # instead of 72, and `seq` is the position (plus one).
    __slots__ = ("_data", "_names", "_waiters", "finished")

    def __init__(self) -> None:
        self._names: list[str] = []
        self._data: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] | None = None
        self.finished = False  # the terminal run event is in the log

    @property
    def last_seq(self) -> int:
        return len(self._data)

    def append(self, name: str, data: bytes) -> int:
        self._names.append(name)
        self._data.append(data)
        if self._waiters:
            self._wake()
        return len(self._data)

    def finish(self) -> None:
        """Mark the log complete (after the run's terminal event) and wake every waiter."""
        self.finished = True
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for future in waiters or ():
            if not future.done():
                future.set_result(None)

    def events_after(self, seq: int) -> list[tuple[int, str, bytes]]:
        """Every event with a seq greater than `seq`, as (seq, name, data)."""
        start = max(seq, 0)
        return [(start + i + 1, name, data)
                for i, (name, data) in enumerate(zip(self._names[start:], self._data[start:], strict=True))]

    def rows(self, run_id: str, after: int) -> list[EventRow]:
        """Events after `after` as sink rows."""
        return [(run_id, after + i + 1, name, data)
                for i, (name, data) in enumerate(zip(self._names[after:], self._data[after:], strict=True))]

    async def wait(self, after_seq: int) -> None:
        """Return once an event newer than `after_seq` exists or the log is finished."""
        if len(self._data) > after_seq or self.finished:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(future)
        try:
            await future
        finally:
            if self._waiters is not None and future in self._waiters:
                self._waiters.remove(future)

    async def follow(self, after_seq: int = 0) -> AsyncIterator[tuple[int, str, bytes]]:
        """Every event after `after_seq`, then live ones, ending after the terminal event."""
        seq = after_seq
        while True:
            for event in self.events_after(seq):
                seq = event[0]
                yield event
            if self.finished and seq >= len(self._data):
                return
            await self.wait(seq)
