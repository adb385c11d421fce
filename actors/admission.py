"""Admission: checks an execute, builds its run and starts it, a slice per turn of the loop.

At most `runs_per_turn` executes start per turn of the loop. Ten thousand executes arriving
at once would otherwise build and start ten thousand runs in one loop iteration (~0.1 s in
which no timer fires and no request is answered): past that many in one turn, an execute
waits in a queue, a later turn starts its run (at the instant it was asked for) and the
flush that persists the run answers it, so a waiting execute wakes once.

Also here: compiled plans cached by (workflow id, version), the run's scripted outcomes,
and its id and seed when the execute names none.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from flowstage.actors.actor import Supervisor
from flowstage.actors.debugger import DebugOptions
from flowstage.actors.flusher import Flusher
from flowstage.actors.messages import START
from flowstage.actors.registry import RunRegistry
from flowstage.actors.run import RunActor
from flowstage.actors.runtime import Runtime
from flowstage.simulation.errors import Conflict, FieldError, Invalid
from flowstage.simulation.models import Run, Workflow
from flowstage.simulation.plan import Plan, compile_plan
from flowstage.simulation.script import ScriptedOutcome, check_script

__all__ = ["Admission", "Request", "ScriptSource"]

ScriptSource = Callable[[Workflow], Mapping[str, ScriptedOutcome]]
"""Scripted outcomes for every run of a workflow, asked when a run starts (the pytest plugin's
`stage.script`); an execute's own `script` wins over it node by node."""

_NUMBER = (int, float)
# JavaScript loses integer precision above 2**53; a generated seed must survive the editor.
_SEED_LIMIT = 2**53


class Request(NamedTuple):
    """What `execute` was asked, kept while a burst makes it wait for a turn."""

    workflow: Workflow
    run_id: str | None
    seed: int | None
    speed: float | None
    failure_rate: float
    inputs: Mapping[str, Any] | None
    only_node: str | None
    kind: Literal["workflow", "process-files"]
    at: float
    script: Mapping[str, ScriptedOutcome] | None
    debug: DebugOptions | None = None


class Admission:
    """`script_source` and `seeds` are set by a test stage: scripted outcomes for every
    run, and where seeds come from (a seeded generator makes its runs repeat exactly)."""

    def __init__(self, runtime: Runtime, supervisor: Supervisor, registry: RunRegistry, flusher: Flusher) -> None:
        self._runtime = runtime
        self._supervisor = supervisor
        self._registry = registry
        self._flusher = flusher
        self.script_source: ScriptSource | None = None
        self.seeds: random.Random | None = None
        self._plans: OrderedDict[tuple[str, int, str | None], Plan] = OrderedDict()
        self._queue: deque[tuple[asyncio.Future[Run], Request]] = deque()
        self._this_turn = 0  # executes let through in this turn of the loop
        self._id_pool = ""
        self._id_at = 0
        self._seed_pool = b""
        self._seed_at = 0

    def admit(self, request: Request) -> Run | asyncio.Future[Run]:
        """Start the run now and return its first snapshot, or, in a burst, a future that a
        later turn's flush resolves with it."""
        loop = self._runtime.loop
        assert loop is not None, "the engine has not started"
        if self._queue or self._this_turn >= self._runtime.config.runs_per_turn:
            answer: asyncio.Future[Run] = loop.create_future()
            if not self._queue:
                loop.call_soon(self._release)
            self._queue.append((answer, request))
            return answer
        if not self._this_turn:
            loop.call_soon(self._new_turn)
        self._this_turn += 1
        return self._start(request)

    def refuse_waiting(self, error: Exception) -> None:
        """Fail every execute still waiting for a turn with `error`."""
        while self._queue:
            answer, _ = self._queue.popleft()
            if not answer.done():
                answer.set_exception(error)

    def forget(self) -> None:
        """Drop the cached plans (a test stage's reset)."""
        self._plans.clear()

    def _new_turn(self) -> None:
        self._this_turn = 0

    def _release(self) -> None:
        """Start the next `runs_per_turn` waiting runs; the next flush answers them."""
        room = self._runtime.config.runs_per_turn
        queue = self._queue
        started = False
        while queue and room:
            answer, request = queue.popleft()
            if answer.done():  # its execute was cancelled
                continue
            room -= 1
            try:
                first = self._start(request)
            except Exception as error:
                answer.set_exception(error)
                continue
            self._flusher.answer_after_flush(answer, first)
            started = True
        if started:
            self._flusher.kick()
        if queue:
            assert self._runtime.loop is not None
            self._runtime.loop.call_soon(self._release)

    def _start(self, request: Request) -> Run:
        """Check, build and begin one run; its first snapshot."""
        config = self._runtime.config
        speed = config.default_speed if request.speed is None else request.speed
        failure_rate = request.failure_rate
        errors = []
        if not (isinstance(speed, _NUMBER) and math.isfinite(speed) and speed > 0):
            errors.append(FieldError(["body", "speed"], "must be a number greater than 0"))
        if not (isinstance(failure_rate, _NUMBER) and 0.0 <= failure_rate <= 1.0):
            errors.append(FieldError(["body", "failureRate"], "must be between 0 and 1"))
        if errors:
            raise Invalid("Invalid execute parameters", errors)
        plan = self._plan(request.workflow, request.only_node)
        if request.script:
            errors = check_script(request.script, plan.by_id)
            if errors:
                raise Invalid("The script names what this workflow cannot do", errors)
        run_id = request.run_id
        if run_id is None:
            run_id = self._new_run_id()
        elif run_id in self._registry:
            raise Conflict(f"Run {run_id!r} already exists")
        script = self._script(request, plan)  # after every refusal: it uses up the stage's outcomes
        seed = request.seed
        if seed is None:
            seed = self._new_seed() if self.seeds is None else self.seeds.randrange(_SEED_LIMIT)
        run = RunActor(self._runtime, self._supervisor, plan, run_id, seed=seed, speed=float(speed),
                       failure_rate=float(failure_rate), inputs=dict(request.inputs or {}), kind=request.kind,
                       at=request.at, script=script, debug=request.debug)
        self._registry.add(run)
        first = run.first
        run.deliver(START)
        # A debugged run may have paused at once (a breakpoint on a first node).
        return first if request.debug is None else run.snapshot()

    def _script(self, request: Request, plan: Plan) -> dict[str, ScriptedOutcome]:
        """The run's scripted outcomes: the script source's, then the execute's own (checked)."""
        script: dict[str, ScriptedOutcome] = {}
        if self.script_source is not None:
            script.update((node_id, outcome) for node_id, outcome in self.script_source(request.workflow).items()
                          if node_id in plan.by_id)
        if request.script:
            script.update(request.script)
        return script

    def _plan(self, workflow: Workflow, only_node: str | None) -> Plan:
        # A workflow's version grows on every change, so (id, version) names one graph.
        key = (workflow.id, workflow.version, only_node)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        config = self._runtime.config
        plan = compile_plan(workflow, only_node=only_node, timings=config.timings)
        self._plans[key] = plan
        if len(self._plans) > config.plan_cache_size:
            self._plans.popitem(last=False)
        return plan

    def _new_run_id(self) -> str:
        """"run_" and 16 random hex digits, cut from one OS draw per 512 ids (a system call
        per id was 1% of the engine's time in a burst)."""
        at = self._id_at
        if at >= len(self._id_pool):
            self._id_pool = secrets.token_hex(4096)
            at = 0
        self._id_at = at + 16
        return "run_" + self._id_pool[at:at + 16]

    def _new_seed(self) -> int:
        """A uniform seed below 2**53: 53 of 7 random bytes cut from one OS draw per 512
        seeds (like run ids; `secrets.randbelow` is a system call per seed)."""
        at = self._seed_at
        if at >= len(self._seed_pool):
            self._seed_pool = secrets.token_bytes(7 * 512)
            at = 0
        self._seed_at = at + 7
        return int.from_bytes(self._seed_pool[at:at + 7], "big") & (_SEED_LIMIT - 1)
