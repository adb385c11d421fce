"""Node inspection's reading: a run's snapshot and events from the engine while it is in
memory, from the store once it left (evicted, or a restart); its frozen graph; and the runs
of its retry lineage, for the attempt count. simulation.node_view builds the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

from flowstage.actors.engine import Engine
from flowstage.server.store import Store
from flowstage.simulation.errors import NotFound
from flowstage.simulation.messages import no_such
from flowstage.simulation.models import NodeInspection, Run
from flowstage.simulation.node_view import EventRecord, executed, inspect_node
from flowstage.simulation.plan import Plan, compile_plan

__all__ = ["LINEAGE_LIMIT", "NodeInspector", "Recorded", "lineage_attempts"]

LINEAGE_LIMIT = 100
"""The most runs a retry lineage is followed through (this run and its ancestors)."""

_EVENT_PAGE = 10_000  # stored events read per query


class Recorded(NamedTuple):
    """A run and its events, read at one instant `at` (epoch seconds)."""

    run: Run
    events: list[EventRecord]
    at: float


Loader = Callable[[str], Awaitable[Recorded | None]]


async def lineage_attempts(first: Recorded, node_id: str, load: Loader, limit: int = LINEAGE_LIMIT) -> int:
    """How many runs of `first`'s retry lineage executed the node: `first`, its parent, the
    parent's parent... (`parentRunId`), up to `limit` runs; a parent that cannot be read
    (deleted) ends the walk, and so does a loop."""
    count = 0
    seen: set[str] = set()
    current: Recorded | None = first
    while current is not None and current.run.id not in seen and len(seen) < limit:
        seen.add(current.run.id)
        count += executed(current.events, node_id)
        parent = current.run.parent_run_id
        current = None if parent is None else await load(parent)
    return count


def _node_not_in_run(node_id: str, run_id: str) -> str:
    """A path names a node the run does not have (404 detail)."""
    return f"No node {node_id!r} in run {run_id!r}."


class NodeInspector:
    """Answers `GET /api/runs/{id}/nodes/{nodeId}` from the engine and the store."""

    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store

    async def inspect(self, run_id: str, node_id: str) -> NodeInspection:
        """NotFound for an unknown run, or a node the run does not have."""
        recorded = await self.load(run_id)
        if recorded is None:
            raise NotFound(no_such("run", run_id))
        if node_id not in recorded.run.nodes:
            raise NotFound(_node_not_in_run(node_id, run_id))
        plan = await self._plan(recorded.run)
        attempt = await lineage_attempts(recorded, node_id, self.load)
        return inspect_node(plan, recorded.run, recorded.events, node_id, now=recorded.at, attempt=attempt)

    async def load(self, run_id: str) -> Recorded | None:
        """The run live if the engine has it (snapshot and events of the same instant), else
        as stored; None if there is no such run."""
        engine = self.engine
        log = engine.events(run_id)
        live = engine.snapshot(run_id)
        if log is not None and live is not None:
            return Recorded(live, log.events_after(0), engine.clock.now())
        stored = await self.store.runs.get(run_id)
        if stored is None:
            return None
        events: list[EventRecord] = []
        while True:
            page = await self.store.runs.events_after(run_id, events[-1][0] if events else 0, limit=_EVENT_PAGE)
            events += page
            if len(page) < _EVENT_PAGE:
                return Recorded(stored, events, engine.clock.now())

    async def _plan(self, run: Run) -> Plan | None:
        graph = await self.store.runs.frozen_graph(run.workflow_id, run.workflow_version)
        if graph is None:
            return None
        # A run of one node alone (process-files) has that node's plan, with no connections.
        alone = next(iter(run.nodes)) if run.kind != "workflow" and len(run.nodes) == 1 else None
        return compile_plan(graph, only_node=alone)
