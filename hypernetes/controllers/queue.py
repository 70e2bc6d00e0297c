"""A work queue of object keys, as client-go's: a key is queued at most once, is never handed
to two workers at a time (an add while it is being processed requeues it after `done`), and
failed keys come back with per-key exponential back-off."""

from __future__ import annotations

import asyncio


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 60.0) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._base, self._max = base_delay, max_delay
        self._shut = False

    def __len__(self) -> int:
        return self._queue.qsize()

    def add(self, key: str) -> None:
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        if self._shut:
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self.add(key)
        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def add_rate_limited(self, key: str) -> None:
        """Back off 5 ms, 10 ms, 20 ms ... up to max_delay while the key keeps failing."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        self.add_after(key, min(self._base * 2 ** n, self._max))

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

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
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._queue.put_nowait(None)
