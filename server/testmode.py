"""Test mode: what `flowstage serve --test-mode` and the pytest plugin's stages add to the app.

- A virtual clock: Flowstage's own time (node durations, event `ts`, persistence batches) is a
  `ManualClock` that moves only when told — `advance(s)`, `run_until_idle()` — or, with
  autojump on, jumps to the next deadline whenever nothing is in flight (no HTTP request being
  handled, no SSE write under way). aiohttp's own timers, keep-alive and SSE pings stay on real
  time: only Flowstage's clock is virtual.
- Scripted outcomes for every run (`simulation.script.Script`), beside each execute's own.
- A journal of every HTTP request (method, path, status, JSON body) and every run event, each
  with its virtual time.
- `POST /__flowstage/clock` and `POST /__flowstage/reset`; without test mode they do not exist
  (404 like any unknown path).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import math
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from msgspec import Meta

from flowstage.actors.clock import Clock, ManualClock
from flowstage.actors.engine import Engine
from flowstage.server.http import decode_body, json_response
from flowstage.server.keys import EDGE
from flowstage.server.sse import EventHub
from flowstage.server.store import Store
from flowstage.simulation.errors import FieldError, Invalid
from flowstage.simulation.script import Script

__all__ = ["PREFIX", "TEST_MODE", "ClockRequest", "ClockStatus", "Journal", "JournalEvent", "JournalRequest",
           "ResetRequest", "TestMode", "VirtualClock", "enable_test_mode"]

PREFIX = "/__flowstage/"  # test mode's own paths, which the journal leaves out
# How many turns of the loop autojump lets pass, with nothing in flight, before it jumps:
# tasks woken by the last firing (a handler answering, a stream writing) get to run first.
_SETTLE_TURNS = 8
# While something is in flight, or no timer is scheduled, autojump looks again this often.
_POLL_SECONDS = 0.001


class VirtualClock:
    """The stage's clock as a test sees it: `now` in seconds since the stage started or was
    last reset, `advance`, `run_until_idle` and `autojump`. Over the wall clock (a realtime
    stage) it only reads: time cannot be moved."""

    def __init__(self, clock: Clock, busy: Callable[[], bool]) -> None:
        self._clock = clock
        self._busy = busy
        self._origin = clock.now()  # the wall clock's reading at start (realtime stages)
        self._autojump = False
        self._jumper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<VirtualClock now={self.now:g} autojump={self._autojump}>"

    @property
    def now(self) -> float:
        if isinstance(self._clock, ManualClock):  # exact: nanoseconds since the start
            return self._clock.elapsed_ns / 1e9
        return self._clock.now() - self._origin

    @property
    def manual(self) -> ManualClock:
        if not isinstance(self._clock, ManualClock):
            raise RuntimeError("this stage runs on the wall clock (time='realtime'): its time cannot be moved")
        return self._clock

    @property
    def autojump(self) -> bool:
        return self._autojump

    def next_deadline(self) -> float | None:
        """When the next timer falls due, in the same seconds as `now`; None if none is set."""
        if not isinstance(self._clock, ManualClock):
            return None
        deadline = self._clock.next_deadline_ns()
        return None if deadline is None else deadline / 1e9

    async def advance(self, seconds: float) -> None:
        """Run everything due within `seconds` of virtual time, in deadline order."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
                or seconds < 0:
            raise ValueError(f"advance() takes a finite number of seconds >= 0, not {seconds!r}")
        await self.manual.advance(float(seconds))

    async def step(self) -> bool:
        """Advance to the next deadline exactly and fire what is due then; False (and no
        move) when no timer is scheduled."""
        return await self.manual.step()

    async def run_until_idle(self) -> None:
        """Jump from deadline to deadline until no timer is left."""
        await self.manual.run_until_idle()

    def set_autojump(self, on: bool) -> None:
        """Start or stop jumping to the next deadline whenever nothing is in flight."""
        if on:
            self.manual  # noqa: B018 - raises on the wall clock
        self._autojump = on
        if on and self._jumper is None:
            self._jumper = asyncio.get_running_loop().create_task(self._jump(), name="flowstage-autojump")
        elif not on and self._jumper is not None:
            self._jumper.cancel()
            self._jumper = None

    async def close(self) -> None:
        jumper, self._jumper = self._jumper, None
        if jumper is not None:
            jumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jumper

    def reset(self) -> None:
        """Drop every timer and start again from 0: a reset stage stamps its events exactly
        as a new one does (the engine, store and streams were emptied first)."""
        if isinstance(self._clock, ManualClock):
            self._clock.rewind()
        self._origin = self._clock.now()

    async def _jump(self) -> None:
        while True:
            for _ in range(_SETTLE_TURNS):
                await asyncio.sleep(0)
            if self._busy() or not await self.step():
                await asyncio.sleep(_POLL_SECONDS)


@dataclass(frozen=True)
class JournalRequest:
    method: str
    path: str
    query: str
    status: int
    body: Any  # the JSON body, decoded; None when there was none (or it was not JSON)
    at: float  # virtual seconds, like VirtualClock.now


@dataclass(frozen=True)
class JournalEvent:
    run_id: str
    seq: int
    name: str
    raw: bytes
    at: float

    @property
    def data(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.raw)
        return decoded


class Journal:
    """Every HTTP request (but test mode's own) and every run event, in order."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.requests: list[JournalRequest] = []
        self.events: list[JournalEvent] = []
        self._by_run: dict[str, list[JournalEvent]] = {}

    def __repr__(self) -> str:
        return f"<Journal {len(self.requests)} requests, {len(self.events)} events>"

    def clear(self) -> None:
        self.requests.clear()
        self.events.clear()
        self._by_run.clear()

    def record_request(self, request: JournalRequest) -> None:
        self.requests.append(request)

    def on_event(self, run_id: str, workflow_id: str, seq: int, name: str, data: bytes) -> None:
        """Engine listener."""
        event = JournalEvent(run_id, seq, name, data, self._now())
        self.events.append(event)
        self._by_run.setdefault(run_id, []).append(event)

    def run_events(self, run_id: str) -> list[JournalEvent]:
        return list(self._by_run.get(run_id, ()))

    def requests_made(self, method: str, path_glob: str) -> list[JournalRequest]:
        """Requests with this method (any case; `*` for every method) whose path matches the
        glob (`/api/workflows/*/execute`)."""
        wanted = method.upper()
        return [r for r in self.requests
                if wanted in ("*", r.method) and fnmatch.fnmatchcase(r.path, path_glob)]

    def assert_request_made(self, method: str, path_glob: str, count: int | None = None) -> list[JournalRequest]:
        """Fail unless a matching request was made (exactly `count` times, when given); the
        matching requests otherwise. The failure lists the requests that were made."""
        made = self.requests_made(method, path_glob)
        if (count is None and made) or (count is not None and len(made) == count):
            return made
        expected = "at least once" if count is None else f"{count} time{'s' if count != 1 else ''}"
        seen = "\n".join(f"  {r.method} {r.path} -> {r.status}" for r in self.requests) or "  (none)"
        raise AssertionError(f"expected {method.upper()} {path_glob} {expected}, "
                             f"found {len(made)}; requests made:\n{seen}")


class TestMode:
    """Test mode's state on one app: clock, script, journal, and the parts reset empties."""

    __test__ = False  # not a pytest test class

    def __init__(self, clock: Clock, engine: Engine, store: Store, hub: EventHub,
                 autojump: bool) -> None:
        self.clock = virtual = VirtualClock(clock, self.busy)
        self.script = Script()
        self.journal = Journal(lambda: virtual.now)
        self.in_flight = 0  # HTTP requests being handled, streams excepted
        self.autojump_at_start = autojump
        self._engine = engine
        self._store = store
        self._hub = hub
        engine.admission.script_source = lambda workflow: self.script.outcomes_for(
            (n.id, n.type) for n in workflow.nodes)
        engine.add_listener(self.journal.on_event)
        self.seed(0)

    def seed(self, seed: int) -> None:
        """Runs whose execute names no seed draw theirs from this one, so a stage repeats."""
        self._engine.admission.seeds = random.Random(seed)
        self._seed = seed

    def busy(self) -> bool:
        """Something is in flight that time must not jump past: a request being handled, an
        SSE write, or a node's async handler at work."""
        return self.in_flight > 0 or self._hub.writing() or self._engine.working() > 0

    async def reset(self, seed: int | None = None, autojump: bool | None = None) -> None:
        """Empty the store, the runs, the scripts, the journal and the clock; then seed the
        runs and set autojump (as the stage started, unless given)."""
        self.clock.set_autojump(False)
        self._hub.reset()
        await self._engine.reset()
        await self._store.reset()
        self.clock.reset()
        self.script.clear()
        self.journal.clear()
        self.seed(self._seed if seed is None else seed)
        self.clock.set_autojump(self.autojump_at_start if autojump is None else autojump)


TEST_MODE = web.AppKey("flowstage_test_mode", TestMode)


class ClockRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /__flowstage/clock`: `{}` reads the clock; `autojump` turns jumping on or off;
    `advance` runs everything due within that many virtual seconds (after `autojump`)."""

    advance: float | None = None
    autojump: bool | None = None


class ClockStatus(msgspec.Struct, frozen=True):
    now: float
    autojump: bool


def _status(mode: TestMode) -> web.Response:
    return json_response(ClockStatus(mode.clock.now, mode.clock.autojump))


async def clock_control(request: web.Request) -> web.Response:
    mode = request.app[TEST_MODE]
    body = await decode_body(request, ClockRequest, optional=True)
    if body.advance is not None and not (math.isfinite(body.advance) and body.advance >= 0):
        raise Invalid("advance must be a finite number of seconds >= 0",
                      [FieldError(["body", "advance"], "must be a finite number >= 0")])
    if body.autojump is not None:
        mode.clock.set_autojump(body.autojump)
    if body.advance is not None:
        await mode.clock.advance(body.advance)
    return _status(mode)


class ResetRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /__flowstage/reset`, optionally with the seed runs draw from (default: the one the
    server started with) and whether the clock autojumps (default: as it started)."""

    seed: Annotated[int, Meta(ge=0, le=2**53)] | None = None
    autojump: bool | None = None


async def reset(request: web.Request) -> web.Response:
    mode = request.app[TEST_MODE]
    body = await decode_body(request, ResetRequest, optional=True)
    await mode.reset(body.seed, body.autojump)
    return _status(mode)


def _journal_middleware(mode: TestMode) -> Any:
    @web.middleware
    async def journal(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(PREFIX):
            return await handler(request)
        body = None
        if request.content_type == "application/json" and request.can_read_body:
            with contextlib.suppress(Exception):  # a bad body is the handler's to refuse
                body = json.loads(await request.read())
        stream = path.endswith("/events")  # long-lived: never what autojump waits for
        if not stream:
            mode.in_flight += 1
        # Outside the edge, every refusal arrives as a response; only a request
        # whose client went away ends in an exception (recorded as 499, nginx's name for it).
        status = 499
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            if not stream:
                mode.in_flight -= 1
            mode.journal.record_request(JournalRequest(request.method, path, request.query_string, status, body,
                                                       mode.clock.now))

    return journal


def enable_test_mode(app: web.Application, clock: Clock, engine: Engine, store: Store,
                     hub: EventHub, *, autojump: bool) -> TestMode:
    """Add test mode to an app being built: its state, the journal and the two routes."""
    mode = TestMode(clock, engine, store, hub, autojump)
    app[TEST_MODE] = mode
    # Outermost: the journal records the status the client gets, problems included.
    app.middlewares.insert(0, _journal_middleware(mode))
    edge = app[EDGE]
    edge.add_post(app.router, "/__flowstage/clock", clock_control)
    edge.add_post(app.router, "/__flowstage/reset", reset)
    app.cleanup_ctx.append(_autojump_lifecycle)
    return mode


async def _autojump_lifecycle(app: web.Application) -> AsyncIterator[None]:
    mode = app[TEST_MODE]
    mode.clock.set_autojump(mode.autojump_at_start)
    yield
    await mode.clock.close()
