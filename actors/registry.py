"""The run registry: every run in memory, the latest run of each workflow, and which
finished runs may leave memory.

Finished runs stay for `retain` more (for snapshots, dataflow and SSE replay) once
persisted; older ones are evicted after each flush, a slice at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque

from flowstage.actors.run import RunActor
from flowstage.actors.runtime import Flushable
from flowstage.simulation.errors import NotFound
from flowstage.simulation.messages import no_such

__all__ = ["RunRegistry"]

_EVICT_SLICE = 100  # runs evicted between two turns of the loop


class RunRegistry:
    __slots__ = ("_finished", "_latest", "_runs", "retain")

    def __init__(self, retain: int) -> None:
        self.retain = retain
        self._runs: dict[str, RunActor] = {}
        self._latest: dict[str, str] = {}
        self._finished: deque[RunActor] = deque()

    def add(self, run: RunActor) -> None:
        self._runs[run.id] = run
        self._latest[run.workflow_id] = run.id

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def find(self, run_id: str) -> RunActor | None:
        return self._runs.get(run_id)

    def get(self, run_id: str) -> RunActor:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFound(no_such("run", run_id))
        return run

    def latest(self, workflow_id: str) -> str | None:
        return self._latest.get(workflow_id)

    def runs(self) -> list[RunActor]:
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
