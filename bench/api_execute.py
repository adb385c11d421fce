"""Benchmark: POST /api/workflows/{id}/execute (body `{}`) on Flowstage against a bare
aiohttp + msgspec POST handler answering a body of the same size, measured in the same run.

The workflow is a trigger then a one-hour delay, so every run started stays active for the
whole test: the server admits, persists and keeps runs, as under a real load. Rate limiting
is off. Each server runs in its own process pinned to CPU 0; wrk (one thread) runs on CPU 1.
The servers are measured alternately, several rounds, and medians are printed with the ratio.

Usage: .venv/bin/python bench/api_execute.py [--rounds 3] [--seconds 5] [--connections 64]
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
        results = alternate_rounds(targets, args.rounds, args.seconds, args.connections, extra)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    report(results, f"POST execute (runs kept active; answer {len(body):,} bytes), {args.connections} "
           f"connections, {args.rounds} rounds of {args.seconds} s", 0.4)


if __name__ == "__main__":
    main()
