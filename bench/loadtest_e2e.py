"""Benchmark: `flowstage loadtest` end to end against a `flowstage serve` on this machine, repeated
on a fresh server each time, with the medians of the figures issue 14 judges.

    .venv/bin/python bench/loadtest_e2e.py --repeats 3 -- --runs 10000 --concurrency 10000 --speed 1 --shape chain
    .venv/bin/python bench/loadtest_e2e.py --repeats 1 -- --runs 100000 --concurrency 20000 --speed 10

Everything after `--` goes to `flowstage loadtest`. The server runs with rate limiting off, no
demo data and an empty data directory (SQLite on disk, the default storage); neither process is
pinned, as a user would run them. Each repeat prints one row; then the medians, each ratio to
the ideal makespan (the workflow's critical path / speed), and the goals: client makespan p50
<= 1.5x ideal, server makespan p99 <= 1.3x ideal, no errors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import free_port, wait_up

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
        "execute p50 ms": of(s["executeLatencyMs"]["p50"]),
        "CPU tester / server": of(s["cpu"]["ratio"]), "server CPU s": of(s["cpu"]["serverSeconds"]),
        "RSS before MiB": of(s["memory"]["beforeMib"]), "RSS peak MiB": of(s["memory"]["peakMib"]),
        "RSS after MiB": of(s["memory"]["afterMib"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("loadtest", nargs=argparse.REMAINDER, help="-- then flowstage loadtest's flags")
    args = parser.parse_args()
    passed = args.loadtest[1:] if args.loadtest[:1] == ["--"] else args.loadtest
    rows = []
    for i in range(args.repeats):
        row = figures(one(passed))
        rows.append(row)
        print(f"repeat {i + 1}/{args.repeats}: " + ", ".join(f"{k} {v:,.2f}" for k, v in row.items()), flush=True)
    print(f"\nflowstage loadtest {' '.join(passed)}: medians of {args.repeats}")
    for key in rows[0]:
        print(f"  {key:22} {statistics.median(r[key] for r in rows):>12,.2f}")
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    print(f"\ngoals: client p50 / ideal {med['client p50 / ideal']:.2f} (<= 1.5), server p99 / ideal "
          f"{med['server p99 / ideal']:.2f} (<= 1.3), errors {med['errors']:.0f} (0)")


if __name__ == "__main__":
    main()
