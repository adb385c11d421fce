"""Fixtures of this suite. Flowstage's own fixtures (`flowstage`, `flowstage_clock`,
`flowstage_live`, ...) come from its pytest plugin, active as soon as Flowstage is installed."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from flowstage.testing import Stage

# fetch -> summarise -> store: the workflow the report client starts.
REPORT = [("trigger", "manual_trigger"), ("fetch", "http_request"), ("summarise", "llm_prompt"),
          ("store", "database_query")]


@pytest.fixture
def report_body() -> dict[str, Any]:
    """The report workflow as the API takes it (for tests that do not use a Stage)."""
    return {
        "name": "Nightly report",
        "nodes": [{"id": node_id, "type": node_type, "position": {"x": 200 * i, "y": 0}}
                  for i, (node_id, node_type) in enumerate(REPORT)],
        "connections": [{"id": f"{a}-{b}", "source": a, "target": b}
                        for (a, _), (b, _) in itertools.pairwise(REPORT)],
    }


@pytest.fixture
async def report(flowstage: Stage) -> dict[str, Any]:
    """The report workflow, created on this test's stage."""
    workflow: dict[str, Any] = await flowstage.create_workflow(REPORT, name="Nightly report")
    return workflow
