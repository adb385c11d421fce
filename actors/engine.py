"""The engine: the one object the server talks to. It starts runs, routes control to them,
answers what is in memory, and supervises them; the work is done by its parts:

- `Admission` (actors.admission) checks an execute and starts its run, a slice per turn;
- `RunRegistry` (actors.registry) knows every run in memory and evicts finished ones;
- `Scheduler` (actors.scheduler) wakes runs at their node timers, one clock timer for all;
- `Flusher` (actors.flusher) group-commits every run's changes to the sink;
- `Runtime` (actors.runtime) is all a run may see of the engine.

It owns everything it starts: the run actors (no tasks of their own), the async handler
tasks and the flusher's task. `close()` interrupts active runs, cancels and awaits what
it owns, and flushes a last time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from flowstage.actors.actor import Actor, Directive
from flowstage.actors.admission import Admission, Request, ScriptSource
from flowstage.actors.clock import Clock
from flowstage.actors.debugger import DebugOptions
from flowstage.actors.eventlog import EventListener, EventLog, fan_out
from flowstage.actors.flusher import Flusher
from flowstage.actors.handlers import HandlerRegistry
from flowstage.actors.messages import Interrupt, Pause, Resume, RunCommand, Stop
from flowstage.actors.registry import RunRegistry
from flowstage.actors.replay import start_replay
from flowstage.actors.run import RunActor
from flowstage.actors.runtime import EngineConfig, Runtime, WorkSet
from flowstage.actors.scheduler import Scheduler
from flowstage.actors.sink import RunSink
from flowstage.simulation.errors import FieldError, Invalid, Unavailable
from flowstage.simulation.messages import INTERRUPTED_ERROR
from flowstage.simulation.models import EdgeFlow, ErrorInfo, Run, Workflow
from flowstage.simulation.plan import edge_flows
from flowstage.simulation.recording import Recording
from flowstage.simulation.script import ScriptedOutcome

__all__ = ["Action", "DebugOptions", "Engine", "EngineConfig", "EventListener", "ScriptSource"]

log = logging.getLogger(__name__)

Action = Literal["pause", "resume", "stop"]

_COMMANDS: dict[str, RunCommand] = {"pause": Pause(), "resume": Resume(), "stop": Stop()}


class Engine:
    """Supervisor of every run actor; see the module docstring."""

    def __init__(self, clock: Clock, sink: RunSink, config: EngineConfig | None = None, *,
                 handlers: HandlerRegistry | None = None) -> None:
        self.clock = clock
        config = config or EngineConfig()
        self.handlers = handlers or HandlerRegistry()
        self._scheduler = Scheduler(clock, config.runs_per_turn)
        self._registry = registry = RunRegistry(config.retain_finished)
        self._flusher = Flusher(clock, sink, config.flush_interval, registry.evict)
        self._work = WorkSet(registry.find)
        self._runtime = Runtime(clock, config, self.handlers, self._scheduler, on_dirty=self._flusher.mark_dirty,
                                finished=registry.finished, spawn_work=self._work.spawn)
        # A test stage sets `admission.script_source` and `admission.seeds`.
        self.admission = Admission(self._runtime, self, registry, self._flusher)
        self._status: Literal["new", "open", "closing", "closed"] = "new"

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._status != "new":
            return
        self._runtime.loop = loop = asyncio.get_running_loop()
        self._flusher.start(loop)
        self._status = "open"

    async def close(self) -> None:
        """Interrupt active runs, cancel and await owned tasks, persist everything."""
        if self._status in ("closing", "closed"):
            return
        was_open = self._status == "open"
        self._status = "closing"
        self.admission.refuse_waiting(Unavailable("The engine is shutting down"))
        interrupt = Interrupt(INTERRUPTED_ERROR)
        for run in self._registry.runs():
            run.deliver(interrupt)
        await self._work.cancel_all()
        self._scheduler.close()
        await self._flusher.stop()
        if was_open:
            try:
                await self._flusher.flush_once()
            except Exception:
                log.exception("final flush failed")
        self._flusher.close()
        for run in self._registry.runs():
            run.stop()
        self._status = "closed"

    async def reset(self) -> None:
        """Test mode: forget every run, as a new engine would. Runs end without events, owned
        handler tasks are cancelled and awaited, and nothing more is persisted for them."""
        self.admission.refuse_waiting(Unavailable("The stage was reset"))
        for run in self._registry.runs():
            run.stop()
        await self._work.cancel_all()
        self._scheduler.clear()
        await self._flusher.reset()
        self._registry.clear()
        self.admission.forget()

    @property
    def config(self) -> EngineConfig:
        return self._runtime.config

    @config.setter
    def config(self, config: EngineConfig) -> None:
        """A new configuration: runs started from now on use it (running ones keep theirs)."""
        self._runtime.config = config
        self._registry.retain = config.retain_finished
        self._scheduler.per_turn = config.runs_per_turn
        self._flusher.interval = config.flush_interval

    @property
    def sink(self) -> RunSink:
        """Where runs are persisted; replacing it redirects the next flush."""
        return self._flusher.sink

    @sink.setter
    def sink(self, sink: RunSink) -> None:
        self._flusher.sink = sink

    # --- runs ----------------------------------------------------------------------------

    async def execute(
        self,
        workflow: Workflow,
        *,
        run_id: str | None = None,
        seed: int | None = None,
        speed: float | None = None,
        failure_rate: float = 0.0,
        inputs: Mapping[str, Any] | None = None,
        only_node: str | None = None,
        kind: Literal["workflow", "process-files"] = "workflow",
        script: Mapping[str, ScriptedOutcome] | None = None,
        debug: DebugOptions | None = None,
    ) -> Run:
        """Start a run of a frozen copy of `workflow`; return its first snapshot once that
        snapshot is persisted. Raises Invalid (bad parameters, a cycle), Conflict (run id
        taken) or Unavailable (engine not open). `script` decides how the nodes it names end
        (simulation.script); `debug` sets breakpoints and given outputs (actors.debugger),
        its node ids already checked."""
        if self._status != "open":
            raise Unavailable("The engine is not running")
        admitted = self.admission.admit(Request(workflow, run_id, seed, speed, failure_rate, inputs, only_node,
                                                 kind, self.clock.now(), script, debug))
        if isinstance(admitted, asyncio.Future):
            return await admitted
        await self._flusher.flush_soon()
        return admitted

    async def control(self, run_id: str, action: Action | RunCommand) -> Run:
        """Pause, resume or stop a run through its mailbox, or send it another command (a
        step, its breakpoints); the reply is its snapshot. NotFound for an unknown run,
        IllegalTransition (a Conflict) for a finished one, MailboxFull if it is flooded."""
        command = _COMMANDS.get(action) if isinstance(action, str) else action
        if command is None:
            raise Invalid(f"Unknown action {action!r}",
                          [FieldError(["path", "action"], "must be pause, resume or stop")])
        result: Run = await self._registry.get(run_id).ask(command)
        return result

    def snapshot(self, run_id: str) -> Run | None:
        """The current snapshot of a live (or recently finished) run; None if not in memory."""
        run = self._registry.find(run_id)
        return None if run is None else run.snapshot()

    def dataflow(self, run_id: str) -> list[EdgeFlow] | None:
        """What crossed each connection of a run in memory; None if not in memory."""
        run = self._registry.find(run_id)
        return None if run is None else edge_flows(run.plan, run.snapshot(raw=True))

    def events(self, run_id: str) -> EventLog | None:
        """The in-memory event log of a run, for SSE; None once it left memory (read the
        sink's store then)."""
        run = self._registry.find(run_id)
        return None if run is None else run.log

    def latest_run_id(self, workflow_id: str) -> str | None:
        return self._registry.latest(workflow_id)

    def run_ids(self) -> list[str]:
        """Runs in memory, oldest first."""
        return [run.id for run in self._registry.runs()]

    def stalled(self, run_id: str) -> bool:
        """A running run that nothing will move: no timer set for it and no node's async
        handler at work (a node scripted to hang). False for runs not in memory."""
        run = self._registry.find(run_id)
        return run is not None and run.stalled()

    def working(self) -> int:
        """Async node handlers still at work (file processing): test mode's autojump and run
        handles wait for them rather than jump past them."""
        return len(self._work)

    def mailbox_depth(self) -> int:
        """Messages waiting in the mailboxes of the runs in memory (for metrics). A walk over
        those runs: call it per scrape, not per event."""
        return sum(run.pending for run in self._registry.runs())

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Observe every event of every run; returns a function that removes the listener."""
        runtime = self._runtime
        runtime.listeners = (*runtime.listeners, listener)
        runtime.notify = fan_out(runtime.listeners)

        def remove() -> None:
            runtime.listeners = tuple(x for x in runtime.listeners if x is not listener)
            runtime.notify = fan_out(runtime.listeners)

        return remove

    async def flush(self) -> None:
        """Persist everything pending now."""
        if self._status == "open":
            await self._flusher.flush_soon()

    async def replay(self, recording: Recording, *, run_id: str, replay_of: str, speed: float | None = None) -> Run:
        """Start a read-only run of kind "replay" playing `recording` (checked by
        simulation.recording) back at `speed`; return its first snapshot once persisted.
        Raises Invalid (bad speed), Conflict (run id taken) or Unavailable (engine not open)."""
        if self._status != "open":
            raise Unavailable("The engine is not running")
        first = start_replay(self._runtime, self, self._registry, recording, run_id=run_id, replay_of=replay_of,
                             speed=speed, at=self.clock.now())
        await self._flusher.flush_soon()
        return first

    # --- supervision -----------------------------------------------------------------------

    def child_failed(self, child: Actor[Any], error: BaseException) -> Directive:
        """A run actor crashed (a bug, not a node's work): that run fails, nothing else."""
        log.error("run actor %r crashed", child, exc_info=error)
        if isinstance(child, RunActor):
            try:
                child.receive(Interrupt(ErrorInfo("internal_error", f"{type(error).__name__}: {error}")))
            except Exception:
                log.exception("could not fail %r cleanly", child)
            # It keeps answering (with its snapshot, or Conflict as a finished run).
            return "resume"
        return "stop"
