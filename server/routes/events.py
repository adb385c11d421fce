"""Server-Sent Events: a run's events, a workflow's live events, and one multiplexed stream of
many runs. Handlers read the request; the hub (`server.sse`) does the streaming."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from flowstage.server.keys import SSE
from flowstage.server.openapi import EventStream, Param, Route
from flowstage.server.sse_wire import StreamGap
from flowstage.simulation.errors import FieldError, Invalid
from flowstage.simulation.models import EVENT_TYPES

__all__ = ["MAX_FILTERS", "ROUTES"]

MAX_FILTERS = 100


def _filter(request: web.Request, name: str) -> list[str]:
    values = [v for v in request.query.getall(name, []) if v]  # an empty value is no filter
    if len(values) > MAX_FILTERS:
        raise Invalid(f"At most {MAX_FILTERS} {name} values",
                      [FieldError(["query", name], f"at most {MAX_FILTERS} values")])
    return values


async def run_events(request: web.Request) -> web.StreamResponse:
    return await request.app[SSE].run_stream(request, request.match_info["runId"])


async def workflow_events(request: web.Request) -> web.StreamResponse:
    return await request.app[SSE].workflow_stream(request, request.match_info["id"])


async def events(request: web.Request) -> web.StreamResponse:
    run_ids, workflow_ids = _filter(request, "runId"), _filter(request, "workflowId")
    return await request.app[SSE].all_stream(request, run_ids, workflow_ids)


_FRAME = ("Each message is `id: <n>`, `event: <name>`, `data: <one line of JSON>` (the data "
          "carries event, runId, workflowId, seq, ts and, for node events, nodeId); a `: ping` "
          "comment comes every `sse_ping_seconds`.")
# A run's stream never has a gap; the other two may send stream.gap.
_STREAM_EVENTS: tuple[type[msgspec.Struct], ...] = (*EVENT_TYPES, StreamGap)
_LAST_EVENT_ID = Param(
    "Last-Event-ID", "Resume after this id (what EventSource sends when it reconnects); "
    "wins over ?lastEventId. A value that is not a non-negative integer is ignored.",
    location="header")
_LAST_EVENT_ID_QUERY = Param(
    "lastEventId", "Resume after this id, for clients that cannot set headers. A value that is "
    "not a non-negative integer is ignored.")

ROUTES = (
    Route("GET", "/api/runs/{runId}/events", run_events,
          "A run's events, then live ones; ends after the terminal event", "events",
          operation_id="streamRunEvents",
          headers=(_LAST_EVENT_ID,), query=(_LAST_EVENT_ID_QUERY,), errors=(404, 503),
          stream=EventStream("RunEvent", EVENT_TYPES,
              f"{_FRAME} `id` = the run's `seq` (1, 2, ...). Without an id the stream starts "
              "at the run's first event; with one, every event after it, then live ones, with "
              "no gap and no duplicate. An id beyond the run's last event continues from the "
              "end (a finished run's stream then closes at once). The stream closes after "
              "run.completed, run.failed or run.stopped.")),
    Route("GET", "/api/workflows/{id}/events", workflow_events,
          "Live events of every run of the workflow", "events",
          operation_id="streamWorkflowEvents", errors=(404, 503),
          stream=EventStream("StreamEvent", _STREAM_EVENTS,
              f"{_FRAME} Every event emitted while the stream is open by any run of the "
              "workflow, including later events of runs already active when it opened (earlier "
              "events are not replayed). `id` = that run's `seq`, so ids of different runs "
              "overlap; a reconnect with Last-Event-ID first gets a stream.gap event "
              "(reason not-resumable). Resume per run with "
              "/api/runs/{runId}/events, or use /api/events?workflowId=, whose ids are "
              "resumable. Never closes by itself.")),
    Route("GET", "/api/events", events,
          "Live events of many runs in one stream, resumable", "events",
          operation_id="streamEvents", headers=(_LAST_EVENT_ID,),
          query=(Param("workflowId", "Only runs of this workflow; repeat for several",
                       Annotated[list[str], Meta(max_length=MAX_FILTERS)]),
                 Param("runId", "Only this run; repeat for several",
                       Annotated[list[str], Meta(max_length=MAX_FILTERS)]),
                 _LAST_EVENT_ID_QUERY),
          errors=(422, 503),
          stream=EventStream("StreamEvent", _STREAM_EVENTS,
              f"{_FRAME} `id` = the server's global event position (1, 2, ... in the order "
              "events were emitted, across all runs; data still carries runId and seq). An "
              "event is sent if its run or its workflow is listed (no filter: every event). "
              "Without an id the stream starts live. With one, every matching event after it "
              "that the server's ring (`event_ring_size` recent events) still holds; if some "
              "are no longer held (`reason: evicted`), or the id is newer than anything this "
              "server sent, e.g. from before a restart (`reason: unknown`), a `stream.gap` "
              "event {\"event\":\"stream.gap\",\"reason\",\"lastEventId\",\"resumedAt\"} comes "
              "first, with id resumedAt - 1. Never closes by itself.")),
)
