"""The engine on a manual clock: exact virtual times, pause/resume/stop, routing, failures,
failure boundaries, determinism, events, persistence and shutdown."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
import pytest

from flowstage.actors.clock import ManualClock
from flowstage.actors.engine import Engine, EngineConfig
from flowstage.actors.eventlog import EventLog
from flowstage.actors.sink import MemorySink
from flowstage.actors.tuning import GC_THRESHOLDS, tune_gc
from flowstage.simulation.catalogue import Fixed, LogNormal, Timing, Uniform
from flowstage.simulation.errors import Conflict, Invalid, MailboxFull, NotFound, Unavailable
from flowstage.simulation.models import Connection, Event, Node, NodeData, Position, Run, Workflow, event_name
from flowstage.simulation.outputs import NodeContext
from flowstage.simulation.rng import STREAM_TIMING, Rng, first_random
from flowstage.simulation.timefmt import iso_ms, parse_iso
from flowstage.simulation.timing import draw_ms, duration_ms

START = 1_790_000_000.0
_P = Position(0, 0)


def workflow(nodes: Mapping[str, str | tuple[str, dict[str, Any]]],
             edges: list[tuple[str, str] | tuple[str, str, str]], *, wid: str = "wf", version: int = 1) -> Workflow:
    """nodes: id -> type or (type, config); edges: (source, target[, source handle])."""
    built = []
    for nid, spec in nodes.items():
        kind, config = (spec, {}) if isinstance(spec, str) else spec
        built.append(Node(nid, kind, _P, NodeData(label=nid, config=config)))
    conns = [Connection(f"{e[0]}-{e[1]}", e[0], e[1], e[2] if len(e) > 2 else "out", "in") for e in edges]
    return Workflow(wid, wid, "", [], version, iso_ms(START), iso_ms(START), built, conns)


def at(seconds: float) -> str:
    return iso_ms(START + seconds)


def names(engine: Engine, run_id: str) -> list[str]:
    log = engine.events(run_id)
    assert log is not None
    return [name for _, name, _ in log.events_after(0)]


def decoded(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    log = engine.events(run_id)
    assert log is not None
    return [msgspec.json.decode(data) for _, _, data in log.events_after(0)]


def snap(engine: Engine, run_id: str) -> Run:
    run = engine.snapshot(run_id)
    assert run is not None
    return run


FIXED = {"manual_trigger": Fixed(ms=100), "http_request": Fixed(ms=300), "database_query": Fixed(ms=500),
         "transform": Fixed(ms=200), "merge": Fixed(ms=0), "output": Fixed(ms=0), "condition": Fixed(ms=10),
         "llm_prompt": Fixed(ms=2000), "send_email": Fixed(ms=400)}


def config(timings: Mapping[str, Timing] = FIXED, **kwargs: Any) -> EngineConfig:
    return EngineConfig(timings=dict(timings), **kwargs)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def engine(clock: ManualClock, sink: MemorySink) -> AsyncIterator[Engine]:
    engine = Engine(clock, sink, config())
    await engine.start()
    yield engine
    await engine.close()


DIAMOND = workflow({"A": "manual_trigger", "B": "http_request", "C": "database_query", "D": "transform"},
                   [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")])


# --- scheduling at exact virtual times -------------------------------------------------------


async def test_diamond_runs_branches_together_and_joins_on_the_later(engine: Engine, clock: ManualClock) -> None:
    first = await engine.execute(DIAMOND, seed=1)
    assert first.state == "running" and set(first.nodes) == {"A", "B", "C", "D"}
    assert all(n.state == "idle" for n in first.nodes.values())
    await clock.run_until_idle()
    run = snap(engine, first.id)
    assert run.state == "completed" and run.progress == 1.0
    times = {k: (n.started_at, n.finished_at) for k, n in run.nodes.items()}
    assert times == {"A": (at(0), at(0.1)), "B": (at(0.1), at(0.4)), "C": (at(0.1), at(0.6)),
                     "D": (at(0.6), at(0.8))}
    assert run.finished_at == at(0.8)


async def test_events_of_the_diamond_in_order(engine: Engine, clock: ManualClock) -> None:
    run = await engine.execute(DIAMOND, seed=1)
    await clock.run_until_idle()
    events = decoded(engine, run.id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    trail = [(e["event"], e.get("nodeId") or e.get("connectionId"), e["ts"]) for e in events]
    assert trail == [
        ("run.started", None, at(0)),
        ("node.queued", "A", at(0)), ("node.started", "A", at(0)),
        ("node.completed", "A", at(0.1)),
        ("edge.data", "A-B", at(0.1)), ("node.queued", "B", at(0.1)), ("node.started", "B", at(0.1)),
        ("edge.data", "A-C", at(0.1)), ("node.queued", "C", at(0.1)), ("node.started", "C", at(0.1)),
        # 500 ms: steps of 25 % would be 125 ms apart, under the 250 ms floor; 50 % is not.
        ("node.progress", "C", at(0.35)),
        ("node.completed", "B", at(0.4)),
        ("edge.data", "B-D", at(0.4)),
        ("node.completed", "C", at(0.6)), ("edge.data", "C-D", at(0.6)),
        ("node.queued", "D", at(0.6)), ("node.started", "D", at(0.6)),
        ("node.completed", "D", at(0.8)),
        ("run.completed", None, at(0.8)),
    ]


async def test_progress_events_at_quarter_steps_but_never_for_short_nodes(clock: ManualClock, sink: MemorySink) -> None:
    engine = Engine(clock, sink, config({"manual_trigger": Fixed(ms=100), "llm_prompt": Fixed(ms=2000)}))
    await engine.start()
    run = await engine.execute(workflow({"t": "manual_trigger", "l": "llm_prompt"}, [("t", "l")]), seed=3)
    await clock.run_until_idle()
    progress = [(e["nodeId"], e["progress"], e["ts"]) for e in decoded(engine, run.id) if e["event"] == "node.progress"]
    assert progress == [("l", 0.25, at(0.6)), ("l", 0.5, at(1.1)), ("l", 0.75, at(1.6))]
    await engine.close()


async def test_speed_scales_simulated_time(engine: Engine, clock: ManualClock) -> None:
    run = await engine.execute(DIAMOND, seed=1, speed=4.0)
    await clock.run_until_idle()
    assert snap(engine, run.id).finished_at == at(0.2)


async def test_delay_node_waits_its_own_ms(engine: Engine, clock: ManualClock) -> None:
    wf = workflow({"t": "manual_trigger", "d": ("delay", {"ms": 1234})}, [("t", "d")])
    run = await engine.execute(wf, seed=1, inputs={"x": 1})
    await clock.run_until_idle()
    d = snap(engine, run.id).nodes["d"]
    assert (d.started_at, d.finished_at, d.output) == (at(0.1), at(1.334), {"x": 1})


# --- pause, resume, stop -----------------------------------------------------------------------


async def test_pause_freezes_and_resume_shifts_everything_by_the_pause(engine: Engine, clock: ManualClock) -> None:
    plain = await engine.execute(DIAMOND, seed=7)
    paused = await engine.execute(DIAMOND, seed=7)
    await clock.advance(0.25)  # B and C are half and 30 % through
    snapshot = await engine.control(paused.id, "pause")
    assert snapshot.state == "paused"
    assert {k: n.state for k, n in snapshot.nodes.items()} == {
        "A": "completed", "B": "paused", "C": "paused", "D": "idle"}
    assert snapshot.nodes["B"].progress == 0.5 and snapshot.nodes["C"].progress == 0.3
    assert (await engine.control(paused.id, "pause")).state == "paused"  # a no-op
    await clock.advance(5.0)
    frozen = snap(engine, paused.id)
    assert frozen.nodes["B"].progress == 0.5 and frozen.state == "paused"
    assert (await engine.control(paused.id, "resume")).state == "running"
    assert (await engine.control(paused.id, "resume")).state == "running"  # a no-op
    await clock.run_until_idle()

    a, b = decoded(engine, plain.id), decoded(engine, paused.id)
    b_rest = [e for e in b if e["event"] not in ("run.paused", "run.resumed")]
    assert [(e["event"], e.get("nodeId")) for e in a] == [(e["event"], e.get("nodeId")) for e in b_rest]
    for x, y in zip(a, b_rest, strict=True):
        shift = parse_iso(y["ts"]) - parse_iso(x["ts"])
        expected = 5.0 if parse_iso(x["ts"]) > START + 0.25 else 0.0
        assert shift == pytest.approx(expected, abs=1e-6), (x, y)
    assert [e["event"] for e in b if e["event"].startswith("run.")] == [
        "run.started", "run.paused", "run.resumed", "run.completed"]
    assert snap(engine, paused.id).finished_at == at(5.8)


async def test_stop_marks_running_nodes_stopped_and_the_rest_skipped(
    engine: Engine, clock: ManualClock, sink: MemorySink
) -> None:
    run = await engine.execute(DIAMOND, seed=1)
    await clock.advance(0.5)  # B done, C running, D waiting for C
    stopped = await engine.control(run.id, "stop")
    assert stopped.state == "stopped" and stopped.finished_at == at(0.5)
    assert {k: n.state for k, n in stopped.nodes.items()} == {
        "A": "completed", "B": "completed", "C": "stopped", "D": "skipped"}
    assert stopped.nodes["C"].progress == 0.8
    tail = decoded(engine, run.id)[-3:]
    assert [(e["event"], e.get("nodeId")) for e in tail] == [
        ("node.stopped", "C"), ("node.skipped", "D"), ("run.stopped", None)]
    assert tail[1]["reason"] == "run_stopped"
    with pytest.raises(Conflict, match="Can't pause when stopped"):
        await engine.control(run.id, "pause")
    await clock.run_until_idle()
    await engine.flush()
    assert sink.run(run.id).state == "stopped"


async def test_control_on_a_completed_run_is_a_conflict_and_unknown_is_not_found(
    engine: Engine, clock: ManualClock
) -> None:
    run = await engine.execute(DIAMOND, seed=1)
    await clock.run_until_idle()
    for action in ("pause", "resume", "stop"):
        with pytest.raises(Conflict, match=f"Can't {action} when completed"):
            await engine.control(run.id, action)
    with pytest.raises(NotFound):
        await engine.control("run_nope", "pause")
    with pytest.raises(Invalid):
        await engine.control(run.id, "explode")  # type: ignore[arg-type]


async def test_a_flood_of_control_messages_is_refused(clock: ManualClock, sink: MemorySink) -> None:
    engine = Engine(clock, sink, config(mailbox_size=4))
    await engine.start()
    run = await engine.execute(DIAMOND, seed=1)
    results = await asyncio.gather(*(engine.control(run.id, "pause") for _ in range(20)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, MailboxFull)]
    answered = [r for r in results if isinstance(r, Run)]
    assert len(answered) == 4 and len(refused) == 16
    assert (await engine.control(run.id, "resume")).state == "running"  # room again
    await engine.close()


# --- routing and failures ----------------------------------------------------------------------


NodeSpec = str | tuple[str, dict[str, Any]]
BRANCHES: dict[str, NodeSpec] = {
    "t": "manual_trigger", "c": ("condition", {"trueProbability": 1.0}), "yes": "transform",
    "no": "http_request", "after_no": "send_email", "m": "merge", "o": "output"}
BRANCH_EDGES: list[Any] = [("t", "c"), ("c", "yes", "true"), ("c", "no", "false"), ("no", "after_no"),
                           ("yes", "m"), ("after_no", "m"), ("m", "o")]


@pytest.mark.parametrize(("probability", "taken", "skipped"), [(1.0, "yes", {"no", "after_no"}),
                                                               (0.0, "no", {"yes"})])
async def test_condition_routes_to_one_output_and_skips_the_other(
    engine: Engine, clock: ManualClock, probability: float, taken: str, skipped: set[str]
) -> None:
    nodes = {**BRANCHES, "c": ("condition", {"trueProbability": probability})}
    run = await engine.execute(workflow(nodes, BRANCH_EDGES), seed=5, inputs={"items": [{"n": 1}]})
    await clock.run_until_idle()
    result = snap(engine, run.id)
    assert result.state == "completed"
    assert {k for k, n in result.nodes.items() if n.state == "skipped"} == skipped
    assert result.nodes["c"].output["branch"] == ("true" if probability else "false")
    assert result.nodes[taken].state == "completed"
    assert result.nodes["m"].state == "completed"  # a merge runs on the branch that delivered
    skips = [e for e in decoded(engine, run.id) if e["event"] == "node.skipped"]
    assert {e["reason"] for e in skips} == {"branch_not_taken"}
    flows = {f.connection_id: f.state for f in engine.dataflow(run.id) or []}
    assert flows["c-yes"] == ("done" if taken == "yes" else "skipped")
    assert flows["c-no"] == ("done" if taken == "no" else "skipped")


async def test_a_failing_type_skips_its_downstream_and_fails_the_run(clock: ManualClock, sink: MemorySink) -> None:
    engine = Engine(clock, sink, config(failure_rates={"http_request": 1.0}))
    await engine.start()
    run = await engine.execute(DIAMOND, seed=11)
    await clock.run_until_idle()
    result = snap(engine, run.id)
    assert result.state == "failed"
    assert {k: n.state for k, n in result.nodes.items()} == {
        "A": "completed", "B": "failed", "C": "completed", "D": "skipped"}  # C ran on
    assert result.error is not None and result.error.node_id == "B"
    assert result.error.code == "simulated_failure"
    assert result.nodes["B"].error == result.error
    assert 0.3 <= result.nodes["B"].progress < 1.0  # it failed part-way
    events = decoded(engine, run.id)
    assert [e["event"] for e in events][-1] == "run.failed"
    assert events[-1]["error"]["nodeId"] == "B"
    assert next(e for e in events if e["event"] == "node.skipped")["reason"] == "upstream_failed"
    await engine.close()


async def test_failure_rate_of_a_run_fails_its_first_node(engine: Engine, clock: ManualClock) -> None:
    run = await engine.execute(DIAMOND, seed=2, failure_rate=1.0)
    await clock.run_until_idle()
    result = snap(engine, run.id)
    assert result.state == "failed" and result.failure_rate == 1.0
    assert [result.nodes[k].state for k in "ABCD"] == ["failed", "skipped", "skipped", "skipped"]
    quiet = await engine.execute(DIAMOND, seed=2)
    await clock.run_until_idle()
    assert snap(engine, quiet.id).state == "completed"  # default: nothing fails


async def test_a_raising_output_generator_fails_only_its_node(engine: Engine, clock: ManualClock) -> None:
    def broken(ctx: NodeContext) -> Any:
        raise ValueError(f"cannot transform {ctx.node_id}")

    engine.handlers.register("transform", broken)
    other = await engine.execute(workflow({"t": "manual_trigger", "h": "http_request"}, [("t", "h")], wid="other"))
    run = await engine.execute(DIAMOND, seed=1)
    await clock.run_until_idle()
    result = snap(engine, run.id)
    assert result.state == "failed"
    assert result.nodes["D"].state == "failed"
    assert result.nodes["D"].error is not None
    assert result.nodes["D"].error.code == "node_error"
    assert result.nodes["D"].error.message == "ValueError: cannot transform D"
    assert [result.nodes[k].state for k in "ABC"] == ["completed"] * 3
    assert snap(engine, other.id).state == "completed"


async def test_an_async_handler_runs_alongside_the_simulated_time(engine: Engine, clock: ManualClock) -> None:
    release = asyncio.Event()

    async def real_work(ctx: NodeContext) -> Any:
        await release.wait()
        return {"processed": ctx.input["fileIds"]}

    engine.handlers.register("image_resize", real_work)
    wf = workflow({"r": "image_resize"}, [])
    run = await engine.execute(wf, seed=1, only_node="r", kind="process-files", inputs={"fileIds": ["f1"]})
    assert run.kind == "process-files"
    await clock.advance(10.0)  # simulated time is long over; the work is not
    assert snap(engine, run.id).nodes["r"].state == "running"
    release.set()
    await clock.advance(0)
    result = snap(engine, run.id)
    assert result.state == "completed"
    assert result.nodes["r"].output == {"processed": ["f1"]}
    assert result.nodes["r"].finished_at == at(10.0)


# --- determinism, events, persistence --------------------------------------------------------


RICH = workflow({"t": "manual_trigger", "h": "http_request", "q": "database_query", "c": "condition",
                 "l": "llm_prompt", "e": "send_email", "x": "transform", "m": "merge", "o": "output"},
                [("t", "h"), ("t", "q"), ("h", "c"), ("c", "l", "true"), ("c", "x", "false"),
                 ("q", "e"), ("l", "m"), ("x", "m"), ("e", "m"), ("m", "o")])


def _relative(engine: Engine, run_id: str, start: float) -> list[tuple[Any, ...]]:
    out = []
    for e in decoded(engine, run_id):
        e.pop("runId")
        ts = round(parse_iso(e.pop("ts")) - start, 3)
        out.append((ts, msgspec.json.encode(e)))
    return out


async def test_same_seed_same_run_whatever_else_is_running(clock: ManualClock, sink: MemorySink) -> None:
    engine = Engine(clock, sink, EngineConfig(failure_rates={"send_email": 0.5}))  # catalogue timings
    await engine.start()
    first = await engine.execute(RICH, seed=99, failure_rate=0.1)
    noise = [await engine.execute(RICH, failure_rate=0.2) for _ in range(5)]
    await clock.advance(0.7)
    noise += [await engine.execute(RICH, seed=s) for s in range(5)]
    second = await engine.execute(RICH, seed=99, failure_rate=0.1)
    await clock.run_until_idle()
    a = _relative(engine, first.id, START)
    b = _relative(engine, second.id, START + 0.7)
    assert a == b
    sa, sb = snap(engine, first.id), snap(engine, second.id)
    assert {k: n.output for k, n in sa.nodes.items()} == {k: n.output for k, n in sb.nodes.items()}
    assert sa.seed == 99 and len(noise) == 10
    other = await engine.execute(RICH, seed=100, failure_rate=0.1)
    await clock.run_until_idle()
    assert _relative(engine, other.id, clock.now()) != a  # a different seed differs
    await engine.close()


async def test_a_run_without_a_seed_gets_one_recorded(engine: Engine) -> None:
    run = await engine.execute(DIAMOND)
    assert isinstance(run.seed, int) and 0 <= run.seed < 2**53


async def test_execute_persists_the_first_snapshot_and_the_end_persists_everything(
    engine: Engine, clock: ManualClock, sink: MemorySink
) -> None:
    run = await engine.execute(DIAMOND, seed=1)
    assert sink.runs[run.id].state == "running"  # durable before execute returned
    await clock.run_until_idle()
    stored = sink.run(run.id)
    assert stored == snap(engine, run.id)
    log = engine.events(run.id)
    assert log is not None and log.finished
    assert sink.events[run.id] == log.events_after(0)
    assert [seq for seq, _, _ in sink.events[run.id]] == list(range(1, log.last_seq + 1))


async def test_concurrent_executes_share_one_flush(engine: Engine, sink: MemorySink) -> None:
    runs = await asyncio.gather(*(engine.execute(DIAMOND, seed=i) for i in range(50)))
    assert all(r.id in sink.runs for r in runs)
    assert sink.flushes == 1


async def test_a_cycle_is_invalid_and_named(engine: Engine) -> None:
    wf = workflow({"a": "transform", "b": "transform", "c": "transform"}, [("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(Invalid) as info:
        await engine.execute(wf)
    assert "cycle" in info.value.detail and "a → b → c → a" in info.value.detail
    assert info.value.errors[0].loc == ("body",)


async def test_bad_parameters_are_invalid(engine: Engine) -> None:
    with pytest.raises(Invalid) as info:
        await engine.execute(DIAMOND, speed=0, failure_rate=2)
    assert [e.loc for e in info.value.errors] == [("body", "speed"), ("body", "failureRate")]


async def test_listeners_see_every_event_of_every_run(engine: Engine, clock: ManualClock) -> None:
    seen: list[tuple[str, int, str]] = []
    remove = engine.add_listener(lambda run_id, wf, seq, name, data: seen.append((run_id, seq, name)))
    a = await engine.execute(DIAMOND, seed=1)
    b = await engine.execute(DIAMOND, seed=2)
    await clock.run_until_idle()
    for run in (a, b):
        mine = [(seq, name) for rid, seq, name in seen if rid == run.id]
        assert mine == [(seq, name) for seq, name, _ in (engine.events(run.id) or EventLog()).events_after(0)]
    remove()
    count = len(seen)
    await engine.execute(DIAMOND, seed=3)
    assert len(seen) == count


async def test_event_log_subscribers_wake_independently(engine: Engine, clock: ManualClock) -> None:
    run = await engine.execute(DIAMOND, seed=1)
    log = engine.events(run.id)
    assert log is not None
    last = log.last_seq
    doomed = asyncio.create_task(log.wait(last))
    kept = asyncio.create_task(log.wait(last))
    followed: list[int] = []

    async def follow() -> None:
        async for seq, _, _ in log.follow(2):
            followed.append(seq)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    doomed.cancel()
    await clock.advance(0.1)
    await kept  # woken by the next event despite the other waiter's cancellation
    await clock.run_until_idle()
    await follower
    assert followed == list(range(3, log.last_seq + 1))
    assert log.events_after(log.last_seq) == []


async def test_dataflow_reports_what_crossed_each_connection(engine: Engine, clock: ManualClock) -> None:
    run = await engine.execute(DIAMOND, seed=1)
    await clock.advance(0.5)
    flows = {f.connection_id: f for f in engine.dataflow(run.id) or []}
    assert {k: f.state for k, f in flows.items()} == {"A-B": "done", "A-C": "active", "B-D": "active", "C-D": "idle"}
    assert flows["B-D"].items == len(flows["B-D"].last_payload["body"]["items"])
    assert flows["B-D"].bytes == len(msgspec.json.encode(flows["B-D"].last_payload))
    edge_events = [e for e in decoded(engine, run.id) if e["event"] == "edge.data"]
    assert {(e["connectionId"], e["bytes"]) for e in edge_events} == {
        (k, f.bytes) for k, f in flows.items() if f.state != "idle"}
    assert engine.dataflow("run_nope") is None


async def test_outputs_are_built_from_inputs_and_config(engine: Engine, clock: ManualClock) -> None:
    wf = workflow({"t": "manual_trigger", "h": ("http_request", {"method": "POST"}), "x": "transform",
                   "l": ("llm_prompt", {"model": "m-1"}), "e": ("send_email", {"to": ["a@b.c"], "subject": "s"}),
                   "q": ("database_query", {"query": "select * from orders", "maxRows": 2}), "o": "output"},
                  [("t", "h"), ("h", "x"), ("x", "l"), ("l", "e"), ("t", "q"), ("q", "o")])
    run = await engine.execute(wf, seed=4, inputs={"customer": 7})
    await clock.run_until_idle()
    out = {k: n.output for k, n in snap(engine, run.id).nodes.items()}
    assert out["t"] == {"customer": 7}
    assert out["h"]["status"] == 201 and set(out["h"]) == {"status", "headers", "body"}
    assert [i["processed"] for i in out["x"]] == [True] * len(out["h"]["body"]["items"])
    assert out["l"]["model"] == "m-1"
    usage = out["l"]["usage"]
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
    assert out["e"]["accepted"] == ["a@b.c"] and out["e"]["messageId"].startswith("<")
    assert out["q"]["table"] == "orders" and out["q"]["rowCount"] == len(out["q"]["rows"]) <= 2
    assert out["o"]["value"] == out["q"]
    assert all(len(msgspec.json.encode(v)) < 1000 for v in out.values())


# --- scale and shutdown ------------------------------------------------------------------------


async def test_a_thousand_concurrent_runs_complete(clock: ManualClock) -> None:
    sink = MemorySink(keep=False)
    engine = Engine(clock, sink, config(retain_finished=10))
    await engine.start()
    chain = workflow({"t": "manual_trigger", "h": "http_request", "x": "transform", "o": "output"},
                     [("t", "h"), ("h", "x"), ("x", "o")])
    runs = await asyncio.gather(*(engine.execute(chain, seed=i, speed=1000.0) for i in range(1000)))
    completed = 0

    def count(run_id: str, wf: str, seq: int, name: str, data: bytes) -> None:
        nonlocal completed
        completed += name == "run.completed"

    engine.add_listener(count)
    await clock.run_until_idle()
    assert completed == 1000 and len(runs) == 1000
    await engine.flush()
    assert len(engine.run_ids()) == 10  # finished runs left memory once persisted
    assert sink.appended == 1000 * 17  # run.started, 4 x (queued, started, completed), 3 edges, end
    await engine.close()


async def test_close_interrupts_active_runs_and_leaves_no_tasks(clock: ManualClock, sink: MemorySink) -> None:
    engine = Engine(clock, sink, config())
    await engine.start()

    async def never(ctx: NodeContext) -> Any:
        await asyncio.Event().wait()

    engine.handlers.register("image_resize", never)
    running = await engine.execute(DIAMOND, seed=1)
    paused = await engine.execute(DIAMOND, seed=2)
    working = await engine.execute(workflow({"r": "image_resize"}, [], wid="img"), only_node="r")
    await clock.advance(0.2)
    await engine.control(paused.id, "pause")
    done = await engine.execute(workflow({"t": "manual_trigger"}, [], wid="tiny"))
    await clock.advance(0.2)
    await engine.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    for run in (running, paused, working):
        stored = sink.run(run.id)
        assert stored.state == "failed"
        assert stored.error is not None and stored.error.code == "interrupted"
        assert sink.events[run.id][-1][1] == "run.failed"
    assert sink.run(running.id).nodes["C"].state == "stopped"
    assert sink.run(running.id).nodes["D"].state == "skipped"
    assert sink.run(done.id).state == "completed"
    await engine.close()  # idempotent
    with pytest.raises(Exception, match="not running"):
        await engine.execute(DIAMOND)


# --- the hot path: byte templates, one clock timer, bursts, GC ---------------------------------


async def test_every_event_is_byte_for_byte_what_its_struct_encodes(clock: ManualClock, sink: MemorySink) -> None:
    # node.queued/started/completed/progress, edge.data and run.completed/stopped are filled
    # into byte templates, not encoded from their Structs: re-encoding the decoded Struct must
    # give the very same bytes, also for ids that JSON has to escape.
    engine = Engine(clock, sink, config({**FIXED, "llm_prompt": Fixed(ms=2000)}))
    await engine.start()
    wf = workflow({"t": "manual_trigger", "h": "http_request", "l": "llm_prompt", "x": "transform",
                   "e": "send_email"}, [("t", "h"), ("h", "l"), ("t", "x"), ("l", "e")], wid="w.é")
    done = await engine.execute(wf, seed=3, run_id='run "quoted" \\ é \u2028')
    stopped = await engine.execute(wf, seed=4)
    await clock.advance(1.0)
    await engine.control(stopped.id, "stop")
    await clock.run_until_idle()
    seen = set()
    for run in (done, stopped):
        log = engine.events(run.id)
        assert log is not None
        for _, name, data in log.events_after(0):
            event = msgspec.json.decode(data, type=Event)
            assert event_name(event) == name
            assert msgspec.json.encode(event) == data, name
            seen.add(name)
    assert seen >= {"run.started", "node.queued", "node.started", "node.progress", "node.completed",
                    "edge.data", "node.stopped", "node.skipped", "run.completed", "run.stopped"}
    completed = next(e for e in decoded(engine, done.id) if e["event"] == "node.completed" and e["nodeId"] == "h")
    assert snap(engine, done.id).nodes["h"].output == completed["output"]
    await engine.close()


async def test_runs_in_flight_share_one_clock_timer(engine: Engine, clock: ManualClock) -> None:
    runs = [await engine.execute(DIAMOND, seed=i) for i in range(20)]
    assert clock.pending() == 1  # the engine's wake-up (the flush timer fired with execute)
    await clock.run_until_idle()
    assert all(snap(engine, r.id).state == "completed" for r in runs)
    assert clock.pending() == 0


async def test_a_burst_of_executes_starts_in_slices_at_the_instant_asked(clock: ManualClock, sink: MemorySink) -> None:
    engine = Engine(clock, sink, config(runs_per_turn=3))
    await engine.start()
    alone = await engine.execute(DIAMOND, seed=5)
    burst = await asyncio.gather(*(engine.execute(DIAMOND, seed=5) for _ in range(20)))
    assert all(r.id in sink.runs for r in burst)  # each persisted before its execute returned
    await clock.run_until_idle()
    expected = [(e["event"], e.get("nodeId"), e["ts"]) for e in decoded(engine, alone.id)]
    for run in burst:
        assert run.created_at == at(0)
        assert [(e["event"], e.get("nodeId"), e["ts"]) for e in decoded(engine, run.id)] == expected
    await engine.close()


async def test_executes_waiting_in_a_burst_fail_alone_and_end_with_the_engine(
    clock: ManualClock, sink: MemorySink
) -> None:
    engine = Engine(clock, sink, config(runs_per_turn=2))
    await engine.start()
    calls = [engine.execute(DIAMOND, seed=i, speed=0 if i == 3 else 1.0) for i in range(6)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[3], Invalid)  # validated when its turn came, failed alone
    assert all(isinstance(r, Run) for i, r in enumerate(results) if i != 3)
    waiting = [asyncio.ensure_future(engine.execute(DIAMOND, seed=i)) for i in range(5)]
    await asyncio.sleep(0)
    waiting[4].cancel()
    await engine.close()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, Run | Unavailable | asyncio.CancelledError) for r in outcomes)
    assert any(isinstance(r, Unavailable) for r in outcomes)  # still waiting when it closed
    assert len(sink.runs) == 5 + sum(isinstance(r, Run) for r in outcomes)


async def test_timers_due_together_beyond_one_slice_all_fire_at_their_instant(
    clock: ManualClock, sink: MemorySink
) -> None:
    engine = Engine(clock, sink, config(runs_per_turn=2))
    await engine.start()
    runs = [await engine.execute(DIAMOND, seed=1) for _ in range(9)]
    await clock.advance(0.1)  # nine A nodes fall due at once: five slices of two
    for run in runs:
        assert snap(engine, run.id).nodes["A"].finished_at == at(0.1)
    await clock.run_until_idle()
    assert {snap(engine, r.id).finished_at for r in runs} == {at(0.8)}
    await engine.close()


def test_the_fast_duration_draw_is_the_generator_s_draw() -> None:
    timings: list[Timing] = [Uniform(min_ms=50, max_ms=200), Fixed(ms=30),
                             LogNormal(median_ms=100, sigma=0.5, max_ms=5000), Uniform(min_ms=1, max_ms=9e6)]
    for seed in [*range(2000), 2**63 + 5, 2**70, -3]:
        for timing in timings:
            for node_type, cfg in (("http_request", {}), ("delay", {"ms": 12})):
                assert draw_ms(node_type, timing, cfg, seed, 3.6e6) == duration_ms(
                    node_type, timing, cfg, Rng(seed, STREAM_TIMING), 3.6e6)
        assert first_random(seed, STREAM_TIMING) == Rng(seed, STREAM_TIMING).random()


def test_tune_gc_freezes_start_up_objects_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
