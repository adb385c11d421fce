"""Runs as the HTTP layer sees them: one place that knows whether a run is live (the engine
has it in memory) or finished and stored, so handlers stay thin.
"""

from __future__ import annotations

import msgspec

from flowstage.actors.engine import Action, Engine
from flowstage.actors.messages import RunCommand
from flowstage.server.store import Page, Store
from flowstage.simulation.errors import Conflict, NotFound
from flowstage.simulation.messages import no_such
from flowstage.simulation.models import EdgeFlow, Run, RunState
from flowstage.simulation.plan import compile_plan, edge_flows
from flowstage.simulation.recovery import interrupt_stored

__all__ = ["Dataflow", "RunService", "recover_interrupted"]

async def recover_interrupted(store: Store, now: float) -> int:
    """At start-up: runs stored as active belong to a process that died; end them failed
    with an `interrupted` error (see simulation.recovery). Finished runs are not touched.
    Returns how many were ended."""
    ended = 0
    for run, _last_seq in await store.runs.active():
        events = await store.runs.events_after(run.id, 0, limit=1_000_000)
        failed, new_events = interrupt_stored(run, events, now)
        await store.runs.save([failed], [(run.id, seq, name, data) for seq, name, data in new_events])
        ended += 1
    return ended


class Dataflow(msgspec.Struct, frozen=True, rename="camel"):
    run_id: str | None
    edges: list[EdgeFlow]


class RunService:
    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store

    async def get(self, run_id: str) -> Run:
        live = self.engine.snapshot(run_id)
        if live is not None:
            return live
        stored = await self.store.runs.get(run_id)
        if stored is None:
            raise NotFound(no_such("run", run_id))
        return stored

    async def latest(self, workflow_id: str) -> Run | None:
        """The workflow's newest run (live or stored); the workflow must exist."""
        await self.store.workflows.get(workflow_id)
        run_id = self.engine.latest_run_id(workflow_id)
        if run_id is not None:
            live = self.engine.snapshot(run_id)
            if live is not None:
                return live
        return await self.store.runs.latest_for_workflow(workflow_id)

    async def page(
        self, limit: int, cursor: str | None, *, workflow_id: str | None = None, state: RunState | None = None
    ) -> Page[Run]:
        """Runs newest first, each as its live snapshot while the engine holds it. Every run
        is stored when it starts, so the store has them all; only a live run's stored state
        lags, by up to one flush: with a state filter, flush first, and leave out a run that
        changed state in the instant since (the page may then be one short)."""
        if state is not None:
            await self.engine.flush()
        page = await self.store.runs.page(limit, cursor, workflow_id=workflow_id, state=state)
        items = [self.engine.snapshot(r.id) or r for r in page.items]
        if state is not None:
            items = [r for r in items if r.state == state]
        return Page(items=items, next_cursor=page.next_cursor)

    async def control(self, run_id: str, action: Action | RunCommand, verb: str | None = None) -> Run:
        """Send a live run a control (`verb` names a command for the 409 of a finished run)."""
        if self.engine.events(run_id) is not None:  # in memory (cheaper than a snapshot)
            return await self.engine.control(run_id, action)
        stored = await self.get(run_id)  # NotFound if there is no such run
        raise Conflict(f"Can't {verb or action} when {stored.state}.")

    async def control_latest(self, workflow_id: str, action: Action) -> Run:
        await self.store.workflows.get(workflow_id)  # NotFound
        run_id = self.engine.latest_run_id(workflow_id)
        if run_id is None:  # none in this process: the newest stored one, if any
            stored = await self.store.runs.latest_for_workflow(workflow_id)
            if stored is None:
                raise Conflict(f"Can't {action}: workflow {workflow_id!r} has never run.")
            run_id = stored.id
        return await self.control(run_id, action)

    async def dataflow(self, workflow_id: str) -> Dataflow:
        latest = await self.latest(workflow_id)
        if latest is None:
            return Dataflow(run_id=None, edges=[])
        live = self.engine.dataflow(latest.id)
        if live is not None:
            return Dataflow(run_id=latest.id, edges=live)
        graph = await self.store.runs.frozen_graph(latest.workflow_id, latest.workflow_version)
        if graph is None:
            return Dataflow(run_id=latest.id, edges=[])
        plan = compile_plan(graph, only_node=_only_node(latest))
        return Dataflow(run_id=latest.id, edges=edge_flows(plan, latest))


def _only_node(run: Run) -> str | None:
    if run.kind != "process-files" or len(run.nodes) != 1:
        return None
    return next(iter(run.nodes))
