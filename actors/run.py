"""The run actor: one run of one workflow, as an actor with a bounded mailbox.

Every input to a run is a typed message (actors.messages) that `receive` dispatches:
clients' commands (`Pause`, `Resume`, `Stop`, `GetSnapshot`) arrive through the mailbox
(`ask`); the runtime's own (`Start`, `Due` from the scheduler, `WorkDone` from an async
handler, `Interrupt` from the engine) are delivered in line (`Actor.deliver`). No Task per
run and none per node.

The actor owns three things: its state machine (actors.machine: state, nodes, timers,
dataflow), its event log (actors.eventlog: the writer and the reader of its events), and
the bookkeeping between them and the rest of the engine - one wake-up at the machine's
earliest timer, and what the flusher has yet to persist (actors.persistence, shared with the
replay actor). After every message it re-arms
that wake-up and, if anything is new, tells the flusher once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from flowstage.actors.actor import Supervisor
from flowstage.actors.debugger import Debugger, DebugOptions
from flowstage.actors.eventlog import EventLog, iso
from flowstage.actors.machine import RunMachine
from flowstage.actors.messages import (
    Due,
    GetSnapshot,
    Interrupt,
    Pause,
    Resume,
    RunMessage,
    SetBreakpoints,
    Start,
    Step,
    Stop,
    WorkDone,
)
from flowstage.actors.persistence import PersistentRun
from flowstage.actors.runtime import Runtime
from flowstage.actors.scheduler import Wakeup
from flowstage.simulation.models import NodeRun, Run
from flowstage.simulation.plan import Plan
from flowstage.simulation.progress import node_work, run_progress
from flowstage.simulation.script import ScriptedOutcome
from flowstage.simulation.states import IllegalTransition

__all__ = ["RunActor"]

_decode = msgspec.json.Decoder().decode
_Raw = msgspec.Raw
_IDLE = NodeRun("idle", 0.0, None, None, None, None)


class RunActor(PersistentRun):
    __slots__ = ("_armed_when", "_ended", "_first", "_saved_state", "_wakeup", "created_at", "failure_rate", "kind",
                 "machine", "parent_run_id", "plan", "seed", "speed", "started_at", "workflow_id")

    def __init__(self, runtime: Runtime, supervisor: Supervisor, plan: Plan, run_id: str, *, seed: int,
                 speed: float, failure_rate: float, inputs: Mapping[str, Any], kind: str, at: float,
                 script: Mapping[str, ScriptedOutcome], debug: DebugOptions | None = None) -> None:
        super().__init__(runtime, supervisor, run_id, EventLog(run_id, plan.workflow_id, runtime))
        self.plan = plan
        self.workflow_id = plan.workflow_id
        self.seed = seed
        self.speed = speed
        self.failure_rate = failure_rate
        self.kind = kind
        # `at`: when the run was asked for (an execute may wait a few turns in a burst).
        self.created_at = self.started_at = iso(at)
        self.parent_run_id = None if debug is None else debug.parent_run_id
        self.machine = RunMachine(plan, self.log, runtime, seed=seed, speed=speed, failure_rate=failure_rate,
                                  inputs=inputs, script=script, at=at,
                                  debug=None if debug is None else Debugger(plan, debug))
        self._saved_state = "running"  # the state of the last snapshot handed to the flusher
        self._wakeup: Wakeup | None = None
        self._armed_when = 0.0
        self._ended = False
        # The snapshot `execute` answers with; saved as it is if the first flush finds the
        # run still running (events carry the rest), which spares building one per run.
        self._first: Run | None = Run(run_id, self.workflow_id, plan.version, "running", seed, speed,
                                      self.created_at, self.started_at, None, 0.0, dict(plan.idle),
                                      failure_rate, None, kind,  # type: ignore[arg-type]
                                      breakpoints=[] if self.machine.debug is None
                                      else self.machine.debug.breakpoint_ids(),
                                      parent_run_id=self.parent_run_id)

    def __repr__(self) -> str:
        return f"<RunActor {self.id} {self.machine.state}>"

    @property
    def state(self) -> str:
        return self.machine.state

    @property
    def first(self) -> Run:
        """The run's first snapshot (what its execute answers)."""
        assert self._first is not None, "first is read right after the run started"
        return self._first

    # --- messages --------------------------------------------------------------------------

    def receive(self, message: RunMessage) -> Any:
        """Dispatch one message; a command's reply is the run's snapshot after it."""
        machine = self.machine
        reply: Any = None
        match message:
            case Due(limit=limit):
                reply = machine.due(limit)
            case Start():
                machine.begin(self.seed)
            case WorkDone():
                machine.work_done(message, self._runtime.clock.now())
            case Pause():
                self._needs_save |= machine.pause(self._runtime.clock.now())
                reply = self.snapshot()
            case Resume():
                if machine.debug is not None:  # a resume during a step lets the run go on freely
                    machine.debug.stepping = None
                self._needs_save |= machine.resume(self._runtime.clock.now())
                reply = self.snapshot()
            case Stop():
                machine.halt(self._runtime.clock.now())
                reply = self.snapshot()
            case GetSnapshot():
                reply = self.snapshot()
            case Step(node_id=node_id):
                debug = machine.debugger()
                machine.resume(self._runtime.clock.now(), debug.step_target(machine, node_id))
                reply = self.snapshot()
            case SetBreakpoints(node_ids=node_ids):
                if machine.finished_at is not None:
                    raise IllegalTransition("set breakpoints", machine.state)
                machine.debugger().set_breakpoints(node_ids)
                self._needs_save = True
                reply = self.snapshot()
            case Interrupt(error=error):
                machine.halt(self._runtime.clock.now(), error)
        self._after()
        return reply

    def wake(self, limit: float) -> int:
        """The scheduler's call (a `Wakeable`): `Due`, delivered in line (`Actor.deliver`
        without its status check: a stopped run has no wake-up); the number of timers handled."""
        try:
            handled: int = self.receive(Due(limit))
        except Exception as error:
            self._crashed(error)
            return 1
        return handled

    def _after(self) -> None:
        """After every message: one wake-up at the earliest timer; tell the flusher once."""
        machine = self.machine
        timers = machine.timers  # machine.next_due(), inlined: this runs once per wake-up
        when = timers[0][0] if timers and machine.state == "running" else None
        wakeup = self._wakeup
        if when is None:
            if wakeup is not None:
                wakeup.cancel()
                self._wakeup = None
        elif wakeup is None or wakeup.target is None or when < self._armed_when:
            if wakeup is not None:
                wakeup.cancel()
            self._armed_when = when
            self._wakeup = self._runtime.scheduler.wake_at(self, when)
        if not self._ended and machine.finished_at is not None:
            self._ended = self._needs_save = True
            self._runtime.finished(self)
        elif machine.state != self._saved_state:  # a debugger paused it, or a step
            self._needs_save = True
        if not self._dirty and (self._needs_save or self.log.seq > self._persisted):  # _tell_flusher, inlined
            self._dirty = True
            self._runtime.on_dirty(self)

    def on_stop(self) -> None:
        """Stopped (evicted, reset, or the engine closed): nothing will wake it again."""
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        for node in self.machine.nodes:
            if node is not None and node.work is not None:
                node.work.cancel()

    # --- what the engine asks ------------------------------------------------------------------

    def stalled(self) -> bool:
        """Running, with no timer set and no async handler at work (a node scripted to hang)."""
        machine = self.machine
        return (machine.state == "running" and machine.next_due() is None
                and not any(node is not None and node.work is not None for node in machine.nodes))

    # --- the flusher's side (actors.persistence) ---------------------------------------------

    def _to_save(self) -> Run:
        self._saved_state = self.machine.state
        first, self._first = self._first, None
        if first is None or self.machine.state != "running":
            first = self.snapshot(raw=True)
        return first

    # --- views ---------------------------------------------------------------------------

    def snapshot(self, *, raw: bool = False) -> Run:
        """The run as the contract shows it. `raw` keeps outputs as encoded JSON (for sinks)."""
        now = self._runtime.clock.now()
        machine = self.machine
        log = self.log
        nodes: dict[str, NodeRun] = {}
        done = 0.0
        for p, node in zip(self.plan.nodes, machine.nodes, strict=True):
            if node is None:
                nodes[p.id] = _IDLE
                continue
            state = node.state
            output: Any = None
            if state == "completed":
                progress = 1.0
                done += 1.0
                # The output, sliced out of its node.completed event.
                output = log.output_of(node.output_seq, node.output_at)
                output = _Raw(output) if raw else _decode(output)
            else:
                progress = round(node.progress_at(now), 4)
                done += node_work(progress, node.not_taken)
            nodes[p.id] = NodeRun(state, progress, node.started_at,  # type: ignore[arg-type]
                                  node.finished_at, output, node.error)
        progress = run_progress(done, len(machine.nodes))
        debug = machine.debug
        return Run(self.id, self.workflow_id, self.plan.version, machine.state, self.seed,  # type: ignore[arg-type]
                   self.speed, self.created_at, self.started_at, machine.finished_at, progress, nodes,
                   self.failure_rate, machine.error, self.kind,  # type: ignore[arg-type]
                   paused_at=machine.paused_at, breakpoints=[] if debug is None else debug.breakpoint_ids(),
                   parent_run_id=self.parent_run_id)
