"""A work queue of object keys, as client-go's rate-limited workqueue: a key is queued at most
once, is never handed to two workers at a time (an add while it is being processed requeues it
after `done`), and a key that keeps failing comes back later and later.

Back-off is client-go's DefaultControllerRateLimiter: per key 5 ms doubling up to 1000 s, and
for the whole queue a token bucket of 10 retries a second (burst 100), whichever is later. So
one object that can never sync (a Deployment over its tenant's quota) costs a handful of
attempts a minute, then one every quarter of an hour, and a thousand failing objects cannot
retry faster than 10 a second together. Only `forget` (a sync that worked) resets a key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]


class RateLimiter(Protocol):
    def when(self, key: str) -> float:
        """Seconds to wait before retrying `key` (counts this as a failure)."""
        ...

    def forget(self, key: str) -> None: ...

    def retries(self, key: str) -> int: ...


class ItemExponentialBackoff:
    """client-go's ItemExponentialFailureRateLimiter: base * 2^failures, at most max_delay."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base, self.max = base_delay, max_delay
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        if n > 64:  # 2**n would only overflow the float: the cap applies long before
            return self.max
        return min(self.base * 2.0**n, self.max)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def retries(self, key: str) -> int:
        return self._failures.get(key, 0)


class TokenBucket:
    """client-go's BucketRateLimiter (golang.org/x/time/rate Reserve): every retry takes a
    token, refilled at `rate` a second up to `burst`; a retry without a token waits for its
    turn. Shared by all keys of a queue, so it bounds the queue's total retry rate."""

    def __init__(self, rate: float = 10.0, burst: int = 100, clock: Clock = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()

    def when(self, key: str) -> float:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return max(0.0, -self._tokens / self.rate)

    def forget(self, key: str) -> None:
        pass

    def retries(self, key: str) -> int:
        return 0


class MaxOf:
    """The longest wait any of the limiters asks for (client-go's MaxOfRateLimiter)."""

    def __init__(self, *limiters: RateLimiter) -> None:
        self.limiters = limiters

    def when(self, key: str) -> float:
        return max(lim.when(key) for lim in self.limiters)

    def forget(self, key: str) -> None:
        for lim in self.limiters:
            lim.forget(key)

    def retries(self, key: str) -> int:
        return max(lim.retries(key) for lim in self.limiters)


def controller_rate_limiter(max_delay: float = 1000.0) -> RateLimiter:
    """client-go's DefaultControllerRateLimiter (`max_delay` lower for controllers that must
    look again soon, as upstream's namespace controller does with 60 s)."""
    return MaxOf(ItemExponentialBackoff(0.005, max_delay), TokenBucket(10.0, 100))


class WorkQueue:
    def __init__(self, rate_limiter: RateLimiter | None = None) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._waiting: dict[str, tuple[float, asyncio.TimerHandle]] = {}  # key: (due, timer)
        self.rate_limiter = rate_limiter or controller_rate_limiter()
        self._shut = False
        self.adds = self.retries = 0  # upstream's workqueue_adds_total, workqueue_retries_total

    def __len__(self) -> int:
        return self._queue.qsize()

    @property
    def waiting(self) -> int:
        """Keys due later (backing off or scheduled), not yet queued."""
        return len(self._waiting)

    def add(self, key: str) -> None:
        if self._shut or key in self._dirty:
            return
        self.adds += 1
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        """Queue `key` in `delay` seconds; a key already due sooner keeps its time (client-go's
        delaying queue), so repeated calls never pile up timers."""
        if delay <= 0:
            self.add(key)
            return
        if self._shut:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()

        def fire() -> None:
            self._waiting.pop(key, None)
            self.add(key)

        self._waiting[key] = (due, loop.call_at(due, fire))

    def add_rate_limited(self, key: str) -> None:
        """Requeue a key whose sync failed, when the rate limiter allows."""
        self.retries += 1
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: str) -> None:
        """The key synced: its next failure starts backing off from the beginning."""
        self.rate_limiter.forget(key)

    def failures(self, key: str) -> int:
        return self.rate_limiter.retries(key)

    async def get(self) -> str | None:
        """The next key (mark it `done` after processing); None once shut down."""
        key = await self._queue.get()
        if key is None:
            self._queue.put_nowait(None)  # wake the next worker too
            return None
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shut:
            self._queue.put_nowait(key)

    def shutdown(self) -> None:
        self._shut = True
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        self._queue.put_nowait(None)
