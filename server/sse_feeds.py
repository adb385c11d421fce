"""Where an SSE stream's frames come from: the hub's ring of recent events (every run's, each
with a global position) and, per live run with subscribers, that run's feed. Each frame is
built once per id scheme, when the first subscriber needs it, and shared; consecutive
subscribers at the same cursor share the join of their frames too."""

from __future__ import annotations

from typing import Protocol

from flowstage.server.sse_wire import frame, gap_frame

__all__ = ["Entry", "EventRing", "Reader", "RunEvents", "RunFeed"]

# (run_id, workflow_id, seq, name, data): one event as the engine's listeners receive it.
Entry = tuple[str, str, int, str, bytes]

# A filtered subscriber scans at most this many ring entries before it yields to the loop.
_MAX_SCAN = 8192
_EMPTY: frozenset[str] = frozenset()


class RunEvents(Protocol):
    """What a run's feed reads: the engine's `EventLog` of a run in this process, or a
    `server.remote.RemoteRunLog` of a run in another one (the Redis bus)."""

    @property
    def last_seq(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def events_after(self, seq: int) -> list[tuple[int, str, bytes]]: ...


class RunFeed:
    """A live run's frames, built once from its event log and shared by its subscribers."""

    __slots__ = ("chunk", "frames", "key", "log", "users")

    def __init__(self, event_log: RunEvents) -> None:
        self.log = event_log
        self.frames: list[bytes] = []
        self.users = 0
        self.key = (0, 0)
        self.chunk = b""

    def collect(self, cursor: int, limit: int) -> tuple[bytes, int]:
        """The frames after seq `cursor`, at most `limit` of them: (chunk, events)."""
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


class Reader(Protocol):
    """What the ring reads of a subscriber: the last position delivered to it, its filters
    (None: no filter), and whether its ids are run seqs (a workflow stream)."""

    cursor: int
    runs: frozenset[str] | None
    workflows: frozenset[str] | None
    seq_ids: bool


class EventRing:
    """The last `size` events of every run, in the order they were emitted. An event's
    position (1, 2, ...) is its id on `/api/events`; positions keep growing as old events
    leave."""

    def __init__(self, size: int) -> None:
        self._size = size
        # Trim in steps of an eighth of the ring: `del list[:n]` moves the rest.
        self._trim_at = size + size // 8
        self.entries: list[Entry] = []  # one list for the ring's life, changed in place
        self.first = 1  # the position of entries[0]; positions start at 1
        self.notified = 0  # subscribers were woken for every position up to this
        self._frames_pos: list[bytes] = []  # frames with position ids, built from the front
        self._frames_seq: list[bytes | None] = []  # frames with run-seq ids, built on demand
        self._chunk_key = (0, 0)
        self._chunk = b""

    @property
    def head(self) -> int:
        """The position of the newest event (0 before the first)."""
        return self.first + len(self.entries) - 1

    def append(self, entry: Entry) -> bool:
        """Add the newest event; True when the oldest ones were dropped to make room."""
        entries = self.entries
        entries.append(entry)
        if len(entries) <= self._trim_at:
            return False
        drop = len(entries) - self._size
        del entries[:drop]
        del self._frames_pos[:drop]
        del self._frames_seq[:drop]
        self.first += drop
        return True

    def append_at(self, position: int, entry: Entry) -> bool:
        """Add the event at global `position` (the Redis bus numbers them). A jump forward
        (events trimmed away before this process read them) forgets what the ring held, so
        a subscriber that needed them is told of the gap."""
        if position != self.head + 1:
            self.clear(position - 1)
        return self.append(entry)

    def mark_notified(self) -> int:
        """Record that subscribers are being woken for every event so far. Returns the index in
        `entries` of the first event they were not woken for yet (negative: events were dropped
        before anyone was woken for them)."""
        start = self.notified + 1 - self.first
        self.notified = self.head
        return start

    def collect(self, sub: Reader, limit: int) -> tuple[bytes, int, bool]:
        """The next frames for a subscriber, at most `limit` events, moving its cursor past
        them: (chunk, events, more pending). A gap notice comes first when the ring has moved
        past what the subscriber still needed."""
        entries = self.entries
        first = self.first
        floor = first - 1
        gap = b""
        if sub.cursor < floor:
            gap = gap_frame("evicted", sub.cursor, first, seq_ids=sub.seq_ids)
            sub.cursor = floor
        i = sub.cursor - floor
        n = len(entries)
        if i >= n:
            return gap, 0, False
        if sub.runs is None and sub.workflows is None:  # everything, ids = positions
            end = min(n, i + limit)
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
            base = self.first
            # A slice, not islice: islice walks the `have` entries before it (up to the whole
            # ring, on every call), which under a steady trickle of events was most of the
            # stream's cost.
            frames.extend([frame(base + i, e[3], e[4])
                           for i, e in enumerate(self.entries[have:end], have)])

    def clear(self, head: int | None = None) -> None:
        """Forget every event; the next one is at `head` + 1 (by default, where it would have
        been). Positions keep growing, so an id from before is reported as a gap, never
        confused with a later event."""
        head = self.head if head is None else head
        self.first = head + 1
        self.notified = head
        self.entries.clear()
        self._frames_pos.clear()
        self._frames_seq.clear()
        self._chunk_key = (0, 0)
