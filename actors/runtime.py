"""What the engine shares with the runs it starts, and nothing more: `EngineConfig`, and
`Runtime` (the clock, the handlers, the scheduler, the listeners,
and the three calls a run makes into its engine: "I have something to persist", "I
have ended" and "run this node's async handler").

A run never sees the engine itself: this narrow, typed interface is all it may use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import msgspec

from flowstage.actors.clock import Clock
from flowstage.actors.eventlog import EventListener, EventRows
from flowstage.actors.handlers import HandlerRegistry
from flowstage.actors.messages import WorkDone
from flowstage.actors.scheduler import Scheduler
from flowstage.config import defaults
from flowstage.simulation.catalogue import Timing
from flowstage.simulation.models import Run
from flowstage.simulation.timing import DEFAULT_CAP_MS

__all__ = ["EngineConfig", "Flushable", "Runtime", "SpawnWork", "WorkSet"]

_SETTINGS = defaults()


class EngineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The engine's knobs. The first three are settings (their defaults are defaults.toml's);
    the rest are engine tuning that no setting exposes."""

    default_speed: float = _SETTINGS["speed"]
    mailbox_size: int = _SETTINGS["mailbox_size"]
    # node type -> probability of a simulated failure, combined with a run's failureRate.
    failure_rates: dict[str, float] = msgspec.field(default_factory=lambda: dict(_SETTINGS["failure_rates"]))
    # node type -> timing profile replacing the catalogue's.
    timings: dict[str, Timing] = {}
    progress_step: float = 0.25
    # seconds of clock time between two node.progress events of one node, at least.
    progress_min_interval: float = 0.25
    flush_interval: float = 0.05
    # finished runs kept in memory (for snapshots, dataflow, SSE replay) once persisted.
    retain_finished: int = 1000
    max_duration_ms: float = DEFAULT_CAP_MS
    plan_cache_size: int = 256
    # Node timers handled, and executes started, per turn of the event loop before others
    # get a turn (about 10 µs each).
    runs_per_turn: int = 128


class Flushable(Protocol):
    """A run as the flusher sees it (see actors.flusher)."""

    @property
    def id(self) -> str: ...

    def collect(self, rows: EventRows) -> Run | None:
        """Add the events not yet persisted to `rows`; the snapshot to save, if one is due."""
        ...

    def persisted(self) -> None:
        """What the last `collect` handed over is stored."""
        ...

    def unpersisted(self) -> None:
        """The last `collect` could not be stored: hand it over again next time."""
        ...


class Deliverable(Protocol):
    def deliver(self, message: WorkDone) -> object: ...


class WorkSet:
    """The async handler tasks the engine owns: spawned here, cancelled and awaited on close.
    When one ends, its run (looked up by id: it may have left memory) hears `WorkDone`."""

    __slots__ = ("_find", "_tasks")

    def __init__(self, find: Callable[[str], Deliverable | None]) -> None:
        self._find = find
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, run_id: str, index: int, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run node `index` of run `run_id`'s async handler as an owned task."""
        task = asyncio.get_running_loop().create_task(work, name=f"flowstage-work-{run_id}-{index}")
        self._tasks.add(task)
        message = WorkDone(index)

        def finished(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            run = self._find(run_id)
            if run is not None:
                run.deliver(message)

        task.add_done_callback(finished)
        return task

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


SpawnWork = Callable[[str, int, Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class Runtime:
    """Shared by every run of one engine. `listeners` changes as listeners come and go, and
    `notify` with them (actors.eventlog.fan_out)."""

    __slots__ = ("clock", "config", "finished", "handlers", "listeners", "loop", "notify", "on_dirty", "scheduler",
                 "spawn_work")

    def __init__(self, clock: Clock, config: EngineConfig, handlers: HandlerRegistry, scheduler: Scheduler, *,
                 on_dirty: Callable[[Flushable], None], finished: Callable[[Flushable], None],
                 spawn_work: SpawnWork) -> None:
        self.clock = clock
        self.config = config
        self.handlers = handlers
        self.scheduler = scheduler
        self.listeners: tuple[EventListener, ...] = ()
        self.notify: EventListener | None = None
        self.spawn_work = spawn_work  # run an async handler of (run id, node index) as an owned task
        self.on_dirty = on_dirty  # the run has events or a snapshot to persist
        self.finished = finished  # the run ended
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the engine starts
