"""Shared fixtures: an app on an in-memory store (or on a data dir, for restart tests) and an
aiohttp test client talking to it over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from servers import PostgresServer, RedisServer, need, running

from flowstage.actors.clock import ManualClock
from flowstage.config import Settings, load_settings
from flowstage.server.app import create_app

ClientFactory = AiohttpClient  # the `aiohttp_client` fixture
Client = TestClient[Any, web.Application]
T0 = 1_790_000_000.0  # where the `clock` fixture's manual clock starts (epoch seconds)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "storage": "memory", "seed_demo_data": False, "rate_limit_per_second": 0,
        "data_dir": str(data_dir),
    }
    base.update(overrides)
    return load_settings(overrides=base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (tests/servers.py); each test gets a schema."""
    with running(need(PostgresServer)) as server:
        assert isinstance(server, PostgresServer)
        yield server


_schemas = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A `database_url` whose tables start empty: a new schema of the session's server."""
    return postgres_server.schema_url(f"test_{next(_schemas)}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running(need(RedisServer)) as server:
        assert isinstance(server, RedisServer)
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test (and started, should a test have left it
    stopped)."""
    import redis

    if redis_server.pid is None:
        redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(params=["sqlite", "postgres"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on each durable store: a SQLite file, and a PostgreSQL (a fresh schema). The
    store's tests take this fixture, and so run against both."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return make_settings(tmp_path / "data", storage="postgres", database_url=url)
    return make_settings(tmp_path / "data", storage="sqlite")


@pytest.fixture
async def client(aiohttp_client: ClientFactory, settings: Settings) -> TestClient[Any, web.Application]:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at T0: simulated time moves only when a test moves it."""
    return ManualClock(start=T0)


@pytest.fixture
async def clocked(aiohttp_client: ClientFactory, settings: Settings, clock: ManualClock) -> Client:
    """A client of an app on the `clock` fixture's manual clock."""
    return await aiohttp_client(create_app(settings, clock=clock))


async def create(client: Client, workflow: dict[str, Any]) -> str:
    """Store `workflow` (201); its id."""
    resp = await client.post("/api/workflows", json=workflow)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


@pytest.fixture
def simple_workflow() -> dict[str, Any]:
    """trigger -> http -> output, with client-chosen ids."""
    return {
        "name": "Fetch and store",
        "description": "A small chain",
        "tags": ["demo"],
        "nodes": [
            {"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}},
            {"id": "h", "type": "http_request", "position": {"x": 200, "y": 0},
             "data": {"label": "Fetch", "config": {"url": "https://example.com/a"}}},
            {"id": "o", "type": "output", "position": {"x": 400, "y": 0}},
        ],
        "connections": [
            {"id": "c1", "source": "t", "target": "h", "sourceHandle": "out", "targetHandle": "in"},
            {"id": "c2", "source": "h", "target": "o"},
        ],
    }


@pytest.fixture
async def wf(client: TestClient[Any, web.Application], simple_workflow: dict[str, Any]) -> str:
    """The id of trigger `t` -> http `h` -> output `o` (connections c1, c2), at version 1."""
    resp = await client.post("/api/workflows", json=simple_workflow)
    assert resp.status == 201
    return str((await resp.json())["id"])


async def run_command(*command: str | Path, cwd: Path, budget: float = 120.0) -> str:
    """Run a program to its end; its output. It must exit 0 within `budget` seconds: a hung
    program fails the test instead of hanging the suite."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), budget)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text
