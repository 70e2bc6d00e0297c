"""An in-memory Store with the interface's full semantics (revisions, CAS, history, watch,
compaction), for fast API tests. Not for production: it keeps every event until compacted."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Callable

from hypernetes.store.interface import (
    Compacted,
    Event,
    EventType,
    KeyExists,
    KeyNotFound,
    KeyValue,
    ListResult,
    RevisionConflict,
    Store,
)


class MemoryStore(Store):
    def __init__(self) -> None:
        self._rev = 0
        self._compacted = 0
        self._data: dict[str, KeyValue] = {}
        self._log: list[Event] = []
        self._changed = asyncio.Condition()
        self.ops = 0

    async def _append(self, ev: Event) -> int:
        self._log.append(ev)
        async with self._changed:
            self._changed.notify_all()
        return ev.revision

    async def get(self, key: str) -> KeyValue | None:
        self.ops += 1
        return self._data.get(key)

    def _state_at(self, revision: int) -> dict[str, KeyValue]:
        state = dict(self._data)
        for ev in reversed(self._log):
            if ev.revision <= revision:
                break
            if ev.prev is None:
                state.pop(ev.kv.key, None)
            else:
                state[ev.kv.key] = ev.prev
        return state

    async def list(
        self, prefix: str, *, start_after: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        self.ops += 1
        if revision and revision < self._compacted:
            raise Compacted(revision, self._compacted)
        rev = revision or self._rev
        state = self._data if not revision else self._state_at(revision)
        keys = sorted(k for k in state if k.startswith(prefix) and k > start_after)
        more = bool(limit) and len(keys) > limit
        if limit:
            keys = keys[:limit]
        return ListResult([state[k] for k in keys], rev, more)

    async def create(self, key: str, value: bytes) -> int:
        self.ops += 1
        if key in self._data:
            raise KeyExists(key)
        self._rev += 1
        kv = KeyValue(key, value, self._rev, self._rev)
        self._data[key] = kv
        return await self._append(Event(EventType.PUT, kv, None, self._rev))

    def _check(self, key: str, expected: int) -> KeyValue:
        cur = self._data.get(key)
        if cur is None:
            raise KeyNotFound(key)
        if expected and cur.mod_revision != expected:
            raise RevisionConflict(key, expected, cur.mod_revision)
        return cur

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        self.ops += 1
        cur = self._check(key, expected_revision)
        self._rev += 1
        kv = KeyValue(key, value, cur.create_revision, self._rev)
        self._data[key] = kv
        return await self._append(Event(EventType.PUT, kv, cur, self._rev))

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        self.ops += 1
        cur = self._check(key, expected_revision)
        self._rev += 1
        del self._data[key]
        kv = KeyValue(key, cur.value, cur.create_revision, self._rev)
        await self._append(Event(EventType.DELETE, kv, cur, self._rev))
        return kv

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[Event]:
        if from_revision < self._compacted:
            raise Compacted(from_revision, self._compacted)
        after = from_revision
        while True:
            revs = [e.revision for e in self._log]
            i = bisect.bisect_right(revs, after)
            pending = self._log[i:]
            for ev in pending:
                after = ev.revision
                if ev.kv.key.startswith(prefix):
                    yield ev
            if not pending:
                async with self._changed:
                    await self._changed.wait_for(self._after(after))

    def _after(self, revision: int) -> Callable[[], bool]:
        return lambda: bool(self._log) and self._log[-1].revision > revision

    async def current_revision(self) -> int:
        return self._rev

    async def compact(self, revision: int) -> None:
        self._compacted = max(self._compacted, revision)
        self._log = [e for e in self._log if e.revision > revision]

    async def close(self) -> None:
        pass
