"""The run registry: every run in memory, the latest run of each workflow, and which
finished runs may leave memory. A run here is a `LiveRun`: an executed run (actors.run) or a
replay (actors.replay), which the engine serves alike.

Finished runs stay for `retain` more (for snapshots, dataflow and SSE replay) once
persisted; older ones are evicted after each flush, a slice at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from flowstage.actors.eventlog import EventLog
from flowstage.actors.messages import RunMessage
from flowstage.actors.runtime import Flushable
from flowstage.simulation.errors import NotFound
from flowstage.simulation.messages import no_such
from flowstage.simulation.models import Run
from flowstage.simulation.plan import Plan

__all__ = ["LiveRun", "RunRegistry"]

_EVICT_SLICE = 100  # runs evicted between two turns of the loop


class LiveRun(Flushable, Protocol):
    """A run in memory, as the engine uses it: an actor (`ask`, `deliver`, `stop`) with its
    graph's plan, its event log and its snapshot, that the flusher persists."""

    @property
    def workflow_id(self) -> str: ...

    @property
    def plan(self) -> Plan: ...

    @property
    def log(self) -> EventLog: ...

    @property
    def stored(self) -> bool:
        """Everything about the run is persisted (it may leave memory)."""
        ...

    @property
    def pending(self) -> int: ...

    def snapshot(self, *, raw: bool = False) -> Run: ...

    def stalled(self) -> bool: ...

    def ask(self, message: RunMessage) -> asyncio.Future[Any]: ...

    def deliver(self, message: RunMessage) -> Any: ...

    def stop(self) -> None: ...


class RunRegistry:
    __slots__ = ("_finished", "_latest", "_runs", "retain")

    def __init__(self, retain: int) -> None:
        self.retain = retain
        self._runs: dict[str, LiveRun] = {}
        self._latest: dict[str, str] = {}
        self._finished: deque[LiveRun] = deque()

    def add(self, run: LiveRun) -> None:
        self._runs[run.id] = run
        self._latest[run.workflow_id] = run.id

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def find(self, run_id: str) -> LiveRun | None:
        return self._runs.get(run_id)

    def get(self, run_id: str) -> LiveRun:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFound(no_such("run", run_id))
        return run

    def latest(self, workflow_id: str) -> str | None:
        return self._latest.get(workflow_id)

    def runs(self) -> list[LiveRun]:
        """Runs in memory, oldest first."""
        return list(self._runs.values())

    def finished(self, run: Flushable) -> None:
        """`run` ended: it may leave memory once persisted and `retain` newer ones ended."""
        self._finished.append(self.get(run.id))

    def clear(self) -> None:
        self._runs.clear()
        self._latest.clear()
        self._finished.clear()

    async def evict(self) -> None:
        """Stop and forget the finished runs beyond `retain`, oldest first, once stored."""
        finished = self._finished
        evicted = 0
        while len(finished) > self.retain:
            run = finished[0]
            if not run.stored:
                break
            finished.popleft()
            if self._runs.get(run.id) is run:
                del self._runs[run.id]
            run.stop()
            evicted += 1
            if not evicted % _EVICT_SLICE:
                # Freeing a run (its event log, nodes, snapshot) is microseconds; a few
                # thousand runs that ended together are freed a slice at a time.
                del run
                await asyncio.sleep(0)
