"""Ownership of runs among processes that share PostgreSQL and Redis (`bus = "redis"`).

A run lives in the process that started it, its owner. In Redis:
- `flowstage:worker:<id>`: a process's lease, holding the address other processes reach it
  at; renewed every half second (from a thread of its own), it expires `LEASE_SECONDS` after
  the last renewal.
- `flowstage:workers`: every process that has held a lease and not yet been reaped.
- `flowstage:owner:<runId>`: the run's owner; `flowstage:worker:<id>:runs`: a process's active
  runs; `flowstage:latest:<workflowId>`: a workflow's newest run. Written when the engine's
  flush persists a new run (`OwningSink`), so before its execute is answered.

A request about a run (its snapshot, a node's state, pause/resume/stop, step, breakpoints,
retry, replay, its recording; a workflow's dataflow) that arrives at a process that does not
own it is forwarded over HTTP to the owner, whose answer is relayed as it is: the same
semantics and status codes whichever process the client reached. A run whose owner's lease
has expired is answered from the store, and so is a read that the owner (or Redis) cannot
answer now; a change is then a 503.

Every second each process also looks for processes whose lease has expired, and takes a
process for dead when its lease has stayed missing for `LEASE_SECONDS` more (so an outage of
Redis, which lets every lease expire, kills nobody). One of the survivors (the first to take
`flowstage:reaping:<id>`) ends each of the dead process's active runs `failed`, code
`interrupted` (simulation.recovery), stores that, and publishes its terminal events, so that
the run's streams end as every run stream does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
import redis
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from flowstage.actors.engine import Engine
from flowstage.actors.eventlog import EventRows
from flowstage.server.bus import RedisBus, cancel_all
from flowstage.server.edge import Handler, Layer
from flowstage.server.store import Store
from flowstage.simulation.errors import Unavailable
from flowstage.simulation.models import Run
from flowstage.simulation.recovery import interrupt_stored

__all__ = ["FORWARDED", "FORWARD_KEY", "LEASE_SECONDS", "Cluster", "OwningSink", "owner_layer"]

log = logging.getLogger(__name__)

LEASE_SECONDS = 2.0
_RENEW_SECONDS = 0.5  # a lease is renewed four times in its life
_REAP_SECONDS = 1.0  # how often each process looks for dead ones
_OWNER_TTL = 86_400
FORWARDED = "Flowstage-Forwarded-By"  # on a forwarded request: the worker that forwarded it
# On a forwarded request, the cluster's key (in Redis): a process sent it, not a client (`forwarded`).
FORWARD_KEY = "Flowstage-Forward-Key"
_FORWARD_KEY_KEY = "flowstage:forward-key"
_ACTIVE = ("running", "paused")
_ENDED = ("completed", "failed", "stopped")
# Not relayed either way (RFC 9110 hop-by-hop, and what the relaying server sets itself).
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length",
                  "date", "server", "proxy-connection", FORWARDED.lower(), FORWARD_KEY.lower()})
# Workflow routes answered from the workflow's newest run: its owner answers them.
_LATEST_RUN_ROUTES = frozenset({"/api/workflows/{id}/dataflow", "/api/workflows/{id}/status"})
_OWNER = """
local owner = redis.call('GET', KEYS[1])
if not owner then return nil end
return {owner, redis.call('GET', 'flowstage:worker:' .. owner)}
"""

# One flush's records in one command (a pipeline of two SETs per run was most of a worker's
# Redis client time). KEYS: this process's runs set, an owner key per new run, a newest-run key
# per workflow. ARGV: worker id, TTL, how many new runs (n), how many workflows (w), the n new
# run ids, the w workflows' newest run ids, then the ids of runs that ended.
_RECORD = """
local worker, ttl, n, w = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, n do
  redis.call('SET', KEYS[1 + i], worker, 'EX', ttl)
  redis.call('SADD', KEYS[1], ARGV[4 + i])
end
for i = 1, w do
  redis.call('SET', KEYS[1 + n + i], ARGV[4 + n + i], 'EX', ttl)
end
for i = 5 + n + w, #ARGV do
  redis.call('SREM', KEYS[1], ARGV[i])
end
return 0
"""


def _workers_key() -> str:
    return "flowstage:workers"


def _lease_key(worker: str) -> str:
    return f"flowstage:worker:{worker}"


def _runs_key(worker: str) -> str:
    return f"flowstage:worker:{worker}:runs"


class Cluster:
    """This process among the others: its lease, its runs' records, forwarding, reaping."""

    def __init__(self, bus: RedisBus, store: Store, now: Callable[[], float], address: str) -> None:
        self.worker_id = "w_" + secrets.token_hex(6)
        self.address = address
        self._bus = bus
        self._redis: aioredis.Redis = bus.redis
        self._store = store
        self._now = now
        self._owner = self._redis.register_script(_OWNER)
        self._record = self._redis.register_script(_RECORD)
        self._claimed: set[str] = set()  # this process's runs recorded as active
        self._unrecorded: dict[str, Run] = {}  # snapshots whose record Redis did not take
        self._missing: dict[str, float] = {}  # process -> when its lease was first seen missing
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._forward_key = b""  # the cluster's (see _share_key)
        self.reaped = 0  # runs of dead processes this one ended

    # --- lifecycle --------------------------------------------------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """Hold a lease from start to stop (a cleanup context, after the bus's)."""
        lease = _LeaseThread(self._bus.url, self.worker_id, self.address)
        try:
            await asyncio.to_thread(lease.renew)  # held before this process serves
            await self._share_key()
        except (RedisError, OSError) as exc:
            await asyncio.to_thread(lease.stop)
            raise self._bus.unreachable(exc) from None
        lease.start()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False)
        self._tasks = [asyncio.create_task(self._reap_forever(), name="flowstage-reaper")]
        yield
        await cancel_all(self._tasks)
        await self._http.close()
        await asyncio.to_thread(lease.stop)
        # The engine has closed, ending this process's runs itself (and recording that): give
        # the lease up, so nobody reaps what is already ended.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(_lease_key(self.worker_id), _runs_key(self.worker_id))
            await self._redis.srem(_workers_key(), self.worker_id)

    async def _share_key(self) -> None:
        """The cluster's forwarding key: the first process chooses it, the others read it (again
        every second: should Redis lose it, they agree again within a second)."""
        mine = secrets.token_urlsafe(24).encode()
        key = await self._redis.set(_FORWARD_KEY_KEY, mine, nx=True, get=True) or mine  # Redis >= 7.0
        self._forward_key = key if isinstance(key, bytes) else str(key).encode()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(_REAP_SECONDS)
            try:
                await self._share_key()
                await self._reap()
            except (RedisError, OSError, Unavailable) as exc:
                log.debug("cluster reaper: %s", exc)
            except Exception:
                log.exception("cluster reaper failed")

    # --- records (the engine's flush) -------------------------------------------------------

    async def record(self, runs: Sequence[Run]) -> None:
        """Record new runs as this process's and ended ones as no longer active. What Redis
        did not take is recorded with the next call (the reaper makes one every second)."""
        latest = {run.id: run for run in (*self._unrecorded.values(), *runs)}  # newest snapshot
        self._unrecorded = {}
        new = [run for run in latest.values() if run.id not in self._claimed and run.state in _ACTIVE]
        ended = [run.id for run in latest.values() if run.id in self._claimed and run.state in _ENDED]
        if not new and not ended:
            return
        # A workflow's newest run: the last new one of this flush, per workflow.
        newest = {run.workflow_id: run.id for run in new}
        try:
            await self._record(
                keys=[_runs_key(self.worker_id), *(f"flowstage:owner:{run.id}" for run in new),
                      *(f"flowstage:latest:{workflow_id}" for workflow_id in newest)],
                args=[self.worker_id, _OWNER_TTL, len(new), len(newest), *(run.id for run in new),
                      *newest.values(), *ended])
        except BaseException:
            self._unrecorded = {**latest, **self._unrecorded}
            raise
        self._claimed.update(run.id for run in new)
        self._claimed.difference_update(ended)

    # --- forwarding -------------------------------------------------------------------------

    def forwarded(self, request: web.Request) -> bool:
        """Whether another process of the cluster forwarded `request` (it carries the key)."""
        sent = request.headers.get(FORWARD_KEY, "").encode("utf-8", "surrogateescape")  # any bytes a client sends
        return bool(self._forward_key) and hmac.compare_digest(sent, self._forward_key)

    async def owner_address(self, run_id: str) -> str | None:
        """Where the run's owner is reached; None when this process owns it, nobody does, or
        its owner's lease has expired (the store answers then)."""
        try:
            found = await self._owner(keys=[f"flowstage:owner:{run_id}"])
        except (RedisError, OSError) as exc:
            raise self._bus.unreachable(exc) from None
        if not found:
            return None
        owner, address = (part.decode() if isinstance(part, bytes) else part for part in found)
        if owner == self.worker_id or not address:
            return None
        return str(address)

    async def check_controllable(self, run_id: str) -> None:
        """A change to a run no live process is known to own, and not in this one: when it is
        stored as active, its process is unknown yet (Redis was away when it started) or has
        just died (it is ended within seconds): a 503 to retry, not this process's 409."""
        stored = await self._store.runs.get(run_id)
        if stored is not None and stored.state in _ACTIVE:
            raise Unavailable("The process running this run cannot be reached; retry in a few seconds "
                              "(a run whose process died is ended within about 5 s).")

    async def latest_run(self, workflow_id: str) -> str | None:
        try:
            found = await self._redis.get(f"flowstage:latest:{workflow_id}")
        except (RedisError, OSError) as exc:
            raise self._bus.unreachable(exc) from None
        return found.decode() if isinstance(found, bytes) else found

    async def forward(self, request: web.Request, address: str) -> web.Response:
        """The owner's answer to this request, as it gave it."""
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers[FORWARDED] = self.worker_id
        headers[FORWARD_KEY] = self._forward_key.decode()
        body = await request.read()
        try:
            async with self._http.request(request.method, f"http://{address}{request.path_qs}",
                                          headers=headers, data=body or None) as resp:
                payload = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
                return web.Response(status=resp.status, body=payload, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"The process that runs this run is unreachable ({exc.__class__.__name__}); "
                              "retry in a few seconds.") from None

    # --- reaping ----------------------------------------------------------------------------

    async def _reap(self) -> None:
        """End the runs of processes whose lease has been missing for a lease's life, as this
        process saw it with Redis reachable throughout. A lease missing once is not enough:
        after an outage of Redis every lease has expired, and live processes renew theirs
        within half a second of its return."""
        try:
            if self._unrecorded:
                await self.record(())
            workers = [w.decode() if isinstance(w, bytes) else str(w)
                       for w in await self._redis.smembers(_workers_key())]
            others = [w for w in workers if w != self.worker_id]
            leases = await self._redis.mget([_lease_key(w) for w in others]) if others else []
        except BaseException:
            self._missing.clear()  # not seen missing throughout
            raise
        now = time.monotonic()
        for worker, leased in zip(others, leases, strict=True):
            if leased:
                self._missing.pop(worker, None)
                continue
            since = self._missing.setdefault(worker, now)
            if now - since >= LEASE_SECONDS and await self._redis.set(
                    f"flowstage:reaping:{worker}", self.worker_id, nx=True, ex=60):
                self._missing.pop(worker, None)
                await self._reap_worker(worker)

    async def _reap_worker(self, worker: str) -> None:
        run_ids = sorted(r.decode() if isinstance(r, bytes) else str(r)
                         for r in await self._redis.smembers(_runs_key(worker)))
        ended = 0
        for run_id in run_ids:
            if await self._interrupt(run_id):
                ended += 1
        await self._redis.delete(_runs_key(worker))
        await self._redis.srem(_workers_key(), worker)
        self.reaped += ended
        if ended:
            log.warning("worker %s stopped renewing its lease; ended %d of its runs failed (interrupted)",
                        worker, ended)

    async def _interrupt(self, run_id: str) -> bool:
        """End a dead owner's run as a restart ends an interrupted one; its events are the
        longer of the store's and its Redis stream's (the owner published more often than it
        stored), and the store gets both."""
        run = await self._store.runs.get(run_id)
        if run is None or run.state not in _ACTIVE:
            return False
        stored = await self._store.runs.events_after(run_id, 0, limit=10_000_000)
        streamed = await self._bus.run_events(run_id)
        events = streamed if len(streamed) > len(stored) else stored
        failed, new_events = interrupt_stored(run, events, self._now())
        rows = [(run_id, seq, name, data) for seq, name, data in (*events[len(stored):], *new_events)]
        await self._store.runs.save([failed], rows)
        for seq, name, data in new_events:
            self._bus.publish((run_id, run.workflow_id, seq, name, data))
        return True


class _LeaseThread(threading.Thread):
    """Renews the lease every half second from a thread of its own, with a client of its own: an
    event loop busy for seconds (thousands of runs starting at once) must not make a live
    process look dead to the others, who would end its runs. Measured: with the renewal on
    the loop, a worker under 20,000 concurrent runs lost its lease."""

    def __init__(self, url: str, worker: str, address: str) -> None:
        super().__init__(name="flowstage-lease", daemon=True)
        self._worker = worker
        self._address = address
        self._stopped = threading.Event()
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def renew(self) -> None:
        with self._client.pipeline(transaction=False) as pipe:
            pipe.set(_lease_key(self._worker), self._address, px=int(LEASE_SECONDS * 1000))
            pipe.sadd(_workers_key(), self._worker)
            pipe.execute()

    def run(self) -> None:
        while not self._stopped.wait(_RENEW_SECONDS):
            try:
                self.renew()
            except (RedisError, OSError) as exc:
                log.debug("lease not renewed: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join()
        self._client.close()


class OwningSink:
    """The engine's sink in a cluster: the store, then the ownership records of what it
    stored, so a run is routable once its execute is answered."""

    def __init__(self, store: Store, cluster: Cluster) -> None:
        self._runs = store.runs
        self._cluster = cluster

    async def save(self, runs: list[Run], events: EventRows) -> None:
        await self._runs.save(runs, events)
        if runs:
            try:
                await self._cluster.record(runs)
            except (RedisError, OSError) as exc:  # Redis away: recorded once it is back
                log.warning("run ownership not recorded: %s", exc)

    async def save_runs(self, runs: list[Run]) -> None:
        await self.save(runs, EventRows())

    async def append_events(self, rows: EventRows) -> None:
        await self._runs.save((), rows)


def owner_layer(cluster: Cluster, engine: Engine) -> Layer:
    """Requests about a run another process owns go to that process. A layer of the edge
    (`server.edge`), so what forwarding raises is a problem, timed like any other; routes
    that name no run are left as they are."""

    def layer(handler: Handler, route: str) -> Handler:
        latest = route in _LATEST_RUN_ROUTES
        if not (latest or "{runId}" in route) or route.endswith("/events"):
            return handler

        async def owned(request: web.Request) -> web.StreamResponse:
            if FORWARDED in request.headers:  # forwarded once already: never again (no loops)
                return await handler(request)
            info = request.match_info
            run_id = await cluster.latest_run(info["id"]) if latest else info["runId"]
            if run_id is None or engine.events(run_id) is not None:
                return await handler(request)
            reading = request.method in ("GET", "HEAD")
            try:
                address = await cluster.owner_address(run_id)
                if address is not None:
                    return await cluster.forward(request, address)
                if not reading:
                    await cluster.check_controllable(run_id)
                return await handler(request)
            except Unavailable:
                if not reading:
                    raise  # a change the owner did not make: the client retries
                # A read the owner (or Redis) cannot answer now: the stored snapshot, a flush old.
                return await handler(request)

        return owned

    return layer
