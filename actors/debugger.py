"""A run's debugger: breakpoints, stepping, and nodes whose output is given rather than computed.

A run has one only once something asks for it (breakpoints or pinned outputs at execute, a
step, a breakpoint set on the live run); a run without one takes none of these paths.

The rules, all in simulated time:
- A node becomes *ready* when all its inputs are in. A ready node with a given output
  (reused from an earlier run, or pinned) completes at once without running. Otherwise, if
  it has a breakpoint not yet honoured, or the run is pausing or paused, it is *held*: it
  queues (`node.queued`) and waits; the first breakpoint met asks the run to pause there.
- A pause the debugger asks for takes effect at the end of what the run is handling (a timer,
  a start), so everything that happened in that same instant is in before `run.paused`: other
  nodes that became ready in it are held, nodes still running freeze as a client's pause
  freezes them.
- Resuming (or stepping) starts the held nodes in topological order; each meets its own
  breakpoint, if any, at that moment.
- A step resumes the run until the next node starts or finishes (not a reused or skipped one),
  or, aimed at a node, until that node settles; then the run pauses again with reason "step".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol

from flowstage.actors.messages import QUEUE, START, Reuse
from flowstage.actors.node import NodeActor, NodeHost
from flowstage.simulation.errors import Conflict, FieldError, Invalid
from flowstage.simulation.messages import no_such_node
from flowstage.simulation.models import PausedAt
from flowstage.simulation.plan import Plan
from flowstage.simulation.states import NODE_SETTLED, IllegalTransition

__all__ = ["ANY_NODE", "DebugOptions", "DebuggedRun", "Debugger"]

ANY_NODE = -1  # stepping: until any node starts or finishes


class DebugOptions(NamedTuple):
    """What an execute asks of a run's debugger (ids are checked by then)."""

    breakpoints: frozenset[str] = frozenset()
    # node id -> its output, encoded, and whether it was pinned (else reused from `parent`).
    given: Mapping[str, tuple[bytes, bool]] = {}
    parent_run_id: str | None = None


class DebuggedRun(NodeHost, Protocol):
    """What the debugger sees of its run (actors.machine's RunMachine)."""

    state: str
    finished_at: str | None
    nodes: list[NodeActor | None]

    def pause(self, now: float, at: PausedAt) -> bool: ...


class Debugger:
    __slots__ = ("breakpoints", "given", "held", "honoured", "plan", "request", "stepping")

    def __init__(self, plan: Plan, options: DebugOptions | None = None) -> None:
        self.plan = plan
        options = options or DebugOptions()
        self.breakpoints: frozenset[int] = frozenset(plan.by_id[n].index for n in options.breakpoints)
        self.honoured: set[int] = set()  # breakpoints the run already paused at
        self.given = {plan.by_id[n].index: Reuse(raw, pinned) for n, (raw, pinned) in options.given.items()}
        self.held: list[int] = []  # ready nodes waiting for the run to go on
        self.request: PausedAt | None = None  # a pause to take at the end of this instant
        self.stepping: int | None = None  # ANY_NODE, a node index, or None

    def breakpoint_ids(self) -> list[str]:
        nodes = self.plan.nodes
        return [nodes[i].id for i in sorted(self.breakpoints)]

    # --- what the run's machine calls --------------------------------------------------------

    def ready(self, run: DebuggedRun, node: NodeActor) -> None:
        """All of `node`'s inputs are in: complete it with its given output, hold it, or start it."""
        index = node.p.index
        running = run.state == "running"
        given = self.given.get(index)
        if given is not None and running:
            node.receive(given, run)
            return
        if not running or self.request is not None or (index in self.breakpoints and index not in self.honoured):
            if running and self.request is None:  # its own breakpoint
                self.honoured.add(index)
                self.request = PausedAt(node.p.id, "breakpoint")
            if node.state == "idle":
                node.receive(QUEUE, run)
            self.held.append(index)
            return
        node.receive(START, run)
        if self.stepping == ANY_NODE and self.request is None:
            self.request = PausedAt(node.p.id, "step")

    def settled(self, node: NodeActor, executed: bool) -> None:
        """`node` completed, failed or was skipped (`executed`: it ran, and was not reused)."""
        if self.request is not None:
            return
        if self.stepping == node.p.index or (self.stepping == ANY_NODE and executed):
            self.request = PausedAt(node.p.id, "step")

    def settle(self, run: DebuggedRun) -> None:
        """At the end of an instant's handling: take the pause asked for, if the run is still on."""
        request = self.request
        if request is None:
            return
        self.request = None
        if run.state == "running" and run.finished_at is None:
            run.pause(run.t, request)

    def release(self, run: DebuggedRun) -> None:
        """The run goes on: its held nodes become ready again, in topological order."""
        held = sorted(self.held)
        self.held = []
        nodes = run.nodes
        for index in held:
            node = nodes[index]
            if node is not None and node.state in ("idle", "queued"):
                self.ready(run, node)

    # --- commands ------------------------------------------------------------------------

    def step_target(self, run: DebuggedRun, node_id: str | None) -> int:
        """What a step on `run` runs until (ANY_NODE, or the index of `node_id`); Conflict if
        the run is not paused or the node already finished."""
        if run.state != "paused":
            raise IllegalTransition("step", run.state)
        if node_id is None:
            return ANY_NODE
        index = self._index(node_id, ["body", "nodeId"])
        node = run.nodes[index]
        if node is not None and node.state in NODE_SETTLED:
            raise Conflict(f"Can't step to node {node_id!r}: it already {node.state}")
        return index

    def set_breakpoints(self, node_ids: Iterable[str]) -> None:
        """From now on pause before these nodes (a node already honoured is met again only if
        it is ready again, which it is not: each node starts once)."""
        self.breakpoints = frozenset(self._index(n, ["body", "nodeIds", k]) for k, n in enumerate(node_ids))

    def _index(self, node_id: str, loc: list[str | int]) -> int:
        p = self.plan.by_id.get(node_id)
        if p is None:
            raise Invalid(no_such_node(node_id), [FieldError(loc, no_such_node(node_id))])
        return p.index
