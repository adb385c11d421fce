"""Benchmark: POST /api/workflows/{id}/execute (body `{}`) on Flowstage against a bare
aiohttp + msgspec POST handler answering a body of the same size, measured in the same run.

The workflow is a trigger then a one-hour delay, so every run started stays active for the
whole test: the server admits, persists and keeps runs, as under a real load. Rate limiting
is off. Each server runs in its own process pinned to CPU 0; wrk (one thread) runs on CPU 1.
The servers are measured alternately, several rounds, and medians are printed with the ratio.
Then where an execute's CPU goes: each server's CPU per request (from /proc, every thread),
and the engine and store alone, without HTTP (bench/_execute_alone.py, once per round), set
against what the goal allows.

Usage: .venv/bin/python bench/api_execute.py [--rounds 3] [--seconds 5] [--connections 64]
Needs wrk (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from _common import Round, alternate_rounds, free_port, pinned, report, wait_up

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

POST_SCRIPT = 'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'


def long_workflow() -> dict[str, object]:
    nodes = [{"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}, "data": {"label": "Start"}},
             {"id": "d", "type": "delay", "position": {"x": 200, "y": 0},
              "data": {"label": "Wait an hour", "config": {"ms": 3_600_000}}}]
    conns = [{"id": "c", "source": "t", "target": "d", "sourceHandle": "out"}]
    return {"name": "Execute benchmark", "description": "Runs that stay active",
            "tags": ["bench"], "nodes": nodes, "connections": conns}


def post(url: str, body: object) -> bytes:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    return bytes(urllib.request.urlopen(request).read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="flowstage-bench-"))
    (tmp / "post.lua").write_text(POST_SCRIPT)
    env = {**os.environ, "FLOWSTAGE_RATE_LIMIT_PER_SECOND": "0", "FLOWSTAGE_SEED_DEMO_DATA": "false",
           "FLOWSTAGE_LOG_LEVEL": "warning"}
    fs_port, bare_port = free_port(), free_port()
    procs = [subprocess.Popen(pinned([PY, "-m", "flowstage", "serve", "--port", str(fs_port),
                                       "--data-dir", str(tmp / "data")], "0"), cwd=ROOT, env=env)]
    try:
        wait_up(f"http://127.0.0.1:{fs_port}/api/health")
        wf_id = json.loads(post(f"http://127.0.0.1:{fs_port}/api/workflows", long_workflow()))["id"]
        body = post(f"http://127.0.0.1:{fs_port}/api/workflows/{wf_id}/execute", {})
        (tmp / "body.json").write_bytes(body)
        procs.append(subprocess.Popen(pinned([PY, str(ROOT / "bench" / "_bare_execute.py"), str(bare_port),
                                              str(tmp / "body.json")], "0")))
        wait_up(f"http://127.0.0.1:{bare_port}/api/health", expect_http_error=True)
        targets = {
            "flowstage": f"http://127.0.0.1:{fs_port}/api/workflows/{wf_id}/execute",
            "bare aiohttp+msgspec": f"http://127.0.0.1:{bare_port}/api/workflows/{wf_id}/execute",
        }
        extra = ["-s", str(tmp / "post.lua")]
        pids = {"flowstage": procs[0].pid, "bare aiohttp+msgspec": procs[1].pid}
        results = alternate_rounds(targets, args.rounds, args.seconds, args.connections, extra, pids)
        (tmp / "workflow.json").write_text(json.dumps(long_workflow()))
        alone = [execute_alone(tmp / "workflow.json") for _ in range(args.rounds)]
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    report(results, f"POST execute (runs kept active; answer {len(body):,} bytes), {args.connections} "
           f"connections, {args.rounds} rounds of {args.seconds} s", 0.4)
    budget(results, alone, 0.4)


def execute_alone(workflow_file: Path) -> float:
    """CPU µs per run of the execute path without HTTP (bench/_execute_alone.py, on CPU 0)."""
    out = subprocess.run(pinned([PY, str(ROOT / "bench" / "_execute_alone.py"), str(workflow_file)], "0"),
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    found = re.search(r"cpu_us_per_run=([\d.]+)", out)
    assert found is not None, out
    return float(found.group(1))


def budget(results: dict[str, list[Round]], alone: list[float], goal: float) -> None:
    """Where the CPU of an execute goes, against what the goal allows: on one core, a ratio of
    `goal` allows the bare handler's CPU per request divided by `goal`."""
    bare = statistics.median(r.cpu_us for r in results["bare aiohttp+msgspec"] if r.cpu_us is not None)
    served = statistics.median(r.cpu_us for r in results["flowstage"] if r.cpu_us is not None)
    engine = statistics.median(alone)
    allowed = bare / goal
    print(f"\nCPU per execute (every thread of the server, on CPU 0), medians:\n"
          f"  bare handler (HTTP, JSON in and out)         {bare:>6.0f} µs\n"
          f"  flowstage through HTTP                       {served:>6.0f} µs\n"
          f"  flowstage's engine and store alone, no HTTP  {engine:>6.0f} µs  "
          f"(bench/_execute_alone.py; rounds: {', '.join(f'{x:.0f}' for x in alone)})\n"
          f"  what {goal}x allows                             {allowed:>6.0f} µs\n"
          f"  the bare handler's HTTP plus the engine alone {bare + engine:>6.0f} µs = "
          f"{(bare + engine) / allowed:.2f}x what {goal}x allows")


if __name__ == "__main__":
    main()
