"""Long work on the event loop, a slice at a time.

The API server is one asyncio event loop: a step of a coroutine cannot be preempted, so every
other tenant's request waits for whichever step is running. Work that grows with the data (a
list of thousands of objects, a watch's initial events, decoding a large store read) checks a
`LoopBudget` as it goes and yields to the loop once it has held it for `SLICE` seconds; other
requests then take their turn between slices (issue 12: a 500-object list held the loop for
6-7 ms in one step, and the quiet tenant's request waited for all of it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

SLICE = 0.002  # seconds: about one small request's own work


class LoopBudget:
    """`if budget.spent(): await budget.pause()` inside a loop over many items."""

    __slots__ = ("slice", "until")

    def __init__(self, slice_seconds: float = SLICE) -> None:
        self.slice = slice_seconds
        self.until = time.perf_counter() + slice_seconds

    def spent(self) -> bool:
        return time.perf_counter() >= self.until

    async def pause(self) -> None:
        """Let every callback that is ready run, then start a new slice."""
        await asyncio.sleep(0)
        self.until = time.perf_counter() + self.slice

    async def tick(self) -> None:
        if self.spent():
            await self.pause()


async def dumps_list(head: dict[str, Any], field: str, items: Iterable[Any], budget: LoopBudget) -> bytes:
    """`json.dumps({**head, field: list(items)})` (compact, `field` last), one item at a time,
    pausing whenever the budget's slice is spent."""
    rest = {k: v for k, v in head.items() if k != field}
    opening = json.dumps({**rest, field: []}, separators=(",", ":")).encode()[:-2]  # ends "[]}"
    parts = []
    for item in items:
        parts.append(json.dumps(item, separators=(",", ":")).encode())
        if budget.spent():
            await budget.pause()
    return opening + b",".join(parts) + b"]}"


class Turnstile:
    """Many small steps of background work (a watch event for each of hundreds of watchers) share
    the loop with requests: at most `slice` seconds of such steps run back to back, then the
    others wait for the next loop iteration, behind what became ready meanwhile (a request's next
    step), and take their turns in the order they came. Without it one write to a resource with
    100 watches put ~5 ms of steps ahead of every request (issue 12); waiting also lets events
    that arrive meanwhile go out in the same write."""

    __slots__ = ("_reopen", "slice", "until")

    def __init__(self, slice_seconds: float = SLICE) -> None:
        self.slice = slice_seconds
        self.until = 0.0
        self._reopen: asyncio.Handle | None = None

    async def turn(self) -> None:
        while time.perf_counter() >= self.until:
            if self._reopen is None:
                # queued now, it runs early in the next iteration: the steps that wait below are
                # queued after it, and a request's step queued meanwhile is not held by them
                self._reopen = asyncio.get_running_loop().call_soon(self._open)
            await asyncio.sleep(0)

    def _open(self) -> None:
        self._reopen = None
        self.until = time.perf_counter() + self.slice
