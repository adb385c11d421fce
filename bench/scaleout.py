"""Benchmark: one worker against `--workers 2`, both on PostgreSQL and Redis (started here from
Debian's packages in a temporary directory, flowstage.services), on this machine's 2 cores.

1. Execute admission: wrk (one thread) POSTs `/execute` (body `{}`) of a workflow whose runs
   stay active for an hour, against a one-process server and a two-worker server, alternately,
   several rounds; medians and the ratio 2 workers / 1 worker (issue 16's goal: >= 1.6).
2. Many concurrent runs: `flowstage loadtest --runs R --concurrency R --nodes 10` against a
   fresh server of each kind; the makespans' ratios to the ideal one (the goal: <= 1.10).

Nothing is pinned: the workers need both cores, and wrk, the load tester, PostgreSQL and Redis
share them, as they would for a user trying this on one machine. Each server gets a schema of
its own and a Redis database of its own.

Usage: .venv/bin/python bench/scaleout.py [--rounds 3] [--seconds 5] [--connections 64]
                                          [--runs 20000] [--speed 1] [--skip-admission] [--skip-load]
Needs wrk, postgresql and redis-server (apt-get install wrk postgresql redis-server), and the
postgres and redis extras.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import alternate_rounds, free_port, wait_up
from api_execute import POST_SCRIPT, long_workflow, post
from loadtest_e2e import figures

from flowstage.services import PostgresServer, RedisServer, running

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KINDS = {"1 worker": 1, "2 workers": 2}


class Servers:
    """PostgreSQL and Redis, and Flowstage servers on them, each on a schema and Redis
    database of its own."""

    def __init__(self, stack: ExitStack, tmp: Path) -> None:
        self.postgres = PostgresServer()
        self.redis = RedisServer()
        stack.enter_context(running(self.postgres))
        stack.enter_context(running(self.redis))
        self.tmp = tmp
        self.count = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, workers: int) -> str:
        self.count += 1
        port = free_port()
        env = {**os.environ, "FLOWSTAGE_RATE_LIMIT_PER_SECOND": "0", "FLOWSTAGE_SEED_DEMO_DATA": "false",
               "FLOWSTAGE_LOG_LEVEL": "warning", "FLOWSTAGE_STORAGE": "postgres",
               "FLOWSTAGE_DATABASE_URL": self.postgres.schema_url(f"bench_{self.count}"),
               "FLOWSTAGE_BUS": "redis", "FLOWSTAGE_REDIS_URL": f"{self.redis.url[:-1]}{self.count % 16}"}
        self.procs.append(subprocess.Popen(
            [PY, "-m", "flowstage", "serve", "--port", str(port), "--data-dir", str(self.tmp / f"data{self.count}"),
             "--workers", str(workers)], cwd=ROOT, env=env))
        url = f"http://127.0.0.1:{port}"
        wait_up(f"{url}/api/health")
        return url

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait()
        self.procs.clear()


def admission(servers: Servers, args: argparse.Namespace) -> None:
    (servers.tmp / "post.lua").write_text(POST_SCRIPT)
    targets = {}
    for name, workers in KINDS.items():
        url = servers.start(workers)
        wf_id = json.loads(post(f"{url}/api/workflows", long_workflow()))["id"]
        targets[name] = f"{url}/api/workflows/{wf_id}/execute"
    results = alternate_rounds(targets, args.rounds, args.seconds, args.connections,
                               ["-s", str(servers.tmp / "post.lua")])
    servers.stop_all()
    print(f"\nPOST execute, {args.connections} connections, {args.rounds} rounds of {args.seconds} s, medians:")
    print(f"{'server':<12}{'req/s':>10}{'p99 ms':>10}")
    medians = {}
    for name, rows in results.items():
        medians[name] = statistics.median(r.rps for r in rows)
        print(f"{name:<12}{medians[name]:>10,.0f}{statistics.median(r.p99_ms for r in rows):>10.2f}")
    print(f"ratio 2 workers / 1 worker: {medians['2 workers'] / medians['1 worker']:.2f}  (goal >= 1.6)\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its live children, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / ticks
    return own + sum(cpu_seconds(int(child)) for child in children)


def components(servers: Servers) -> dict[str, float]:
    """CPU seconds so far of the Flowstage servers, Redis and PostgreSQL."""
    redis_pid, postgres_pid = servers.redis.pid, servers.postgres.pid
    return {"flowstage": sum(cpu_seconds(proc.pid) for proc in servers.procs),
            "redis": 0.0 if redis_pid is None else cpu_seconds(redis_pid),
            "postgres": 0.0 if postgres_pid is None else cpu_seconds(postgres_pid)}


def load(servers: Servers, args: argparse.Namespace) -> None:
    rows: dict[str, dict[str, float]] = {}
    for name, workers in KINDS.items():
        url = servers.start(workers)
        summary_path = servers.tmp / f"summary-{workers}.json"
        before = components(servers)
        subprocess.run([PY, "-m", "flowstage", "loadtest", "--url", url, "--runs", str(args.runs),
                        "--concurrency", str(args.runs), "--nodes", "10", "--speed", str(args.speed),
                        "--progress-interval", "3600", "--json", str(summary_path)],
                       cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        after = components(servers)
        servers.stop_all()
        summary: dict[str, Any] = json.loads(summary_path.read_text())
        if summary["errorTotal"]:
            print(f"{name}: errors {json.dumps(summary.get('errors'))[:600]}", flush=True)
        rows[name] = figures(summary)
        rows[name]["server p50 / ideal"] = summary["makespanByStateMs"]["completed"]["p50"] / summary["ideal"]["ms"]
        for part, seconds in after.items():  # CPU per run, the units of docs/scaling.md's model
            rows[name][f"{part} CPU ms/run"] = (seconds - before[part]) * 1000 / args.runs
        rows[name]["load tester CPU ms/run"] = summary["cpu"]["loadTesterSeconds"] * 1000 / args.runs
        print(f"{name}: " + ", ".join(f"{k} {v:,.2f}" for k, v in rows[name].items()
                                      if not k.startswith(("RSS", "CPU", "server CPU"))), flush=True)
    print(f"\n{args.runs:,} concurrent 10-node runs at speed {args.speed:g}:")
    keys = ["wall s", "runs/s", "errors", "execute p50 ms", "server p50 / ideal", "server p99 / ideal",
            "client p50 / ideal", "flowstage CPU ms/run", "redis CPU ms/run", "postgres CPU ms/run",
            "load tester CPU ms/run", "stream gaps", "runs read after gaps"]
    print(f"{'':<22}" + "".join(f"{name:>12}" for name in KINDS))
    for key in keys:
        print(f"{key:<22}" + "".join(f"{rows[name][key]:>12,.2f}" for name in KINDS))
    print("goal: server makespan p50 <= 1.10x ideal, no errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--skip-admission", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    if not args.skip_admission and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="flowstage-scaleout-"))
    try:
        with ExitStack() as stack:
            servers = Servers(stack, tmp)
            try:
                if not args.skip_admission:
                    admission(servers, args)
                if not args.skip_load:
                    load(servers, args)
            finally:
                servers.stop_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
