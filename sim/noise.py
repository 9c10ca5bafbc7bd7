"""Deterministic, call-pattern independent noise.

Noise is a pure function of (key, time) rather than a stream of RNG draws, so reading metrics twice, or
in a different order, never changes what later reads return. Keys come from the sim's seeded RNG, so the
seed alone decides the noise.
"""

from __future__ import annotations

import math

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def hash_unit(key: int, bucket: int) -> float:
    """splitmix64 finaliser of (key, bucket) mapped to [-1, 1)."""
    x = (key ^ ((bucket * _GOLDEN) & _MASK)) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return x / 9223372036854775808.0 - 1.0


def smooth_noise(key: int, t: float, period: float) -> float:
    """Value noise in [-1, 1]: random knots every `period` seconds, linearly interpolated."""
    p = t / period
    b = math.floor(p)
    f = p - b
    a = hash_unit(key, b)
    return a + (hash_unit(key, b + 1) - a) * f
