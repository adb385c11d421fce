"""The baseline for bench/sse.py: a bare aiohttp SSE fan-out with no Flowstage code.

`GET /events` holds a stream open. `POST /generate?rate=R&seconds=T&batch_ms=B` produces R
events per second for T seconds of the same shape as Flowstage's (msgspec-encoded
event/runId/workflowId/seq/ts/nodeId, `id:`/`event:`/`data:` frames), encoded once, and every
B ms writes what is due to every subscriber as one chunk; it answers {"events": M} when done.

Usage: python bench/_bare_sse.py PORT
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from datetime import UTC, datetime

import msgspec
from aiohttp import web

_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"}
_NAMES = ("node.queued", "node.started", "node.completed", "edge.data")
_encode = msgspec.json.Encoder().encode

subscribers: set[web.StreamResponse] = set()


class Event(msgspec.Struct, rename="camel"):
    event: str
    run_id: str
    workflow_id: str
    seq: int
    ts: str
    node_id: str


def iso(t: float) -> str:
    ms = round(t * 1000)
    sec, frac = divmod(ms, 1000)
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{frac:03d}Z"


async def events(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers=_HEADERS)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    subscribers.add(resp)
    try:
        await asyncio.Event().wait()  # until the client goes away (handler cancelled)
    finally:
        subscribers.discard(resp)
    return resp


async def generate(request: web.Request) -> web.Response:
    rate = float(request.query["rate"])
    seconds = float(request.query["seconds"])
    batch = float(request.query.get("batch_ms", "5")) / 1000
    run_id, workflow_id = "run_" + secrets.token_hex(11), "wf_" + secrets.token_hex(11)
    start = time.time()
    produced = 0
    total = round(rate * seconds)
    while produced < total:
        now = time.time()
        due = min(total, int((now - start) * rate) + 1)
        if due > produced:
            frames = []
            for seq in range(produced + 1, due + 1):
                # Stamped with when the event was due, as Flowstage stamps an event with its
                # scheduled instant: a late tick counts as latency on both sides.
                ts = iso(start + (seq - 1) / rate)
                name = _NAMES[seq % 4]
                data = _encode(Event(name, run_id, workflow_id, seq, ts, f"n{seq % 10}"))
                frames.append(b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, name.encode(), data))
            chunk = b"".join(frames)
            produced = due
            for resp in list(subscribers):
                try:
                    await resp.write(chunk)
                except ConnectionError:
                    subscribers.discard(resp)
        await asyncio.sleep(batch)
    return web.json_response({"events": produced})


async def count(request: web.Request) -> web.Response:
    return web.json_response({"subscribers": len(subscribers)})


def main() -> None:
    app = web.Application()
    app.router.add_get("/events", events)
    app.router.add_post("/generate", generate)
    app.router.add_get("/subscribers", count)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
                handler_cancellation=True)


if __name__ == "__main__":
    main()
