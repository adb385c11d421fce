"""Following every run of a test through one multiplexed `GET /api/events?workflowId=` stream
(`--follow events`, the default): `EventFollower` holds that stream open, resolves each run's
wait with its terminal event (`run.completed|failed|stopped`: the server's finish time `ts`),
and makes sure no run is lost:
- a dropped stream is reopened at once with `Last-Event-ID`, so it resumes with no gap and no
  duplicate;
- on a `stream.gap` (events the server no longer held), the runs still waited for are read
  once with `GET /api/runs/{id}`; a run started before the gap but not yet waited for is read
  when its wait begins.

The stream is read by `FrameScanner` without parsing every frame: it counts the frames, keeps
the last id and finds the few frames it needs (terminal events, gaps) with byte searches; only
those are decoded, into a msgspec Struct of the three fields read. It relies on what a
Flowstage server writes: every frame on /api/events starts with an `id: ` line."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp
import msgspec

from flowstage.loadtest.figures import Tally
from flowstage.loadtest.http import CLIENT_ERRORS, Http, error_kind
from flowstage.loadtest.options import LoadtestError

__all__ = ["TERMINAL_STATES", "Ending", "EventFollower", "FrameScanner", "RunView"]

TERMINAL_STATES = frozenset({"completed", "failed", "stopped"})
_STATE_OF = {b"run.completed": "completed", b"run.failed": "failed", b"run.stopped": "stopped"}
_GAP = b"stream.gap"
# `\n` before `event:` always holds (a frame starts with its id line, and the scanner keeps
# the newline that ended the previous frame), and a literal prefix lets the regex engine
# skip from one candidate to the next with a fast search.
_WANTED = re.compile(rb"\nevent: (run\.completed|run\.failed|run\.stopped|stream\.gap)\n"
                     rb"data: ([^\n]*)")
# Consecutive failed attempts to reopen the stream before the runs still waited for are
# given up (counted as unfinished); between them the wait doubles from 0.1 s up to 2 s.
_MAX_RECONNECT_FAILURES = 8
# Runs read at once after a gap, and attempts for each.
_GAP_READS_AT_ONCE = 16
_GAP_READ_ATTEMPTS = 3
# Terminal events of runs not (yet) waited for: a run can end before its execute answer has
# been read. Bounded, for a reused workflow that other clients run too.
_MAX_EARLY = 100_000
_GAP_READ = "events (reading a run after a gap)"


class RunView(msgspec.Struct, rename="camel"):
    """The few fields of a Run the load tester reads."""

    id: str
    state: str
    created_at: str
    finished_at: str | None = None


class Ending(msgspec.Struct, frozen=True):
    """How a run ended, as the load tester learnt it."""

    state: str
    finished_at: str | None  # the server's, RFC 3339; None if not known
    seen: float  # time.perf_counter() when the load tester learnt it


class _Frame(msgspec.Struct, rename="camel"):
    """What is read of a terminal event's or a gap's data; every other field is skipped."""

    run_id: str = ""
    ts: str | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode
_decode_run = msgspec.json.Decoder(RunView).decode


class FrameScanner:
    """Reads one text/event-stream connection chunk by chunk. `feed` answers how many event
    frames the chunk completed and the (event, data) of the wanted ones among them;
    `last_id` is the id of the last complete frame."""

    __slots__ = ("_tail", "last_id")

    def __init__(self) -> None:
        self._tail = b"\n"  # as if a frame had just ended: see _WANTED
        self.last_id: int | None = None

    def feed(self, chunk: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
        data = self._tail + chunk
        cr = b""
        if b"\r" in data:  # CRLF or CR line ends; a CR at the very end may meet its LF next
            if data.endswith(b"\r"):
                data, cr = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data + cr
            return 0, []
        part = data[:end + 1]
        self._tail = data[end + 1:] + cr
        at = part.rfind(b"\nid: ")
        if at >= 0:
            value = part[at + 5:part.find(b"\n", at + 5)]
            if value.isdigit():
                self.last_id = int(value)
        return part.count(b"\nevent: "), _WANTED.findall(part)


class EventFollower:
    """The stream that follows every run of one workflow: `wait(run_id, epoch)` until the run
    ends. Use it inside `running()`, which opens the stream (LoadtestError if the server
    refuses it) and closes it."""

    def __init__(self, http: Http, tally: Tally, workflow_id: str,
                 timeout: aiohttp.ClientTimeout) -> None:
        self._http = http
        self._tally = tally
        self._url = http.url("/api/events").with_query(workflowId=workflow_id)
        self._timeout = timeout
        self._waiting: dict[str, asyncio.Future[Ending | None]] = {}
        self._early: dict[str, Ending] = {}
        self._last_id: int | None = None
        self._gone = False  # the stream could not be reopened: nothing more will come
        self._tasks: set[asyncio.Task[None]] = set()
        # Gaps so far: a run whose execute was sent before the latest gap is read once.
        self.epoch = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[EventFollower]:
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spawn(self._read(opened))
        try:
            await opened
            yield self
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self, run_id: str, epoch: int) -> Ending | None:
        """How run `run_id` ended (None: it could not be followed). `epoch` is `self.epoch`
        when its execute was sent."""
        early = self._early.pop(run_id, None)
        if early is not None:
            return early
        if self._gone:
            return None
        future: asyncio.Future[Ending | None] = asyncio.get_running_loop().create_future()
        self._waiting[run_id] = future
        if epoch != self.epoch:  # a gap since its execute was sent: its end may be lost
            self._spawn(self._read_runs([run_id]))
        try:
            return await future
        finally:
            self._waiting.pop(run_id, None)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="flowstage-loadtest-events")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ended(self, run_id: str, ending: Ending) -> None:
        future = self._waiting.pop(run_id, None)
        if future is None:
            if len(self._early) >= _MAX_EARLY:
                del self._early[next(iter(self._early))]
            self._early[run_id] = ending
        elif not future.done():
            future.set_result(ending)

    def _give_up(self) -> None:
        self._gone = True
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        self._waiting.clear()

    async def _read(self, opened: asyncio.Future[None]) -> None:
        try:
            await self._hold(opened)
        except Exception as exc:  # a bug here must not leave every run waiting forever
            self._tally.error("events", error_kind(exc))
            if not opened.done():
                opened.set_exception(exc)
            self._give_up()

    async def _hold(self, opened: asyncio.Future[None]) -> None:
        """Hold the stream open, reopening it with Last-Event-ID whenever it ends."""
        failures = 0
        tally = self._tally
        while True:
            headers = {"Accept": "text/event-stream"}
            if tally.connections:  # resuming: 0 replays what the server still holds
                headers["Last-Event-ID"] = str(self._last_id or 0)
            streaming = False
            try:
                async with self._http.stream("events", self._url, headers, self._timeout) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (),
                                                          status=resp.status)
                    tally.connections += 1
                    streaming, failures = True, 0
                    if not opened.done():
                        opened.set_result(None)
                    await self._consume(resp)
            except CLIENT_ERRORS as exc:
                kind = f"HTTP {exc.status}" if isinstance(exc, aiohttp.ClientResponseError) \
                    else error_kind(exc)
                if not opened.done():
                    opened.set_exception(LoadtestError(
                        f"following runs on GET /api/events failed: {kind} (--follow poll "
                        "follows them without it)"))
                    return
                if not streaming:  # a drop while streaming is resumed, not an error
                    tally.error("events", kind)
                    failures += 1
                    if failures >= _MAX_RECONNECT_FAILURES:
                        self._give_up()
                        return
                    await asyncio.sleep(min(0.05 * 2 ** failures, 2.0))

    async def _consume(self, resp: aiohttp.ClientResponse) -> None:
        scanner = FrameScanner()
        tally = self._tally
        async for chunk in resp.content.iter_any():
            count, wanted = scanner.feed(chunk)
            tally.events += count
            if scanner.last_id is not None:
                self._last_id = scanner.last_id
            if not wanted:
                continue
            seen = time.perf_counter()
            for name, data in wanted:
                frame = _decode_frame(data)
                if name == _GAP:
                    tally.events -= 1  # a notice from the stream, not a run's event
                    tally.gaps += 1
                    self.epoch += 1
                    self._spawn(self._read_runs(list(self._waiting)))
                else:
                    self._ended(frame.run_id, Ending(_STATE_OF[name], frame.ts, seen))

    async def _read_runs(self, run_ids: list[str]) -> None:
        """After a gap: read each run; those that have ended, end."""
        limit = asyncio.Semaphore(_GAP_READS_AT_ONCE)

        async def read(run_id: str) -> None:
            async with limit:
                for _ in range(_GAP_READ_ATTEMPTS):
                    try:
                        answer = await self._http.request("events", "GET", f"/api/runs/{run_id}")
                        self._tally.gap_reads += 1
                        if answer.status != 200:
                            self._tally.error(_GAP_READ, f"HTTP {answer.status}")
                            continue
                        run = _decode_run(answer.body)
                    except CLIENT_ERRORS as exc:
                        self._tally.error(_GAP_READ, error_kind(exc))
                        continue
                    if run.state in TERMINAL_STATES:
                        self._ended(run_id, Ending(run.state, run.finished_at,
                                                   time.perf_counter()))
                    return
                future = self._waiting.pop(run_id, None)  # it cannot be followed: give it up
                if future is not None and not future.done():
                    future.set_result(None)

        await asyncio.gather(*(read(run_id) for run_id in run_ids))
