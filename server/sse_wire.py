"""What an SSE stream puts on the wire: a frame per event, the `stream.gap` notice, the ids a
reconnecting client sends back, and the response that carries them (aiohttp-sse's, telling the
hub when it ends)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp_sse import EventSourceResponse

from flowstage.actors.eventlog import EVENT_NAMES

__all__ = ["SseResponse", "StreamGap", "frame", "gap_frame", "parse_event_id", "requested_event_id"]

_NAMES: dict[str, bytes] = {name: name.encode() for name in EVENT_NAMES}
# An id with more digits than this is simply "greater than anything sent".
_MAX_ID_DIGITS = 18
_HUGE_ID = 10**_MAX_ID_DIGITS


class StreamGap(msgspec.Struct, frozen=True, rename="camel", tag="stream.gap", tag_field="event"):
    """Sent on `/api/events` when events the client asked for cannot be replayed.

    `reason` is `evicted` (older than the hub's ring), `unknown` (newer than anything this
    server sent: typically an id from before a restart) or, on a workflow stream reconnecting
    with an id, `not-resumable`. Events after `lastEventId` and before
    `resumedAt` are lost; the next event has position `resumedAt`. On a workflow stream (whose
    ids are run seqs) both positions are null."""

    reason: str
    last_event_id: int | None
    resumed_at: int | None


_gap_encoder = msgspec.json.Encoder()


def frame(event_id: int, name: str, data: bytes) -> bytes:
    """One SSE message. `data` is one line of JSON (msgspec never writes a raw newline)."""
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (event_id, _NAMES.get(name) or name.encode(), data)


def gap_frame(reason: str, last_id: int, resumed_at: int, *, seq_ids: bool) -> bytes:
    """The `stream.gap` notice. A stream whose ids are run seqs (a workflow's) gets no id and
    no positions: positions mean nothing to its client."""
    if seq_ids:
        data = _gap_encoder.encode(StreamGap(reason, None, None))
        return b"event: stream.gap\ndata: %b\n\n" % data
    data = _gap_encoder.encode(StreamGap(reason, last_id, resumed_at))
    return frame(resumed_at - 1, "stream.gap", data)


def parse_event_id(raw: str | None) -> int | None:
    """A non-negative decimal id, or None if absent or malformed (treated as not sent)."""
    if raw is None:
        return None
    text = raw.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= _MAX_ID_DIGITS else _HUGE_ID


def requested_event_id(request: web.Request) -> int | None:
    """`Last-Event-ID` (what a reconnecting browser sends) wins over `?lastEventId=` (the URL
    keeps the first connection's value); a malformed value counts as absent."""
    from_header = parse_event_id(request.headers.get("Last-Event-ID"))
    if from_header is not None:
        return from_header
    return parse_event_id(request.query.get("lastEventId"))


class SseResponse(EventSourceResponse):
    """aiohttp-sse's response, calling `on_end` when its ping task ends: the client went away
    (a ping failed) or the stream was stopped."""

    def __init__(self, on_end: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_end = on_end

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        first = not self.prepared
        writer = await super().prepare(request)
        # The ping task is aiohttp-sse's own (it has no hook for its end); this class is one.
        if first and self._ping_task is not None:
            self._ping_task.add_done_callback(lambda _task: self._on_end())
        return writer
