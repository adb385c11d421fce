"""Benchmark: SSE fan-out of Flowstage's `GET /api/events` against a bare aiohttp fan-out
(bench/_bare_sse.py) of the same event shape and offered rate, measured in the same run.

    .venv/bin/python bench/sse.py                  # 3 rounds of 3 s per configuration
    .venv/bin/python bench/sse.py --rounds 5 --seconds 8

Each configuration is (N subscribers, S source events/s). Flowstage's events come from real
runs started through the API: a 10-node chain (trigger, 8 transforms, output; E = 41 events per
run over D ~ 0.6 s) executed S/E times a second for `--seconds` T, each subscriber on
`/api/events`. The bare server then generates the same number of events over the same span
(T + D), encoded once and written to every subscriber as one chunk every 5 ms (Flowstage's
default `sse_batch_ms`). "offered" is the source rate times N: deliveries per second asked of
the server. "delivered/s" is the deliveries counted by the clients divided by the time from
the first event offered to the last one received (so a server that falls behind scores less).
Latency is receive time minus the event's `ts` (both `time.time()` on this machine), sampled
once per socket read at the oldest event of the read; "complete" means every subscriber got
every event.

The servers run pinned to CPU 0, each in its own process; the subscribers (raw asyncio
protocols counting frames, one process) and the driver run on CPU 1. The two servers are
measured alternately and medians of the rounds are printed, with Flowstage/bare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import free_port, pinned, wait_up

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CONFIGS = ((10, 20000), (100, 10000), (1000, 50), (1000, 3000))
CHAIN = 8
SEED = 1
GOAL_SUBSCRIBERS, GOAL_RATE, GOAL_P99_MS = 1000, 50, 100.0


# --- subscribers (the --client process) ------------------------------------------------------

_EPOCH: dict[bytes, float] = {}


def _ts(raw: bytes) -> float:
    """b"2026-11-26T07:27:54.123Z" -> epoch seconds (the second part cached)."""
    prefix = raw[:19]
    sec = _EPOCH.get(prefix)
    if sec is None:
        sec = _EPOCH[prefix] = datetime.fromisoformat(prefix.decode() + "+00:00").timestamp()
    return sec + int(raw[20:23]) / 1000


class Subscriber(asyncio.Protocol):
    def __init__(self, request: bytes, latencies: array[float], expected: list[int]) -> None:
        self.request = request
        self.latencies = latencies
        self.expected = expected  # [per-subscriber count], filled in once the source stopped
        self.count = 0
        self.tail = b""
        self.done_at = 0.0
        self.started = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.started.done():
            self.started.set_result(None)
        # A frame's "\nevent: " (8 bytes) can straddle two reads; 7 bytes of tail catch it.
        self.count += (self.tail + data).count(b"\nevent: ")
        self.tail = data[-7:]
        i = data.find(b'"ts":"')
        if 0 <= i <= len(data) - 30:
            self.latencies.append(now - _ts(data[i + 6:i + 30]))
        if self.expected and not self.done_at and self.count >= self.expected[0]:
            self.done_at = now


async def client(url: str, n: int) -> None:
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, port = host_port.split(":")
    request = f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nAccept: text/event-stream\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    latencies: array[float] = array("d")
    expected: list[int] = []
    gate = asyncio.Semaphore(64)

    async def connect() -> Subscriber:
        async with gate:
            _, sub = await loop.create_connection(
                lambda: Subscriber(request, latencies, expected), host, int(port))
            await sub.started
            return sub

    subs = await asyncio.gather(*(connect() for _ in range(n)))
    print("ready", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    total_str, start_str, wait_str = line.split()
    expected.append(int(total_str))
    for sub in subs:
        if not sub.done_at and sub.count >= expected[0]:
            sub.done_at = time.time()
    deadline = time.time() + float(wait_str)
    while time.time() < deadline and not all(s.done_at for s in subs):
        await asyncio.sleep(0.02)
    start = float(start_str)
    complete = sum(1 for s in subs if s.done_at)
    end = max(s.done_at for s in subs) if complete == n else time.time()
    delivered = sum(min(s.count, expected[0]) for s in subs)
    lat = sorted(latencies)

    def pick(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    print(json.dumps({"delivered": delivered, "complete": complete, "seconds": end - start,
                      "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0), "samples": len(lat)}),
          flush=True)


# --- the driver --------------------------------------------------------------------------------








def call(url: str, body: Any = None, method: str = "POST") -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def chain_workflow() -> dict[str, Any]:
    ids = ["t", *(f"x{i}" for i in range(CHAIN)), "o"]
    types = ["manual_trigger", *(["transform"] * CHAIN), "output"]
    return {"name": "SSE bench", "nodes": [
        {"id": i, "type": t, "position": {"x": 200 * k, "y": 0}}
        for k, (i, t) in enumerate(zip(ids, types, strict=True))],
        "connections": [{"id": f"c{k}", "source": a, "target": b}
                        for k, (a, b) in enumerate(itertools.pairwise(ids))]}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Flowstage:
    name = "flowstage"

    def __init__(self, port: int, data_dir: str, loop: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "FLOWSTAGE_RATE_LIMIT_PER_SECOND": "0",
               "FLOWSTAGE_SEED_DEMO_DATA": "false", "FLOWSTAGE_LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen(
            pinned([PY, "-m", "flowstage", "serve", "--port", str(port), "--storage", "memory",
                    "--data-dir", data_dir, "--loop", loop], "0"), cwd=ROOT, env=env)
        wait_up(f"{self.base}/api/health")
        self.workflow = call(f"{self.base}/api/workflows", chain_workflow())["id"]
        # One run to learn E (events per run) and D (its duration); the seed fixes both.
        run = call(f"{self.base}/api/workflows/{self.workflow}/execute", {"seed": SEED})
        with urllib.request.urlopen(f"{self.base}/api/runs/{run['id']}/events", timeout=30) as r:
            self.events_per_run = r.read().count(b"\nevent: ")
        done = call(f"{self.base}/api/runs/{run['id']}", method="GET")
        self.run_seconds = _epoch(done["finishedAt"]) - _epoch(done["startedAt"])
        self.url = f"{self.base}/api/events"

    def plan(self, rate: float, seconds: float) -> tuple[int, float]:
        """What `offer` will produce: (events, the span they are emitted over): runs start
        every seconds/runs, the last one ends D after it started."""
        runs = max(1, round(rate * seconds / self.events_per_run))
        return runs * self.events_per_run, (runs - 1) * seconds / runs + self.run_seconds

    async def offer(self, rate: float, seconds: float) -> tuple[int, float]:
        """Start runs for `seconds` so that they emit `rate` events/s; (events, span)."""
        import aiohttp

        runs = max(1, round(rate * seconds / self.events_per_run))
        interval = seconds / runs
        url = f"{self.base}/api/workflows/{self.workflow}/execute"
        async with aiohttp.ClientSession() as session:
            async def one() -> None:
                async with session.post(url, json={"seed": SEED}) as resp:
                    assert resp.status == 202, await resp.text()

            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            for i in range(runs):
                await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        return self.plan(rate, seconds)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


class Bare:
    name = "bare"

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(pinned([PY, str(ROOT / "bench" / "_bare_sse.py"), str(port)], "0"))
        wait_up(f"{self.base}/subscribers")
        self.url = f"{self.base}/events"

    async def offer_events(self, events: int, span: float) -> int:
        url = f"{self.base}/generate?rate={events / span}&seconds={span}&batch_ms=5"
        return int((await asyncio.to_thread(call, url))["events"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


async def measure(server: Flowstage | Bare, n: int, offer: Any, wait: float) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        *pinned([PY, __file__, "--client", server.url, str(n)], "1"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"ready", line
    start = time.time()
    events, span = await offer()
    proc.stdin.write(f"{events} {start} {wait}\n".encode())
    await proc.stdin.drain()
    out = json.loads(await asyncio.wait_for(proc.stdout.readline(), wait + 60))
    await proc.wait()
    out.update(events=events, span=span, offered=events * n / span, rate=out["delivered"] / out["seconds"])
    return dict(out)


async def bench(args: argparse.Namespace) -> None:
    data_dir = tempfile.mkdtemp(prefix="flowstage-bench-sse-")
    flowstage = Flowstage(free_port(), data_dir, args.loop)
    bare = Bare(free_port())
    print(f"runs of {CHAIN + 2} nodes: E = {flowstage.events_per_run} events over "
          f"D = {flowstage.run_seconds:.3f} s; T = {args.seconds:g} s, {args.rounds} rounds, "
          f"{args.loop} loop on both servers")
    header = (f"{'N':>5} {'src ev/s':>8} {'offered/s':>10} | {'server':<9} {'delivered/s':>11} "
              f"{'complete':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    print(header)
    print("-" * len(header))
    summary = []
    try:
        for n, rate in CONFIGS:
            results: dict[str, list[dict[str, float]]] = {"flowstage": [], "bare": []}
            events, span = flowstage.plan(rate, args.seconds)

            async def offer_flowstage(rate: float = rate) -> tuple[int, float]:
                return await flowstage.offer(rate, args.seconds)

            async def offer_bare(events: int = events, span: float = span) -> tuple[int, float]:
                return await bare.offer_events(events, span), span

            for r in range(args.rounds):
                order = ((flowstage, offer_flowstage), (bare, offer_bare))
                for server, offer in order if r % 2 == 0 else order[::-1]:
                    results[server.name].append(await measure(server, n, offer, 30))
            med: dict[str, dict[str, float]] = {}
            for name, rows in results.items():
                med[name] = {k: statistics.median(row[k] for row in rows)
                             for k in ("rate", "p50", "p99", "max", "complete", "offered")}
                m = med[name]
                print(f"{n:>5} {rate:>8} {m['offered']:>10.0f} | {name:<9} {m['rate']:>11.0f} "
                      f"{m['complete']:>6.0f}/{n:<3} {m['p50']:>7.1f} {m['p99']:>7.1f} {m['max']:>7.1f}")
            ratio = med["flowstage"]["rate"] / med["bare"]["rate"]
            print(f"{'':>26}   flowstage/bare delivered/s = {ratio:.2f}")
            summary.append((n, rate, ratio, med["flowstage"]))
    finally:
        flowstage.stop()
        bare.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print()
    worst = min(ratio for *_, ratio, _ in summary)
    print(f"goal >= 0.8 of bare delivered/s: worst ratio {worst:.2f} -> {'met' if worst >= 0.8 else 'NOT met'}")
    for n, rate, _, m in summary:
        if (n, rate) == (GOAL_SUBSCRIBERS, GOAL_RATE):
            ok = m["complete"] == n and m["p99"] <= GOAL_P99_MS
            print(f"goal {n} subscribers x {rate} ev/s ({n * rate} deliveries/s): complete "
                  f"{m['complete']:.0f}/{n}, p99 {m['p99']:.1f} ms -> {'met' if ok else 'NOT met'}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(client(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
