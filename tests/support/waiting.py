"""Waiting for a condition in tests: the suite's one poll loop, for plain and async checks.

A test that waits polls `check` until it returns something truthy and gets that value back, or
fails after `timeout` with `what` and the last value it saw (which is most of a diagnosis)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(what: str, check: object, last: object, timeout: float) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g}s waiting for {what or check}: last value {last!r}")


def wait_for(
    check: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `check()` until it is truthy and return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, check, value, timeout)
        time.sleep(interval)


async def wait_for_async(
    check: Callable[[], T | Awaitable[T | None] | None],
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "",
) -> T:
    """`wait_for` on an event loop: `check` may be a coroutine function; sleeps without blocking."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        value = await got if inspect.isawaitable(got) else got
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, check, value, timeout)
        await asyncio.sleep(interval)
