"""The clocks: a manual clock fires timers in deadline order at exact virtual instants."""

from __future__ import annotations

import asyncio
import time

import pytest

from flowstage.actors.clock import ManualClock, SystemClock

START = 1_790_000_000.0


async def test_manual_clock_fires_due_timers_in_order_at_their_deadlines() -> None:
    clock = ManualClock(start=START)
    fired: list[tuple[str, float]] = []
    clock.call_later(0.3, lambda: fired.append(("c", clock.now())))
    clock.call_later(0.1, lambda: fired.append(("a", clock.now())))
    clock.call_later(0.2, lambda: fired.append(("b", clock.now())))
    clock.call_later(5.0, lambda: fired.append(("late", clock.now())))
    await clock.advance(1.0)
    assert fired == [("a", START + 0.1), ("b", START + 0.2), ("c", START + 0.3)]
    assert clock.now() == START + 1.0
    assert clock.pending() == 1


async def test_cancelled_timers_do_not_fire() -> None:
    clock = ManualClock(start=START)
    fired: list[int] = []
    handle = clock.call_later(0.1, fired.append, 1)
    clock.call_later(0.2, fired.append, 2)
    handle.cancel()
    await clock.run_until_idle()
    assert fired == [2]
    assert clock.now() == START + 0.2


async def test_sleep_wakes_when_time_is_advanced() -> None:
    clock = ManualClock(start=START)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(2.0)
        woke.append(clock.now())

    task = asyncio.create_task(sleeper())
    await clock.advance(1.0)
    assert woke == []
    await clock.advance(1.0)
    assert woke == [START + 2.0]
    await task


async def test_timers_scheduled_by_timers_fire_in_the_same_advance() -> None:
    clock = ManualClock(start=START)
    seen: list[float] = []

    def tick(n: int) -> None:
        seen.append(clock.now() - START)
        if n:
            clock.call_later(0.5, tick, n - 1)

    clock.call_later(0.5, tick, 3)
    await clock.run_until_idle()
    assert seen == [0.5, 1.0, 1.5, 2.0]


async def test_run_until_idle_gives_up_on_endless_timers() -> None:
    clock = ManualClock(start=START)

    def again() -> None:
        clock.call_later(1.0, again)

    clock.call_later(1.0, again)
    with pytest.raises(RuntimeError, match="still busy"):
        await clock.run_until_idle(max_steps=50)


async def test_time_never_goes_back() -> None:
    with pytest.raises(ValueError, match="forward"):
        await ManualClock().advance(-1)


async def test_system_clock_reads_wall_time_and_schedules_on_the_loop() -> None:
    clock = SystemClock()
    # Bracketed by two wall-clock readings, so however long the machine takes between them;
    # the 1 ms covers float rounding of epoch seconds only.
    before = time.time()
    now = clock.now()
    after = time.time()
    assert before - 0.001 <= now <= after + 0.001
    done = asyncio.get_running_loop().create_future()
    clock.call_later(0, done.set_result, "fired")
    assert await done == "fired"
    before = clock.now()
    await clock.sleep(0)
    assert clock.now() >= before
