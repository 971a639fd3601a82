"""Deterministic draws: numbers that are pure functions of ``(seed, keys)`` through a counter-based
hash (splitmix64), so any page of the sandbox bank is generated on its own, in any order; and the
day numbers the generator counts in."""

from __future__ import annotations

import datetime as dt

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_EPOCH = dt.date(1970, 1, 1)


def day_number(day: dt.date) -> int:
    return (day - _EPOCH).days


def from_day_number(n: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(n))


def iso_dates(day_numbers: np.ndarray) -> list[str]:
    """ISO dates of day numbers, vectorized."""
    return np.datetime_as_string(np.asarray(day_numbers, dtype="datetime64[D]")).tolist()


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniform(seed: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) numbers, one per element of the broadcast ``keys``, a pure function of them."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(seed, dtype=np.uint64) + _GOLDEN)
        for k in keys:
            h = _mix(h ^ (np.asarray(k).astype(np.uint64) * _GOLDEN + np.uint64(0x632BE59BD9B4E019)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normal(seed: int, *keys: np.ndarray | int) -> np.ndarray:
    u1 = uniform(seed, *keys, 1)
    u2 = uniform(seed, *keys, 2)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)
