"""Time as an interface: the runtime asks a Clock for the time and for timers, never
`time` or `asyncio.sleep` directly.

`SystemClock` is wall time for production. `ManualClock` moves only when a test tells it
to, firing due timers in deadline order, so timed behaviour is asserted at exact virtual
instants and a test of a ten-minute workflow takes milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "TimerHandle"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (virtual for a manual clock)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Call `callback(*args)` on the event loop after `delay` seconds."""
        ...

    async def sleep(self, delay: float) -> None: ...


class SystemClock:
    """Wall time: the epoch reading is taken once, then advanced by the loop's monotonic
    clock, so a wall-clock step (NTP) never reorders timers or timestamps."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._offset = 0.0

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._offset = time.time() - loop.time()
        return loop

    def now(self) -> float:
        loop = self._loop or self._bind()
        return self._offset + loop.time()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        loop = self._loop or self._bind()
        return loop.call_later(delay, callback, *args)

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)


class _ManualTimer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: int, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when  # nanoseconds since the clock's start
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when told: `await advance(s)`, `await step()` or
    `await run_until_idle()`.

    Timers fire in deadline order (ties in scheduling order) with `now()` set to each
    timer's own deadline; between firings the loop gets a few turns so that tasks woken
    by a timer run before the next one fires. Time is counted in integer nanoseconds since
    `start`: ten advances of 0.1 s reach a timer set 1 s ahead exactly (in epoch-second
    floats, near 1.79e9, they fall 0.2 µs short).
    """

    def __init__(self, start: float = 1_790_000_000.0, *, settle_turns: int = 4) -> None:
        self._start = start
        self._ns = 0
        self._heap: list[tuple[int, int, _ManualTimer]] = []
        self._counter = itertools.count()
        self._settle_turns = settle_turns

    def now(self) -> float:
        return self._start + self._ns / 1e9

    @property
    def elapsed_ns(self) -> int:
        """Nanoseconds since the start (or the last rewind)."""
        return self._ns

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _ManualTimer:
        timer = _ManualTimer(self._ns + max(round(delay * 1e9), 0), callback, args)
        heapq.heappush(self._heap, (timer.when, next(self._counter), timer))
        return timer

    async def sleep(self, delay: float) -> None:
        future = asyncio.get_running_loop().create_future()
        timer = self.call_later(delay, _wake, future)
        try:
            await future
        finally:
            timer.cancel()

    def rewind(self) -> None:
        """Drop every timer and go back to the start (a test stage being reset)."""
        for _, _, timer in self._heap:
            timer.cancelled = True
        self._heap.clear()
        self._ns = 0

    def pending(self) -> int:
        """How many live timers are scheduled."""
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def next_deadline(self) -> float | None:
        """The epoch instant the next timer falls due; None if none is set."""
        when = self.next_deadline_ns()
        return None if when is None else self._start + when / 1e9

    def next_deadline_ns(self) -> int | None:
        self._drop_cancelled()
        return self._heap[0][0] if self._heap else None

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)

    async def _settle(self) -> None:
        for _ in range(self._settle_turns):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing every timer that falls due on the way."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        await self._advance_to_ns(self._ns + round(seconds * 1e9))

    async def advance_to(self, target: float) -> None:
        """Move time to the epoch instant `target`, firing every timer due by then; an
        instant already passed fires what is due now."""
        await self._advance_to_ns(round((target - self._start) * 1e9))

    async def _advance_to_ns(self, target: int) -> None:
        await self._settle()
        while True:
            when = self.next_deadline_ns()
            if when is None or when > target:
                break
            await self._fire_next(when)
        self._ns = max(self._ns, target)

    async def step(self) -> bool:
        """Move to the next deadline exactly and fire what falls due then (the woken tasks
        get their turns); False, and no move, when no timer is set."""
        when = self.next_deadline_ns()
        if when is None:
            return False
        await self._fire_next(when)
        return True

    async def _fire_next(self, when: int) -> None:
        """Fire everything due at the instant `when`, then let the tasks it woke run."""
        self._ns = max(self._ns, when)
        while self._heap and self._heap[0][0] <= when:
            _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                timer.cancelled = True  # fired: a late cancel() is a no-op
                timer.callback(*timer.args)
        await self._settle()

    async def run_until_idle(self, max_steps: int = 100_000) -> None:
        """Jump from deadline to deadline until no timer is left; raise after `max_steps`
        jumps (something keeps rescheduling itself)."""
        await self._settle()
        for _ in range(max_steps):
            if not await self.step():
                return
        raise RuntimeError(f"ManualClock still busy after {max_steps} steps")


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
