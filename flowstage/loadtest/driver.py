"""Driving the server over HTTP: `prepare` checks that the URL is a Flowstage server and creates
(or reads) the workflow, then `drive` keeps C runs in flight, each started with one execute
POST (or B at a time with `--batch B`: an execute with `count`), optionally paused and
resumed once to time the controls, and followed to its end: by the test's one `/api/events`
stream (follow.py, the default), by polling `GET /api/runs/{id}` with a backoff, or by reading
the run's own event stream (`parse_sse`). Every request goes through `Http`, which waits out
and retries throttled ones. Once the test has started, every problem is counted in the Tally;
none is raised."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import aiohttp
import msgspec

from flowstage.loadtest.figures import Ideal, Tally, percentiles
from flowstage.loadtest.follow import TERMINAL_STATES, Ending, EventFollower, RunView
from flowstage.loadtest.http import CLIENT_ERRORS, Http, error_kind
from flowstage.loadtest.options import LoadtestError, Options
from flowstage.loadtest.workload import IDEAL_ESTIMATE, build_workflow, critical_path, idle_makespans

__all__ = ["Target", "drive", "parse_sse", "prepare"]

TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.stopped"})

_JSON = {"Content-Type": "application/json"}
_SSE_ATTEMPTS = 3
_POLL_CAP_S = 1.0
_POLL_ERRORS_BEFORE_GIVING_UP = 5

_decode_run = msgspec.json.Decoder(RunView).decode
_decode_any = msgspec.json.Decoder().decode


def _ms_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


class Target:
    """Everything fixed for the duration of the test."""

    def __init__(self, http: Http, opts: Options, workflow_id: str, ideal: Ideal) -> None:
        self.opts = opts
        self.workflow_id = workflow_id
        self.ideal = ideal
        body: dict[str, Any] = {"speed": opts.speed}
        if opts.failure_rate:
            body["failureRate"] = opts.failure_rate
        self._http = http
        self._body = body
        self._executes: dict[int, bytes] = {}  # by count: each request is encoded once
        self.first_poll_s = min(max(ideal.ms / 1000, 0.005), _POLL_CAP_S)
        self.sse_timeout = aiohttp.ClientTimeout(total=None, connect=opts.request_timeout,
                                                 sock_read=60)

    def execute(self, count: int) -> bytes:
        """The execute POST that starts `count` runs: with `--batch` it carries `count` (and is
        answered with a page of runs), else it is a plain execute."""
        request = self._executes.get(count)
        if request is None:
            body = self._body if self.opts.batch == 1 else {**self._body, "count": count}
            request = self._executes[count] = self._http.encode(
                "POST", f"/api/workflows/{self.workflow_id}/execute", data=msgspec.json.encode(body),
                headers=_JSON)
        return request


async def _get_json(http: Http, path: str) -> tuple[int, Any]:
    answer = await http.request("prepare", "GET", path)
    body = answer.body
    return answer.status, (_decode_any(body) if body and answer.status < 300 else body)


async def prepare(http: Http, opts: Options) -> tuple[Target, int]:
    """Check that `opts.url` is a Flowstage server and create (or read) the workflow to run:
    the Target and the workflow's number of nodes. LoadtestError if either fails."""
    try:
        status, page = await _get_json(http, "/api/node-types")
    except CLIENT_ERRORS as exc:
        raise LoadtestError(f"cannot reach {opts.url}: {error_kind(exc)}: {exc}") from exc
    if status != 200 or not isinstance(page, dict) or "items" not in page:
        raise LoadtestError(f"{opts.url} does not look like a Flowstage server: "
                            f"GET /api/node-types answered {status}")
    types = {t["type"]: t for t in page["items"]}
    try:
        if opts.workflow:
            status, workflow = await _get_json(http, f"/api/workflows/{opts.workflow}")
            if status != 200:
                raise LoadtestError(f"workflow {opts.workflow!r}: GET answered {status}")
        else:
            body = build_workflow(opts.shape, opts.nodes, types,
                                  f"loadtest {opts.shape} x{opts.nodes}")
            answer = await http.request("prepare", "POST", "/api/workflows",
                                        data=msgspec.json.encode(body), headers=_JSON)
            if answer.status != 201:
                raise LoadtestError(f"creating the workflow answered {answer.status}: "
                                    f"{answer.body[:500].decode(errors='replace')}")
            workflow = _decode_any(answer.body)
    except CLIENT_ERRORS as exc:
        raise LoadtestError(f"preparing the workflow failed: {error_kind(exc)}: {exc}") from exc
    ms, path = critical_path(workflow, types)
    idle = percentiles([x / opts.speed for x in idle_makespans(workflow, types)])
    ideal = Ideal(ms=round(ms / opts.speed, 3), ms_at_speed_1=round(ms, 3),
                  estimate=IDEAL_ESTIMATE, critical_path=path, idle_ms=idle)
    return Target(http, opts, workflow["id"], ideal), len(workflow["nodes"])


class _Page(msgspec.Struct):
    items: list[RunView]


_decode_page = msgspec.json.Decoder(_Page).decode


async def _start(http: Http, target: Target, tally: Tally, follower: EventFollower | None,
                 first: int, count: int) -> None:
    """Start `count` runs with one execute (the first being run number `first` of the test)
    and follow each to its end; every problem is counted, none raised."""
    epoch = follower.epoch if follower is not None else 0
    try:
        answer = await http.send("execute", target.execute(count))
    except CLIENT_ERRORS as exc:
        tally.error("execute", error_kind(exc))
        return
    if answer.status != 202:
        tally.error("execute", f"HTTP {answer.status}")
        return
    # Timed from the attempt that was accepted: throttled attempts are counted apart.
    sent = time.perf_counter() - answer.seconds
    tally.execute_ms.append(answer.seconds * 1000)
    try:
        runs = [_decode_run(answer.body)] if target.opts.batch == 1 else _decode_page(answer.body).items
    except msgspec.DecodeError:
        tally.error("execute", "undecodable run")
        return
    tally.started += len(runs)
    if len(runs) == 1:
        await _follow(http, target, tally, follower, runs[0], first, sent, epoch)
        return
    outcomes = await asyncio.gather(*(_follow(http, target, tally, follower, run, first + i, sent, epoch)
                                      for i, run in enumerate(runs)), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):  # a bug here must not stop the other runs
            tally.error("loadtest", error_kind(outcome))


async def _follow(http: Http, target: Target, tally: Tally, follower: EventFollower | None,
                  run: RunView, index: int, sent: float, epoch: int) -> None:
    """Follow one started run to its end and count it (`sent`: when its execute was sent)."""
    sampled = index < target.opts.control_sample
    if sampled:
        await _control_sample(http, tally, run.id)
    following = target.opts.following
    if follower is not None:
        ending = await follower.wait(run.id, epoch)
    elif following == "run-events":
        ending = await _follow_run_events(http, target, tally, run.id)
    else:
        ending = await _poll(http, target, tally, run.id, target.first_poll_s)
    if ending is None:
        return
    # A paused-and-resumed run's makespan includes the pause: keep it out of the figures.
    makespan = None if sampled or not ending.finished_at else \
        _ms_between(run.created_at, ending.finished_at)
    tally.ended(ending.state, makespan, (ending.seen - sent) * 1000)


async def _control_sample(http: Http, tally: Tally, run_id: str) -> None:
    for action in ("pause", "resume"):
        try:
            answer = await http.request(action, "POST", f"/api/runs/{run_id}/{action}")
        except CLIENT_ERRORS as exc:
            tally.error(action, error_kind(exc))
            return
        if answer.status == 409:  # finished before the control arrived: not an error
            tally.control_too_late += 1
            return
        if answer.status != 200:
            tally.error(action, f"HTTP {answer.status}")
            return
        tally.control_ms[action].append(answer.seconds * 1000)


async def _poll(http: Http, target: Target, tally: Tally, run_id: str,
                first_delay: float) -> Ending | None:
    """GET the run until it is finished: first when it should be, then backing off by 1.5x
    up to 1 s; If-None-Match makes an unchanged answer a bodiless 304."""
    path = f"/api/runs/{run_id}"
    delay = first_delay
    step = max(0.01, first_delay / 4)
    etag: str | None = None
    errors = 0
    while True:
        if delay > 0:
            await asyncio.sleep(delay)
        delay, step = step, min(step * 1.5, _POLL_CAP_S)
        try:
            answer = await http.request("poll", "GET", path,
                                        headers={"If-None-Match": etag} if etag else None)
            if answer.status == 200:
                etag = answer.etag
                run = _decode_run(answer.body)
                if run.state in TERMINAL_STATES:
                    return Ending(run.state, run.finished_at, time.perf_counter())
                errors = 0
                continue
            if answer.status == 304:
                errors = 0
                continue
            tally.error("poll", f"HTTP {answer.status}")
            if answer.status < 500 and answer.status != 429:
                return None
        except CLIENT_ERRORS as exc:
            tally.error("poll", error_kind(exc))
        errors += 1
        if errors >= _POLL_ERRORS_BEFORE_GIVING_UP:
            return None


def parse_sse(buffer: bytearray, chunk: bytes) -> Iterator[tuple[str, int | None]]:
    """Feed one chunk of a text/event-stream; yield (event name, id) for every complete
    message. `buffer` keeps the incomplete tail between calls. Comments are skipped."""
    buffer += chunk
    if b"\r" in buffer:  # CRLF line ends; a CR at the very end may meet its LF next time
        tail = buffer.endswith(b"\r")
        buffer[:] = bytes(buffer[:-1] if tail else buffer).replace(b"\r\n", b"\n")
        if tail:
            buffer += b"\r"
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return
        message = bytes(buffer[:end])
        del buffer[:end + 2]
        name, ident, has_field = "message", None, False
        for line in message.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"event":
                name, has_field = value.decode(), True
            elif field == b"id":
                ident, has_field = (int(value) if value.isdigit() else None), True
            elif field == b"data":
                has_field = True
        if has_field:
            yield name, ident


async def _follow_run_events(http: Http, target: Target, tally: Tally,
                             run_id: str) -> Ending | None:
    """Read the run's event stream until its terminal event (resuming with Last-Event-ID
    if it drops), then read the run record once for its times."""
    url = http.url(f"/api/runs/{run_id}/events")
    last = 0
    for _ in range(_SSE_ATTEMPTS):
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
        try:
            async with http.stream("events", url, headers, target.sse_timeout) as resp:
                if resp.status != 200:
                    tally.error("events", f"HTTP {resp.status}")
                    break
                buffer = bytearray()
                async for chunk in resp.content.iter_any():
                    for name, ident in parse_sse(buffer, chunk):
                        if ident is not None:
                            if ident <= last:
                                continue  # a replay after a reconnect
                            last = ident
                        tally.events += 1
                        if name in TERMINAL_EVENTS:
                            return await _poll(http, target, tally, run_id, 0)
                tally.error("events", "stream closed before the terminal event")
        except CLIENT_ERRORS as exc:
            tally.error("events", error_kind(exc))
    # The stream could not be followed: fall back to polling, so the run is still counted.
    return await _poll(http, target, tally, run_id, target.first_poll_s)


async def drive(http: Http, target: Target, tally: Tally, follower: EventFollower | None) -> None:
    """Start `tally.requested` runs, keeping `concurrency` in flight, each followed to its end
    (by `follower` when there is one)."""
    batch = target.opts.batch
    firsts = iter(range(0, tally.requested, batch))

    async def worker() -> None:
        for first in firsts:  # one iterator shared by every worker: each run once
            count = min(batch, tally.requested - first)
            tally.in_flight += count
            try:
                await _start(http, target, tally, follower, first, count)
            except Exception as exc:  # a bug here must not stop the other workers
                tally.error("loadtest", error_kind(exc))
            finally:
                tally.in_flight -= count

    async with asyncio.TaskGroup() as group:
        # C runs in flight: C / B executes of B runs each (at least one).
        for _ in range(min(-(-target.opts.concurrency // batch), -(-tally.requested // batch))):
            group.create_task(worker(), name="flowstage-loadtest-worker")
