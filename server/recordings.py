"""Recordings as the HTTP layer sees them: a run's recording read from the engine while it holds
the run, or from the store once it let go; imported recordings checked and stored; and replays
of either started on the engine. Handlers stay thin.
"""

from __future__ import annotations

from collections.abc import Callable

from flowstage.actors.engine import Engine
from flowstage.server.store import Store, new_id
from flowstage.simulation.errors import Conflict, Invalid, NotFound
from flowstage.simulation.messages import no_such
from flowstage.simulation.models import Run, Workflow
from flowstage.simulation.recording import Recording, RecordingInfo, check_recording, record, recording_info
from flowstage.simulation.states import RUN_FINISHED
from flowstage.simulation.timefmt import iso_ms

__all__ = ["RecordingService"]

# Every event of a run, however long (a run sends tens; a limit only bounds a runaway).
_ALL_EVENTS = 1_000_000
_RECORDING_PREFIX = "rec_"


class RecordingService:
    def __init__(self, engine: Engine, store: Store, now: Callable[[], float]) -> None:
        self.engine = engine
        self.store = store
        self.now = now

    async def export(self, run_id: str) -> Recording:
        """The recording of a finished run: NotFound for an unknown run, Conflict for an active one."""
        run = await self._run(run_id)
        if run.state not in RUN_FINISHED:
            raise Conflict(f"Run {run_id!r} is {run.state}: only a finished run has a recording.")
        workflow = await self._graph(run)
        log = self.engine.events(run_id)  # in memory: it may hold events not yet stored
        events = log.events_after(0) if log is not None else await self.store.runs.events_after(
            run_id, 0, limit=_ALL_EVENTS)
        return record(run, workflow, events)

    async def add(self, recording: Recording) -> RecordingInfo:
        """Check an imported recording (Invalid at its first bad field) and keep it."""
        check_recording(recording)
        info = recording_info(new_id("rec"), recording, iso_ms(self.now()))
        await self.store.recordings.add(info, recording)
        return info

    async def replay_run(self, run_id: str, speed: float | None) -> Run:
        """Start a replay of a finished run's recording."""
        recording = await self.export(run_id)
        try:
            check_recording(recording)
        except Invalid as error:  # a history stored by an older or crashed process
            raise Conflict(f"Run {run_id!r} can't be replayed: {error.errors[0].msg}") from None
        return await self.engine.replay(recording, run_id=new_id("run"), replay_of=run_id, speed=speed)

    async def replay_recording(self, recording_id: str, speed: float | None) -> Run:
        """Start a replay of an imported recording."""
        recording = await self.store.recordings.get(recording_id)
        return await self.engine.replay(recording, run_id=new_id("run"), replay_of=recording_id, speed=speed)

    async def _run(self, run_id: str) -> Run:
        run = self.engine.snapshot(run_id) or await self.store.runs.get(run_id)
        if run is None:
            raise NotFound(no_such("run", run_id))
        return run

    async def _graph(self, run: Run) -> Workflow:
        """The graph `run` executed. A replay's is its recording's: an imported recording's graph
        is kept with it (a workflow of another server is not frozen here)."""
        while run.kind == "replay" and run.replay_of is not None:
            if run.replay_of.startswith(_RECORDING_PREFIX):
                return (await self.store.recordings.get(run.replay_of)).workflow
            run = await self._run(run.replay_of)
        graph = await self.store.runs.frozen_graph(run.workflow_id, run.workflow_version)
        if graph is None:
            raise Conflict(f"The graph run {run.id!r} executed is not stored: it has no recording.")
        return graph
