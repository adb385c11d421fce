"""A node actor: one node of one run, with its own state, its own messages and its own
failure boundary.

It is not a Task and has no mailbox: its only sender is its run, which delivers each
message in line to `receive(message, run)` (a mailbox would only reorder what the run
already ordered). `Start` when all its inputs are in, `Tick` when its timer (an entry in
the run's timer heap) falls due, `Freeze`/`Thaw`/`Halt` when the run pauses, resumes or
stops, `Skip` when an incoming connection went dead, `WorkDone` when its async handler
finished. The node changes its own state (by `simulation.states`' node table) and writes
its own events; what that means for the rest of the graph is the run's business (the
`NodeHost` calls). Anything that goes wrong while computing the node's duration or output
fails this node (recorded in its error and a node.failed event) and nothing else.

The node keeps no reference to its run: the run passes itself with every message, so a
run and its nodes form no reference cycle.

Time along a node: it would reach progress `f` at `t0 + f * total`; `end` is 1.0, or the
fraction at which a simulated failure strikes. Pausing keeps the progress reached
(`frozen`); resuming moves `t0` so the node continues from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from heapq import heappush
from typing import Any, Protocol

import msgspec

from flowstage.actors.eventlog import EVENT_CODES, EventLog
from flowstage.actors.handlers import Handler, HandlerRegistry
from flowstage.actors.messages import Freeze, Halt, NodeMessage, Queue, Reuse, Skip, Start, Thaw, Tick, WorkDone
from flowstage.actors.runtime import EngineConfig
from flowstage.simulation.messages import SCRIPTED_FAILURE
from flowstage.simulation.models import ErrorInfo, NodeFailed, NodeQueued, NodeSkipped, NodeStarted, NodeStopped
from flowstage.simulation.outputs import NodeContext, failure_message
from flowstage.simulation.plan import PlanNode
from flowstage.simulation.rng import STREAM_FAILURE, Rng, mix64
from flowstage.simulation.script import ScriptedOutcome
from flowstage.simulation.states import BRANCH_NOT_TAKEN, NODE_TABLE, IllegalTransition, node_transition
from flowstage.simulation.timing import draw_ms, progress_step

__all__ = ["NOTHING", "NodeActor", "NodeHost"]

_MASK = (1 << 64) - 1
_STOPPED = EVENT_CODES["node.stopped"]
_FAILED = EVENT_CODES["node.failed"]
_SKIPPED = EVENT_CODES["node.skipped"]
_QUEUED = EVENT_CODES["node.queued"]
_STARTED = EVENT_CODES["node.started"]

# The transition table's rows, looked up inline on the paths every node takes.
_QUEUE = NODE_TABLE["queue"]
_START = NODE_TABLE["start"]
_COMPLETE = NODE_TABLE["complete"]
_STOP = NODE_TABLE["stop"]
_SKIP = NODE_TABLE["skip"]

# A few failure draws are reserved so the message does not change what decides failing.
_MESSAGE_DRAW = 2
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class NodeHost(Protocol):
    """What a node may see and ask of its run (the run's state machine)."""

    run_id: str
    workflow_id: str
    t: float  # the simulated instant being handled
    key: int  # the run's seed, mixed
    speed: float
    failure_rate: float
    inputs: Mapping[str, Any]
    script: Mapping[str, ScriptedOutcome]
    config: EngineConfig
    handlers: HandlerRegistry
    log: EventLog
    timers: list[tuple[float, int]]  # (deadline, node index): a node pushes its next timer here

    def spawn_work(self, index: int, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run node `index`'s async handler as a task the engine owns."""
        ...

    def node_completed(self, node: NodeActor, output: Any, size: int) -> None: ...

    def node_failed(self, node: NodeActor) -> None: ...

    def node_skipped(self, node: NodeActor, reason: str) -> None: ...


class NodeActor(msgspec.Struct, gc=False, eq=False):
    """Mutable per-node state. A Struct with gc=False: the garbage collector neither
    tracks nor scans it (ten thousand runs make a hundred thousand of them, and full
    collections over them stalled the loop for 100 ms and more); it holds no reference
    to its run, so it is in no cycle the collector would have to find.

    A run creates a node when it first hears of it (it becomes ready, or an incoming
    connection settles): until then the node is idle and costs nothing."""

    p: PlanNode
    pending: int  # incoming edges not settled yet
    state: str = "idle"
    # RFC 3339 strings, the very stamps of its events (shared, not formatted again).
    started_at: str | None = None
    finished_at: str | None = None
    t0: float = 0.0
    total: float = 0.0
    end: float = 1.0
    step: float = 0.0
    mark: float = 1.0
    frozen: float = 0.0
    # The seq of its node.completed event and where the output starts in it: the output
    # is not kept a second time (snapshots slice it out of the event log).
    output_seq: int = 0
    output_at: int = 0
    error: ErrorInfo | None = None
    # One payload per incoming edge (by the edge's slot), until the node starts.
    inputs: list[Any] | None = None
    delivered: int = 0  # incoming edges that carried data
    waiting: bool = False  # time is up, but an async handler is still working
    not_taken: bool = False  # skipped because its branch was not taken: it owed no work
    work: asyncio.Task[Any] | None = None  # the task of an async handler
    # While it runs: its seed and the handler it started with (None: passes its input on).
    seed: int = 0
    handler: Handler | None = None
    # A scripted node's output (simulation.script); None when its output is simulated.
    scripted_output: Any = None
    hangs: bool = False  # scripted to hang: running, with no timer, until the run stops

    def __repr__(self) -> str:
        return f"<NodeActor {self.p.id} {self.state}>"

    def receive(self, message: NodeMessage, run: NodeHost) -> None:
        match message:
            case Tick():
                self._tick(run)
            case Start():
                self._start(run)
            case WorkDone():
                if self.waiting and self.state == "running":
                    self._finish(run)
            case Freeze():
                self._freeze(run)
            case Thaw():
                self._thaw(run)
            case Skip(reason=reason):
                self._skip(run, reason)
            case Halt(reason=reason):
                self._halt(run, reason)
            case Queue():
                self.state = node_transition(self.state, "queue")
                run.log.event(run.t, _QUEUED, NodeQueued, self.p.id)
            case Reuse():
                self._reuse(run, message)

    def progress_at(self, now: float) -> float:
        state = self.state
        if state == "running":
            if self.waiting or self.total <= 0:
                return self.end if self.waiting else 0.0
            return min(max((now - self.t0) / self.total, 0.0), self.end)
        if state == "completed":
            return 1.0
        if state in ("paused", "stopped", "failed"):
            return self.frozen
        return 0.0

    # --- lifecycle ---------------------------------------------------------------------

    def _start(self, run: NodeHost) -> None:
        """All inputs are here: queue, start, and plan this node's time."""
        p = self.p
        # queued, then running: the table decides both; nothing can look in between (unless
        # a debugger held it queued: then it only starts now).
        state: str = self.state
        held = state == "queued"
        if not held:
            queued = _QUEUE.get(state)
            if queued is None:
                raise IllegalTransition("queue", state)
            state = queued
        started = _START.get(state)
        if started is None:
            raise IllegalTransition("start", state)
        self.state = started
        t = run.t
        if held:
            run.log.event(t, _STARTED, NodeStarted, p.id)
            self.started_at = run.log.stamp(t)
        else:
            self.started_at = run.log.node_started(t, p.id_json)
        end = 1.0
        config = run.config
        try:
            # mix64(run.key ^ p.key), inlined (the node's seed): every node comes this way.
            z = run.key ^ p.key
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
            self.seed = seed = z ^ (z >> 31)
            ms = draw_ms(p.type, p.timing, p.config, seed, config.max_duration_ms)
            p_fail = run.failure_rate
            by_type = config.failure_rates.get(p.type, 0.0) if config.failure_rates else 0.0
            if by_type:
                p_fail = 1.0 - (1.0 - p_fail) * (1.0 - by_type)
            if p_fail > 0.0:
                draws = Rng(seed, STREAM_FAILURE)
                if draws.random() < p_fail:
                    end = draws.uniform(0.3, 1.0)  # fails part-way, not always at the end
            # The handler is chosen when the node starts: registering another one later
            # changes the nodes that start later, not this one.
            entry = run.handlers.get(p.type)
            scripted = run.script.get(p.id) if run.script else None
            if scripted is not None:
                ms, end = self._apply_script(scripted, ms)
            elif entry is not None:
                self.handler, is_async = entry
                if is_async:
                    self.work = run.spawn_work(p.index, entry[0](self._context(run, seed)))
        except Exception as error:
            # Even planning the node failed: it fails at once, through its timer like
            # any other end, so the failure is reported in order.
            self.error = ErrorInfo("node_error", f"{type(error).__name__}: {error}", p.id)
            ms, end = 0.0, 0.0
        self.t0 = t
        self.total = total = ms / 1000.0 / run.speed
        self.end = end
        step = 0.0
        if total * (1.0 - config.progress_step) >= config.progress_min_interval:  # else too short to report
            step = progress_step(total, config.progress_step, config.progress_min_interval)
        self.step = step
        self.mark = mark = step if step else 1.0
        if not self.hangs:
            heappush(run.timers, (t + (mark if mark < end else end) * total, p.index))

    def _apply_script(self, scripted: ScriptedOutcome, ms: float) -> tuple[float, float]:
        """A scripted node's duration and end point; its output or error is kept for its end.
        No simulated failure and no async handler: the test decided the outcome."""
        if scripted.duration_ms is not None:
            ms = scripted.duration_ms
        match scripted.outcome:
            case "fail":
                self.error = ErrorInfo("scripted_failure", scripted.error or SCRIPTED_FAILURE, self.p.id)
            case "hang":
                self.hangs = True
            case "complete":
                self.scripted_output = scripted.output
        return ms, 1.0

    def _next_due(self) -> float:
        frac = self.mark if self.mark < self.end else self.end
        return self.t0 + frac * self.total

    def _tick(self, run: NodeHost) -> None:
        if self.state != "running":
            return
        if self.mark < self.end - 1e-9:
            run.log.progress(run.t, self.p.id_json, self.mark)
            self.mark = round(self.mark + self.step, 9)
            heappush(run.timers, (self._next_due(), self.p.index))
        elif self.error is not None or self.end < 1.0:
            self.frozen = self.end
            self._fail(run, self.error or self._simulated_error(run))
        else:
            self._finish(run)

    def _simulated_error(self, run: NodeHost) -> ErrorInfo:
        draws = Rng(mix64(run.key ^ self.p.key), STREAM_FAILURE)
        for _ in range(_MESSAGE_DRAW):
            draws.next64()
        return ErrorInfo("simulated_failure", failure_message(self.p.type, draws), self.p.id)

    def _context(self, run: NodeHost, seed: int) -> NodeContext:
        p = self.p
        inputs = self.inputs
        sources: Sequence[str] = p.in_sources
        if inputs is None:
            inputs, sources = [], ()
        elif self.delivered < len(inputs):  # a merge whose some branches were not taken
            pairs = [(x, s) for x, s in zip(inputs, p.in_sources, strict=True) if x is not NOTHING]
            inputs = [x for x, _ in pairs]
            sources = [s for _, s in pairs]
        return NodeContext(run.run_id, run.workflow_id, p.id, p.type, p.config, inputs, sources,
                           run.inputs, seed, run.t)

    def _finish(self, run: NodeHost) -> None:
        """Time is up: produce the output (or wait for async work) and complete."""
        work = self.work
        if work is not None:
            if not work.done():
                self.waiting = True
                return
            self.waiting = False
            self.work = None
            error = None if work.cancelled() else work.exception()
            if work.cancelled() or error is not None:
                text = "cancelled" if error is None else f"{type(error).__name__}: {error}"
                self.frozen = self.end
                self._fail(run, ErrorInfo("node_error", text, self.p.id))
                return
            output = work.result()
        elif self.scripted_output is not None:
            output = self.scripted_output
        else:
            try:
                ctx = self._context(run, self.seed)
                output = ctx.input if self.handler is None else self.handler(ctx)
            except Exception as error:
                self.frozen = self.end
                self._fail(run, ErrorInfo("node_error", f"{type(error).__name__}: {error}", self.p.id))
                return
        try:
            raw = _encode(output)
        except Exception as error:  # a handler returned something JSON cannot carry
            self.frozen = self.end
            self._fail(run, ErrorInfo("node_error", f"output is not JSON: {error}", self.p.id))
            return
        state = _COMPLETE.get(self.state)
        if state is None:
            raise IllegalTransition("complete", self.state)
        self.state = state
        self.finished_at, self.output_seq, self.output_at = run.log.node_completed(run.t, self.p.id_json, raw)
        self.inputs = None
        self.seed = 0
        self.handler = None
        run.node_completed(self, output, len(raw))

    def _reuse(self, run: NodeHost, given: Reuse) -> None:
        """Complete now with an output this run did not compute: no time, no start."""
        self.state = node_transition(self.state, "reuse")
        self.finished_at, self.output_seq, self.output_at = run.log.node_reused(run.t, self.p.id, given.output,
                                                                               pinned=given.pinned)
        self.inputs = None
        run.node_completed(self, _decode(given.output), len(given.output))

    def _fail(self, run: NodeHost, error: ErrorInfo) -> None:
        self.state = node_transition(self.state, "fail")
        self.error = error
        self.finished_at = run.log.stamp(run.t)
        self.inputs = None
        self.seed = 0
        self.handler = None
        run.log.event(run.t, _FAILED, NodeFailed, self.p.id, error)
        run.node_failed(self)

    def _freeze(self, run: NodeHost) -> None:
        if self.state != "running":
            return
        self.frozen = self.end if self.waiting else self.progress_at(run.t)
        self.state = node_transition(self.state, "pause")

    def _thaw(self, run: NodeHost) -> None:
        if self.state != "paused":
            return
        self.state = node_transition(self.state, "resume")
        if self.hangs:
            return
        self.t0 = run.t - self.frozen * self.total
        while self.mark < self.frozen - 1e-9:  # steps already passed before the pause
            self.mark = round(self.mark + self.step, 9)
        heappush(run.timers, (self._next_due(), self.p.index))

    def _skip(self, run: NodeHost, reason: str) -> None:
        self.state = node_transition(self.state, "skip")
        self.not_taken = reason == BRANCH_NOT_TAKEN
        self.finished_at = run.log.stamp(run.t)
        self.inputs = None
        run.log.event(run.t, _SKIPPED, NodeSkipped, self.p.id, reason)
        run.node_skipped(self, reason)

    def _halt(self, run: NodeHost, reason: str) -> None:
        if self.state in _STOP:
            if self.state == "running":
                self.frozen = self.end if self.waiting else self.progress_at(run.t)
            self.state = node_transition(self.state, "stop")
            self.finished_at = run.log.stamp(run.t)
            self.inputs = None
            self.seed = 0
            self.handler = None
            if self.work is not None:
                self.work.cancel()
                self.work = None
            run.log.event(run.t, _STOPPED, NodeStopped, self.p.id, round(self.frozen, 4))
        elif self.state in _SKIP:
            self._skip(run, reason)


class _Nothing:
    """No payload arrived on this slot (a merge input whose branch was not taken)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<nothing>"


NOTHING: Any = _Nothing()
