"""A run as its events tell it: events folded, one at a time, onto a run snapshot.

Start-up recovery folds a run's stored events onto its stored snapshot (which can be behind
them), and a replay folds the events it has played onto a run that started with every node
idle; both read the result with `RunHistory.run()`. Each event sets the state it leads to
(simulation.states' `NODE_TARGET`/`RUN_TARGET`) rather than checking the state it finds,
since a stored snapshot may already show some of the events. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from flowstage.simulation.models import (
    ErrorInfo,
    Event,
    NodeCompleted,
    NodeFailed,
    NodeProgress,
    NodeQueued,
    NodeSkipped,
    NodeStarted,
    NodeStopped,
    PausedAt,
    Run,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunResumed,
    RunStarted,
    RunState,
    RunStopped,
)
from flowstage.simulation.progress import node_work, run_progress
from flowstage.simulation.states import BRANCH_NOT_TAKEN, NODE_TABLE, NODE_TARGET, RUN_TARGET, node_transition

__all__ = ["RunHistory"]

_replace = msgspec.structs.replace


class RunHistory:
    """`apply` events in seq order; `run()` is the snapshot they lead to. `not_taken` holds the
    nodes skipped because their branch was not taken (a snapshot does not say why a node was
    skipped, and such a node counts as done in the run's progress)."""

    __slots__ = ("_error", "_failed_at", "_finished_at", "_nodes", "_paused_at", "_run", "_started_at", "_state",
                 "not_taken")

    def __init__(self, run: Run, failed_at: Mapping[str, float] | None = None) -> None:
        """`failed_at`: node id -> the progress at which that node failed, when known (a
        node.failed event does not say; a recording's run does)."""
        self._run = run
        self._failed_at = failed_at or {}
        self._nodes = dict(run.nodes)
        self._state: RunState = run.state
        self._started_at = run.started_at
        self._finished_at = run.finished_at
        self._error = run.error
        self._paused_at = run.paused_at
        self.not_taken: set[str] = set()

    @property
    def state(self) -> RunState:
        return self._state

    def apply(self, event: Event) -> None:
        """Fold one event in; events naming a node the run lacks change nothing."""
        nodes = self._nodes
        match event:
            case NodeQueued(node_id=nid) if nid in nodes:
                nodes[nid] = _replace(nodes[nid], state=NODE_TARGET["queue"])
            case NodeStarted(node_id=nid, ts=ts) if nid in nodes:
                nodes[nid] = _replace(nodes[nid], state=NODE_TARGET["start"], started_at=ts)
            case NodeProgress(node_id=nid, progress=p) if nid in nodes:
                nodes[nid] = _replace(nodes[nid], progress=p)
            case NodeCompleted(node_id=nid, ts=ts, output=out) if nid in nodes:
                nodes[nid] = _replace(nodes[nid], state=NODE_TARGET["complete"], progress=1.0, finished_at=ts,
                                      output=out)
            case NodeFailed(node_id=nid, ts=ts, error=err) if nid in nodes:
                nodes[nid] = _replace(nodes[nid], state=NODE_TARGET["fail"], finished_at=ts, error=err,
                                      progress=self._failed_at.get(nid, nodes[nid].progress))
            case NodeSkipped(node_id=nid, ts=ts, reason=reason) if nid in nodes:
                nodes[nid] = _replace(nodes[nid], state=NODE_TARGET["skip"], finished_at=ts)
                if reason == BRANCH_NOT_TAKEN:
                    self.not_taken.add(nid)
            case NodeStopped(node_id=nid, ts=ts, progress=p) if nid in nodes:
                nodes[nid] = _replace(nodes[nid], state=NODE_TARGET["stop"], finished_at=ts, progress=p)
            case RunStarted(ts=ts):
                self._started_at = ts
            case RunPaused(node_id=nid, reason=reason):
                self._state = RUN_TARGET["pause"]
                self._paused_at = PausedAt(nid, reason)
            case RunResumed():
                self._state = RUN_TARGET["resume"]
                self._paused_at = None
            case RunCompleted(ts=ts):
                self._end("complete", ts, None)
            case RunFailed(ts=ts, error=err):
                self._end("fail", ts, err)
            case RunStopped(ts=ts):
                self._end("stop", ts, None)
            case _:
                pass

    def _end(self, how: str, ts: str, error: ErrorInfo | None) -> None:
        self._state = RUN_TARGET[how]
        self._finished_at = ts
        self._paused_at = None
        if error is not None:
            self._error = error

    def run(self) -> Run:
        """The snapshot the events so far lead to, with the run's progress recomputed."""
        nodes = self._nodes
        if self._state == "paused":
            # A paused run's running nodes were paused with it (no node event says so).
            pausable = NODE_TABLE["pause"]
            nodes = {k: (_replace(v, state=node_transition(v.state, "pause")) if v.state in pausable else v)
                     for k, v in nodes.items()}
        else:
            nodes = dict(nodes)
        done = sum(node_work(n.progress, node_id in self.not_taken) for node_id, n in nodes.items())
        return _replace(self._run, state=self._state, nodes=nodes, started_at=self._started_at,
                        finished_at=self._finished_at, error=self._error, paused_at=self._paused_at,
                        progress=run_progress(done, len(nodes)))
