"""Waiting on a condition with a deadline, instead of sleeping for a fixed time.

A test that sleeps for "long enough" (a cache's period, a sync's timer) fails at random on a busy
machine and waits for nothing on an idle one. ``wait_until`` polls what the sleep stood for and
returns as soon as it holds; past the deadline it fails the test naming what it waited for and the
last value it saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT_S = 30.0  # generous: CI is a busy 2-core machine, and a wait ends as soon as its condition holds


def _timed_out(message: str, timeout: float, value: object) -> AssertionError:
    return AssertionError(f"waited {timeout:g} s for {message}; last seen: {value!r}")


def wait_until(
    probe: Callable[[], T],
    *,
    message: str,
    until: Callable[[T], object] = bool,
    timeout: float = TIMEOUT_S,
    interval: float = 0.05,
) -> T:
    """Call ``probe`` every ``interval`` s until ``until(value)`` is true (by default: until the
    value is truthy) and return that value; after ``timeout`` s fail with ``message`` (what was
    awaited) and the last value. An exception ``probe`` raises ends the wait: a probe may assert
    what has to stay true meanwhile (the process still runs, the bank is still left alone)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout, value)
        time.sleep(interval)


async def wait_until_async(
    probe: Callable[[], T],
    *,
    message: str,
    until: Callable[[T], object] = bool,
    timeout: float = TIMEOUT_S,
    interval: float = 0.05,
) -> T:
    """``wait_until`` inside an event loop: between two looks the loop's other tasks run
    (``interval=0`` looks again after every turn of the loop)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout, value)
        await asyncio.sleep(interval)


def fresh_minute() -> None:
    """Start at the top of a minute's first 50 s, so no test straddles two windows of the look-up
    quota (the UTC minute).

    A sleep, not a wait on a condition: what it waits for is the wall clock itself, and a sleep
    reaches the next minute exactly."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
