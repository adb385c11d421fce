"""The engine: starts runs, routes control to them, persists them, and supervises them.

It owns everything it starts: the run actors (no tasks of their own), the async handler
tasks and one flusher task that group-commits changes to the sink every ~50 ms. `close()`
interrupts active runs, cancels and awaits what it owns, and flushes a last time.

Time: one clock timer serves every run. Runs ask to be woken at their next node timer
(`wake_at`); the engine keeps those requests in one heap and handles about
`runs_per_turn` due node timers per turn of the loop before it lets others run. Ten
thousand runs whose timers fell due together (after a burst, or a stall) are worked off
in slices of a millisecond or two, not in one loop iteration of hundreds. A burst of
executes is sliced the same way: past `runs_per_turn` of them in one turn, an execute
queues what it asked for, a later turn starts the run (at the instant it was asked for)
and the flush that persists it answers the execute.

Persistence is off the per-event path: events are appended to the run's in-memory log
and the run is marked dirty; the flusher collects every dirty run's new events (and the
snapshots that must be saved: new, paused/resumed/stopped and finished runs) into one
`save_runs` and one `append_events` call. `execute` awaits the flush that carries its new
run, and all concurrent executes share that one flush.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Mapping
from heapq import heappop, heappush
from typing import Any, Literal, NamedTuple

import msgspec

from flowstage.actors.actor import Actor, Directive
from flowstage.actors.clock import Clock, TimerHandle
from flowstage.actors.eventlog import EventLog, EventRows
from flowstage.actors.handlers import HandlerRegistry
from flowstage.actors.node import NodeActor
from flowstage.actors.run import GetSnapshot, Pause, Resume, RunActor, RunCommand, Stop
from flowstage.actors.sink import RunSink
from flowstage.simulation.catalogue import Timing
from flowstage.simulation.errors import Conflict, FieldError, Invalid, NotFound, Unavailable
from flowstage.simulation.models import EdgeFlow, ErrorInfo, Run, Workflow
from flowstage.simulation.plan import Plan, compile_plan, edge_flows
from flowstage.simulation.script import ScriptedOutcome, check_script

__all__ = ["Engine", "EngineConfig", "EventListener", "ScriptSource"]

log = logging.getLogger(__name__)

EventListener = Callable[[str, str, int, str, bytes], None]
"""Called with (run_id, workflow_id, seq, name, data) for every event of every run, on the
loop, synchronously: keep it cheap (count, or hand off to a queue)."""

ScriptSource = Callable[[Workflow], Mapping[str, ScriptedOutcome]]
"""Scripted outcomes for every run of a workflow, asked when a run starts (the pytest plugin's
`stage.script`); an execute's own `script` wins over it node by node."""

Action = Literal["pause", "resume", "stop"]

_COMMANDS: dict[str, RunCommand] = {"pause": Pause(), "resume": Resume(), "stop": Stop()}
_SNAPSHOT = GetSnapshot()
_INTERRUPTED = ErrorInfo("interrupted", "The server shut down while this run was active.")
# Work the flusher does between two turns of the loop, in units of ~1 µs: a run's new
# events are one unit, a snapshot built for a finished run ten.
_FLUSH_SLICE = 1000
_SNAPSHOT_COST = 10
_EVICT_SLICE = 100  # runs evicted between two turns of the loop
_FREE_SLICE = 100  # saved snapshots freed between two turns of the loop
# A clock timer may fire a hair before its deadline (float epoch seconds carry ~0.2 µs).
_DUE_SLACK = 1e-6
_NUMBER = (int, float)
# JavaScript loses integer precision above 2**53; a generated seed must survive the editor.
_SEED_LIMIT = 2**53


class _Request(NamedTuple):
    """What `execute` was asked, kept while a burst makes it wait for a turn."""

    workflow: Workflow
    run_id: str | None
    seed: int | None
    speed: float | None
    failure_rate: float
    inputs: Mapping[str, Any] | None
    only_node: str | None
    kind: Literal["workflow", "process-files"]
    at: float
    script: Mapping[str, ScriptedOutcome] | None


class EngineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    default_speed: float = 1.0
    mailbox_size: int = 64
    # node type -> probability of a simulated failure, combined with a run's failureRate.
    failure_rates: dict[str, float] = {}
    # node type -> timing profile replacing the catalogue's.
    timings: dict[str, Timing] = {}
    progress_step: float = 0.25
    # seconds of clock time between two node.progress events of one node, at least.
    progress_min_interval: float = 0.25
    flush_interval: float = 0.05
    # finished runs kept in memory (for snapshots, dataflow, SSE replay) once persisted.
    retain_finished: int = 1000
    max_duration_ms: float = 3_600_000.0
    plan_cache_size: int = 256
    # Node timers handled, and executes started, per turn of the event loop before others
    # get a turn (about 10 µs each).
    runs_per_turn: int = 128


class Engine:
    """Supervisor of every run actor; see the module docstring."""

    def __init__(self, clock: Clock, sink: RunSink, config: EngineConfig | None = None, *,
                 handlers: HandlerRegistry | None = None) -> None:
        self.clock = clock
        self.sink = sink
        self.config = config or EngineConfig()
        self.handlers = handlers or HandlerRegistry()
        self.listeners: tuple[EventListener, ...] = ()
        self.script_source: ScriptSource | None = None
        # Where a run's seed comes from when its execute names none; a test stage sets a
        # seeded generator so that its runs repeat exactly.
        self.seeds: random.Random | None = None
        self._runs: dict[str, RunActor] = {}
        self._latest: dict[str, str] = {}
        self._finished: deque[RunActor] = deque()
        self._plans: OrderedDict[tuple[str, int, str | None], Plan] = OrderedDict()
        self._work: set[asyncio.Task[Any]] = set()
        self._dirty: list[RunActor] = []
        self._flush_timer: TimerHandle | None = None
        self._flush_lock: asyncio.Lock | None = None
        # One future per caller waiting for the next flush, and what it resolves to: a
        # caller that goes away cancels its own future only.
        self._flush_waiters: list[tuple[asyncio.Future[Any], Any]] = []
        self._wake: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._status: Literal["new", "open", "closing", "closed"] = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        # Wake-ups: (when, token, run); an entry is live while run._wake_token == token.
        self._due: list[tuple[float, int, RunActor]] = []
        self._wake_seq = 0
        self._due_handle: TimerHandle | None = None
        self._due_when = 0.0
        self._firing = False
        self._turn_starts = 0  # executes let through in this turn of the loop
        self._id_pool = ""
        self._id_at = 0
        self._admissions: deque[tuple[asyncio.Future[Run], _Request]] = deque()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._status != "new":
            return
        loop = self._loop = asyncio.get_running_loop()
        self._flush_lock = asyncio.Lock()
        self._wake = loop.create_future()
        self._flusher = loop.create_task(self._flush_loop(), name="flowstage-engine-flusher")
        self._status = "open"

    async def close(self) -> None:
        """Interrupt active runs, cancel and await owned tasks, persist everything."""
        if self._status in ("closing", "closed"):
            return
        was_open = self._status == "open"
        self._status = "closing"
        while self._admissions:
            answer, _ = self._admissions.popleft()
            if not answer.done():
                answer.set_exception(Unavailable("The engine is shutting down"))
        for run in list(self._runs.values()):
            run.interrupt(_INTERRUPTED)
        work = list(self._work)
        for task in work:
            task.cancel()
        if work:
            await asyncio.gather(*work, return_exceptions=True)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._due_handle is not None:
            self._due_handle.cancel()
            self._due_handle = None
        self._due.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if was_open:
            try:
                await self._flush_once()
            except Exception:
                log.exception("final flush failed")
        for run in list(self._runs.values()):
            run.stop()
        self._status = "closed"

    async def reset(self) -> None:
        """Test mode: forget every run, as a new engine would. Runs end without events, owned
        handler tasks are cancelled and awaited, and nothing more is persisted for them."""
        assert self._flush_lock is not None, "reset() before start()"
        async with self._flush_lock:  # not in the middle of a flush to the store
            while self._admissions:
                answer, _ = self._admissions.popleft()
                if not answer.done():
                    answer.set_exception(Unavailable("The stage was reset"))
            for run in list(self._runs.values()):
                run.stop()
            work = list(self._work)
            for task in work:
                task.cancel()
            if work:
                await asyncio.gather(*work, return_exceptions=True)
            for handle in (self._flush_timer, self._due_handle):
                if handle is not None:
                    handle.cancel()
            self._flush_timer = self._due_handle = None
            for waiter, value in self._flush_waiters:
                if not waiter.done():
                    waiter.set_result(value)
            self._flush_waiters.clear()
            for pending in (self._runs, self._latest, self._plans):
                pending.clear()
            self._finished.clear()
            self._dirty.clear()
            self._due.clear()

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
    ) -> Run:
        """Start a run of a frozen copy of `workflow`; return its first snapshot once that
        snapshot is persisted. Raises Invalid (bad parameters, a cycle), Conflict (run id
        taken) or Unavailable (engine not open). `script` decides how the nodes it names end
        (simulation.script)."""
        self._check_open()
        request = _Request(workflow, run_id, seed, speed, failure_rate, inputs, only_node, kind, self.clock.now(),
                           script)
        if self._admissions or self._turn_starts >= self.config.runs_per_turn:
            # A burst: a later turn starts the run (at the instant asked for) and the flush
            # that persists it answers, so a waiting execute wakes once.
            loop = self._running_loop()
            answer: asyncio.Future[Run] = loop.create_future()
            if not self._admissions:
                loop.call_soon(self._release)
            self._admissions.append((answer, request))
            return await answer
        if not self._turn_starts:
            self._running_loop().call_soon(self._new_turn)
        self._turn_starts += 1
        first = self._start(request)
        await self._flush_soon()
        return first

    def _start(self, request: _Request) -> Run:
        """Validate, build and begin one run; its first snapshot."""
        speed = self.config.default_speed if request.speed is None else request.speed
        failure_rate = request.failure_rate
        errors = []
        if not (isinstance(speed, _NUMBER) and math.isfinite(speed) and speed > 0):
            errors.append(FieldError(["body", "speed"], "must be a number greater than 0"))
        if not (isinstance(failure_rate, _NUMBER) and 0.0 <= failure_rate <= 1.0):
            errors.append(FieldError(["body", "failureRate"], "must be between 0 and 1"))
        if errors:
            raise Invalid("Invalid execute parameters", errors)
        plan = self._plan(request.workflow, request.only_node)
        script = self._script(request, plan)
        run_id = request.run_id
        if run_id is None:
            run_id = self._new_run_id()
        elif run_id in self._runs:
            raise Conflict(f"Run {run_id!r} already exists")
        seed = request.seed
        if seed is None:
            seed = secrets.randbelow(_SEED_LIMIT) if self.seeds is None else self.seeds.randrange(_SEED_LIMIT)
        run = RunActor(self, plan, run_id, seed=seed, speed=float(speed), failure_rate=float(failure_rate),
                       inputs=dict(request.inputs or {}), kind=request.kind, at=request.at, loop=self._loop,
                       script=script)
        self._runs[run_id] = run
        self._latest[plan.workflow_id] = run_id
        first = run.first
        assert first is not None
        try:
            run.begin()
        except Exception as error:
            self.child_failed(run, error)
        return first

    def _script(self, request: _Request, plan: Plan) -> dict[str, ScriptedOutcome]:
        """The run's scripted outcomes: the script source's, then the execute's own."""
        script: dict[str, ScriptedOutcome] = {}
        if self.script_source is not None:
            script.update((node_id, outcome) for node_id, outcome in self.script_source(request.workflow).items()
                          if node_id in plan.by_id)
        if request.script:
            errors = check_script(request.script, plan.by_id)
            if errors:
                raise Invalid("The script names what this workflow cannot do", errors)
            script.update(request.script)
        return script

    # Admission: at most `runs_per_turn` executes start per turn of the loop. Ten thousand
    # executes arriving at once would otherwise build and start ten thousand runs in one
    # loop iteration (~0.1 s in which no timer fires and no request is answered).

    def _new_turn(self) -> None:
        self._turn_starts = 0

    def _release(self) -> None:
        """Start the next `runs_per_turn` waiting runs; the next flush answers them."""
        room = self.config.runs_per_turn
        admissions = self._admissions
        started = False
        while admissions and room:
            answer, request = admissions.popleft()
            if answer.done():  # its execute was cancelled
                continue
            room -= 1
            try:
                self._check_open()
                first = self._start(request)
            except Exception as error:
                answer.set_exception(error)
                continue
            self._flush_waiters.append((answer, first))
            started = True
        if started:
            self._kick()
        if admissions:
            self._running_loop().call_soon(self._release)

    async def control(self, run_id: str, action: Action) -> Run:
        """Pause, resume or stop a run through its mailbox; the reply is its snapshot.
        NotFound for an unknown run, IllegalTransition (a Conflict) for a finished one,
        MailboxFull if it is flooded."""
        command = _COMMANDS.get(action)
        if command is None:
            raise Invalid(f"Unknown action {action!r}",
                          [FieldError(["path", "action"], "must be pause, resume or stop")])
        run = self._get(run_id)
        result: Run = await run.ask(command)
        return result

    async def ask_snapshot(self, run_id: str) -> Run:
        """A snapshot taken in turn with the run's other messages."""
        result: Run = await self._get(run_id).ask(_SNAPSHOT)
        return result

    def snapshot(self, run_id: str) -> Run | None:
        """The current snapshot of a live (or recently finished) run; None if not in memory."""
        run = self._runs.get(run_id)
        return None if run is None else run.snapshot()

    def dataflow(self, run_id: str) -> list[EdgeFlow] | None:
        """What crossed each connection of a run in memory; None if not in memory."""
        run = self._runs.get(run_id)
        return None if run is None else edge_flows(run.plan, run.snapshot(raw=True))

    def events(self, run_id: str) -> EventLog | None:
        """The in-memory event log of a run, for SSE; None once it left memory (read the
        sink's store then)."""
        run = self._runs.get(run_id)
        return None if run is None else run.log

    def latest_run_id(self, workflow_id: str) -> str | None:
        return self._latest.get(workflow_id)

    def run_ids(self) -> list[str]:
        """Runs in memory, oldest first."""
        return list(self._runs)

    def counts(self) -> dict[str, int]:
        """Runs in memory by state (for metrics)."""
        out: dict[str, int] = {}
        for run in self._runs.values():
            out[run.state] = out.get(run.state, 0) + 1
        return out

    def stalled(self, run_id: str) -> bool:
        """A running run that nothing will move: no timer set for it and no node's async
        handler at work (a node scripted to hang). False for runs not in memory."""
        run = self._runs.get(run_id)
        if run is None or run.state != "running" or run.wake_scheduled():
            return False
        return not any(node is not None and node.work is not None for node in run.nodes)

    def working(self) -> int:
        """Async node handlers still at work (file processing): test mode's autojump and run
        handles wait for them rather than jump past them."""
        return len(self._work)

    def mailbox_depth(self) -> int:
        """Messages waiting in the mailboxes of the runs in memory (for metrics). A walk over
        those runs: call it per scrape, not per event."""
        return sum(len(run._mailbox) for run in self._runs.values() if run._mailbox)

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Observe every event of every run; returns a function that removes the listener."""
        self.listeners = (*self.listeners, listener)

        def remove() -> None:
            self.listeners = tuple(x for x in self.listeners if x is not listener)

        return remove

    async def flush(self) -> None:
        """Persist everything pending now."""
        if self._status == "open":
            await self._flush_soon()

    # --- supervision ---------------------------------------------------------------------

    def child_failed(self, child: Actor[Any], error: BaseException) -> Directive:
        """A run actor crashed (a bug, not a node's work): that run fails, nothing else."""
        log.error("run actor %r crashed", child, exc_info=error)
        if isinstance(child, RunActor):
            try:
                child.fail_internal(ErrorInfo("internal_error", f"{type(error).__name__}: {error}"))
            except Exception:
                log.exception("could not fail %r cleanly", child)
            # It keeps answering (with its snapshot, or Conflict as a finished run).
            return "resume"
        return "stop"

    def spawn_work(self, run: RunActor, node: NodeActor,
                   work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=f"flowstage-work-{run.id}-{node.p.id}")
        self._work.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self._work.discard(task)
            run.work_done(node)

        task.add_done_callback(done)
        return task

    # --- time ----------------------------------------------------------------------------

    def wake_at(self, run: RunActor, when: float) -> None:
        """Call `run.on_due(limit)` once the clock reaches `when` (`limit` >= `when`); it
        returns how many timers it handled. A run has one live wake-up: a new one (or
        `run._wake_token = 0`) voids the one before."""
        self._wake_seq = token = self._wake_seq + 1
        run._wake_token = token
        heappush(self._due, (when, token, run))
        if not self._firing and (self._due_handle is None or when < self._due_when):
            self._arm_due(when)

    def _arm_due(self, when: float) -> None:
        if self._status == "closed":
            return
        if self._due_handle is not None:
            self._due_handle.cancel()
        clock = self.clock
        self._due_when = when
        self._due_handle = clock.call_later(when - clock.now(), self._fire)

    def _fire(self) -> None:
        """Wake the due runs in (deadline, request) order until about `runs_per_turn` node
        timers were handled; if more are due, come back on the next turn of the loop."""
        self._due_handle = None
        heap = self._due
        limit = self.clock.now() + _DUE_SLACK
        budget = self.config.runs_per_turn
        self._firing = True
        try:
            while heap and heap[0][0] <= limit:
                _, token, run = heappop(heap)
                if run._wake_token != token:
                    continue  # voided: the run re-armed, paused or ended
                run._wake_token = 0
                budget -= run.on_due(limit)
                if budget <= 0:
                    break
        finally:
            self._firing = False
            while heap and heap[0][2]._wake_token != heap[0][1]:
                heappop(heap)
            if heap:
                self._arm_due(heap[0][0])

    # --- persistence ---------------------------------------------------------------------

    def mark_dirty(self, run: RunActor) -> None:
        self._dirty.append(run)
        if self._flush_timer is None and self._status in ("open", "closing"):
            self._flush_timer = self.clock.call_later(self.config.flush_interval, self._kick)

    def run_finished(self, run: RunActor) -> None:
        self._finished.append(run)
        if not run._dirty:
            run._dirty = True
            self.mark_dirty(run)

    def _kick(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _flush_soon(self) -> asyncio.Future[None]:
        """A future resolved by the next flush to start (which will carry everything
        pending now); concurrent callers share that flush."""
        waiter: asyncio.Future[None] = self._running_loop().create_future()
        self._flush_waiters.append((waiter, None))
        self._kick()
        return waiter

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            assert self._wake is not None
            await self._wake
            self._wake = loop.create_future()
            try:
                await self._flush_once()
            except Exception:
                log.exception("flush failed; will retry")

    async def _flush_once(self) -> None:
        assert self._flush_lock is not None
        async with self._flush_lock:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            runs, self._dirty = self._dirty, []
            waiters, self._flush_waiters = self._flush_waiters, []
            snapshots: list[Run] = []
            saved: list[RunActor] = []
            rows = EventRows()
            marks: list[tuple[RunActor, int]] = []
            first: Run | None = None
            work = 0
            for run in runs:
                if work >= _FLUSH_SLICE:
                    # Building thousands of final snapshots is tens of milliseconds:
                    # let timers in between rather than stall every run at once.
                    work = 0
                    await asyncio.sleep(0)
                run._dirty = False
                if run.needs_save:
                    run.needs_save = False
                    first, run.first = run.first, None
                    if first is None or run.state != "running":
                        first = run.snapshot(raw=True)
                        work += _SNAPSHOT_COST
                    snapshots.append(first)
                    saved.append(run)
                upto = run.seq
                if upto > run.persisted_seq:
                    run.log.add_rows(rows, run.id, run.persisted_seq, upto)
                    marks.append((run, upto))
                work += 1
            try:
                if snapshots:
                    await self.sink.save_runs(snapshots)
                if rows:
                    await self.sink.append_events(rows)
            except Exception as error:
                for run in saved:
                    run.needs_save = True
                for run in runs:
                    if not run._dirty:
                        run._dirty = True
                        self.mark_dirty(run)
                for waiter, _ in waiters:
                    if not waiter.done():
                        waiter.set_exception(Unavailable(f"Could not persist runs: {error}"))
                raise
            for run, upto in marks:
                if upto > run.persisted_seq:
                    run.persisted_seq = upto
            for waiter, answer in waiters:
                if not waiter.done():
                    waiter.set_result(answer)
            # Freeing a thousand final snapshots at once is ~10 ms: free them in slices.
            del rows, first
            while len(snapshots) > _FREE_SLICE:
                del snapshots[-_FREE_SLICE:]
                await asyncio.sleep(0)
            await self._evict()

    async def _evict(self) -> None:
        finished = self._finished
        evicted = 0
        while len(finished) > self.config.retain_finished:
            run = finished[0]
            if run._dirty or run.needs_save or run.persisted_seq < run.seq:
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

    # --- helpers -------------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        # The loop `start` ran on: asyncio.get_running_loop() costs a getpid() system call.
        assert self._loop is not None
        return self._loop

    def _new_run_id(self) -> str:
        """"run_" and 16 random hex digits, cut from one OS draw per 512 ids (a system call
        per id was 1% of the engine's time in a burst)."""
        at = self._id_at
        if at >= len(self._id_pool):
            self._id_pool = secrets.token_hex(4096)
            at = 0
        self._id_at = at + 16
        return "run_" + self._id_pool[at:at + 16]

    def _check_open(self) -> None:
        if self._status != "open":
            raise Unavailable("The engine is not running")

    def _get(self, run_id: str) -> RunActor:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFound(f"Run {run_id!r} not found")
        return run

    def _plan(self, workflow: Workflow, only_node: str | None) -> Plan:
        # A workflow's version grows on every change, so (id, version) names one graph.
        key = (workflow.id, workflow.version, only_node)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        plan = compile_plan(workflow, only_node=only_node, timings=self.config.timings)
        self._plans[key] = plan
        if len(self._plans) > self.config.plan_cache_size:
            self._plans.popitem(last=False)
        return plan
