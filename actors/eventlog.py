"""A run's events: written once, encoded once, kept in `seq` order, read by SSE and the flusher.

The writer side stamps each event with the simulated instant it happened at and encodes
it. The events every node sends (queued, started, progress, completed, edge.data) and the
plain run endings are filled into byte templates rather than built as Structs and encoded:
the bytes are the same, at a third less cost, and a run sends ~40 of them. Every event is
also handed to the engine's listeners (metrics, the SSE hub), synchronously; a listener that
raises is logged and the run carries on.

The reader side: `events_after(n)` replays, `wait(n)` sleeps until something newer
arrives, `follow` does both. Each waiter gets its own future, so one subscriber going away
(its task cancelled) never disturbs the others. The flusher takes new events in batches
(`add_rows`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import msgspec

from flowstage.simulation.models import EVENT_TYPES, NodeCompleted

__all__ = ["EVENT_CODES", "EVENT_NAMES", "EventListener", "EventLog", "EventRow", "EventRows", "Listeners", "fan_out",
           "iso"]

log = logging.getLogger(__name__)

# Each event's name is kept as a one-byte code: 1 byte per event instead of 8.
EVENT_NAMES: Final[tuple[str, ...]] = tuple(t.__struct_config__.tag for t in EVENT_TYPES)  # type: ignore[misc]
EVENT_CODES: Final[dict[str, int]] = {name: code for code, name in enumerate(EVENT_NAMES)}

# (run_id, seq, name, data): one stored event, as sinks receive them.
EventRow = tuple[str, int, str, bytes]

EventListener = Callable[[str, str, int, str, bytes], None]
"""Called with (run_id, workflow_id, seq, name, data) for every event of every run, on the
loop, synchronously: keep it cheap (count, or hand off to a queue)."""


class Listeners(Protocol):
    """Where a log finds the listeners of the moment (the engine adds and removes them):
    `notify` is None without any, the listener itself with one, a fan-out with several."""

    notify: EventListener | None


def fan_out(listeners: tuple[EventListener, ...]) -> EventListener | None:
    """One `notify` for `listeners`: None for none, the listener itself for one, else a
    function calling each in turn, so that one failing does not keep the event from the rest."""
    if len(listeners) <= 1:
        return listeners[0] if listeners else None

    def notify(run_id: str, workflow_id: str, seq: int, name: str, data: bytes) -> None:
        for listener in listeners:
            try:
                listener(run_id, workflow_id, seq, name, data)
            except Exception:
                log.exception("event listener %r failed", listener)

    return notify


_encode = msgspec.json.Encoder().encode
_QUEUED = EVENT_CODES["node.queued"]
_STARTED = EVENT_CODES["node.started"]
_QUEUED_STARTED = bytes((_QUEUED, _STARTED))
_PROGRESS = EVENT_CODES["node.progress"]
_COMPLETED = EVENT_CODES["node.completed"]
_EDGE_DATA = EVENT_CODES["edge.data"]

# Byte templates, filled with the run's `_ids`, the seq, the stamp and the event's own
# fields. They must encode exactly as their Structs do (NodeQueued, NodeStarted,
# NodeCompleted, EdgeData, NodeProgress, RunCompleted and RunStopped); tests compare them.
_T_QUEUED: Final = b'{"event":"node.queued",%b%d,"ts":"%b","nodeId":%b}'
_T_STARTED: Final = b'{"event":"node.started",%b%d,"ts":"%b","nodeId":%b}'
_T_COMPLETED: Final = b'{"event":"node.completed",%b%d,"ts":"%b","nodeId":%b,"output":%b}'
_T_EDGE: Final = b'{"event":"edge.data",%b%d,"ts":"%b",%b,"items":%d,"bytes":%d}'
_T_PROGRESS: Final = b'{"event":"node.progress",%b%d,"ts":"%b","nodeId":%b,"progress":%b}'
_T_PLAIN: Final = b'{"event":"%b",%b%d,"ts":"%b"}'
_PLAIN_NAMES: Final = {code: name.encode() for code, name in enumerate(EVENT_NAMES)}

_PREFIXES: dict[int, str] = {}
# Stamps by epoch millisecond, as (str, bytes): ten thousand runs share a few thousand
# distinct milliseconds a second, so most stamps are found here.
_STAMPS: dict[int, tuple[str, bytes]] = {}


def iso(t: float) -> str:
    """`simulation.timefmt.iso_ms`, fast: the date-time part is cached per second, since a
    busy engine stamps hundreds of thousands of events with a handful of distinct seconds."""
    ms = round(t * 1000)
    sec, frac = divmod(ms, 1000)
    prefix = _PREFIXES.get(sec)
    if prefix is None:
        if len(_PREFIXES) > 4096:
            _PREFIXES.clear()
        prefix = _PREFIXES[sec] = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{prefix}{frac:03d}Z"


def _stamp(ms: int) -> tuple[str, bytes]:
    if len(_STAMPS) >= 16384:
        _STAMPS.clear()
    text = iso(ms / 1000)
    stamp = _STAMPS[ms] = (text, text.encode())
    return stamp


class EventRows:
    """A batch of sink rows, produced lazily: iterate it for (run_id, seq, name, data)
    tuples (the store cuts them into one chunk per run). A flush of 10,000 busy runs would otherwise
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
    """One run's events. `seq` is the number written so far (the last event's seq);
    `finished` turns true once the run's terminal event is in."""

    __slots__ = ("_codes", "_data", "_ids", "_listeners", "_ts", "_ts_t", "_tsb", "_waiters", "finished", "run_id",
                 "seq", "workflow_id")

    def __init__(self, run_id: str = "", workflow_id: str = "", listeners: Listeners | None = None) -> None:
        self.run_id = run_id
        self.workflow_id = workflow_id
        self._listeners = listeners
        self._data: list[bytes] = []
        self._codes = bytearray()
        self._waiters: list[asyncio.Future[None]] | None = None
        self.seq = 0
        self.finished = False
        # What every event of this run carries after its name, up to the seq's digits.
        self._ids = b'"runId":' + _encode(run_id) + b',"workflowId":' + _encode(workflow_id) + b',"seq":'
        # The last instant stamped, as a string and as bytes: most events share theirs.
        self._ts_t = -1.0
        self._ts = ""
        self._tsb = b""

    # --- writing ---------------------------------------------------------------------------

    def stamp(self, t: float) -> str:
        """The RFC 3339 form of instant `t` (cached: events share instants)."""
        if t != self._ts_t:
            self._restamp(t)
        return self._ts

    def _restamp(self, t: float) -> None:
        self._ts_t = t
        ms = round(t * 1000)
        self._ts, self._tsb = _STAMPS.get(ms) or _stamp(ms)

    def event(self, t: float, code: int, cls: Callable[..., Any], *fields: Any) -> None:
        """Write one event built by `cls(run_id, workflow_id, seq, ts, *fields)`: its Struct
        (the rarer events), or a function making one."""
        self.seq = seq = self.seq + 1
        if t != self._ts_t:
            self._restamp(t)
        self._emit(code, seq, _encode(cls(self.run_id, self.workflow_id, seq, self._ts, *fields)))

    def plain(self, t: float, code: int) -> None:
        """Write an event that carries nothing but its name (run.completed, run.stopped...)."""
        self.seq = seq = self.seq + 1
        if t != self._ts_t:
            self._restamp(t)
        self._emit(code, seq, _T_PLAIN % (_PLAIN_NAMES[code], self._ids, seq, self._tsb))

    def node_started(self, t: float, node_json: bytes) -> str:
        """Write node.queued and node.started of one node; returns their stamp."""
        self.seq = seq = self.seq + 2
        if t != self._ts_t:
            self._restamp(t)
        ids = self._ids
        tsb = self._tsb
        queued = _T_QUEUED % (ids, seq - 1, tsb, node_json)
        started = _T_STARTED % (ids, seq, tsb, node_json)
        # _emit twice, inlined: every node of every run comes this way.
        self._codes += _QUEUED_STARTED
        data = self._data
        data.append(queued)
        data.append(started)
        if self._waiters:
            self._wake()
        notify = self._listeners.notify if self._listeners is not None else None
        if notify is not None:
            try:
                notify(self.run_id, self.workflow_id, seq - 1, "node.queued", queued)
            except Exception:
                log.exception("event listener %r failed", notify)
            try:
                notify(self.run_id, self.workflow_id, seq, "node.started", started)
            except Exception:
                log.exception("event listener %r failed", notify)
        return self._ts

    def progress(self, t: float, node_json: bytes, progress: float) -> None:
        self.seq = seq = self.seq + 1
        if t != self._ts_t:
            self._restamp(t)
        self._emit(_PROGRESS, seq, _T_PROGRESS % (self._ids, seq, self._tsb, node_json, _encode(progress)))

    def node_completed(self, t: float, node_json: bytes, output: bytes) -> tuple[str, int, int]:
        """Write node.completed with its encoded `output`; returns (stamp, seq, offset):
        `output_of(seq, offset)` gives the output back without keeping it twice."""
        self.seq = seq = self.seq + 1
        if t != self._ts_t:
            self._restamp(t)
        data = _T_COMPLETED % (self._ids, seq, self._tsb, node_json, output)
        self._emit(_COMPLETED, seq, data)
        return self._ts, seq, len(data) - len(output) - 1

    def node_reused(self, t: float, node_id: str, output: bytes, *, pinned: bool) -> tuple[str, int, int]:
        """Write the node.completed of a node that did not run (`reused`, or `pinned`); returns
        what `node_completed` returns."""
        self.seq = seq = self.seq + 1
        if t != self._ts_t:
            self._restamp(t)
        data = _encode(NodeCompleted(self.run_id, self.workflow_id, seq, self._ts, node_id=node_id,
                                     reused=not pinned, pinned=pinned, output=msgspec.Raw(output)))
        self._emit(_COMPLETED, seq, data)
        return self._ts, seq, len(data) - len(output) - 1

    def edge_data(self, t: float, edge_json: bytes, items: int, size: int) -> None:
        self.seq = seq = self.seq + 1
        if t != self._ts_t:
            self._restamp(t)
        self._emit(_EDGE_DATA, seq, _T_EDGE % (self._ids, seq, self._tsb, edge_json, items, size))

    def _emit(self, code: int, seq: int, data: bytes) -> None:
        self._codes.append(code)
        self._data.append(data)
        if self._waiters:
            self._wake()
        notify = self._listeners.notify if self._listeners is not None else None
        if notify is not None:
            try:
                notify(self.run_id, self.workflow_id, seq, EVENT_NAMES[code], data)
            except Exception:
                log.exception("event listener %r failed", notify)

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

    # --- reading ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return len(self._data)

    def output_of(self, seq: int, offset: int) -> bytes:
        """The encoded output carried by node.completed event `seq` (see `node_completed`)."""
        return self._data[seq - 1][offset:-1]

    def events_after(self, seq: int) -> list[tuple[int, str, bytes]]:
        """Every event with a seq greater than `seq`, as (seq, name, data)."""
        start = max(seq, 0)
        names = EVENT_NAMES
        return [(start + i + 1, names[code], data)
                for i, (code, data) in enumerate(zip(self._codes[start:], self._data[start:], strict=True))]

    def add_rows(self, batch: EventRows, after: int, upto: int) -> None:
        """Add events after..upto to a sink batch (two slices, no per-event work)."""
        batch.add(self.run_id, after + 1, bytes(self._codes[after:upto]), self._data[after:upto])

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
