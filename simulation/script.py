"""Scripted outcomes: a test decides how a node ends instead of letting the simulation draw it.

`execute`'s body may carry `"script": {"<nodeId>": {"outcome": ..., "output"?, "error"?,
"durationMs"?}}`; the pytest plugin's `stage.script` builds the same outcomes in Python. The
engine applies them when a node starts (actors.node), so a scripted node behaves exactly like
a simulated one: the same events, dataflow and downstream skipping.

- `complete`: the node completes after `durationMs` (the simulated duration when absent),
  never fails, and outputs `output` (the simulated output when absent).
- `fail`: the node fails after `durationMs` with `error` (default "Scripted failure").
- `hang`: the node starts and never ends: no progress, no timer. Only stop ends it.

Durations are simulated time, scaled by the run's `speed` like every other duration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from flowstage.simulation.errors import FieldError
from flowstage.simulation.messages import SCRIPTED_FAILURE, no_such_node
from flowstage.simulation.timing import DEFAULT_CAP_MS

__all__ = ["NodeScript", "Outcome", "Script", "ScriptedOutcome", "check_script"]

Outcome = Literal["complete", "fail", "hang"]

class ScriptedOutcome(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True,
                      omit_defaults=True):
    """How one node ends."""

    outcome: Outcome
    output: Any = None
    error: Annotated[str, Meta(min_length=1, max_length=2000)] | None = None
    # At most the cap on every simulated duration (an hour).
    duration_ms: Annotated[float, Meta(ge=0, le=DEFAULT_CAP_MS)] | None = None


def check_script(script: Mapping[str, ScriptedOutcome], node_ids: Iterable[str]) -> list[FieldError]:
    """Errors for outcomes of nodes the graph lacks, and for fields that do not fit the
    outcome (an `output` on a failure, an `error` on a completion): a script that says more
    than it can do is a mistake in the test, not something to ignore."""
    known = set(node_ids)
    errors: list[FieldError] = []
    for node_id, scripted in script.items():
        loc: list[str | int] = ["body", "script", node_id]
        if node_id not in known:
            errors.append(FieldError(loc, no_such_node(node_id)))
        elif scripted.output is not None and scripted.outcome != "complete":
            errors.append(FieldError([*loc, "output"], "only a `complete` outcome has an output"))
        elif scripted.error is not None and scripted.outcome != "fail":
            errors.append(FieldError([*loc, "error"], "only a `fail` outcome has an error"))
    return errors


class NodeScript:
    """One rule of a `Script`: the node id it names (or a glob on node id or type) and the
    outcomes it gives, one per run; the last one repeats. Built by chaining:
    `script.node("h").takes(2).returns({"status": 200})`, `.fails("timed out", after=2.0)`,
    `.hangs()`, `.sequence(["fail", "complete"])`."""

    def __init__(self, pattern: str, *, glob: bool) -> None:
        self.pattern = pattern
        self.glob = glob
        self.outcomes: list[ScriptedOutcome] = [ScriptedOutcome("complete")]
        self.used = 0  # runs it gave an outcome to

    def __repr__(self) -> str:
        how = "matching" if self.glob else "node"
        return f"<NodeScript {how} {self.pattern!r}: {[o.outcome for o in self.outcomes]}>"

    def matches(self, node_id: str, node_type: str) -> bool:
        if self.glob:
            return fnmatchcase(node_id, self.pattern) or fnmatchcase(node_type, self.pattern)
        return node_id == self.pattern

    def returns(self, output: Any, *, after: float | None = None) -> NodeScript:
        """Complete with `output` after `after` simulated seconds (or the time a `takes()`
        before set, or the node's own time)."""
        return self._set(ScriptedOutcome("complete", output=output, duration_ms=self._duration(after)))

    def fails(self, error: str = SCRIPTED_FAILURE, *, after: float | None = None) -> NodeScript:
        """Fail with `error` after `after` simulated seconds (or as `returns`)."""
        return self._set(ScriptedOutcome("fail", error=error, duration_ms=self._duration(after)))

    def hangs(self) -> NodeScript:
        """Start and never end (until the run is stopped)."""
        return self._set(ScriptedOutcome("hang"))

    def takes(self, seconds: float) -> NodeScript:
        """Take `seconds` of simulated time, keeping the outcome set so far."""
        last = self.outcomes[-1]
        return self._set(msgspec.structs.replace(last, duration_ms=self._ms(seconds)))

    def sequence(self, outcomes: Iterable[ScriptedOutcome | Mapping[str, Any] | str]) -> NodeScript:
        """One outcome per run, in order; the last repeats. Each is a ScriptedOutcome, the
        HTTP form (`{"outcome": "fail", "error": "..."}`) or just an outcome's name."""
        converted = [_outcome(item) for item in outcomes]
        if not converted:
            raise ValueError("sequence() needs at least one outcome")
        self.outcomes = converted
        return self

    def next_outcome(self) -> ScriptedOutcome:
        outcome = self.outcomes[min(self.used, len(self.outcomes) - 1)]
        self.used += 1
        return outcome

    def _duration(self, after: float | None) -> float | None:
        return self.outcomes[-1].duration_ms if after is None else self._ms(after)

    def _set(self, outcome: ScriptedOutcome) -> NodeScript:
        self.outcomes = [outcome]
        return self

    @staticmethod
    def _ms(seconds: float | None) -> float | None:
        if seconds is None:
            return None
        longest = DEFAULT_CAP_MS / 1000
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and 0 <= seconds <= longest):
            raise ValueError(f"a scripted duration must be between 0 and {longest:g} seconds, not {seconds!r}")
        return float(seconds) * 1000.0


def _outcome(item: ScriptedOutcome | Mapping[str, Any] | str) -> ScriptedOutcome:
    if isinstance(item, ScriptedOutcome):
        return item
    raw = {"outcome": item} if isinstance(item, str) else dict(item)
    try:
        return msgspec.convert(raw, ScriptedOutcome)
    except msgspec.ValidationError as error:
        raise ValueError(f"not a scripted outcome: {item!r} ({error})") from None


class Script:
    """Scripted outcomes for every run of a stage, by node id or glob. A later rule wins over
    an earlier one for the same node; an execute's own `script` wins over both."""

    def __init__(self) -> None:
        self.rules: list[NodeScript] = []
        self.assert_all_used = False  # the pytest plugin fails a test whose rules never matched

    def node(self, node_id: str) -> NodeScript:
        rule = NodeScript(node_id, glob=False)
        self.rules.append(rule)
        return rule

    def matching(self, pattern: str) -> NodeScript:
        """A rule for every node whose id or type matches the glob (`http_*`)."""
        rule = NodeScript(pattern, glob=True)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()
        self.assert_all_used = False

    def unused(self) -> list[NodeScript]:
        return [rule for rule in self.rules if not rule.used]

    def outcomes_for(self, nodes: Iterable[tuple[str, str]]) -> dict[str, ScriptedOutcome]:
        """The outcome of each (id, type) node a rule matches, for one run: every rule that
        matched moves on by one outcome, once per run."""
        chosen: dict[str, ScriptedOutcome] = {}
        picked: dict[int, ScriptedOutcome] = {}
        for node_id, node_type in nodes:
            for index in range(len(self.rules) - 1, -1, -1):
                rule = self.rules[index]
                if rule.matches(node_id, node_type):
                    if index not in picked:
                        picked[index] = rule.next_outcome()
                    chosen[node_id] = picked[index]
                    break
        return chosen
