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
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

SLICE = 0.002  # seconds: about one small request's own work


class Precedence:
    """The requests of flows that send one at a time go before the work of flows that flood.

    On one loop, a quiet tenant's request is a handful of steps, and each waits behind whatever
    became ready meanwhile: a 2 ms slice of a flood's list, a batch of its watch deliveries, the
    start of its next request. Beside a flood that tripled the quiet tenant's p99 while its p50
    moved little (issue 12, bench/RESULTS.md). So while a request that goes first is executing,
    the work of a request that does not (`give_way`: at its slice boundaries, its watch
    deliveries, before its handler and before its response is written) waits for it to end, at
    most `hold` seconds each time. A request goes
    first for at most `first_for` seconds: one that waits long (on the store, on a webhook) stops
    holding the others back, so a tenant cannot keep a flood waiting by sending slow requests.
    """

    __slots__ = ("_waiters", "first_for", "hold", "running")

    def __init__(self, hold: float = 0.010, first_for: float = 0.050) -> None:
        self.hold, self.first_for = hold, first_for
        self.running = 0  # requests going first now
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.contextmanager
    def request(self, first: bool) -> Iterator[None]:
        """Around a request's handler (and whatever it starts: a watch's deliveries)."""
        token = _GIVES_WAY.set(None if first else self)
        end = self.go_first() if first else None
        try:
            yield
        finally:
            _GIVES_WAY.reset(token)
            if end is not None:
                end()

    def go_first(self) -> Callable[[], None]:
        """Others give way from now until the returned function is called, or `first_for` has
        passed. Also for a request whose bytes are arriving on a connection whose last request
        went first (api/connections.py): from before it is parsed, whose it is is not known yet."""
        self.running += 1
        going_first = True

        def end() -> None:  # at the end, or after `first_for`, whichever comes first
            nonlocal going_first
            if going_first:
                going_first = False
                expiry.cancel()
                self._done()

        expiry = asyncio.get_running_loop().call_later(self.first_for, end)
        return end

    def _done(self) -> None:
        self.running -= 1
        if self.running <= 0:
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        timer = asyncio.get_running_loop().call_later(self.hold, _set_result, fut)
        try:
            await fut
        finally:
            timer.cancel()


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_GIVES_WAY: ContextVar[Precedence | None] = ContextVar("gives_way", default=None)


def goes_first() -> bool:
    """Whether work in this context never gives way (a first request, or outside any request)."""
    return _GIVES_WAY.get() is None


async def give_way() -> None:
    """Wait (a bounded time) while a request that goes first executes, unless this is one."""
    precedence = _GIVES_WAY.get()
    if precedence is not None and precedence.running > 0:
        await precedence.wait()


class LoopBudget:
    """`if budget.spent(): await budget.pause()` inside a loop over many items."""

    __slots__ = ("slice", "until")

    def __init__(self, slice_seconds: float = SLICE) -> None:
        self.slice = slice_seconds
        self.until = time.perf_counter() + slice_seconds

    def spent(self) -> bool:
        return time.perf_counter() >= self.until

    async def pause(self) -> None:
        """Let every callback that is ready run (and a request that goes first end), then start
        a new slice."""
        await asyncio.sleep(0)
        await give_way()
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
    if not parts:
        return opening + b"]}"
    # one join: each copy of a body of megabytes is a step of milliseconds (fresh pages)
    parts[0] = opening + parts[0]
    parts[-1] += b"]}"
    return b",".join(parts)


class Turnstile:
    """Many small steps of background work (a watch event for each of hundreds of watchers) share
    the loop with requests: about `slice` seconds of such steps run back to back, the others wait
    in order and are let through a batch per loop iteration, after what became ready meanwhile (a
    request's next step). Without it one write to a resource with 100 watches put ~5 ms of steps
    ahead of every request (issue 12); waiting also lets events that arrive meanwhile go out in
    the same write. A batch is as many turns as fit in a slice, by a moving average of their cost.
    """

    __slots__ = ("_batch_start", "_fresh", "_opening", "_released", "_waiting", "cost", "slice", "until")

    def __init__(self, slice_seconds: float = SLICE) -> None:
        self.slice = slice_seconds
        self.until = 0.0  # the end of the slice running now
        self.cost = slice_seconds / 20  # seconds one turn takes, on average
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._opening: asyncio.Handle | None = None  # the next batch's release, scheduled
        self._fresh = True  # a loop iteration has begun since the last slice or batch started
        self._batch_start = 0.0
        self._released = 0

    async def turn(self) -> None:
        await give_way()
        loop = asyncio.get_running_loop()
        if not self._waiting:
            now = time.perf_counter()
            if now < self.until:
                return
            if self._fresh:  # nothing ran in turns this iteration: a slice starts now
                self._start_slice(loop, now)
                return
        fut = loop.create_future()
        self._waiting.append(fut)
        if self._opening is None:
            self._opening = loop.call_soon(self._release)
        await fut
        if not self._batch_start:
            self._batch_start = time.perf_counter()

    def _start_slice(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self.until, self._fresh = now + self.slice, False
        loop.call_soon(self._new_iteration)

    def _new_iteration(self) -> None:
        self._fresh = True

    def _release(self) -> None:
        """Let the next batch through: its steps run in the next iteration, after the callbacks
        that are queued now, and the release after it is queued behind them."""
        loop = asyncio.get_running_loop()
        self._opening = None
        now = time.perf_counter()
        if self._released and self._batch_start:
            self.cost += ((now - self._batch_start) / self._released - self.cost) / 4
        self._batch_start, self._released = 0.0, 0
        n = max(1, int(self.slice / max(self.cost, 1e-6)))
        while self._waiting and self._released < n:
            fut = self._waiting.popleft()
            if not fut.done():  # (a cancelled waiter)
                fut.set_result(None)
                self._released += 1
        # the batch is the next slice: whoever comes meanwhile queues behind it
        self.until, self._fresh = 0.0, False
        loop.call_soon(self._new_iteration)
        if self._waiting:
            self._opening = loop.call_soon(self._release)


def drain(objs: list[T]) -> Iterator[T]:
    """The items of `objs` in order, each taken out of the list as it is handed on: a loop that
    encodes them a slice at a time then also frees them a slice at a time. Freed all at once when
    a handler returns, 2000 decoded objects and their Table rows took 10-15 ms in one step."""
    objs.reverse()
    while objs:
        yield objs.pop()
