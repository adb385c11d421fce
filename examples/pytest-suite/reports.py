"""The code under test: a small client of a workflow backend, as a project would have one.

It starts the "nightly report" workflow and reads back how it ended. In production it talks to
the real backend; in the tests it talks to Flowstage, which stands in for it.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Protocol


class Http(Protocol):
    """What the async client needs: aiohttp's ClientSession (or Flowstage's `stage.client`)."""

    def post(self, path: str, *, json: Any = None) -> Any: ...


async def start_report(http: Http, workflow_id: str, *, seed: int | None = None) -> str:
    """Start the report workflow; the run's id."""
    body = {} if seed is None else {"seed": seed}
    async with http.post(f"/api/workflows/{workflow_id}/execute", json=body) as resp:
        if resp.status != 202:
            raise RuntimeError(f"the backend refused the run: {resp.status}")
        run: dict[str, Any] = await resp.json()
        return str(run["id"])


def report_status(base_url: str, run_id: str) -> str:
    """The run's state, read synchronously (a cron job, a CLI, a browser test's helper)."""
    with urllib.request.urlopen(f"{base_url}/api/runs/{run_id}", timeout=10) as answer:
        run: dict[str, Any] = json.loads(answer.read())
        return str(run["state"])
