"""Fan-out of store events to watchers, each with a bounded backlog.

Everything here runs on the event loop thread. The hub delivers each revision once, in order:
the store hands it events in revision order and the hub ignores anything at or below `last`.
"""

from __future__ import annotations

import asyncio
from collections import deque

from hypernetes.store.interface import Event, StoreError


class WatchLagged(StoreError):
    """A watcher fell more than its backlog bound behind; it must re-list and watch again."""


class Subscriber:
    def __init__(self, prefix: str, after: int, start: int, backlog: int) -> None:
        self.prefix = prefix
        self.after = after  # deliver only revisions above this (the watch's from_revision)
        self.start = start  # the hub's `last` at subscription: live events are all above it
        self.backlog = backlog
        self.queue: deque[Event] = deque()
        self.error: StoreError | None = None
        self.closed = False
        self._wake = asyncio.Event()

    def push(self, event: Event) -> bool:
        """Queue `event`; False (and the subscriber failed) if the backlog is full."""
        if len(self.queue) >= self.backlog:
            self.fail(
                WatchLagged(
                    f"watch on {self.prefix!r} fell more than {self.backlog} events "
                    f"behind at revision {event.revision}"
                )
            )
            return False
        self.queue.append(event)
        self._wake.set()
        return True

    def fail(self, error: StoreError) -> None:
        self.queue.clear()  # release the memory now; the watcher restarts from its last event
        self.error = error
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next(self) -> Event | None:
        """The next live event; None once closed; raises the error it failed with."""
        while True:
            if self.error is not None:
                raise self.error
            if self.queue:
                return self.queue.popleft()
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()


class WatchHub:
    def __init__(self, last: int, backlog: int) -> None:
        self.last = last  # every event up to this revision has been delivered
        self.backlog = backlog
        self.subscribers: set[Subscriber] = set()

    def subscribe(self, prefix: str, after: int) -> Subscriber:
        sub = Subscriber(prefix, after, self.last, self.backlog)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def publish(self, event: Event) -> None:
        if event.revision <= self.last:
            return
        self.last = event.revision
        key = event.kv.key
        dropped = [
            sub
            for sub in self.subscribers
            if key.startswith(sub.prefix) and event.revision > sub.after and not sub.push(event)
        ]
        for sub in dropped:
            self.subscribers.discard(sub)

    def advance(self, revision: int) -> None:
        """Skip to `revision` (only when nothing up to it needs delivering)."""
        self.last = max(self.last, revision)

    def fail_all(self, error: StoreError) -> None:
        for sub in self.subscribers:
            sub.fail(error)
        self.subscribers.clear()

    def close_all(self) -> None:
        for sub in self.subscribers:
            sub.close()
        self.subscribers.clear()
