"""The served OpenAPI document against the server, by schemathesis: every check (`--checks all`)
on every operation but the three event streams (endless answers), through its coverage, fuzzing
and stateful phases (the last one follows the document's links). Any finding fails the test
with schemathesis's report, which shows a curl line to reproduce it.

Bounded and repeatable: a fixed seed, deterministic generation, a few examples per operation,
one worker, nothing written outside a temporary directory. What the checks cannot know from the
document is in tests/contract/schemathesis.toml."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from conftest import make_settings, run_command
from pytest_aiohttp import AiohttpServer

from flowstage.server.app import create_app

CONFIG = Path(__file__).parent / "contract" / "schemathesis.toml"
STREAMS = ("streamRunEvents", "streamWorkflowEvents", "streamEvents")
BUDGET_SECONDS = 180  # a hung run fails here instead of hanging the suite


async def test_schemathesis_finds_no_disagreement_between_document_and_server(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    # The demo workflows and templates give the generated requests real ids to act on.
    server = await aiohttp_server(create_app(make_settings(tmp_path / "data", seed_demo_data=True)),
                                  host="127.0.0.1")
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
        "run", str(server.make_url("/api/openapi.json")),
        "--checks", "all", "--max-examples", "3", "--seed", "20261128",
        "--generation-deterministic", "--workers", "1",
        *(arg for operation_id in STREAMS for arg in ("--exclude-operation-id", operation_id)),
    ]
    report = await run_command(*command, cwd=tmp_path, budget=BUDGET_SECONDS)
    # Every operation but the streams was selected, and each was tested.
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert selected is not None, report
    assert int(selected[1]) == int(selected[2]) - len(STREAMS) == int(selected[3]), report
