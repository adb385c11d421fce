"""Seeded randomness for one simulated node: a 64-bit seed derived from (run seed, node id)
and a tiny generator.

`random.Random` keeps about 2.5 KB of state; a run of ten nodes alive for minutes would
carry 25 KB of generators it barely uses. Here a generator is one int: seeded through the
splitmix64 scramble, then stepped as a 64-bit LCG whose output folds the strong high bits
into the low ones (one multiply per draw: this is mock data, not cryptography, and it is
drawn ten thousand runs at a time). Every draw depends only on the seed and the stream.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["STREAM_BRANCH", "STREAM_FAILURE", "STREAM_OUTPUT", "STREAM_TIMING", "Rng",
           "first_random", "mix64", "node_seed", "run_key", "text_key"]

T = TypeVar("T")

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15

# Independent streams per purpose, so that (say) asking for a failure draw never shifts
# the durations or outputs that the same seed gives.
STREAM_TIMING = 1
STREAM_FAILURE = 2
STREAM_OUTPUT = 3
STREAM_BRANCH = 4


def mix64(z: int) -> int:
    """The splitmix64 finaliser: a bijective scramble of 64 bits."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def text_key(text: str) -> int:
    """A stable 64-bit key of a string (a node id); plans compute it once per node."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def run_key(seed: int) -> int:
    """A stable 64-bit key of a run seed of any size or sign."""
    return text_key(f"seed:{seed}")


def node_seed(seed: int, node_id: str) -> int:
    """The 64-bit seed of one node of one run; equal inputs give equal seeds everywhere."""
    return mix64(run_key(seed) ^ text_key(node_id))


_LCG_A = 6364136223846793005  # Knuth's MMIX multiplier
_LCG_C = 1442695040888963407


class Rng:
    """One int of state; `stream` picks an independent sequence for the same seed."""

    __slots__ = ("_state",)

    def __init__(self, seed: int, stream: int = 0) -> None:
        # mix64, inlined: every node makes two or three of these.
        z = (seed + stream * _GOLDEN) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        self._state = z ^ (z >> 31)

    def next64(self) -> int:
        self._state = s = (self._state * _LCG_A + _LCG_C) & _MASK
        return s ^ (s >> 29)

    def random(self) -> float:
        """A float in [0, 1) from the high 53 bits."""
        self._state = s = (self._state * _LCG_A + _LCG_C) & _MASK
        return (s >> 11) * (1.0 / 9007199254740992.0)

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def randint(self, low: int, high: int) -> int:
        """An int in [low, high], both ends included."""
        self._state = s = (self._state * _LCG_A + _LCG_C) & _MASK
        return low + (s >> 16) % (high - low + 1)

    def choice(self, items: Sequence[T]) -> T:
        self._state = s = (self._state * _LCG_A + _LCG_C) & _MASK
        return items[(s >> 16) % len(items)]

    def gauss(self) -> float:
        """A standard normal variate (Box-Muller; one draw is wasted, which is fine here)."""
        u1 = 1.0 - self.random()  # (0, 1], so log() is defined
        u2 = self.random()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def hex(self, digits: int) -> str:
        out = ""
        while len(out) < digits:
            out += f"{self.next64():016x}"
        return out[:digits]


def first_random(seed: int, stream: int = 0) -> float:
    """`Rng(seed, stream).random()`, without making the generator: what a node's duration
    draw needs, a hundred thousand times a second."""
    z = (seed + stream * _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    s = (z * _LCG_A + _LCG_C) & _MASK
    return (s >> 11) * (1.0 / 9007199254740992.0)
