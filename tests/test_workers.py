"""Worker processes for real (`flowstage serve` subprocesses on a real PostgreSQL and Redis):
`--workers 2` shares one port and every run can be controlled through it whichever worker
a connection reaches; a worker killed with SIGKILL has its active runs ended `failed`
(`interrupted`) by a survivor within seconds, and their streams, followed through the
survivor, end with that terminal event and resume with `Last-Event-ID`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from servers import free_port
from test_sse import TERMINAL, parse, read_all, read_until, with_delay

WAIT = 20.0  # how long a process may take to start, or a run to be reaped, before the test fails


def serve(tmp_path: Path, postgres_url: str, redis_url: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTAGE_")}
    env.update(FLOWSTAGE_SEED_DEMO_DATA="false", FLOWSTAGE_RATE_LIMIT_PER_SECOND="0")
    with (tmp_path / f"serve-{port}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flowstage", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
             "--storage", "postgres", "--database-url", postgres_url, "--bus", "redis", "--redis-url", redis_url,
             *extra],
            # A session of its own: the fixture can kill the supervisor and its workers together.
            env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


async def until_workers(redis_url: str, count: int) -> None:
    """Until `count` processes hold a lease (each serves once it holds one)."""
    with redis.Redis.from_url(redis_url) as client:
        deadline = time.monotonic() + WAIT
        while client.scard("flowstage:workers") < count:
            assert time.monotonic() < deadline, "the workers did not all start"
            await asyncio.sleep(0.05)


async def until_up(url: str, process: subprocess.Popen[Any]) -> None:
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the server ended with status {process.returncode}"
            try:
                async with session.get(f"{url}/api/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
        # Whatever is left of the supervisor and the workers it started: none outlives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection per request: the kernel spreads connections, not requests.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        yield client


async def call(session: aiohttp.ClientSession, method: str, url: str, status: int, **kwargs: Any) -> Any:
    async with session.request(method, url, **kwargs) as resp:
        body = await resp.text()
        assert resp.status == status, (method, url, body)
        return json.loads(body)


async def test_two_workers_share_a_port_and_answer_for_each_others_runs(
    tmp_path: Path, postgres_url: str, redis_url: str, processes: list[subprocess.Popen[bytes]],
    session: aiohttp.ClientSession,
) -> None:
    port = free_port()
    processes.append(serve(tmp_path, postgres_url, redis_url, port, "--workers", "2"))
    url = f"http://127.0.0.1:{port}"
    await until_up(url, processes[0])
    await until_workers(redis_url, 2)
    wf = (await call(session, "POST", f"{url}/api/workflows", 201, json=with_delay(60_000)))["id"]
    runs = [(await call(session, "POST", f"{url}/api/workflows/{wf}/execute", 202, json={}))["id"]
            for _ in range(24)]
    for run in runs:  # each on a new connection: about half reach the worker that does not own it
        assert (await call(session, "POST", f"{url}/api/runs/{run}/pause", 200))["state"] == "paused"
        assert (await call(session, "GET", f"{url}/api/runs/{run}", 200))["state"] == "paused"
        assert (await call(session, "POST", f"{url}/api/runs/{run}/stop", 200))["state"] == "stopped"
    with redis.Redis.from_url(redis_url) as client:
        owners = {client.get(f"flowstage:owner:{run}") for run in runs}
        assert len(owners) == 2, "every connection reached the same worker"


async def test_a_killed_workers_runs_end_interrupted_and_their_streams_end_through_a_survivor(
    tmp_path: Path, postgres_url: str, redis_url: str, processes: list[subprocess.Popen[bytes]],
    session: aiohttp.ClientSession,
) -> None:
    ports = free_port(), free_port()
    processes.extend(serve(tmp_path, postgres_url, redis_url, port) for port in ports)
    a, b = (f"http://127.0.0.1:{port}" for port in ports)
    for url, process in zip((a, b), processes, strict=True):
        await until_up(url, process)
    wf = (await call(session, "POST", f"{a}/api/workflows", 201, json=with_delay(60_000)))["id"]
    run = (await call(session, "POST", f"{a}/api/workflows/{wf}/execute", 202, json={}))["id"]
    stream = await session.get(f"{b}/api/runs/{run}/events")
    _, before = await read_until(stream, lambda frames: any(f["event"] == "node.started" for f in frames))
    processes[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    # Its owner gone (not yet known dead): a read through the survivor is answered from the store.
    assert (await call(session, "GET", f"{b}/api/runs/{run}", 200))["state"] in ("running", "failed")
    body = await read_all(stream, timeout=WAIT)
    took = time.monotonic() - killed
    frames = before + parse(body)
    assert frames[-1]["event"] == "run.failed"
    assert json.loads(frames[-1]["data"])["error"]["code"] == "interrupted"
    assert [int(f["id"]) for f in frames] == list(range(1, len(frames) + 1))
    assert took < 8, f"the run was ended {took:.1f} s after its worker was killed"
    # Resumed through the survivor from an id before the end: the rest, then it closes.
    resumed = parse(await read_all(await session.get(f"{b}/api/runs/{run}/events",
                                                     headers={"Last-Event-ID": before[-1]["id"]})))
    assert resumed == frames[len(before):]
    stored = await call(session, "GET", f"{b}/api/runs/{run}", 200)
    assert stored["state"] == "failed"
    assert {f["event"] for f in frames} & TERMINAL == {"run.failed"}


def run_cluster(port: int, files: Path) -> subprocess.Popen[str]:
    """`make run-cluster`, on `port`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTAGE_")}
    return subprocess.Popen([sys.executable, "-m", "flowstage.devcluster", "--port", str(port),
                             "--data-dir", str(files)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            # Ctrl-C works even when this test runs where SIGINT is ignored (a
                            # background shell job), and the fixture can end the whole group.
                            preexec_fn=_default_sigint, start_new_session=True)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.usefixtures("postgres_server", "redis_server")  # skips (fails in CI) without the programs
async def test_run_cluster_serves_two_workers_and_ctrl_c_stops_everything(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    port = free_port()
    cluster = run_cluster(port, tmp_path / "files")
    try:
        assert cluster.stdout is not None
        urls = dict(cluster.stdout.readline().split(": ", 1) for _ in range(3))
        await until_up(f"http://127.0.0.1:{port}", cluster)
        with redis.Redis.from_url(urls["Redis"].strip()) as client:
            deadline = time.monotonic() + WAIT
            while client.scard("flowstage:workers") < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        cluster.send_signal(signal.SIGINT)
        assert cluster.wait(30) == 0
    finally:
        # Whatever is left of it (its PostgreSQL, Redis and workers too, if it failed).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait()
        if cluster.stdout is not None:
            cluster.stdout.close()
    with pytest.raises(OSError):  # PostgreSQL is gone with it
        socket.create_connection(("127.0.0.1", int(urls["PostgreSQL"].rsplit(":", 1)[1].split("/")[0])), 1).close()
