"""`GET /metrics`: the figures move as runs happen (runs started and finished by state, node
transitions, events emitted), HTTP requests are counted by route pattern and status, the
event-loop lag histogram is there, and mailbox depth is read from the engine at scrape time."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from conftest import ClientFactory, make_settings
from prometheus_client.parser import text_string_to_metric_families

from flowstage.actors.clock import ManualClock
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE
from flowstage.server.routes.meta import metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(client: TestClient[Any, web.Application]) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def run_to_end(client: TestClient[Any, web.Application], workflow_id: str,
                     body: Mapping[str, Any]) -> dict[str, Any]:
    resp = await client.post(f"/api/workflows/{workflow_id}/execute", json=body)
    assert resp.status == 202
    run_id = (await resp.json())["id"]
    async with asyncio.timeout(10):
        while True:
            run = await (await client.get(f"/api/runs/{run_id}")).json()
            if run["state"] in ("completed", "failed", "stopped"):
                return dict(run)
            await asyncio.sleep(0.01)


async def test_run_node_and_event_figures_move_as_runs_happen(
    client: TestClient[Any, web.Application], simple_workflow: dict[str, Any]
) -> None:
    workflow_id = (await (await client.post("/api/workflows", json=simple_workflow)).json())["id"]
    before = await scrape(client)
    completed = [await run_to_end(client, workflow_id, {"speed": 1000}) for _ in range(3)]
    failed = await run_to_end(client, workflow_id, {"speed": 1000, "failureRate": 1})
    after = await scrape(client)

    assert [r["state"] for r in completed] == ["completed"] * 3
    assert failed["state"] == "failed"
    assert delta(before, after, "flowstage_runs_started_total") == 4
    assert delta(before, after, "flowstage_runs_finished_total", state="completed") == 3
    assert delta(before, after, "flowstage_runs_finished_total", state="failed") == 1
    assert value(after, "flowstage_runs_active") == 0
    # Three nodes per run: 3 x 3 completed; the failed run fails its trigger, skips the rest.
    assert delta(before, after, "flowstage_node_transitions_total", state="completed") == 9
    assert delta(before, after, "flowstage_node_transitions_total", state="failed") == 1
    assert delta(before, after, "flowstage_node_transitions_total", state="skipped") == 2
    engine = client.app[ENGINE]
    emitted = 0
    for run in [*completed, failed]:
        log = engine.events(run["id"])
        assert log is not None
        emitted += log.last_seq
    assert delta(before, after, "flowstage_events_emitted_total") == emitted


async def test_http_requests_are_counted_by_route_pattern_and_status(
    client: TestClient[Any, web.Application], simple_workflow: dict[str, Any]
) -> None:
    workflow_id = (await (await client.post("/api/workflows", json=simple_workflow)).json())["id"]
    run = await run_to_end(client, workflow_id, {"speed": 1000})
    assert (await client.get("/api/runs/run_nope")).status == 404
    assert (await client.get("/no/such/path")).status == 404
    assert (await client.post("/api/node-types")).status == 405
    preflight = {"Origin": "http://editor.example", "Access-Control-Request-Method": "PUT"}
    assert (await client.options(f"/api/workflows/{workflow_id}", headers=preflight)).status == 200
    samples = await scrape(client)

    name = "flowstage_http_requests_total"
    assert value(samples, name, method="POST", route="/api/workflows", status="201") == 1
    assert value(samples, name, method="POST", route="/api/workflows/{id}/execute",
                 status="202") == 1
    assert value(samples, name, method="GET", route="/api/runs/{runId}", status="200") >= 1
    assert value(samples, name, method="GET", route="/api/runs/{runId}", status="404") == 1
    assert value(samples, name, method="GET", route="unmatched", status="404") == 1
    assert value(samples, name, method="POST", route="/api/node-types", status="405") == 1
    assert value(samples, name, method="OPTIONS", route="/api/workflows/{id}", status="200") == 1
    routes = {dict(labels).get("route", "") for (n, labels) in samples if n == name}
    assert not any(run["id"] in r or workflow_id in r for r in routes), routes
    latency = "flowstage_http_request_duration_seconds_count"
    assert value(samples, latency, method="POST", route="/api/workflows/{id}/execute") == 1


async def test_the_event_loop_lag_histogram_is_exposed_and_fills(
    client: TestClient[Any, web.Application],
) -> None:
    samples = await scrape(client)
    assert ("flowstage_event_loop_lag_seconds_bucket",
            frozenset({("le", "+Inf")})) in samples
    # The watcher times a real 100 ms timer (lag is wall time by nature): wait for its first
    # sample, as long as a loaded machine needs.
    async with asyncio.timeout(10):
        while value(samples, "flowstage_event_loop_lag_seconds_count") < 1:
            await asyncio.sleep(0.05)
            samples = await scrape(client)


async def test_mailbox_depth_is_read_from_the_engine_at_scrape_time(
    aiohttp_client: ClientFactory, tmp_path: Path, simple_workflow: dict[str, Any]
) -> None:
    # A manual clock that never moves: the run stays running with its mailbox in reach.
    client = await aiohttp_client(create_app(make_settings(tmp_path), clock=ManualClock()))
    workflow_id = (await (await client.post("/api/workflows", json=simple_workflow)).json())["id"]
    run_id = (await (await client.post(f"/api/workflows/{workflow_id}/execute")).json())["id"]
    assert value(await scrape(client), "flowstage_mailbox_depth") == 0

    app = client.app
    engine = app[ENGINE]
    # Three pauses sent: each task runs up to its `ask` on this turn, and the run drains its
    # mailbox on the next one.
    replies = [asyncio.ensure_future(engine.control(run_id, "pause")) for _ in range(3)]
    await asyncio.sleep(0)
    assert engine.mailbox_depth() == 3
    response = await metrics(make_mocked_request("GET", "/metrics", app=app))
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    assert value(parse(response.body.decode()), "flowstage_mailbox_depth") == 3
    await asyncio.gather(*replies)
    assert value(await scrape(client), "flowstage_mailbox_depth") == 0


async def test_metrics_are_prometheus_text(client: TestClient[Any, web.Application]) -> None:
    resp = await client.get("/metrics")
    text = await resp.text()
    assert "# TYPE flowstage_runs_started_total counter" in text
    assert "# TYPE flowstage_mailbox_depth gauge" in text
    assert "# TYPE flowstage_event_loop_lag_seconds histogram" in text


async def test_the_process_cpu_and_memory_are_exposed(client: TestClient[Any, web.Application]) -> None:
    """What a load tester on another machine compares its own CPU with."""

    before = await scrape(client)
    cpu = before[("process_cpu_seconds_total", frozenset())]
    rss = before[("process_resident_memory_bytes", frozenset())]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert 0 < cpu <= usage.ru_utime + usage.ru_stime + 0.05  # this process's own
    assert rss > 10 * 2**20
    spent = time.process_time()
    while time.process_time() - spent < 0.05:  # burn 50 ms of CPU: /proc counts 10 ms ticks
        pass
    after = await scrape(client)
    assert after[("process_cpu_seconds_total", frozenset())] > cpu
