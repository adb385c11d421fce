"""How far a run got: the one rule behind a run's `progress`, for live runs (the run actor)
and for runs ended at start-up (recovery).

A run's progress is the share of its work done: the mean, over its nodes, of each node's
own progress (1 once completed; the fraction of its simulated time reached while running,
and where it stopped, failed or was paused; 0 while waiting and when skipped) - except that
a node skipped because its branch was not taken owed no work and counts as done. So a run
completes at exactly 1.0, progress never goes back, and a stopped or failed run keeps the
progress it had reached when it ended.
"""

from __future__ import annotations

__all__ = ["node_work", "run_progress"]


def node_work(progress: float, not_taken: bool) -> float:
    """The share of one node's work that is done: its progress, or all of it (1.0) when it
    was skipped because its branch was not taken."""
    return 1.0 if not_taken else progress


def run_progress(work_done: float, nodes: int) -> float:
    """The run's progress from the sum of its nodes' `node_work`; a run of no nodes is done."""
    return min(round(work_done / nodes, 4), 1.0) if nodes else 1.0
