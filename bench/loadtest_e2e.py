"""Benchmark: `flowstage loadtest` end to end against a `flowstage serve` on this machine, repeated
on a fresh server each time, with the medians of the figures issue 14 judges.

    .venv/bin/python bench/loadtest_e2e.py --repeats 3 -- --runs 10000 --concurrency 10000 --speed 1 --shape chain
    .venv/bin/python bench/loadtest_e2e.py --repeats 1 -- --runs 100000 --concurrency 20000 --speed 10

Everything after `--` goes to `flowstage loadtest`. The server runs with rate limiting off, no
demo data and an empty data directory (SQLite on disk, the default storage); neither process is
pinned, as a user would run them. Each repeat prints one row; then the medians, each ratio to
the ideal makespan (the workflow's critical path / speed), and the goals: client makespan p50
<= 1.5x ideal, server makespan p99 <= 1.3x ideal, no errors. It also prints the server's makespan
p99 against an idle server's (the load tester's `ideal.idleMs`: each node's duration drawn from its
timing profile), which is where the timing profiles' own tail ends.

The floor, measured in the same invocation before each repeat (`--no-floor` skips it): a bare
aiohttp + msgspec handler (bench/_bare_execute.py: no engine, no store), sent the test's first
wave of execute POSTs all at once through the load tester's own connection pool. No server can
answer those POSTs sooner on this machine, so its median latency plus the ideal makespan is the
least client makespan p50 any server could show in this test; the ratio of Flowstage's client
p50 to that floor is what is Flowstage's own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import free_port, wait_up

from flowstage.loadtest.options import Options, add_arguments, options_from_args

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def one(args: list[str]) -> dict[str, Any]:
    """Start a fresh server, run the load test against it, stop it; the test's --json summary."""
    with tempfile.TemporaryDirectory(prefix="flowstage-e2e-") as tmp:
        port = free_port()
        env = {**os.environ, "FLOWSTAGE_RATE_LIMIT_PER_SECOND": "0", "FLOWSTAGE_SEED_DEMO_DATA": "false",
               "FLOWSTAGE_LOG_LEVEL": "warning"}
        server = subprocess.Popen([PY, "-m", "flowstage", "serve", "--port", str(port), "--data-dir",
                                   str(Path(tmp) / "data")], cwd=ROOT, env=env)
        try:
            wait_up(f"http://127.0.0.1:{port}/api/health")
            summary_path = Path(tmp) / "summary.json"
            subprocess.run([PY, "-m", "flowstage", "loadtest", "--url", f"http://127.0.0.1:{port}",
                            "--progress-interval", "3600", "--json", str(summary_path), *args],
                           cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
            summary: dict[str, Any] = json.loads(summary_path.read_text())
            return summary
        finally:
            server.terminate()
            server.wait()


def loadtest_options(args: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="flowstage loadtest")
    add_arguments(parser)
    return options_from_args(parser.parse_args(args))


def run_body(nodes: int) -> bytes:
    """A Run answer of about the size Flowstage sends for a run of `nodes` nodes."""
    state = {"state": "pending", "progress": 0.0, "startedAt": None, "finishedAt": None, "output": None,
             "error": None}
    run = {"id": "run_01a2255dd58d000eeaa4ae", "workflowId": "wf_01a2255dd4c8000214585d", "workflowVersion": 1,
           "state": "running", "seed": 3295613009937600, "speed": 1.0, "createdAt": "2026-11-29T03:33:56.238Z",
           "startedAt": "2026-11-29T03:33:56.238Z", "finishedAt": None, "progress": 0.0,
           "nodes": {f"n{i}": state for i in range(nodes)}, "failureRate": 0.0, "error": None,
           "kind": "workflow", "pausedAt": None, "breakpoints": [], "parentRunId": None, "replayOf": None}
    return json.dumps(run).encode()


def floor(opts: Options) -> dict[str, float]:
    """The bare handler's latencies for the test's first wave of execute POSTs, all at once."""
    posts = math.ceil(min(opts.concurrency, opts.runs) / opts.batch)
    connections = min(opts.connections or posts, posts)
    with tempfile.TemporaryDirectory(prefix="flowstage-floor-") as tmp:
        body = Path(tmp) / "run.json"
        body.write_bytes(run_body(opts.nodes))
        port = free_port()
        server = subprocess.Popen([PY, str(ROOT / "bench" / "_bare_execute.py"), str(port), str(body)])
        try:
            wait_up(f"http://127.0.0.1:{port}/api/health", expect_http_error=True)
            out = subprocess.run([PY, str(ROOT / "bench" / "_bare_storm.py"), f"http://127.0.0.1:{port}",
                                  "/api/workflows/wf_x/execute", str(posts), str(connections)],
                                 cwd=ROOT, check=True, capture_output=True, text=True).stdout
        finally:
            server.terminate()
            server.wait()
    result: dict[str, float] = json.loads(out)
    return result


def figures(s: dict[str, Any]) -> dict[str, float]:
    ideal = s["ideal"]["ms"]
    done = s["makespanByStateMs"]["completed"]
    client = s["clientMakespanByStateMs"]["completed"]
    nan = float("nan")

    def of(value: float | None) -> float:
        return nan if value is None else float(value)

    return {
        "wall s": s["wallSeconds"], "runs/s": s["runsPerSecond"], "errors": s["errorTotal"],
        "client p50 / ideal": of(client["p50"]) / ideal, "server p99 / ideal": of(done["p99"]) / ideal,
        "idle p99 / ideal": of(s["ideal"]["idleMs"]["p99"]) / ideal,
        "server p99 / idle p99": of(done["p99"]) / of(s["ideal"]["idleMs"]["p99"]),
        "execute p50 ms": of(s["executeLatencyMs"]["p50"]),
        "CPU tester / server": of(s["cpu"]["ratio"]), "server CPU s": of(s["cpu"]["serverSeconds"]),
        "RSS before MiB": of(s["memory"]["beforeMib"]), "RSS peak MiB": of(s["memory"]["peakMib"]),
        "RSS after MiB": of(s["memory"]["afterMib"]),
        "stream gaps": of((s["stream"] or {}).get("gaps")),
        "runs read after gaps": of((s["stream"] or {}).get("runsReadAfterGaps")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-floor", action="store_true", help="do not measure the bare handler's floor")
    parser.add_argument("loadtest", nargs=argparse.REMAINDER, help="-- then flowstage loadtest's flags")
    args = parser.parse_args()
    passed = args.loadtest[1:] if args.loadtest[:1] == ["--"] else args.loadtest
    opts = loadtest_options(passed)
    rows = []
    for i in range(args.repeats):
        bare = None if args.no_floor else floor(opts)
        summary = one(passed)
        row = figures(summary)
        if bare is not None:
            ideal_ms = summary["ideal"]["ms"]
            row["floor execute p50 ms"] = bare["p50 s"] * 1000
            row["floor errors"] = bare["errors"]
            row["floor client p50 / ideal"] = (row["floor execute p50 ms"] + ideal_ms) / ideal_ms
            row["client p50 / floor"] = row["client p50 / ideal"] / row["floor client p50 / ideal"]
        rows.append(row)
        print(f"repeat {i + 1}/{args.repeats}: " + ", ".join(f"{k} {v:,.2f}" for k, v in row.items()), flush=True)
    print(f"\nflowstage loadtest {' '.join(passed)}: medians of {args.repeats}")
    for key in rows[0]:
        print(f"  {key:22} {statistics.median(r[key] for r in rows):>12,.2f}")
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    print(f"\ngoals: client p50 / ideal {med['client p50 / ideal']:.2f} (<= 1.5), server p99 / ideal "
          f"{med['server p99 / ideal']:.2f} (<= 1.3), errors {med['errors']:.0f} (0)")
    print(f"idle: an idle server's makespan p99 is {med['idle p99 / ideal']:.2f}x ideal (the timing profiles' "
          f"own tail); the server's is {med['server p99 / idle p99']:.2f}x that")
    if not args.no_floor:
        print(f"floor: a bare handler answered the same POSTs at a median of {med['floor execute p50 ms']:,.0f} ms, "
              f"so no server could show a client p50 below {med['floor client p50 / ideal']:.2f}x ideal here; "
              f"Flowstage's is {med['client p50 / floor']:.2f}x that floor")


if __name__ == "__main__":
    main()
