"""A run's event log in memory: every event of the run, encoded once, in `seq` order.

SSE streams read it: `events_after(n)` replays, `wait(n)` sleeps until something newer
arrives. Each waiter gets its own future, so one subscriber going away (its task
cancelled) never disturbs the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Final

from flowstage.simulation.models import EVENT_TYPES

__all__ = ["EVENT_CODES", "EVENT_NAMES", "EventLog", "EventRow", "EventRows", "event_name_of"]

# Each event's name is kept as a one-byte code: 1 byte per event instead of 8.
EVENT_NAMES: Final[tuple[str, ...]] = tuple(t.__struct_config__.tag for t in EVENT_TYPES)  # type: ignore[misc]
EVENT_CODES: Final[dict[str, int]] = {name: code for code, name in enumerate(EVENT_NAMES)}

# (run_id, seq, name, data): one stored event, as sinks receive them.
EventRow = tuple[str, int, str, bytes]

_NAME_START = len(b'{"event":"')


def event_name_of(data: bytes) -> str:
    """The name of an encoded event (msgspec writes the tag field first)."""
    return data[_NAME_START:data.index(b'"', _NAME_START)].decode()


class EventRows:
    """A batch of sink rows, produced lazily: iterate it for (run_id, seq, name, data)
    tuples, e.g. straight into `executemany`. A flush of 10,000 busy runs would otherwise
    allocate hundreds of thousands of tuples at once just to hand them over."""

    __slots__ = ("_chunks", "_count")

    def __init__(self) -> None:
        self._chunks: list[tuple[str, int, bytes, list[bytes]]] = []
        self._count = 0

    def add(self, run_id: str, first_seq: int, codes: bytes, data: list[bytes]) -> None:
        self._chunks.append((run_id, first_seq, codes, data))
        self._count += len(data)

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[EventRow]:
        names = EVENT_NAMES
        for run_id, first, codes, data in self._chunks:
            for i, item in enumerate(data):
                yield (run_id, first + i, names[codes[i]], item)


class EventLog:
    # The encoded events and their name codes; `seq` is the position (plus one).
    __slots__ = ("_codes", "_data", "_waiters", "finished")

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._codes = bytearray()
        self._waiters: list[asyncio.Future[None]] | None = None
        self.finished = False  # the terminal run event is in the log

    @property
    def last_seq(self) -> int:
        return len(self._data)

    def append(self, code: int, data: bytes) -> None:
        """Append an event: `code` is EVENT_CODES[name]."""
        self._codes.append(code)
        self._data.append(data)
        if self._waiters:
            self._wake()

    def data(self, seq: int) -> bytes:
        """The encoded event number `seq` (from 1)."""
        return self._data[seq - 1]

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
        names = EVENT_NAMES
        return [(start + i + 1, names[code], data)
                for i, (code, data) in enumerate(zip(self._codes[start:], self._data[start:], strict=True))]

    def rows(self, run_id: str, after: int) -> list[EventRow]:
        """Events after `after` as sink rows."""
        names = EVENT_NAMES
        return [(run_id, after + i + 1, names[code], data)
                for i, (code, data) in enumerate(zip(self._codes[after:], self._data[after:], strict=True))]

    def add_rows(self, batch: EventRows, run_id: str, after: int, upto: int) -> None:
        """Add events after..upto to a sink batch (two slices, no per-event work)."""
        batch.add(run_id, after + 1, bytes(self._codes[after:upto]), self._data[after:upto])

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
