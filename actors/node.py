"""A node actor: one node of one run, as a plain object with its own state, its own
messages and its own failure boundary.

It is not a Task. Its run actor delivers its messages: `Tick` when the node's timer (an
entry in the run's timer heap) falls due, `Freeze`/`Thaw`/`Halt` when the run pauses,
resumes or stops, `WorkDone` when an async handler finished. Anything that goes wrong
while computing the node's duration or output fails this node (recorded in its error and
a node.failed event) and nothing else.

Time along a node: it would reach progress `f` at `t0 + f * total`; `end` is 1.0, or the
fraction at which a simulated failure strikes. Pausing keeps the progress reached
(`frozen`); resuming moves `t0` so the node continues from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heappush
from typing import Any

import msgspec

from flowstage.actors.eventlog import EVENT_CODES
from flowstage.simulation.models import ErrorInfo, NodeStopped
from flowstage.simulation.outputs import NodeContext, failure_message
from flowstage.simulation.plan import PlanNode
from flowstage.simulation.rng import STREAM_FAILURE, Rng
from flowstage.simulation.script import ScriptedOutcome
from flowstage.simulation.states import NODE_TABLE, IllegalTransition, node_transition
from flowstage.simulation.timing import draw_ms, progress_step

__all__ = ["FREEZE", "NOTHING", "THAW", "TICK", "WORK_DONE", "Freeze", "Halt", "NodeActor", "NodeCommand", "Thaw",
           "Tick", "WorkDone"]

_STOPPED = EVENT_CODES["node.stopped"]
_MASK = (1 << 64) - 1

# The transition table's rows that every node goes through, looked up inline.
_QUEUE = NODE_TABLE["queue"]
_START = NODE_TABLE["start"]

# A few failure draws are reserved so the message does not change what decides failing.
_MESSAGE_DRAW = 2


class Tick(msgspec.Struct, frozen=True, tag="tick"):
    """The node's next timer fell due: a progress step, its failure point or its end."""


class Freeze(msgspec.Struct, frozen=True, tag="freeze"):
    """The run paused: keep the progress reached."""


class Thaw(msgspec.Struct, frozen=True, tag="thaw"):
    """The run resumed: continue from the progress kept."""


class Halt(msgspec.Struct, frozen=True, tag="halt"):
    """The run stopped (or was interrupted): settle as stopped or skipped."""

    reason: str


class WorkDone(msgspec.Struct, frozen=True, tag="work-done"):
    """The node's async handler finished (check its task for the result)."""


NodeCommand = Tick | Freeze | Thaw | Halt | WorkDone
TICK = Tick()
FREEZE = Freeze()
THAW = Thaw()
WORK_DONE = WorkDone()

_LIVE = frozenset({"running", "paused"})


class NodeActor(msgspec.Struct, gc=False, eq=False):
    """Mutable per-node state. A Struct with gc=False: the garbage collector neither
    tracks nor scans it (ten thousand runs make a hundred thousand of them, and full
    collections over them stalled the loop for 100 ms and more). The one reference
    cycle, node -> run -> nodes -> node, is broken by `RunActor.on_stop`.

    A run creates a node when it first hears of it (it becomes ready, or an incoming
    connection settles): until then the node is idle and costs nothing."""

    run: Any  # its RunActor (None once the run stopped)
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
    dead_route: int = 0  # ... that will never carry data: branch not taken
    dead_fail: int = 0  # ... that will never carry data: something upstream failed
    waiting: bool = False  # time is up, but an async handler is still working
    not_taken: bool = False  # skipped because its branch was not taken: it owed no work
    work: Any = None  # the asyncio.Task of an async handler
    # While it runs: its seed and the (handler, is_async) entry it started with.
    seed: int = 0
    handler: Any = None
    # A scripted node's output (simulation.script); None when its output is simulated.
    scripted_output: Any = None
    hangs: bool = False  # scripted to hang: running, with no timer, until the run stops

    def __repr__(self) -> str:
        return f"<NodeActor {self.p.id} {self.state}>"

    # --- protocol ----------------------------------------------------------------------

    def receive(self, message: NodeCommand) -> None:
        match message:
            case Tick():
                self._tick()
            case Freeze():
                self._freeze()
            case Thaw():
                self._thaw()
            case Halt(reason=reason):
                self._halt(reason)
            case WorkDone():
                if self.waiting and self.state == "running":
                    self._finish()

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

    def start(self) -> None:
        """All inputs are here: queue, start, and plan this node's time."""
        run = self.run
        p = self.p
        # queued, then running: the table decides both; nothing can look in between.
        queued = _QUEUE.get(self.state)
        if queued is None:
            raise IllegalTransition("queue", self.state)
        state = _START.get(queued)
        if state is None:
            raise IllegalTransition("start", queued)
        self.state = state
        run.node_started(p.id_json)
        self.started_at = run._ts
        t = run.t
        end = 1.0
        engine = run._engine
        config = engine.config
        try:
            # mix64(run.key ^ p.key), inlined (the node's seed; see simulation.rng.node_seed)
            z = run.key ^ p.key
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
            self.seed = seed = z ^ (z >> 31)
            ms = draw_ms(p.type, p.timing, p.config, seed, config.max_duration_ms)
            p_fail = run.failure_rate
            if config.failure_rates:
                p_fail = run.failure_probability(p.type)
            if p_fail > 0.0:
                draws = Rng(seed, STREAM_FAILURE)
                if draws.random() < p_fail:
                    end = draws.uniform(0.3, 1.0)  # fails part-way, not always at the end
            # The handler is chosen when the node starts: registering another one later
            # changes the nodes that start later, not this one.
            self.handler = entry = engine.handlers._entries.get(p.type)
            scripted = run.script.get(p.id) if run.script else None
            if scripted is not None:
                ms, end = self._apply_script(scripted, ms)
            elif entry is not None and entry[1]:
                self.work = run.spawn_work(self, entry[0](self._context(seed)))
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
            heappush(run._timers, (t + (mark if mark < end else end) * total, p.index))

    def _apply_script(self, scripted: ScriptedOutcome, ms: float) -> tuple[float, float]:
        """A scripted node's duration and end point; its output or error is kept for its end.
        No simulated failure and no async handler: the test decided the outcome."""
        if scripted.duration_ms is not None:
            ms = scripted.duration_ms
        match scripted.outcome:
            case "fail":
                self.error = ErrorInfo("scripted_failure", scripted.error or "Scripted failure", self.p.id)
            case "hang":
                self.hangs = True
            case "complete":
                self.scripted_output = scripted.output
        return ms, 1.0

    def next_due(self) -> float:
        """When this node's next timer falls due."""
        frac = self.mark if self.mark < self.end else self.end
        return self.t0 + frac * self.total

    def _tick(self) -> None:
        if self.state != "running":
            return
        if self.mark < self.end - 1e-9:
            self.run.progress_event(self.p.id_json, self.mark)
            self.mark = round(self.mark + self.step, 9)
            self.run.schedule(self)
        elif self.error is not None or self.end < 1.0:
            self.frozen = self.end
            self._fail(self.error or self._simulated_error())
        else:
            self._finish()

    def _simulated_error(self) -> ErrorInfo:
        draws = Rng(self.run.node_seed(self.p), STREAM_FAILURE)
        for _ in range(_MESSAGE_DRAW):
            draws.next64()
        return ErrorInfo("simulated_failure", failure_message(self.p.type, draws), self.p.id)

    def _context(self, seed: int) -> NodeContext:
        run = self.run
        p = self.p
        inputs = self.inputs
        sources: Sequence[str] = p.in_sources
        if inputs is None:
            inputs, sources = [], ()
        elif self.delivered < len(inputs):  # a merge whose some branches were not taken
            pairs = [(x, s) for x, s in zip(inputs, p.in_sources, strict=True) if x is not NOTHING]
            inputs = [x for x, _ in pairs]
            sources = [s for _, s in pairs]
        return NodeContext(run.id, run.workflow_id, p.id, p.type, p.config, inputs, sources,
                           run.inputs, seed, run.t)

    def _finish(self) -> None:
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
                self._fail(ErrorInfo("node_error", text, self.p.id))
                return
            output = work.result()
        elif self.scripted_output is not None:
            output = self.scripted_output
        else:
            entry = self.handler
            try:
                ctx = self._context(self.seed)
                output = ctx.input if entry is None else entry[0](ctx)
            except Exception as error:
                self.frozen = self.end
                self._fail(ErrorInfo("node_error", f"{type(error).__name__}: {error}", self.p.id))
                return
        self.run.complete_node(self, output)

    def _fail(self, error: ErrorInfo) -> None:
        self.state = node_transition(self.state, "fail")
        self.error = error
        self.finished_at = self.run.stamp()
        self.inputs = None
        self.seed = 0
        self.handler = None
        self.run.fail_node(self)

    def _freeze(self) -> None:
        if self.state != "running":
            return
        self.frozen = self.end if self.waiting else self.progress_at(self.run.t)
        self.state = node_transition(self.state, "pause")

    def _thaw(self) -> None:
        if self.state != "paused":
            return
        self.state = node_transition(self.state, "resume")
        if self.hangs:
            return
        t = self.run.t
        self.t0 = t - self.frozen * self.total
        while self.mark < self.frozen - 1e-9:  # steps already passed before the pause
            self.mark = round(self.mark + self.step, 9)
        self.run.schedule(self)

    def _halt(self, reason: str) -> None:
        run = self.run
        if self.state in _LIVE:
            if self.state == "running":
                self.frozen = self.end if self.waiting else self.progress_at(run.t)
            self.state = node_transition(self.state, "stop")
            self.finished_at = run.stamp()
            self.inputs = None
            self.seed = 0
            self.handler = None
            if self.work is not None:
                self.work.cancel()
                self.work = None
            run.event(_STOPPED, NodeStopped, self.p.id, round(self.frozen, 4))
        elif self.state in ("idle", "queued"):
            run.skip_node(self, reason)


class _Nothing:
    """No payload arrived on this slot (a merge input whose branch was not taken)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<nothing>"


NOTHING: Any = _Nothing()
