"""The run actor: one run of one workflow, driven by clock timers and a bounded mailbox.

No Task per run and none per node. Control commands (pause, resume, stop, snapshot)
arrive through the mailbox (`ask`). Node timers live in the run's own heap of
(deadline, node index) entries, and the engine wakes the run at the earliest of them
(one clock timer serves every run: see `Engine.wake_at`). On waking, every due entry is
handled in (deadline, topological index) order: that order is a function of the run
alone, so a seed replays the same events in the same order whatever else the loop is
doing, and nodes whose times coincide cost one wake-up, not several.

The events every node sends (queued, started, completed, edge.data) are filled into byte
templates rather than built as Structs and encoded: the bytes are the same, at a third
less cost, and a run sends ~40 of them.

Simulated time runs from scheduled deadlines, not from when the loop got round to a
callback: a node that starts when its upstream finished starts at the upstream's
deadline. A busy loop delays events, but never stretches the simulated durations.

Dataflow rule (documented for the editor): a node starts when every incoming connection
delivered data. It is skipped as soon as one incoming connection is dead (its source
failed, was skipped, or routed elsewhere) - except a `merge`, which waits until every
incoming connection settled and runs if at least one delivered data (skipped if none
did, or if one is dead because something upstream failed). A failed node skips what
depends on it; independent branches run on; the run then ends `failed`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, Final

import msgspec

from flowstage.actors.actor import Actor
from flowstage.actors.eventlog import EVENT_CODES, EVENT_NAMES, EventLog
from flowstage.actors.node import FREEZE, NOTHING, THAW, WORK_DONE, Halt, NodeActor
from flowstage.simulation.models import (
    ErrorInfo,
    NodeFailed,
    NodeRun,
    NodeSkipped,
    Run,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunResumed,
    RunStarted,
    RunStopped,
)
from flowstage.simulation.outputs import count_items
from flowstage.simulation.plan import Plan, PlanNode
from flowstage.simulation.progress import node_work, run_progress
from flowstage.simulation.rng import mix64, run_key
from flowstage.simulation.states import (
    BRANCH_NOT_TAKEN,
    NODE_SETTLED,
    NODE_TABLE,
    IllegalTransition,
    node_transition,
    run_transition,
)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine, Mapping

    from flowstage.actors.engine import Engine
    from flowstage.actors.handlers import Handler
    from flowstage.simulation.script import ScriptedOutcome

__all__ = ["GetSnapshot", "Pause", "Resume", "RunActor", "RunCommand", "Stop", "iso"]

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_Raw = msgspec.Raw

_RUN_STARTED = EVENT_CODES["run.started"]
_RUN_PAUSED = EVENT_CODES["run.paused"]
_RUN_RESUMED = EVENT_CODES["run.resumed"]
_RUN_COMPLETED = EVENT_CODES["run.completed"]
_RUN_FAILED = EVENT_CODES["run.failed"]
_RUN_STOPPED = EVENT_CODES["run.stopped"]
_QUEUED_STARTED = bytes((EVENT_CODES["node.queued"], EVENT_CODES["node.started"]))
_COMPLETED = EVENT_CODES["node.completed"]
_FAILED = EVENT_CODES["node.failed"]
_SKIPPED = EVENT_CODES["node.skipped"]
_EDGE_DATA = EVENT_CODES["edge.data"]


# Byte templates of the events every run sends many of, filled with the run's `_ids`, the
# seq, the stamp and the event's own fields. They must encode exactly as their Structs do
# (NodeQueued, NodeStarted, NodeCompleted, EdgeData, NodeProgress, RunCompleted and
# RunStopped); tests compare them.
_T_QUEUED: Final = b'{"event":"node.queued",%b%d,"ts":"%b","nodeId":%b}'
_T_STARTED: Final = b'{"event":"node.started",%b%d,"ts":"%b","nodeId":%b}'
_T_COMPLETED: Final = b'{"event":"node.completed",%b%d,"ts":"%b","nodeId":%b,"output":%b}'
_T_EDGE: Final = b'{"event":"edge.data",%b%d,"ts":"%b",%b,"items":%d,"bytes":%d}'
_T_PROGRESS: Final = b'{"event":"node.progress",%b%d,"ts":"%b","nodeId":%b,"progress":%b}'
_T_RUN_END: Final = b'{"event":"%b",%b%d,"ts":"%b"}'
_RUN_END_NAMES: Final = {code: EVENT_NAMES[code].encode() for code in (_RUN_COMPLETED, _RUN_STOPPED)}
_PROGRESS = EVENT_CODES["node.progress"]
_IDLE = NodeRun("idle", 0.0, None, None, None, None)
_COMPLETE = NODE_TABLE["complete"]


class Pause(msgspec.Struct, frozen=True, tag="pause"):
    pass


class Resume(msgspec.Struct, frozen=True, tag="resume"):
    pass


class Stop(msgspec.Struct, frozen=True, tag="stop"):
    pass


class GetSnapshot(msgspec.Struct, frozen=True, tag="snapshot"):
    pass


RunCommand = Pause | Resume | Stop | GetSnapshot

_PREFIXES: dict[int, str] = {}
# Stamps by epoch millisecond, as (str, bytes): ten thousand runs share a few thousand
# distinct milliseconds a second, so most stamps are found here.
_STAMPS: dict[int, tuple[str, bytes]] = {}


def iso(t: float) -> str:
    """`simulation.timefmt.iso_ms`, fast: the date-time part is cached per second, since a
    busy engine stamps hundreds of thousands of events with a handful of distinct seconds."""
    ms = round(t * 1000)
    sec, frac = divmod(ms, 1000)
    prefix = _PREFIXES.get(sec)
    if prefix is None:
        if len(_PREFIXES) > 4096:
            _PREFIXES.clear()
        prefix = _PREFIXES[sec] = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{prefix}{frac:03d}Z"


def _stamp(ms: int) -> tuple[str, bytes]:
    if len(_STAMPS) >= 16384:
        _STAMPS.clear()
    text = iso(ms / 1000)
    stamp = _STAMPS[ms] = (text, text.encode())
    return stamp


class RunActor(Actor[RunCommand]):
    __slots__ = ("_armed_when", "_dirty", "_engine", "_ids", "_timers", "_ts", "_ts_t", "_tsb",
                 "_wake_token", "created_at", "error", "failure_rate", "finished_at", "first", "id",
                 "inputs", "key", "kind", "log", "needs_save", "nodes", "persisted_seq", "plan", "script", "seed",
                 "seq", "settled", "speed", "started_at", "state", "t", "workflow_id")

    def __init__(self, engine: Engine, plan: Plan, run_id: str, *, seed: int, speed: float,
                 failure_rate: float, inputs: Mapping[str, Any], kind: str, at: float | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 script: Mapping[str, ScriptedOutcome] | None = None) -> None:
        super().__init__(mailbox_size=engine.config.mailbox_size, supervisor=engine, loop=loop)
        self._engine = engine
        self.plan = plan
        self.id = run_id
        self.workflow_id = plan.workflow_id
        self.seed = seed
        self.key = run_key(seed)
        self.speed = speed
        self.failure_rate = failure_rate
        self.inputs = inputs
        self.kind = kind
        # node id -> how it ends, for the nodes a test scripted (simulation.script).
        self.script: Mapping[str, ScriptedOutcome] = script or {}
        self.state = "running"
        # `at`: when the run was asked for (an execute may wait a few turns in a burst).
        now = engine.clock.now() if at is None else at
        self.created_at = self.started_at = iso(now)
        self.finished_at: str | None = None
        self.error: ErrorInfo | None = None
        self.t = now  # the simulated instant being handled; events are stamped with it
        self._ts_t = -1.0
        self._ts = ""
        self._tsb = b""
        # What every event of this run carries after its name, up to the seq's digits.
        self._ids = b'"runId":' + _encode(run_id) + b',"workflowId":' + _encode(self.workflow_id) + b',"seq":'
        self.seq = 0
        self.log = EventLog()
        # Created when first needed (see NodeActor); None is an idle node.
        self.nodes: list[NodeActor | None] = [None] * len(plan.nodes)
        self.settled = 0
        self._timers: list[tuple[float, int]] = []
        # The engine's timer entry for this run: its deadline and token (0: none).
        self._armed_when = 0.0
        self._wake_token = 0
        # Persistence bookkeeping, read by the engine's flusher.
        self._dirty = False
        self.needs_save = True
        self.persisted_seq = 0
        # The snapshot `execute` answers with; saved as it is if the first flush finds the
        # run still running (events carry the rest), which spares building one per run.
        self.first: Run | None = Run(run_id, self.workflow_id, plan.version, "running", seed, speed,
                                     self.created_at, self.started_at, None, 0.0, dict(plan.idle),
                                     failure_rate, None, kind)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<RunActor {self.id} {self.state}>"

    def on_start(self) -> None:
        """The first thing a run does, on `begin` or before its first message."""
        self.event(_RUN_STARTED, RunStarted, self.plan.version, self.seed, self.speed)
        if not self.nodes:  # an empty workflow has nothing to wait for
            self.state = run_transition(self.state, "complete")
            self._end(_RUN_COMPLETED, RunCompleted)
            return
        for index in self.plan.roots:
            self._node(index).start()
        self._arm()

    def on_stop(self) -> None:
        # Nodes are invisible to the garbage collector, so their link back to the run
        # must be cut by hand for the run to be freed.
        self._disarm()
        for node in self.nodes:
            if node is not None:
                if node.work is not None:
                    node.work.cancel()
                node.run = None

    def _node(self, index: int) -> NodeActor:
        node = self.nodes[index]
        if node is None:
            p = self.plan.nodes[index]
            node = self.nodes[index] = NodeActor(self, p, len(p.in_edges))
        return node

    # --- what nodes ask of their run ----------------------------------------------------

    @property
    def cap_ms(self) -> float:
        return self._engine.config.max_duration_ms

    @property
    def progress_step(self) -> float:
        return self._engine.config.progress_step

    @property
    def progress_min_interval(self) -> float:
        return self._engine.config.progress_min_interval

    @property
    def progress_span(self) -> float:
        """The largest fraction a progress event can report (0.75 for steps of 0.25)."""
        return 1.0 - self._engine.config.progress_step

    def node_seed(self, p: PlanNode) -> int:
        return mix64(self.key ^ p.key)

    def failure_probability(self, node_type: str) -> float:
        by_type = self._engine.config.failure_rates.get(node_type, 0.0)
        if not by_type:
            return self.failure_rate
        return 1.0 - (1.0 - self.failure_rate) * (1.0 - by_type)

    def handler(self, node_type: str) -> tuple[Handler, bool] | None:
        return self._engine.handlers.get(node_type)

    def spawn_work(self, node: NodeActor, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._engine.spawn_work(self, node, work)

    def wake_scheduled(self) -> bool:
        """Whether the engine holds a wake-up for this run (a node timer is set)."""
        return self._wake_token != 0

    def schedule(self, node: NodeActor) -> None:
        heappush(self._timers, (node.next_due(), node.p.index))

    # --- events --------------------------------------------------------------------------

    def stamp(self) -> str:
        """The RFC 3339 form of the current instant `t` (cached: events share instants)."""
        t = self.t
        if t != self._ts_t:
            self._restamp(t)
        return self._ts

    def _restamp(self, t: float) -> None:
        self._ts_t = t
        ms = round(t * 1000)
        self._ts, self._tsb = _STAMPS.get(ms) or _stamp(ms)

    def event(self, code: int, cls: Callable[..., Any], *fields: Any) -> None:
        """Emit one event built from its Struct (the rarer events; see `node_started`)."""
        self.seq = seq = self.seq + 1
        t = self.t
        if t != self._ts_t:  # most events share their instant with the one before
            self._restamp(t)
        self._emit(code, seq, _encode(cls(self.id, self.workflow_id, seq, self._ts, *fields)))

    def node_started(self, node_json: bytes) -> None:
        """Emit node.queued and node.started of one node, from their byte templates."""
        self.seq = seq = self.seq + 2
        t = self.t
        if t != self._ts_t:
            self._restamp(t)
        ids = self._ids
        tsb = self._tsb
        queued = _T_QUEUED % (ids, seq - 1, tsb, node_json)
        started = _T_STARTED % (ids, seq, tsb, node_json)
        # _emit twice, inlined: every node of every run comes this way.
        log_ = self.log
        log_._codes += _QUEUED_STARTED
        data = log_._data
        data.append(queued)
        data.append(started)
        if log_._waiters:
            log_._wake()
        engine = self._engine
        listeners = engine.listeners
        if listeners:
            run_id = self.id
            workflow_id = self.workflow_id
            for listener in listeners:
                try:
                    listener(run_id, workflow_id, seq - 1, "node.queued", queued)
                except Exception:
                    log.exception("event listener %r failed", listener)
            for listener in listeners:
                try:
                    listener(run_id, workflow_id, seq, "node.started", started)
                except Exception:
                    log.exception("event listener %r failed", listener)
        if not self._dirty:
            self._dirty = True
            engine.mark_dirty(self)

    def progress_event(self, node_json: bytes, progress: float) -> None:
        self.seq = seq = self.seq + 1
        t = self.t
        if t != self._ts_t:
            self._restamp(t)
        self._emit(_PROGRESS, seq, _T_PROGRESS % (self._ids, seq, self._tsb, node_json, _encode(progress)))

    def _emit(self, code: int, seq: int, data: bytes) -> None:
        """Log an encoded event, tell the listeners, mark the run dirty for the flusher."""
        log_ = self.log  # EventLog.append, inlined: this runs ~40 times per run
        log_._codes.append(code)
        log_._data.append(data)
        if log_._waiters:
            log_._wake()
        engine = self._engine
        if engine.listeners:
            name = EVENT_NAMES[code]
            for listener in engine.listeners:
                try:
                    listener(self.id, self.workflow_id, seq, name, data)
                except Exception:
                    log.exception("event listener %r failed", listener)
        if not self._dirty:
            self._dirty = True
            engine.mark_dirty(self)

    # --- running -------------------------------------------------------------------------

    def begin(self) -> None:
        """Announce the run and start every node that has no incoming connection."""
        self.start()

    def _arm(self) -> None:
        """Have the engine wake this run at its earliest node timer."""
        timers = self._timers
        if not timers or self.state != "running":
            return
        when = timers[0][0]
        if self._wake_token and self._armed_when <= when:
            return
        self._armed_when = when
        self._engine.wake_at(self, when)

    def _disarm(self) -> None:
        self._wake_token = 0  # the engine drops the entry it holds
        self._timers.clear()

    def on_due(self, limit: float) -> int:
        """The engine's wake-up: handle every node timer due by `limit`, in (deadline,
        topological index) order, then ask to be woken at the next one. Returns how many
        timers it handled."""
        if self.state != "running":
            return 0
        timers = self._timers
        nodes = self.nodes
        handled = 0
        try:
            while timers and timers[0][0] <= limit:
                when, index = heappop(timers)
                if when > self.t:
                    self.t = when
                nodes[index]._tick()  # type: ignore[union-attr]  # Tick, without the dispatch
                handled += 1
                if self.state != "running":
                    return handled
        except Exception as error:
            self._crashed(error)
            return handled
        self._arm()
        return handled

    def work_done(self, node: NodeActor) -> None:
        """An async handler of `node` finished; if its time was already up, it completes now."""
        if self.state != "running" or not node.waiting:
            return
        self.t = max(self.t, self._engine.clock.now())
        try:
            node.receive(WORK_DONE)
        except Exception as error:
            self._crashed(error)
            return
        self._arm()

    def complete_node(self, node: NodeActor, output: Any) -> None:
        p = node.p
        try:
            raw = _encode(output)
        except Exception as error:  # a handler returned something JSON cannot carry
            node.frozen = node.end
            node._fail(ErrorInfo("node_error", f"output is not JSON: {error}", p.id))
            return
        state = _COMPLETE.get(node.state)
        if state is None:
            raise IllegalTransition("complete", node.state)
        node.state = state
        self.seq = seq = self.seq + 1
        t = self.t
        if t != self._ts_t:
            self._restamp(t)
        node.finished_at = self._ts
        node.inputs = None
        node.seed = 0
        data = _T_COMPLETED % (self._ids, seq, self._tsb, p.id_json, raw)
        node.output_seq = seq
        node.output_at = len(data) - len(raw) - 1
        self._emit(_COMPLETED, seq, data)
        if p.out_edges:
            payload = output
            size = len(raw)
            branch = None
            if p.routes:
                branch = output.get("branch") if isinstance(output, dict) else None
                payload = output.get("data") if isinstance(output, dict) else None
                size = len(_encode(payload))
            items = count_items(payload)
            edges = self.plan.edges
            for index in p.out_edges:
                edge = edges[index]
                if branch is not None and edge.source_handle != branch:
                    self._dead(edge.target, edge.slot, "route")
                    continue
                self.seq = seq = self.seq + 1
                self._emit(_EDGE_DATA, seq, _T_EDGE % (self._ids, seq, self._tsb, edge.data_json, items, size))
                self._deliver(edge.target, edge.slot, payload)
        self._node_settled()

    def fail_node(self, node: NodeActor) -> None:
        assert node.error is not None
        if self.error is None:
            self.error = node.error  # the run fails with its first cause
        self.event(_FAILED, NodeFailed, node.p.id, node.error)
        self._kill_downstream(node, "fail")
        self._node_settled()

    def skip_node(self, node: NodeActor, reason: str) -> None:
        node.state = node_transition(node.state, "skip")
        node.not_taken = reason == BRANCH_NOT_TAKEN
        node.finished_at = self.stamp()
        node.inputs = None
        self.event(_SKIPPED, NodeSkipped, node.p.id, reason)
        if self.state == "running":
            self._kill_downstream(node, "fail" if reason == "upstream_failed" else "route")
        self._node_settled()

    def _kill_downstream(self, node: NodeActor, kind: str) -> None:
        edges = self.plan.edges
        for index in node.p.out_edges:
            edge = edges[index]
            self._dead(edge.target, edge.slot, kind)

    def _deliver(self, index: int, slot: int, payload: Any) -> None:
        target = self.nodes[index] or self._node(index)
        inputs = target.inputs
        if inputs is None:
            inputs = target.inputs = [NOTHING] * len(target.p.in_edges)
        inputs[slot] = payload
        target.pending -= 1
        target.delivered += 1
        if target.state == "idle" and target.pending == 0:
            target.start()

    def _dead(self, index: int, slot: int, kind: str) -> None:
        target = self.nodes[index] or self._node(index)
        target.pending -= 1
        if kind == "fail":
            target.dead_fail += 1
        else:
            target.dead_route += 1
        if target.state != "idle":
            return
        if kind == "fail":
            self.skip_node(target, "upstream_failed")
        elif not target.p.merge:
            self.skip_node(target, BRANCH_NOT_TAKEN)
        elif target.pending == 0:
            if target.delivered:
                target.start()
            else:
                self.skip_node(target, BRANCH_NOT_TAKEN)

    def _node_settled(self) -> None:
        self.settled += 1
        if self.settled == len(self.nodes) and self.state == "running":
            if self.error is None:
                self.state = run_transition(self.state, "complete")
                self._end(_RUN_COMPLETED, RunCompleted)
            else:
                self.state = run_transition(self.state, "fail")
                self._end(_RUN_FAILED, RunFailed, self.error)

    def _end(self, code: int, cls: Callable[..., Any], *extra: Any) -> None:
        self.finished_at = self.stamp()
        self._disarm()
        if extra:
            self.event(code, cls, *extra)
        else:
            self.seq = seq = self.seq + 1
            self._emit(code, seq, _T_RUN_END % (_RUN_END_NAMES[code], self._ids, seq, self._tsb))
        self.log.finish()
        self.needs_save = True
        self._engine.run_finished(self)

    def _crashed(self, error: BaseException) -> None:
        """A bug in the run itself (not in a node's work): the supervisor decides."""
        directive = self._engine.child_failed(self, error)
        if directive == "stop":
            self.stop()

    # --- control -------------------------------------------------------------------------

    def receive(self, message: RunCommand) -> Run:
        match message:
            case Pause():
                self._pause()
            case Resume():
                self._resume()
            case Stop():
                self._halt("stop")
            case GetSnapshot():
                pass
        return self.snapshot()

    def _pause(self) -> None:
        target = run_transition(self.state, "pause")
        if target == self.state:
            return
        self.t = max(self.t, self._engine.clock.now())
        self._disarm()
        for node in self.nodes:
            if node is not None and node.state == "running":
                node.receive(FREEZE)
        self.state = target
        self.event(_RUN_PAUSED, RunPaused)
        self.needs_save = True

    def _resume(self) -> None:
        target = run_transition(self.state, "resume")
        if target == self.state:
            return
        self.t = max(self.t, self._engine.clock.now())
        self.state = target
        self.event(_RUN_RESUMED, RunResumed)
        for node in self.nodes:
            if node is not None and node.state == "paused":
                node.receive(THAW)
        self.needs_save = True
        self._arm()

    def _halt(self, how: str, error: ErrorInfo | None = None) -> None:
        """Stop (a client asked) or fail (`error`: the engine is shutting down)."""
        target = run_transition(self.state, how)
        self.t = max(self.t, self._engine.clock.now())
        self._disarm()
        self.state = target
        reason = "run_stopped" if how == "stop" else "run_interrupted"
        halt = Halt(reason)
        try:
            for index in range(len(self.nodes)):
                node = self.nodes[index] or self._node(index)
                if node.state not in NODE_SETTLED:
                    node.receive(halt)
        finally:
            self.settled = len(self.nodes)
        if how == "stop":
            self._end(_RUN_STOPPED, RunStopped)
        else:
            assert error is not None
            self.error = error
            self._end(_RUN_FAILED, RunFailed, error)

    def interrupt(self, error: ErrorInfo) -> None:
        """The engine is going away: running and paused runs end `failed` with `error`."""
        if self.state in ("running", "paused"):
            self._halt("fail", error)

    def fail_internal(self, error: ErrorInfo) -> None:
        """The run's own machinery broke: settle what is left and end it failed."""
        if self.state in ("running", "paused"):
            self._halt("fail", error)

    # --- views ---------------------------------------------------------------------------

    def snapshot(self, *, raw: bool = False) -> Run:
        """The run as the contract shows it. `raw` keeps outputs as encoded JSON (for sinks)."""
        now = self._engine.clock.now()
        nodes: dict[str, NodeRun] = {}
        done = 0.0
        data = self.log._data
        for p, node in zip(self.plan.nodes, self.nodes, strict=True):
            if node is None:
                nodes[p.id] = _IDLE
                continue
            state = node.state
            output: Any = None
            if state == "completed":
                progress = 1.0
                done += 1.0
                # The output, sliced out of its node.completed event.
                output = data[node.output_seq - 1][node.output_at:-1]
                output = _Raw(output) if raw else _decode(output)
            else:
                progress = round(node.progress_at(now), 4)
                done += node_work(progress, node.not_taken)
            nodes[p.id] = NodeRun(state, progress, node.started_at,  # type: ignore[arg-type]
                                  node.finished_at, output, node.error)
        progress = run_progress(done, len(self.nodes))
        return Run(self.id, self.workflow_id, self.plan.version, self.state, self.seed,  # type: ignore[arg-type]
                   self.speed, self.created_at, self.started_at, self.finished_at, progress, nodes,
                   self.failure_rate, self.error, self.kind)  # type: ignore[arg-type]
