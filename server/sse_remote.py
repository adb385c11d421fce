"""A run that lives in another process, as this process's SSE streams read it (the Redis bus):
its events so far from the run's Redis stream, then each new one as the bus delivers it."""

from __future__ import annotations

__all__ = ["RemoteRunLog"]

_TERMINAL = frozenset({"run.completed", "run.failed", "run.stopped"})


class RemoteRunLog:
    """The events of one run, in seq order, with no gap: what a `RunFeed` reads."""

    __slots__ = ("_events", "_filled", "_waiting", "finished", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._events: list[tuple[int, str, bytes]] = []
        self._filled = False
        self._waiting: list[tuple[int, str, bytes]] = []  # delivered before the fill
        self.finished = False

    @property
    def last_seq(self) -> int:
        return len(self._events)

    def events_after(self, seq: int) -> list[tuple[int, str, bytes]]:
        return self._events[seq:]

    def fill(self, events: list[tuple[int, str, bytes]]) -> None:
        """The run's events read from its stream; those delivered meanwhile follow them."""
        self._filled = True
        for event in (*events, *self._waiting):
            self.add(*event)
        self._waiting = []

    def add(self, seq: int, name: str, data: bytes) -> bool:
        """The next event, as the bus delivered it. False when one is missing before it (the
        log then waits for a fill from the run's stream)."""
        if not self._filled:
            self._waiting.append((seq, name, data))
            return True
        if seq <= len(self._events):
            return True  # had it already
        if seq != len(self._events) + 1:
            return False
        self._events.append((seq, name, data))
        if name in _TERMINAL:
            self.finished = True
        return True

    def refill(self) -> None:
        """Start waiting for a fill again (an event went missing)."""
        self._filled = False
