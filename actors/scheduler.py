"""The timer scheduler: one clock timer serves every run.

Runs ask to be woken at their next node timer (`wake_at`); the scheduler keeps those
requests in one heap and wakes about `per_turn` due node timers per turn of the loop before
it lets others run. Ten thousand runs whose timers fell due together (after a burst, or a
stall) are worked off in slices of a millisecond or two, not in one loop iteration of
hundreds. A request is voided by cancelling its `Wakeup` (asyncio's TimerHandle, in small).
"""

from __future__ import annotations

from heapq import heappop, heappush
from typing import Protocol

from flowstage.actors.clock import Clock, TimerHandle

__all__ = ["Scheduler", "Wakeable", "Wakeup"]

# A clock timer may fire a hair before its deadline (float epoch seconds carry ~0.2 µs).
_DUE_SLACK = 1e-6


class Wakeable(Protocol):
    def wake(self, limit: float) -> int:
        """Handle what fell due by `limit`; return how many node timers that was."""
        ...


class Wakeup:
    """One pending wake-up of one target; `cancel` voids it."""

    __slots__ = ("target",)

    def __init__(self, target: Wakeable) -> None:
        self.target: Wakeable | None = target

    def cancel(self) -> None:
        self.target = None


class Scheduler:
    __slots__ = ("_clock", "_due", "_firing", "_handle", "_open", "_seq", "_when", "per_turn")

    def __init__(self, clock: Clock, per_turn: int) -> None:
        self._clock = clock
        self.per_turn = per_turn
        # (when, seq, wakeup): seq keeps requests with equal deadlines in request order.
        self._due: list[tuple[float, int, Wakeup]] = []
        self._seq = 0
        self._handle: TimerHandle | None = None
        self._when = 0.0
        self._firing = False
        self._open = True

    def wake_at(self, target: Wakeable, when: float) -> Wakeup:
        """Call `target.wake(limit)` once the clock reaches `when` (`limit` >= `when`)."""
        self._seq = seq = self._seq + 1
        wakeup = Wakeup(target)
        heappush(self._due, (when, seq, wakeup))
        if not self._firing and (self._handle is None or when < self._when):
            self._arm(when)
        return wakeup

    def close(self) -> None:
        """Drop every wake-up and the clock timer; nothing is woken any more."""
        self.clear()
        self._open = False

    def clear(self) -> None:
        """Drop every wake-up and the clock timer (a test stage's reset)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._due.clear()

    def _arm(self, when: float) -> None:
        if not self._open:
            return
        if self._handle is not None:
            self._handle.cancel()
        clock = self._clock
        self._when = when
        self._handle = clock.call_later(when - clock.now(), self._fire)

    def _fire(self) -> None:
        """Wake the due targets in (deadline, request) order until about `per_turn` node
        timers were handled; if more are due, come back on the next turn of the loop."""
        self._handle = None
        heap = self._due
        limit = self._clock.now() + _DUE_SLACK
        budget = self.per_turn
        self._firing = True
        try:
            while heap and heap[0][0] <= limit:
                wakeup = heappop(heap)[2]
                target = wakeup.target
                if target is None:
                    continue  # voided: the run re-armed, paused or ended
                wakeup.target = None
                budget -= target.wake(limit)
                if budget <= 0:
                    break
        finally:
            self._firing = False
            while heap and heap[0][2].target is None:
                heappop(heap)
            if heap:
                self._arm(heap[0][0])
