"""Flowstage's HTTP side: the aiohttp app around the engine (`flowstage.actors`).

- `app`: `create_app`, the one factory; `keys`: the typed state it puts on the app.
- `routes/`: the handlers, one module per resource, and the route table (`routes.ALL_ROUTES`)
  that both the router and the OpenAPI document (`openapi`) are built from.
- `http`: reading bodies and query parameters into msgspec types; JSON answers and ETags.
- `problems`: every error's status, title and problem type, in one table, and the answer
  with problem+json; `errors`: the errors only HTTP has.
- `edge`: what wraps every route (metrics, rate limit, problems), and the 404/405 routes.
- `ratelimit`: the per-client token bucket; `metrics`: Prometheus.
- `sse`: the SSE hub, with `sse_wire`, `sse_feeds`, `sse_subscribers` and `sse_writer`.
- `runs`: runs live or stored, and ending the runs a dead process left active.
- `processing`: real work for the nodes that read uploaded files; `demo`: sample data.
- `testmode`: what `--test-mode` adds (virtual clock, scripts, journal, `/__flowstage/*`).
- `store/`: SQLite (or memory) or PostgreSQL (`store/postgres.py`) persistence on its own
  thread.
- `bus`: run events through Redis Streams (`bus = "redis"`), with `sse_remote` for runs another
  process runs; `cluster`: which process owns a run, forwarding to it, leases and reaping.
- `cli`: the `flowstage` command; `workers`: `serve --workers N`, the supervisor.
"""
