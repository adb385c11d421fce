"""The pytest plugin's speed: what a test suite that uses Flowstage as its stand-in pays.

Two figures, each beside a baseline measured in the same invocation:
1. A pytest session of N tests (default 200) that each create a workflow, execute it and run
   it to completion under virtual time, against the same session of N tests that each start
   a bare aiohttp app through pytest-aiohttp and make one request. Goal: <= 10 s for 200.
2. One 10-node chain, executed and run to completion under manual time, in process, timed
   per run (median of many), against one GET /api/health round trip on the same stage.
   Goal: <= 5 ms of wall time per run.

Usage: .venv/bin/python bench/plugin.py [--tests 200] [--rounds 3] [--runs 50]
Prints medians and ratios; the machine is shared and noisy, so quote the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from flowstage.config import load_settings
from flowstage.server.app import create_app
from flowstage.testing import Stage

INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"

STAGED = textwrap.dedent('''
    import pytest

    NODES = [("t", "manual_trigger"), ("h", "http_request"), ("x", "transform"), ("o", "output")]

    @pytest.mark.parametrize("i", range({n}))
    async def test_run(flowstage, i):
        wf = await flowstage.create_workflow(NODES)
        run = await flowstage.execute(wf["id"])
        final = await run.run_until_complete()
        assert final["state"] == "completed"
''')

BARE = textwrap.dedent('''
    import pytest
    from aiohttp import web

    async def hello(request):
        return web.json_response({{"ok": True}})

    @pytest.mark.parametrize("i", range({n}))
    async def test_bare(aiohttp_client, i):
        app = web.Application()
        app.router.add_get("/", hello)
        client = await aiohttp_client(app)
        resp = await client.get("/")
        assert (await resp.json()) == {{"ok": True}}
''')


# The plugins a project that installed `flowstage[testing]` has, and no others: this venv's test
# extras bring schemathesis's and hypothesis's plugins, whose import alone costs 3.4 s a session.
PLUGINS = ["-p", "pytest_asyncio.plugin", "-p", "pytest_aiohttp.plugin", "-p", "flowstage.pytest_plugin"]


def session_seconds(source: str) -> float:
    """Wall time of one pytest session running `source` (plugin loading included)."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "pytest.ini").write_text(INI)
        Path(tmp, "test_bench.py").write_text(source)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGINS],
                              cwd=tmp, capture_output=True, text=True,
                              env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
        elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the benchmark session failed:\n{done.stdout[-2000:]}")
    return elapsed


def chain(n: int) -> list[tuple[str, str]]:
    middle = [(f"n{i}", "transform") for i in range(n - 2)]
    return [("t", "manual_trigger"), *middle, ("o", "output")]


async def per_run(runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds of each 10-node run to completion, and of each health round trip."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(overrides={"test_mode": True, "storage": "memory", "data_dir": tmp,
                                            "seed_demo_data": False, "rate_limit_per_second": 0,
                                            "log_level": "warning", "sse_batch_ms": 0})
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            stage = Stage(client)
            workflow = await stage.create_workflow(chain(10))
            run_times, health_times = [], []
            for _ in range(runs):
                start = time.perf_counter()
                run = await stage.execute(workflow["id"])
                final = await run.run_until_complete()
                run_times.append(time.perf_counter() - start)
                assert final["state"] == "completed", final["state"]
                start = time.perf_counter()
                await (await client.get("/api/health")).read()
                health_times.append(time.perf_counter() - start)
        finally:
            await client.close()
    return run_times, health_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=200, help="tests per pytest session (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="sessions of each kind (default 3)")
    parser.add_argument("--runs", type=int, default=50, help="10-node runs timed in process (default 50)")
    args = parser.parse_args()
    if not (1 <= args.tests <= 2000 and 1 <= args.rounds <= 10 and 1 <= args.runs <= 1000):
        raise SystemExit("bounds: --tests 1..2000, --rounds 1..10, --runs 1..1000")

    staged, bare = [], []
    for _ in range(args.rounds):  # interleaved, so both kinds see the same machine
        staged.append(session_seconds(STAGED.format(n=args.tests)))
        bare.append(session_seconds(BARE.format(n=args.tests)))
    s, b = statistics.median(staged), statistics.median(bare)
    print(f"pytest session, {args.tests} tests, median of {args.rounds}:")
    print(f"  create + execute + run to completion (flowstage fixture)  {s:6.2f} s   goal <= 10 s")
    print(f"  bare aiohttp app + one request (aiohttp_client)           {b:6.2f} s")
    print(f"  ratio                                                     {s / b:6.2f}x")

    run_times, health_times = asyncio.run(per_run(args.runs))
    r, h = statistics.median(run_times) * 1000, statistics.median(health_times) * 1000
    print(f"one 10-node run under manual time, median of {args.runs}:")
    print(f"  execute + run_until_complete                              {r:6.2f} ms  goal <= 5 ms")
    print(f"  GET /api/health round trip on the same stage              {h:6.2f} ms")
    print(f"  ratio                                                     {r / h:6.2f}x")


if __name__ == "__main__":
    main()
