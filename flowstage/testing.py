"""Flowstage inside a test suite: a Stage (Flowstage's real app on an in-memory store with a
virtual clock), run handles that drive a run to its end, scripted outcomes and a journal.

The pytest plugin (`flowstage.pytest_plugin`, registered as the `pytest11` entry point
`flowstage`) builds these for you: the `flowstage` fixture is a Stage. docs/testing.md has the
whole story; in short:

    async def test_a_failing_fetch_skips_the_store(flowstage):
        wf = await flowstage.create_workflow([("t", "manual_trigger"), ("h", "http_request"),
                                              ("o", "output")])
        flowstage.script.node("h").fails("timed out", after=2.0)
        run = await flowstage.execute(wf["id"])
        final = await run.run_until_complete()
        assert final["state"] == "failed"
        assert run.events.first("node.failed", node="h")["error"]["message"] == "timed out"
        assert run.node("o")["state"] == "skipped"
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, overload

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient

from flowstage.config import Settings
from flowstage.server.app import create_app
from flowstage.server.keys import ENGINE
from flowstage.server.testmode import TEST_MODE, Journal, JournalRequest, TestMode, VirtualClock
from flowstage.simulation.script import NodeScript, Script, ScriptedOutcome

__all__ = ["Events", "Journal", "JournalRequest", "LiveServer", "NodeScript", "RunHandle", "Script", "ScriptedOutcome",
           "Stage", "StageError", "StageStalled", "TimeMode", "VirtualClock"]

TimeMode = Literal["manual", "autojump", "realtime"]
TERMINAL = frozenset({"completed", "failed", "stopped"})
_TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.stopped"})
_WAITING = frozenset({"idle", "queued", "running", "paused"})
# autojump and realtime: how often a waiting run handle looks at its run (real seconds).
_POLL_SECONDS = 0.005


class StageError(AssertionError):
    """The API refused what the test asked (the problem+json detail is in the message)."""


class StageStalled(AssertionError):
    """A run cannot end: it is paused, a node hangs, or nothing is scheduled before the bound.
    `waiting` names the nodes that have not finished."""

    def __init__(self, message: str, run_id: str, waiting: Sequence[str]) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.waiting = list(waiting)


class Events(Sequence[dict[str, Any]]):
    """A run's events so far, in order: each is the event's `data` (with `event` = its name)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self._items = items

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Events: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | Events:
        if isinstance(index, slice):
            return Events(self._items[index])
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"Events({[(e['event'], e.get('nodeId')) for e in self._items]!r})"

    def names(self) -> list[str]:
        return [e["event"] for e in self._items]

    def named(self, name: str | None = None, node: str | None = None) -> Events:
        """The events with this name (and of this node, when given)."""
        return Events([e for e in self._items
                       if (name is None or e["event"] == name) and (node is None or e.get("nodeId") == node)])

    def first(self, name: str | None = None, node: str | None = None) -> dict[str, Any]:
        """The first matching event; AssertionError naming what was there if none matches."""
        found = self.named(name, node)
        if not found:
            raise AssertionError(f"no {name or 'event'}{f' of node {node!r}' if node else ''}; events: {self!r}")
        return found[0]

    def last(self, name: str | None = None, node: str | None = None) -> dict[str, Any]:
        found = self.named(name, node)
        if not found:
            raise AssertionError(f"no {name or 'event'}{f' of node {node!r}' if node else ''}; events: {self!r}")
        return found[-1]


class Stage:
    """Flowstage's real app, served on the test's loop, with a virtual clock.

    `.client` is the aiohttp test client (every request goes through real HTTP), `.clock` the
    VirtualClock, `.script` the scripted outcomes for every run, `.journal` every request and
    event. `time` is how Flowstage's clock moves: "manual" (only when told), "autojump" (to the
    next deadline whenever nothing is in flight) or "realtime" (the wall clock)."""

    def __init__(self, client: TestClient[Any, web.Application], time: TimeMode = "manual") -> None:
        self.client = client
        self.app = client.app
        self.time = time
        self.mode: TestMode = self.app[TEST_MODE]
        self.clock: VirtualClock = self.mode.clock
        self.script: Script = self.mode.script
        self.journal: Journal = self.mode.journal

    def __repr__(self) -> str:
        return f"<Stage {self.time} time, now={self.clock.now:g}>"

    async def create_workflow(self, body: dict[str, Any] | Iterable[tuple[str, str]] | None = None,
                              /, **fields: Any) -> dict[str, Any]:
        """Create a workflow; the API's JSON of it. `body` is the API's body, or a list of
        `(node id, node type)` pairs, chained in that order from each node's first output to
        the next one's first input. `fields` add to or override the body (`name=...`)."""
        if body is None:
            document: dict[str, Any] = {}
        elif isinstance(body, dict):
            document = dict(body)
        else:
            document = chain(body)
        document.setdefault("name", "Stage workflow")
        document.update(fields)
        return await _call(self.client, "POST", "/api/workflows", document, 201)

    def run(self, run_id: str) -> RunHandle:
        """A handle on a run started some other way (by the code under test, say)."""
        run = self.app[ENGINE].snapshot(run_id)
        if run is None:
            raise LookupError(f"no run {run_id!r} in memory on this stage")
        return RunHandle(self, run_id, run.workflow_id)

    async def execute(self, workflow_id: str, **body: Any) -> RunHandle:
        """Start a run (`body` is execute's JSON body: seed, speed, failureRate, inputs,
        script, ...); a RunHandle on it."""
        run = await _call(self.client, "POST", f"/api/workflows/{workflow_id}/execute", body, 202)
        return RunHandle(self, run["id"], run["workflowId"])


async def _call(client: TestClient[Any, web.Application], method: str, path: str, body: Any,
                expect: int) -> dict[str, Any]:
    """One API call of a stage; StageError, with the problem+json, unless it answers `expect`."""
    resp = await client.request(method, path, json=body)
    payload = await resp.json(content_type=None)
    if resp.status != expect:
        raise StageError(f"{method} {path} answered {resp.status}: {json.dumps(payload)}")
    result: dict[str, Any] = payload
    return result


def chain(nodes: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A workflow body: the nodes in a row, each joined to the next."""
    pairs = list(nodes)
    return {
        "nodes": [{"id": node_id, "type": node_type, "position": {"x": 200 * i, "y": 0}}
                  for i, (node_id, node_type) in enumerate(pairs)],
        "connections": [{"id": f"{a}-{b}", "source": a, "target": b}
                        for (a, _), (b, _) in itertools.pairwise(pairs)],
    }


class RunHandle:
    """One run of a Stage."""

    def __init__(self, stage: Stage, run_id: str, workflow_id: str) -> None:
        self.stage = stage
        self.id = run_id
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    async def snapshot(self) -> dict[str, Any]:
        """`GET /api/runs/{id}`."""
        return await _call(self.stage.client, "GET", f"/api/runs/{self.id}", None, 200)

    @property
    def events(self) -> Events:
        return Events([{"event": e.name, **e.data} for e in self.stage.journal.run_events(self.id)])

    def node(self, node_id: str) -> dict[str, Any]:
        """The node as the run has it now: state, progress, startedAt, finishedAt, output,
        error, and `inputs` (connection id -> the payload delivered on it)."""
        engine = self.stage.app[ENGINE]
        run = engine.snapshot(self.id)
        flows = engine.dataflow(self.id)
        if run is None or flows is None:
            raise LookupError(f"run {self.id} is no longer in memory; read it with `await snapshot()`")
        if node_id not in run.nodes:
            raise KeyError(f"run {self.id} has no node {node_id!r} (it has {sorted(run.nodes)})")
        node: dict[str, Any] = msgspec.to_builtins(run.nodes[node_id])
        node["inputs"] = {f.connection_id: f.last_payload for f in flows
                          if f.target == node_id and f.state in ("active", "done")}
        return node

    async def _final(self) -> dict[str, Any]:
        """The finished run as `GET /api/runs/{id}` gives it, from memory when it is there."""
        run = self.stage.app[ENGINE].snapshot(self.id)
        if run is None:
            return await self.snapshot()
        final: dict[str, Any] = msgspec.to_builtins(run)
        return final

    def _state(self) -> tuple[str, dict[str, str]]:
        """The run's state, and the state of each node that has not finished."""
        run = self.stage.app[ENGINE].snapshot(self.id)
        if run is None:  # left memory: it finished
            return "completed", {}
        return run.state, {node_id: n.state for node_id, n in run.nodes.items() if n.state in _WAITING}

    def _stalled(self, why: str, waiting: dict[str, str]) -> StageStalled:
        nodes = ", ".join(f"{node_id} ({state})" for node_id, state in waiting.items())
        return StageStalled(f"run {self.id} cannot complete: {why}; not finished: {nodes}", self.id, list(waiting))

    async def run_until_complete(self, max_virtual: float = 3600.0) -> dict[str, Any]:
        """Let the run end (moving a manual clock from deadline to deadline); its final
        snapshot. StageStalled, instead of a hang, if it is paused, a node hangs, or it has
        not ended within `max_virtual` seconds of Flowstage's time."""
        clock = self.stage.clock
        engine = self.stage.app[ENGINE]
        start = clock.now
        while True:
            state, waiting = self._state()
            if state in TERMINAL:
                return await self._final()
            if state == "paused":
                live = engine.snapshot(self.id)
                at = live.paused_at if live is not None else None
                where = f" ({at.reason} at {at.node_id})" if at is not None and at.node_id else ""
                raise self._stalled(f"it is paused{where}", waiting)
            if engine.stalled(self.id):
                raise self._stalled("nothing is scheduled (a node hangs)", waiting)
            if self.stage.time == "manual" and not self.stage.mode.busy():
                deadline = clock.next_deadline()
                if deadline is None:
                    raise self._stalled("nothing is scheduled", waiting)
                if deadline - start > max_virtual:
                    raise self._stalled(f"not finished within {max_virtual:g} virtual seconds", waiting)
                await clock.step()
                continue
            if self.stage.time != "manual" and clock.now - start > max_virtual:
                raise self._stalled(f"not finished within {max_virtual:g} seconds", waiting)
            # Time moves by itself (autojump, realtime), or something is in flight.
            await asyncio.sleep(_POLL_SECONDS)

    async def sse(self, until: str | None = "run.completed", max_virtual: float = 3600.0,
                  timeout: float = 10.0) -> Events:  # noqa: ASYNC109 - bounds only the tail
        """Read the run's real SSE stream (`GET /api/runs/{id}/events`) until the event named
        `until` arrives or the stream ends; the events read, parsed from the wire. It always
        ends: time is driven as by `run_until_complete`, and the read is bounded by
        `timeout` real seconds after the run ended."""
        resp = await self.stage.client.get(f"/api/runs/{self.id}/events")
        if resp.status != 200:
            raise StageError(f"GET /api/runs/{self.id}/events answered {resp.status}")
        events: list[dict[str, Any]] = []

        async def read() -> None:
            buffer = b""
            while True:
                chunk = await resp.content.readany()
                if not chunk:
                    return
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    fields = dict(line.split(": ", 1) for line in block.decode().split("\n")
                                  if line and not line.startswith(":"))
                    if "data" in fields:
                        events.append({"event": fields.get("event"), **json.loads(fields["data"])})
                        if until is not None and fields.get("event") == until:
                            return

        reader = asyncio.ensure_future(read())
        try:
            if not reader.done():
                driver = asyncio.ensure_future(self.run_until_complete(max_virtual))
                done, _ = await asyncio.wait({reader, driver}, return_when=asyncio.FIRST_COMPLETED)
                if driver in done:
                    driver.result()  # StageStalled surfaces here
                    await asyncio.wait_for(reader, timeout)
                else:
                    driver.cancel()
            await reader
        finally:
            reader.cancel()
            resp.close()
        return Events(events)


class LiveServer:
    """A Flowstage server in a thread of its own, on a free port of 127.0.0.1, in test mode."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="flowstage-live", daemon=True)
        self.url = ""

    def __repr__(self) -> str:
        return f"<LiveServer {self.url}>"

    def start(self) -> None:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        self.url = f"http://127.0.0.1:{port}"

    async def _start(self) -> int:
        self._runner = web.AppRunner(create_app(self._settings), handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port: int = self._runner.addresses[0][1]  # read back: the kernel chose it
        return port

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def post(self, path: str, body: Any = None) -> Any:
        """POST JSON to the server; the decoded answer."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def reset(self, time: TimeMode = "manual", seed: int = 0) -> None:
        """Empty store, runs, scripts, journal and clock; then set the clock's mode and seed."""
        self.post("/__flowstage/reset", {"seed": seed, "autojump": time == "autojump"})

    def clock(self, *, advance: float | None = None, autojump: bool | None = None) -> dict[str, Any]:
        """`POST /__flowstage/clock`: `{"now": seconds, "autojump": bool}`."""
        body: dict[str, Any] = {}
        if advance is not None:
            body["advance"] = advance
        if autojump is not None:
            body["autojump"] = autojump
        result: dict[str, Any] = self.post("/__flowstage/clock", body)
        return result
