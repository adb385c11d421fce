"""User-facing messages that more than one place states, each worded once here.

A message written out in two modules drifts into two wordings (the `interrupted` error of a
run once read "The server stopped ..." after a restart and "The server shut down ..." at
shutdown). Messages said in one place only stay beside the rule they explain.
"""

from __future__ import annotations

from typing import Final

from flowstage.simulation.models import ErrorInfo

__all__ = ["INTERRUPTED_ERROR", "SCRIPTED_FAILURE", "no_such", "no_such_node", "node_not_in_workflow"]

INTERRUPTED_ERROR: Final = ErrorInfo("interrupted", "The server stopped while this run was active.")
"""Why a run that was running or paused when the server stopped (shutdown or crash) failed."""

SCRIPTED_FAILURE: Final = "Scripted failure"
"""The error message of a node scripted to fail without a message of its own."""


def no_such(kind: str, ident: str) -> str:
    """A path names a stored thing (a run, a workflow, a file...) that does not exist (404 detail)."""
    return f"No {kind} with id {ident!r}."


def no_such_node(node_id: str) -> str:
    """A field names a node the workflow lacks (a connection's end, a script's key)."""
    return f"no node {node_id!r} in this workflow"


def node_not_in_workflow(node_id: str, workflow_id: str) -> str:
    """A path names a node the workflow lacks (404 detail)."""
    return f"No node {node_id!r} in workflow {workflow_id!r}."
