"""A run's state machine: its state, its nodes, its timer heap and the dataflow between nodes.

Node timers live in the run's own heap of (deadline, node index) entries; the run actor
asks the scheduler to wake it at the earliest. On waking (`due`), every due entry is
handled in (deadline, topological index) order: that order is a function of the run
alone, so a seed replays the same events in the same order whatever else the loop is
doing, and nodes whose times coincide cost one wake-up, not several.

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

import asyncio
from collections.abc import Coroutine, Mapping
from heapq import heappop
from typing import Any

import msgspec

from flowstage.actors.debugger import Debugger
from flowstage.actors.eventlog import EVENT_CODES, EventLog
from flowstage.actors.messages import FREEZE, START, THAW, TICK, Halt, Skip, WorkDone
from flowstage.actors.node import NOTHING, NodeActor
from flowstage.actors.runtime import Runtime
from flowstage.simulation.models import ErrorInfo, PausedAt, RunFailed, RunPaused, RunResumed, RunStarted
from flowstage.simulation.outputs import count_items
from flowstage.simulation.plan import Plan
from flowstage.simulation.rng import run_key
from flowstage.simulation.script import ScriptedOutcome
from flowstage.simulation.states import (
    BRANCH_NOT_TAKEN,
    NODE_SETTLED,
    RUN_INTERRUPTED,
    RUN_STOPPED,
    RUN_TABLE,
    UPSTREAM_FAILED,
    run_transition,
)

__all__ = ["RunMachine"]

_encode = msgspec.json.Encoder().encode
_RUN_STARTED = EVENT_CODES["run.started"]
_RUN_PAUSED = EVENT_CODES["run.paused"]
_RUN_RESUMED = EVENT_CODES["run.resumed"]
_RUN_COMPLETED = EVENT_CODES["run.completed"]
_RUN_FAILED = EVENT_CODES["run.failed"]
_RUN_STOPPED = EVENT_CODES["run.stopped"]
_HALTS = {"stop": Halt(RUN_STOPPED), "fail": Halt(RUN_INTERRUPTED)}
_SKIPS = {reason: Skip(reason) for reason in (UPSTREAM_FAILED, BRANCH_NOT_TAKEN)}
# States a run can be halted from (stopped by a client, or failed by an interruption).
_HALTABLE = RUN_TABLE["fail"].keys() & RUN_TABLE["stop"].keys()
_USER_PAUSE = PausedAt(None, "user")

class RunMachine:
    """The `NodeHost` its nodes see (actors.node), and what the run actor drives: `begin`,
    `due`, `work_done`, `pause`, `resume`, `halt`. It ended once `finished_at` is set.

    It holds no reference to its run actor (nor its nodes to it): a run is freed by
    reference counting alone, without waiting for a garbage collection."""

    __slots__ = ("config", "debug", "error", "failure_rate", "finished_at", "handlers", "inputs", "key", "log",
                 "nodes", "paused_at", "plan", "run_id", "runtime", "script", "settled", "speed", "state", "t",
                 "timers", "workflow_id")

    def __init__(self, plan: Plan, log: EventLog, runtime: Runtime, *, seed: int, speed: float,
                 failure_rate: float, inputs: Mapping[str, Any], script: Mapping[str, ScriptedOutcome],
                 at: float, debug: Debugger | None = None) -> None:
        self.plan = plan
        self.log = log
        self.run_id = log.run_id
        self.workflow_id = plan.workflow_id
        self.key = run_key(seed)
        self.speed = speed
        self.failure_rate = failure_rate
        self.inputs = inputs
        # node id -> how it ends, for the nodes a test scripted (simulation.script).
        self.script = script
        self.config = runtime.config
        self.handlers = runtime.handlers
        self.runtime = runtime
        self.state = "running"
        self.t = at  # the simulated instant being handled; events are stamped with it
        self.finished_at: str | None = None
        self.error: ErrorInfo | None = None
        # Created when first needed (see NodeActor); None is an idle node.
        self.nodes: list[NodeActor | None] = [None] * len(plan.nodes)
        self.settled = 0
        self.timers: list[tuple[float, int]] = []
        # Breakpoints, steps and given outputs (actors.debugger); None: a run nobody debugs.
        self.debug = debug
        self.paused_at: PausedAt | None = None

    def debugger(self) -> Debugger:
        """This run's debugger, made when first asked for."""
        if self.debug is None:
            self.debug = Debugger(self.plan)
        return self.debug

    def next_due(self) -> float | None:
        """When the earliest node timer falls due; None when nothing will move the run."""
        return self.timers[0][0] if self.timers and self.state == "running" else None

    # --- what the run actor drives ---------------------------------------------------------

    def begin(self, seed: int) -> None:
        """Announce the run and start every node that has no incoming connection."""
        self.log.event(self.t, _RUN_STARTED, RunStarted, self.plan.version, seed, self.speed)
        if not self.nodes:  # an empty workflow has nothing to wait for
            self.state = run_transition(self.state, "complete")
            self._end(_RUN_COMPLETED)
            return
        debug = self.debug
        for index in self.plan.roots:
            if debug is None:
                self._node(index).receive(START, self)
            else:
                debug.ready(self, self._node(index))
        if debug is not None:
            debug.settle(self)

    def due(self, limit: float) -> int:
        """Handle every node timer due by `limit`, in (deadline, topological index) order;
        return how many."""
        if self.state != "running":
            return 0
        timers = self.timers
        nodes = self.nodes
        handled = 0
        debug = self.debug
        while timers and timers[0][0] <= limit:
            when, index = heappop(timers)
            if when > self.t:
                self.t = when
            nodes[index].receive(TICK, self)  # type: ignore[union-attr]  # a timer's node exists
            handled += 1
            if self.state != "running" or (debug is not None and debug.request is not None):
                break
        if debug is not None:
            debug.settle(self)
        return handled

    def work_done(self, message: WorkDone, now: float) -> None:
        """A node's async handler finished; if the node's time was already up, it completes now."""
        node = self.nodes[message.node]
        if self.state != "running" or node is None or not node.waiting:
            return
        self.t = max(self.t, now)
        node.receive(message, self)
        if self.debug is not None:
            self.debug.settle(self)

    def pause(self, now: float, at: PausedAt = _USER_PAUSE) -> bool:
        """Pause (a no-op when paused) where `at` says; whether anything changed."""
        target = run_transition(self.state, "pause")
        if target == self.state:
            return False
        self.t = max(self.t, now)
        self.timers.clear()
        for node in self.nodes:
            if node is not None and node.state == "running":
                node.receive(FREEZE, self)
        self.state = target
        self.paused_at = at
        if self.debug is not None:
            self.debug.stepping = None
        self.log.event(self.t, _RUN_PAUSED, RunPaused, at.node_id, at.reason)
        return True

    def resume(self, now: float, step: int | None = None) -> bool:
        """Resume (a no-op when running), or with `step` (actors.debugger) run one step; whether
        anything changed."""
        target = run_transition(self.state, "resume")
        if target == self.state:
            return False
        self.t = max(self.t, now)
        self.state = target
        self.paused_at = None
        self.log.event(self.t, _RUN_RESUMED, RunResumed)
        for node in self.nodes:
            if node is not None and node.state == "paused":
                node.receive(THAW, self)
        debug = self.debug
        if debug is not None:
            debug.stepping = step
            debug.release(self)
            debug.settle(self)
        return True

    def halt(self, now: float, error: ErrorInfo | None = None) -> bool:
        """Stop (a client asked; IllegalTransition once finished) or, with `error`, end
        `failed` if still active (an interruption); whether anything changed."""
        how = "stop" if error is None else "fail"
        if error is not None and self.state not in _HALTABLE:
            return False
        target = run_transition(self.state, how)
        self.t = max(self.t, now)
        self.timers.clear()
        self.state = target
        self.paused_at = None
        halt = _HALTS[how]
        try:
            for index in range(len(self.nodes)):
                node = self.nodes[index] or self._node(index)
                if node.state not in NODE_SETTLED:
                    node.receive(halt, self)
        finally:
            self.settled = len(self.nodes)
        if error is None:
            self._end(_RUN_STOPPED)
        else:
            self.error = error
            self._end(_RUN_FAILED, error)
        return True

    # --- what nodes ask of their run (NodeHost) ---------------------------------------------

    def spawn_work(self, index: int, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self.runtime.spawn_work(self.run_id, index, work)

    def node_completed(self, node: NodeActor, output: Any, size: int) -> None:
        """Send a completed node's output (`size` bytes of JSON) along its connections (a
        router's along one)."""
        p = node.p
        if self.debug is not None:
            self.debug.settled(node, executed=node.started_at is not None)
        if p.out_edges:
            payload = output
            branch = None
            if p.routes:
                branch = output.get("branch") if isinstance(output, dict) else None
                payload = output.get("data") if isinstance(output, dict) else None
                size = len(_encode(payload))
            items = count_items(payload)
            edges = self.plan.edges
            log = self.log
            t = self.t
            for index in p.out_edges:
                edge = edges[index]
                if branch is not None and edge.source_handle != branch:
                    self._dead(edge.target, edge.slot, "route")
                    continue
                log.edge_data(t, edge.data_json, items, size)
                self._deliver(edge.target, edge.slot, payload)
        self._node_settled()

    def node_failed(self, node: NodeActor) -> None:
        if self.error is None:
            self.error = node.error  # the run fails with its first cause
        if self.debug is not None:
            self.debug.settled(node, executed=True)
        self._kill_downstream(node, "fail")
        self._node_settled()

    def node_skipped(self, node: NodeActor, reason: str) -> None:
        if self.debug is not None:
            self.debug.settled(node, executed=False)
        if self.state == "running":
            self._kill_downstream(node, "fail" if reason == UPSTREAM_FAILED else "route")
        self._node_settled()

    # --- dataflow --------------------------------------------------------------------------

    def _ready(self, node: NodeActor) -> None:
        """All of `node`'s inputs are in: it starts, unless a debugger has a say."""
        if self.debug is None:
            node.receive(START, self)
        else:
            self.debug.ready(self, node)

    def _node(self, index: int) -> NodeActor:
        node = self.nodes[index]
        if node is None:
            p = self.plan.nodes[index]
            node = self.nodes[index] = NodeActor(p, len(p.in_edges))
        return node

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
            if self.debug is None:  # _ready, inlined: every node with an input comes this way
                target.receive(START, self)
            else:
                self.debug.ready(self, target)

    def _dead(self, index: int, slot: int, kind: str) -> None:
        target = self.nodes[index] or self._node(index)
        target.pending -= 1
        if target.state != "idle":
            return
        if kind == "fail":
            target.receive(_SKIPS[UPSTREAM_FAILED], self)
        elif not target.p.merge:
            target.receive(_SKIPS[BRANCH_NOT_TAKEN], self)
        elif target.pending == 0:
            if target.delivered:
                self._ready(target)
            else:
                target.receive(_SKIPS[BRANCH_NOT_TAKEN], self)

    def _node_settled(self) -> None:
        self.settled += 1
        if self.settled == len(self.nodes) and self.state == "running":
            if self.error is None:
                self.state = run_transition(self.state, "complete")
                self._end(_RUN_COMPLETED)
            else:
                self.state = run_transition(self.state, "fail")
                self._end(_RUN_FAILED, self.error)

    def _end(self, code: int, error: ErrorInfo | None = None) -> None:
        self.finished_at = self.log.stamp(self.t)
        self.timers.clear()
        if error is None:
            self.log.plain(self.t, code)
        else:
            self.log.event(self.t, code, RunFailed, error)
        self.log.finish()
