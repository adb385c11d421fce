"""The replay actor: one read-only run of kind "replay" that plays a recording's events back.

Nothing is simulated: each recorded event (simulation.recording) is written again, with this
run's id, the next seq and the instant it plays at, `offsetMs / 1000 / speed` clock seconds after
the replay started; events at the same offset play together. The scheduler wakes the actor at
the next offset (it is a `Wakeable`), its event log serves SSE like any run's, and the flusher
persists it (it is a `Flushable`). Its snapshot is the fold of the events played so far
(simulation.history), so it moves exactly as the events say.

Clients may only read it: `GetSnapshot` answers, every other command is a `Conflict`. The
engine shutting down interrupts it as start-up recovery ends a run the process lost
(simulation.recovery): it ends `failed`, with the same events.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import msgspec

from flowstage.actors.actor import Supervisor
from flowstage.actors.eventlog import EVENT_CODES, EventLog, iso
from flowstage.actors.messages import START, Due, GetSnapshot, Interrupt, RunMessage, Start
from flowstage.actors.persistence import PersistentRun
from flowstage.actors.registry import RunRegistry
from flowstage.actors.runtime import Runtime
from flowstage.actors.scheduler import Wakeup
from flowstage.simulation.errors import Conflict, FieldError, Invalid
from flowstage.simulation.history import RunHistory
from flowstage.simulation.models import Event, NodeRun, Run, RunState, event_name
from flowstage.simulation.plan import Plan, compile_plan
from flowstage.simulation.recording import Recording
from flowstage.simulation.recovery import interrupt_stored
from flowstage.simulation.states import RUN_FINISHED

__all__ = ["READ_ONLY", "ReplayActor", "start_replay"]

READ_ONLY = "A replay is read-only: it plays a recording back and takes no commands."

_IDLE = NodeRun("idle", 0.0, None, None, None, None)
_decode_event = msgspec.json.Decoder(Event).decode
_replace = msgspec.structs.replace


def _as_this_run(event: Event, run_id: str, workflow_id: str, seq: int, ts: str) -> Event:
    """A recorded event as this run writes it: its own ids, seq and stamp, the rest as recorded."""
    return _replace(event, run_id=run_id, workflow_id=workflow_id, seq=seq, ts=ts)


def start_replay(runtime: Runtime, supervisor: Supervisor, registry: RunRegistry, recording: Recording, *,
                 run_id: str, replay_of: str, speed: float | None, at: float) -> Run:
    """Build the replay of `recording` (a checked one: simulation.recording), start it and
    return its first snapshot. Invalid for a bad speed, Conflict if `run_id` is taken."""
    speed = runtime.config.default_speed if speed is None else speed
    if not (isinstance(speed, int | float) and math.isfinite(speed) and speed > 0):
        raise Invalid("Invalid replay parameters", [FieldError(["body", "speed"], "must be a number greater than 0")])
    if run_id in registry:
        raise Conflict(f"Run {run_id!r} already exists")
    recorded = recording.run
    only_node = next(iter(recorded.nodes)) if recorded.kind == "process-files" else None
    plan = compile_plan(recording.workflow, only_node=only_node)
    replay = ReplayActor(runtime, supervisor, plan, recording, run_id, replay_of=replay_of, speed=float(speed), at=at)
    registry.add(replay)
    first = replay.first
    replay.deliver(START)
    return first


class ReplayActor(PersistentRun):
    """One replay run; see the module docstring. `start_replay` builds and starts one."""

    __slots__ = ("_at", "_ended", "_events", "_first", "_history", "_next", "_speed", "_state", "_wakeup", "plan",
                 "workflow_id")

    def __init__(self, runtime: Runtime, supervisor: Supervisor, plan: Plan, recording: Recording, run_id: str, *,
                 replay_of: str, speed: float, at: float) -> None:
        recorded = recording.run
        super().__init__(runtime, supervisor, run_id, EventLog(run_id, recorded.workflow_id, runtime))
        self.plan = plan
        self.workflow_id = recorded.workflow_id
        stamp = iso(at)
        # The recorded run's identity (workflow version, seed, failure rate), this run's own
        # id, times and speed, and every node idle until its events play.
        self._first = Run(run_id, recorded.workflow_id, recorded.workflow_version, "running", recorded.seed, speed,
                          stamp, stamp, None, 0.0, dict.fromkeys(recorded.nodes, _IDLE), recorded.failure_rate,
                          kind="replay", replay_of=replay_of)
        # A failed node's progress is where its failure struck, which only the recorded run says.
        self._history = RunHistory(self._first, {node_id: n.progress for node_id, n in recorded.nodes.items()
                                                 if n.state == "failed"})
        self._state: RunState = "running"
        self._events = recording.events
        self._next = 0  # the index of the next event to play
        self._at = at
        self._speed = speed
        self._wakeup: Wakeup | None = None
        self._ended = False

    def __repr__(self) -> str:
        return f"<ReplayActor {self.id} {self._history.state}>"

    @property
    def first(self) -> Run:
        """The replay's first snapshot (before anything played)."""
        return self._first

    # --- messages --------------------------------------------------------------------------

    def receive(self, message: RunMessage) -> Any:
        """Play what fell due, answer a snapshot, or refuse: a replay takes no commands."""
        reply: Any = None
        match message:
            case Due(limit=limit):
                reply = self._play(limit)
            case Start():
                self._play(self._at)
            case GetSnapshot():
                reply = self.snapshot()
            case Interrupt():
                self._interrupt()
            case _:
                raise Conflict(READ_ONLY)
        self._after()
        return reply

    def wake(self, limit: float) -> int:
        """The scheduler's call (a `Wakeable`): play every event due by `limit`."""
        try:
            played: int = self.receive(Due(limit))
        except Exception as error:
            self._crashed(error)
            return 1
        return played

    def _due(self, index: int) -> float:
        """The clock instant event `index` plays at."""
        return self._at + self._events[index].offset_ms / 1000 / self._speed

    def _play(self, limit: float) -> int:
        """Write every event due by `limit`, each stamped with the instant it was due."""
        events = self._events
        played = 0
        while self._next < len(events) and not self.log.finished:
            when = self._due(self._next)
            if when > limit:
                break
            self._write(events[self._next].data, when)
            self._next += 1
            played += 1
        return played

    def _write(self, event: Event, t: float) -> None:
        """Write a recorded event as this run's: its id, the next seq, stamped at `t`."""
        log = self.log
        self._history.apply(_replace(event, ts=log.stamp(t)))
        # Every event's first four fields are runId, workflowId, seq and ts: the log writes its own.
        log.event(t, EVENT_CODES[event_name(event)], partial(_as_this_run, event))
        if self._history.state in RUN_FINISHED:  # its terminal event
            log.finish()

    def _interrupt(self) -> None:
        """The engine is shutting down: end `failed` as recovery ends a run the process lost."""
        if self.log.finished:
            return
        now = self._runtime.clock.now()
        _, events = interrupt_stored(self._first, self.log.events_after(0), now)
        for _seq, _name, data in events:
            self._write(_decode_event(data), now)

    def _after(self) -> None:
        """After every message: a wake-up at the next event's instant; tell the flusher once."""
        if self.log.finished:
            if self._wakeup is not None:
                self._wakeup.cancel()
                self._wakeup = None
        elif self._next < len(self._events) and (self._wakeup is None or self._wakeup.target is None):
            self._wakeup = self._runtime.scheduler.wake_at(self, self._due(self._next))
        if self._history.state != self._state:
            self._state = self._history.state
            self._needs_save = True
        if not self._ended and self.log.finished:
            self._ended = self._needs_save = True
            self._runtime.finished(self)
        self._tell_flusher()

    def on_stop(self) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None

    # --- what the engine asks --------------------------------------------------------------

    def stalled(self) -> bool:
        """Never: a replay always has its next event's wake-up set until it ends."""
        return False

    def snapshot(self, *, raw: bool = False) -> Run:
        """The run as the events played so far make it. Outputs are plain data, which a sink
        encodes as it encodes `raw` ones (msgspec.Raw)."""
        return self._history.run()

    # --- the flusher's side (actors.persistence) ---------------------------------------------

    def _to_save(self) -> Run:
        return self.snapshot()
