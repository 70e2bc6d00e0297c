"""The watch cache: one store watch per resource, fanned out in-process to every watcher.

Each resource (pods, namespaces, ...) gets one `ResourceCache` on its first watcher: a store
watch from the then-current revision, a ring buffer of recent events (so watchers resuming from
a recent resourceVersion are served from memory), and a set of subscribers with bounded queues.
A subscriber that falls `queue_limit` events behind is closed; its client re-watches, as with
kube-apiserver's watch cache. A watcher resuming from before the buffer gets its own store watch,
which reports Compacted (410 Gone) when the store no longer has that history.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hypernetes.api.history import Ownership, subject_version
from hypernetes.api.loopslice import LoopBudget, Turnstile
from hypernetes.objects import Obj
from hypernetes.store.interface import Compacted, Event, EventType, Store

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class CachedEvent:
    """A store event encoded once and shared by every watcher.

    The object is kept as its wire bytes, not as a decoded dict: 2000 events of nested dicts per
    resource were most of what every full garbage collection walked (issue 12: 15-47 ms pauses
    that stopped every tenant's requests). What tenant visibility needs is kept beside it; the
    dict is decoded (and shared through a small cache) only for watchers that filter or render.
    """

    revision: int
    key: str
    deleted: bool
    raw: bytes  # the new state as Obj; for a deletion, the last state with the deletion's RV
    prev_value: bytes | None  # the previous state as stored (no resourceVersion) ...
    prev_revision: int  # ... and its mod_revision
    created: int = 0  # the object's create_revision (which incarnation of its name)
    namespace: str = ""  # metadata.namespace
    subject: int | None = None  # an Event's involvedObject version (history.subject_version)

    @property
    def obj(self) -> Obj:
        """The decoded object, shared: read it, never change it."""
        return _decoded(self.raw, 0)

    @property
    def prev(self) -> Obj | None:
        return None if self.prev_value is None else _decoded(self.prev_value, self.prev_revision)

    def line(self, etype: str) -> bytes:
        """`{"type":..,"object":..}\\n` for this event's object, without decoding it."""
        return b'{"type":"' + etype.encode() + b'","object":' + self.raw + b"}\n"


@functools.lru_cache(maxsize=256)
def _decoded(value: bytes, revision: int) -> Obj:
    """The recent events' objects that filtering watchers look at: decoded once for all of them
    (events reach every watcher within moments), and few enough to keep collections short."""
    obj: Obj = json.loads(value)
    if revision:
        obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def decode_event(ev: Event) -> CachedEvent:
    obj: Obj = json.loads(ev.kv.value)
    meta = obj.setdefault("metadata", {})
    meta["resourceVersion"] = str(ev.revision)
    return CachedEvent(
        ev.revision,
        ev.kv.key,
        ev.type is EventType.DELETE,
        json.dumps(obj, separators=(",", ":")).encode(),
        None if ev.prev is None else ev.prev.value,
        0 if ev.prev is None else ev.prev.mod_revision,
        ev.kv.create_revision,
        str(meta.get("namespace") or ""),
        subject_version(obj),
    )


class Subscriber:
    """One watcher's queue. `push` never blocks: past `limit` the subscriber is closed instead."""

    def __init__(self, after: int, limit: int, key_prefix: str = "") -> None:
        self.after = after  # deliver only events with revision > after
        self.limit = limit
        # only events under this prefix (the watch's namespace) wake it: another tenant's writes
        # do not cost a step of every one of this tenant's watches (issue 12)
        self.key_prefix = key_prefix
        self.queue: deque[CachedEvent] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.error: Compacted | None = None
        self.progress = after  # the latest revision known to be delivered or skipped
        self.task: asyncio.Task[None] | None = None  # its own store watch, if not the cache's

    def push(self, ev: CachedEvent) -> None:
        if self.closed or ev.revision <= self.after or not ev.key.startswith(self.key_prefix):
            return
        if len(self.queue) >= self.limit:
            self.close()
            return
        self.queue.append(ev)
        self.wake.set()

    def close(self, error: Compacted | None = None) -> None:
        self.closed, self.error = True, error
        self.wake.set()

    async def next_batch(self, timeout: float, turnstile: Turnstile | None = None) -> list[CachedEvent]:
        """Queued events, waiting up to `timeout` for one; [] on timeout or when closed. With a
        `turnstile`, events are taken once it is this watcher's turn (api/loopslice.py)."""
        if not self.queue and not self.closed:
            # (not wait_for: in 3.11 it wraps the wait in a task of its own, three loop steps
            # per event per watcher where this takes one)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
        if turnstile is not None and self.queue:
            await turnstile.turn()
        self.wake.clear()
        batch = list(self.queue)
        self.queue.clear()
        if batch:
            self.progress = max(self.progress, batch[-1].revision)
        return batch


class ResourceCache:
    def __init__(self, store: Store, prefix: str, capacity: int, queue_limit: int) -> None:
        self.store, self.prefix = store, prefix
        self.capacity, self.queue_limit = capacity, queue_limit
        self.buffer: deque[CachedEvent] = deque()
        self.floor = 0  # events with revision > floor are all in the buffer
        self.latest = 0  # the newest revision this cache has seen (for bookmarks)
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if self._task is not None and not self._task.done():
                return
            rev = await self.store.current_revision()
            self.floor = self.latest = rev
            self.buffer.clear()
            self._task = asyncio.create_task(self._run(rev), name=f"watch-cache {self.prefix}")

    async def _run(self, rev: int) -> None:
        try:
            async for ev in self.store.watch(self.prefix, rev):
                self._dispatch(decode_event(ev))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watch cache for %s stopped; closing its watchers", self.prefix)
        for s in list(self.subscribers):
            s.close()
        self.subscribers.clear()

    def _dispatch(self, ce: CachedEvent) -> None:
        self.buffer.append(ce)
        if len(self.buffer) > self.capacity:
            self.floor = self.buffer.popleft().revision
        self.latest = ce.revision
        for s in list(self.subscribers):
            s.push(ce)
            if s.closed:
                self.subscribers.discard(s)

    def subscribe(self, after: int, key_prefix: str = "") -> Subscriber | None:
        """A subscriber fed from `after` on with the events under `key_prefix`, or None if the
        buffer does not reach back that far. Replay and registration happen without an await in
        between, so nothing is missed."""
        if after < self.floor:
            return None
        s = Subscriber(after, self.queue_limit, key_prefix)
        for ce in self.buffer:
            s.push(ce)
        s.progress = max(after, self.latest)
        if not s.closed:
            self.subscribers.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        self.subscribers.discard(s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


class WatchCaches:
    """All resources' caches; `subscribe` is what a watch request calls."""

    def __init__(self, store: Store, *, capacity: int = 2000, queue_limit: int = 1000) -> None:
        self.store = store
        self.capacity, self.queue_limit = capacity, queue_limit
        self._caches: dict[str, ResourceCache] = {}
        self._direct: set[asyncio.Task[None]] = set()
        self.turnstile = Turnstile()  # watchers take their events in turns (api/loopslice.py)
        # who held which namespace and tenant name when: what tenants may see of history
        self.ownership = Ownership(store)

    def cache(self, prefix: str) -> ResourceCache:
        c = self._caches.get(prefix)
        if c is None:
            c = self._caches[prefix] = ResourceCache(self.store, prefix, self.capacity, self.queue_limit)
        return c

    async def subscribe(
        self, prefix: str, after: int, key_prefix: str = ""
    ) -> tuple[Subscriber, ResourceCache]:
        """A subscriber to resource `prefix`'s events under `key_prefix` (default: all of them)."""
        c = self.cache(prefix)
        await c.start()
        s = c.subscribe(after, key_prefix)
        if s is None:
            s = Subscriber(after, self.queue_limit, key_prefix)
            task = asyncio.create_task(self._direct_watch(prefix, s), name=f"watch {prefix}@{after}")
            self._direct.add(task)
            task.add_done_callback(self._direct.discard)
            s.task = task
        return s, c

    async def _direct_watch(self, prefix: str, s: Subscriber) -> None:
        """A store watch of its own for a watcher older than the cache's buffer."""
        try:
            async for ev in self.store.watch(prefix, s.after):
                s.push(decode_event(ev))
                if s.closed:
                    return
        except Compacted as e:
            s.close(e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("direct watch of %s failed", prefix)
            s.close()

    def release(self, s: Subscriber, c: ResourceCache) -> None:
        c.unsubscribe(s)
        if s.task is not None:
            s.task.cancel()

    @property
    def watchers(self) -> int:
        return sum(len(c.subscribers) for c in self._caches.values()) + len(self._direct)

    async def close(self) -> None:
        for t in list(self._direct):
            t.cancel()
        for c in self._caches.values():
            await c.stop()
        await self.ownership.stop()


async def aiter_events(s: Subscriber, timeout: float) -> AsyncIterator[list[CachedEvent]]:
    """Batches until the subscriber is closed; an empty batch every `timeout` seconds of quiet."""
    while not s.closed or s.queue:
        yield await s.next_batch(timeout)


# -- the HTTP side: one chunked response of newline-delimited events ---------------------------


@dataclass
class WatchRequest:
    prefix: str  # the resource's key prefix (all namespaces): the cache's key
    key_prefix: str  # the namespace's prefix, or == prefix
    after: int  # deliver changes after this revision
    initial: list[Obj]  # synthetic ADDED events first (resourceVersion unset or "0")
    matches: Callable[[Obj], bool] | None  # label and field selectors (None: everything)
    render: Any  # Callable[[Obj], Obj]: the event object (a one-row Table for `kubectl get -w`)
    bookmark: Any  # Callable[[int], Obj] | None: a BOOKMARK object at a revision (if asked for)
    timeout: float
    bookmark_every: float = 60.0
    initial_events_end: bool = False  # sendInitialEvents: mark the end of the initial ADDEDs
    plain: bool = True  # render is the identity: events can share their encoded lines
    # a tenant's part of history (api/history.py): events it may see, once `sync` has caught up
    visible: Callable[[CachedEvent], bool] | None = None
    sync: Callable[[int], Awaitable[None]] | None = None


def _line(etype: str, obj: Obj) -> bytes:
    return json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"


def transition(ev: CachedEvent, wr: WatchRequest) -> tuple[str, Obj | None] | None:
    """The event this watcher sees, with selectors: an object entering the selection is ADDED,
    one leaving it DELETED (its previous state at the event's RV), as the apiserver's cache does.
    The object is None when it is the event's own (encoded once for every watcher)."""
    if not ev.key.startswith(wr.key_prefix) or (wr.visible is not None and not wr.visible(ev)):
        return None
    if wr.matches is None:  # no selection: nothing to decode
        return ("DELETED" if ev.deleted else "MODIFIED" if ev.prev_value is not None else "ADDED"), None
    now = wr.matches(ev.obj)
    if ev.deleted:
        return ("DELETED", None) if now else None
    prev = ev.prev
    before = prev is not None and wr.matches(prev)
    if now:
        return ("MODIFIED" if before else "ADDED"), None
    if before and prev is not None:
        gone = {**prev, "metadata": {**prev["metadata"], "resourceVersion": str(ev.revision)}}
        return "DELETED", gone
    return None


def encode_batch(batch: list[CachedEvent], wr: WatchRequest) -> bytes:
    out = []
    for ev in batch:
        t = transition(ev, wr)
        if t is None:
            continue
        etype, obj = t
        if obj is None and wr.plain:
            out.append(ev.line(etype))
        else:
            out.append(_line(etype, wr.render(ev.obj if obj is None else obj)))
    return b"".join(out)


def error_line(status: Obj) -> bytes:
    return _line("ERROR", status)


async def initial_chunks(wr: WatchRequest) -> AsyncIterator[bytes]:
    """The synthetic ADDED events (and the initial-events-end bookmark), encoded a slice of loop
    time at a time. `wr.initial` is emptied as it goes: a watch does not keep the objects of its
    first list for its lifetime (a flood of watches did, and every full collection walked them)."""
    objs = wr.initial
    objs.reverse()
    budget = LoopBudget()
    lines: list[bytes] = []
    while objs:
        lines.append(_line("ADDED", wr.render(objs.pop())))
        if budget.spent():
            yield b"".join(lines)
            lines = []
            await budget.pause()
    if wr.initial_events_end and wr.bookmark is not None:
        bm = wr.bookmark(wr.after)
        bm["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
        lines.append(_line("BOOKMARK", bm))
    if lines:
        yield b"".join(lines)


async def stream(resp: Any, caches: WatchCaches, wr: WatchRequest) -> None:
    """Write events to `resp` (an aiohttp StreamResponse) until the timeout, the client leaves,
    or the subscriber is closed (slow client, or history compacted: raises Compacted)."""
    loop = asyncio.get_running_loop()
    s, c = await caches.subscribe(wr.prefix, wr.after, wr.key_prefix)
    try:
        deadline = loop.time() + wr.timeout
        next_bookmark = loop.time() + wr.bookmark_every
        while True:
            now = loop.time()
            if now >= deadline:
                break
            batch = await s.next_batch(max(0.0, min(deadline, next_bookmark) - now), caches.turnstile)
            if batch:
                if wr.sync is not None:
                    await wr.sync(batch[-1].revision)
                data = encode_batch(batch, wr)
                if data:
                    await resp.write(data)
            if s.closed and not s.queue:
                if s.error is not None:
                    raise s.error
                return
            if wr.bookmark is not None and loop.time() >= next_bookmark:
                await resp.write(_line("BOOKMARK", wr.bookmark(_progress(s, c, wr))))
                next_bookmark = loop.time() + wr.bookmark_every
        if wr.bookmark is not None:
            # a last bookmark lets the client resume from here without a 410
            await resp.write(_line("BOOKMARK", wr.bookmark(_progress(s, c, wr))))
    finally:
        caches.release(s, c)


def _progress(s: Subscriber, c: ResourceCache, wr: WatchRequest) -> int:
    """The revision a bookmark may claim: everything up to it was delivered (or filtered out)."""
    if s.task is None and not s.queue:
        return max(wr.after, s.progress, c.latest)
    return max(wr.after, s.progress)
