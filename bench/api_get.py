"""Benchmark: GET /api/workflows/{id} (a 10-node workflow) on Flowstage against a bare
aiohttp + msgspec handler returning a body of the same size, measured in the same run.

Each server runs in its own process pinned to CPU 0; the load generator (wrk, one thread)
runs on CPU 1. The two servers are measured alternately, several rounds, and medians are
printed with the ratio, so that noise from this shared machine hits both alike.

Flowstage's rate limiter is on, at a limit the benchmark does not reach (1e9 requests a
second, a burst of 1e9), as a server is deployed; `--no-limiter` turns it off instead.

Usage: .venv/bin/python bench/api_get.py [--rounds 5] [--seconds 5] [--connections 50] [--no-limiter]
Needs wrk (`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from _common import alternate_rounds, free_port, pinned, report, wait_up

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def ten_node_workflow() -> dict[str, object]:
    types = ["manual_trigger", "http_request", "database_query", "transform", "condition",
             "llm_prompt", "send_email", "merge", "delay", "output"]
    nodes = [{"id": f"n{i}", "type": t, "position": {"x": 200 * i, "y": 100},
              "data": {"label": f"Step {i}: {t}"}} for i, t in enumerate(types)]
    conns = [{"id": f"c{i}", "source": f"n{i}", "target": f"n{i + 1}",
              "sourceHandle": "true" if types[i] == "condition" else "out"}
             for i in range(len(types) - 1)]
    return {"name": "Benchmark workflow", "description": "Ten nodes in a chain",
            "tags": ["bench"], "nodes": nodes, "connections": conns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--no-limiter", action="store_true", help="rate limiting off (it is on by default)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="flowstage-bench-"))
    limit = "0" if args.no_limiter else "1e9"
    env = {**os.environ, "FLOWSTAGE_RATE_LIMIT_PER_SECOND": limit, "FLOWSTAGE_RATE_LIMIT_BURST": "1000000000",
           "FLOWSTAGE_SEED_DEMO_DATA": "false", "FLOWSTAGE_LOG_LEVEL": "warning"}
    fs_port, bare_port = free_port(), free_port()
    procs = [subprocess.Popen(pinned([PY, "-m", "flowstage", "serve", "--port", str(fs_port),
                                       "--data-dir", str(tmp / "data")], "0"), cwd=ROOT, env=env)]
    try:
        wait_up(f"http://127.0.0.1:{fs_port}/api/health")
        request = urllib.request.Request(
            f"http://127.0.0.1:{fs_port}/api/workflows", method="POST",
            data=json.dumps(ten_node_workflow()).encode(), headers={"Content-Type": "application/json"})
        body = urllib.request.urlopen(request).read()
        wf_id = json.loads(body)["id"]
        (tmp / "body.json").write_bytes(body)
        procs.append(subprocess.Popen(pinned([PY, str(ROOT / "bench" / "_bare_get.py"), str(bare_port),
                                              str(tmp / "body.json")], "0")))
        wait_up(f"http://127.0.0.1:{bare_port}/api/workflows/x")
        targets = {
            "flowstage": f"http://127.0.0.1:{fs_port}/api/workflows/{wf_id}",
            "bare aiohttp+msgspec": f"http://127.0.0.1:{bare_port}/api/workflows/{wf_id}",
        }
        pids = {"flowstage": procs[0].pid, "bare aiohttp+msgspec": procs[1].pid}
        results = alternate_rounds(targets, args.rounds, args.seconds, args.connections, pids=pids)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    limiter = "off" if args.no_limiter else "on"
    report(results, f"GET one 10-node workflow ({len(body):,} bytes), {args.connections} connections, "
           f"{args.rounds} rounds of {args.seconds} s, rate limiter {limiter}", 0.85)


if __name__ == "__main__":
    main()
