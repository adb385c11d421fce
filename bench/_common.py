"""Helpers the benchmark scripts share: a free port, CPU pinning, waiting for a server, wrk."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

__all__ = ["Round", "alternate_rounds", "free_port", "pinned", "process_cpu", "report", "run_wrk", "wait_up"]


class Round(NamedTuple):
    """One wrk run against one server."""

    rps: float
    p99_ms: float
    requests: int
    cpu_us: float | None = None  # the server's CPU per request, every thread (when its pid is known)


def process_cpu(pid: int) -> float:
    """Seconds of CPU the process `pid` has used, every thread (utime + stime, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], cpu: str) -> list[str]:
    """`cmd` pinned to `cpu` with taskset, where there is more than one CPU to choose from."""
    many = (os.cpu_count() or 1) > 1
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") and many else cmd


def wait_up(url: str, timeout: float = 15.0, *, expect_http_error: bool = False) -> None:
    """Wait until `url` answers (with any HTTP status, if `expect_http_error`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            if expect_http_error:
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


def run_wrk(url: str, seconds: int, connections: int, extra: list[str] | None = None,
            pid: int | None = None) -> Round:
    """wrk (one thread, on CPU 1) against `url`: requests a second, p99 latency in ms, and,
    given the server's `pid`, its CPU per request. Any answer that is not 2xx/3xx stops the
    benchmark: errors are not throughput."""
    cpu_before = process_cpu(pid) if pid is not None else 0.0
    out = subprocess.run(
        pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *(extra or []), url], "1"),
        capture_output=True, text=True, check=True,
    ).stdout
    cpu = process_cpu(pid) - cpu_before if pid is not None else None
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        raise SystemExit(f"{bad.group(1)} answers were not 2xx/3xx from {url}:\n{out}")
    rps_text = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests_text = re.search(r"(\d+) requests in", out)
    assert rps_text is not None and requests_text is not None
    requests = int(requests_text.group(1))
    p99_text = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_text is not None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_text.group(2)]
    cpu_us = None if cpu is None or not requests else cpu / requests * 1e6
    return Round(float(rps_text.group(1)), float(p99_text.group(1)) * scale, requests, cpu_us)


def alternate_rounds(targets: dict[str, str], rounds: int, seconds: int, connections: int,
                     extra: list[str] | None = None, pids: dict[str, int] | None = None) -> dict[str, list[Round]]:
    """wrk against each target in turn, `rounds` times after a 1 s warm-up of each: every
    target's rounds, a line printed per round. `pids`: the servers' processes, to measure
    their CPU per request too."""
    results: dict[str, list[Round]] = {name: [] for name in targets}
    for url in targets.values():
        run_wrk(url, 1, connections, extra)
    for round_no in range(rounds):
        for name, url in targets.items():
            results[name].append(run_wrk(url, seconds, connections, extra, (pids or {}).get(name)))
        print(f"round {round_no + 1}/{rounds}: "
              + ", ".join(f"{n} {r[-1].rps:,.0f} req/s" for n, r in results.items()), flush=True)
    return results


def report(results: dict[str, list[Round]], title: str, goal: float) -> None:
    """Print each server's median req/s and p99 over the rounds (and CPU per request, where
    measured), and Flowstage's ratio to the bare handler against the issue's `goal`: of the
    medians, and each round's."""
    import statistics

    print(f"\n{title}, medians:")
    print(f"{'server':<24}{'req/s':>12}{'p99 ms':>10}{'CPU µs/req':>12}")
    medians = {}
    for name, rows in results.items():
        rps = statistics.median(r.rps for r in rows)
        p99 = statistics.median(r.p99_ms for r in rows)
        cpus = [r.cpu_us for r in rows if r.cpu_us is not None]
        cpu = f"{statistics.median(cpus):>12.0f}" if cpus else f"{'n/a':>12}"
        medians[name] = rps
        print(f"{name:<24}{rps:>12,.0f}{p99:>10.2f}{cpu}")
    ratio = medians["flowstage"] / medians["bare aiohttp+msgspec"]
    # Each round measures the two servers back to back: a round's ratio compares them under
    # the same load from the rest of this shared machine, which drifts between rounds.
    rounds = [f.rps / b.rps for f, b in zip(results["flowstage"], results["bare aiohttp+msgspec"], strict=True)]
    print(f"\nratio flowstage / bare: {ratio:.2f} (of the medians); per round: "
          + ", ".join(f"{r:.2f}" for r in rounds)
          + f"; median per round {statistics.median(rounds):.2f}  (goal >= {goal})")
