"""How long a simulated node takes, and when it is worth telling anyone how far it got.

Durations come from the node type's timing profile (or a `delay` node's own `ms`), drawn
with the node's seeded generator, capped, and scaled by the run's speed. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flowstage.simulation.catalogue import Fixed, LogNormal, Timing, Uniform
from flowstage.simulation.rng import STREAM_TIMING, Rng, first_random

__all__ = ["DEFAULT_CAP_MS", "draw_ms", "duration_ms", "progress_step"]

# One simulated hour: a LogNormal tail or a huge delay must not park a run for days.
DEFAULT_CAP_MS = 3_600_000.0


def duration_ms(
    node_type: str,
    timing: Timing,
    config: Mapping[str, Any],
    rng: Rng,
    cap_ms: float = DEFAULT_CAP_MS,
) -> float:
    """The simulated duration of one node in milliseconds, before speed scaling."""
    if node_type == "delay":
        ms = float(config.get("ms", timing.ms if isinstance(timing, Fixed) else 0.0))
    else:
        match timing:
            case Fixed(ms=fixed):
                ms = fixed
            case Uniform(min_ms=low, max_ms=high):
                ms = rng.uniform(low, high)
            case LogNormal(median_ms=median, sigma=sigma, max_ms=high):
                ms = min(median * math.exp(sigma * rng.gauss()), high)
    return min(max(ms, 0.0), cap_ms)


def draw_ms(node_type: str, timing: Timing, config: Mapping[str, Any], seed: int,
            cap_ms: float = DEFAULT_CAP_MS) -> float:
    """`duration_ms` with the node's timing stream of `seed`, exactly; fixed and uniform
    timings (nearly every node) skip building the generator."""
    if node_type != "delay":
        if isinstance(timing, Uniform):
            low = timing.min_ms
            ms = low + (timing.max_ms - low) * first_random(seed, STREAM_TIMING)
            return min(max(ms, 0.0), cap_ms)
        if isinstance(timing, Fixed):
            return min(max(timing.ms, 0.0), cap_ms)
    return duration_ms(node_type, timing, config, Rng(seed, STREAM_TIMING), cap_ms)


def progress_step(duration_s: float, step: float, min_interval_s: float) -> float:
    """The fraction between two node.progress events, or 0 for none.

    `step` is the finest granularity (0.25: at 25, 50, 75 %). It is coarsened to a multiple
    of itself so that two progress events are at least `min_interval_s` apart: a 100 ms node
    reports none (nobody sees a bar move that fast, and 10,000 runs would pay for it).
    """
    if step <= 0 or step >= 1 or duration_s <= 0:
        return 0.0
    k = 1
    while k * step < 1.0 - 1e-9:
        if k * step * duration_s >= min_interval_s:
            return k * step
        k += 1
    return 0.0
