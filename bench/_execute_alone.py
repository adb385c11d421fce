"""For bench/api_execute.py: what an execute costs without HTTP. The app `flowstage serve`
builds (SQLite on disk in a temporary directory, rate limiting off) is started in-process,
and 64 callers execute the benchmark's workflow as the route does (the stored workflow, its
frozen graph, the engine's execute, which answers once the run is persisted), each run left
active. Prints one line: `runs=N cpu_us_per_run=X` (the process's CPU, every thread).

Usage: python bench/_execute_alone.py WORKFLOW_JSON_FILE [RUNS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import aiohttp
from _common import process_cpu
from aiohttp import web

from flowstage.actors.tuning import tune_gc
from flowstage.config.settings import load_settings
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE, STORE
from flowstage.server.store.common import new_id

CALLERS = 64


async def main(workflow: bytes, runs: int) -> None:
    data_dir = tempfile.mkdtemp(prefix="flowstage-bench-")
    settings = load_settings(overrides={"storage": "sqlite", "seed_demo_data": False, "rate_limit_per_second": 0,
                                        "data_dir": data_dir, "log_level": "warning"})
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()  # starts the store and the engine
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # The workflow is stored as a client stores it.
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{port}/api/workflows", data=workflow,
            headers={"Content-Type": "application/json"}) as resp:
        workflow_id = (await resp.json())["id"]
    store, engine = app[STORE], app[ENGINE]
    tune_gc()

    async def caller(count: int) -> None:
        for _ in range(count):
            workflow = await store.workflows.get(workflow_id)
            await store.runs.freeze_graph(workflow)
            await engine.execute(workflow, run_id=new_id("run"))

    await asyncio.gather(*(caller(200) for _ in range(CALLERS)))  # warm up
    per_caller = max(1, runs // CALLERS)
    before = process_cpu(os.getpid())  # every thread of the process
    await asyncio.gather(*(caller(per_caller) for _ in range(CALLERS)))
    used = process_cpu(os.getpid()) - before
    print(f"runs={per_caller * CALLERS} cpu_us_per_run={used / (per_caller * CALLERS) * 1e6:.1f}", flush=True)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]).read_bytes(), int(sys.argv[2]) if len(sys.argv) > 2 else 20_000))
