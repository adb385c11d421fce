"""Startup recovery: a stored run that was active when the process died ends `failed`
(code "interrupted"), rebuilt from its stored events; finished runs are never touched."""

from __future__ import annotations

import msgspec

from flowstage.actors.clock import ManualClock
from flowstage.actors.engine import Engine, EngineConfig
from flowstage.actors.sink import MemorySink
from flowstage.simulation.catalogue import Fixed, Timing
from flowstage.simulation.models import Connection, Node, Position, Workflow
from flowstage.simulation.recovery import interrupt_stored

START = 1_790_000_000.0
P = Position(0, 0)
CHAIN = Workflow("wf", "chain", "", [], 3, "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z",
                 [Node("a", "manual_trigger", P), Node("b", "http_request", P), Node("c", "output", P)],
                 [Connection("ab", "a", "b", "out", "in"), Connection("bc", "b", "c", "out", "in")])
TIMINGS: dict[str, Timing] = {"manual_trigger": Fixed(ms=100), "http_request": Fixed(ms=1000), "output": Fixed(ms=10)}


async def _crashed_mid_run() -> tuple[MemorySink, str]:
    """A run persisted up to t=0.5 s, then the process 'dies' (the engine is dropped)."""
    clock = ManualClock(start=START)
    sink = MemorySink()
    engine = Engine(clock, sink, EngineConfig(timings=TIMINGS))
    await engine.start()
    run = await engine.execute(CHAIN, seed=1)
    await clock.advance(0.5)
    await engine.flush()
    return sink, run.id


async def test_an_interrupted_run_is_rebuilt_from_its_events_and_failed() -> None:
    sink, run_id = await _crashed_mid_run()
    stored = sink.run(run_id)
    assert stored.state == "running"
    assert stored.nodes["a"].state == "idle"  # the saved snapshot is behind its events
    events = sink.events[run_id]
    failed, new = interrupt_stored(stored, events, now=START + 60)
    assert failed.state == "failed"
    assert failed.error is not None and failed.error.code == "interrupted"
    assert failed.finished_at == "2026-09-21T14:14:20.000Z"
    assert {k: n.state for k, n in failed.nodes.items()} == {"a": "completed", "b": "stopped", "c": "skipped"}
    assert failed.nodes["a"].output == {}
    assert [(seq, name) for seq, name, _ in new] == [
        (len(events) + 1, "node.stopped"), (len(events) + 2, "node.skipped"), (len(events) + 3, "run.failed")]
    last = msgspec.json.decode(new[-1][2])
    assert last["error"]["code"] == "interrupted" and last["seq"] == len(events) + 3


async def test_a_paused_run_is_interrupted_too_and_finished_runs_are_untouched() -> None:
    clock = ManualClock(start=START)
    sink = MemorySink()
    engine = Engine(clock, sink, EngineConfig(timings=TIMINGS))
    await engine.start()
    paused = await engine.execute(CHAIN, seed=1)
    done = await engine.execute(CHAIN, seed=2)
    await clock.advance(0.3)
    await engine.control(paused.id, "pause")
    await clock.run_until_idle()
    await engine.flush()
    stored = sink.run(paused.id)
    assert stored.state == "paused"
    failed, new = interrupt_stored(stored, sink.events[paused.id], now=START + 1)
    assert failed.state == "failed" and failed.nodes["b"].state == "stopped"
    assert new[0][1] == "node.stopped" and msgspec.json.decode(new[0][2])["progress"] == 0.2
    completed = sink.run(done.id)
    assert interrupt_stored(completed, sink.events[done.id], now=START + 1) == (completed, [])
    await engine.close()
