"""An in-memory copy of every key under a store prefix, kept current by a watch.

Authentication and authorization run on every request; reading tenants, users, namespaces and
revocations from the store each time would cost several store round trips per request. A mirror
costs one list at start and one watch, and answers lookups from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator

from hypernetes.objects import Obj
from hypernetes.store.interface import Compacted, EventType, Store

log = logging.getLogger(__name__)


class PrefixMirror:
    """`mirror[name]` is the decoded value at `prefix + name`; names under deeper paths
    (namespaced objects) keep their `ns/name` form."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        self._items: dict[str, Obj] = {}
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str, Obj | None], None]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (revision, until applied)
        self.revision = 0

    async def start(self) -> None:
        await self._load()
        self._task = asyncio.create_task(self._run(), name=f"mirror {self.prefix}")

    async def _load(self) -> None:
        res = await self.store.list(self.prefix)
        before = set(self._items)
        for kv in res.items:
            self._put(kv.key, kv.value)
        # keys gone while the watch was broken: their listeners must hear of it too
        for name in before - {kv.key.removeprefix(self.prefix) for kv in res.items}:
            self._drop(self.prefix + name)
        self._advance(res.revision)

    def _advance(self, revision: int) -> None:
        self.revision = revision
        if self._waiters:
            for rev, fut in self._waiters:
                if rev <= revision and not fut.done():
                    fut.set_result(None)
            self._waiters = [(rev, fut) for rev, fut in self._waiters if not fut.done()]

    async def caught_up(self, revision: int, timeout: float = 2.0) -> None:
        """Returns once the watch has brought this mirror to `revision` (a write under its prefix
        made through this server), or after `timeout`: so that the request after a write is
        authenticated and authorized by what it wrote (a demoted admin loses its writes with the
        very next request, on etcd too, where the watch event comes a moment after the write)."""
        if self._task is None or self.revision >= revision:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, fut))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            log.warning("mirror %s: revision %d not seen within %gs", self.prefix, revision, timeout)

    def _put(self, key: str, value: bytes) -> None:
        name = key.removeprefix(self.prefix)
        try:
            obj = json.loads(value)
        except ValueError:
            log.warning("mirror %s: undecodable value at %s", self.prefix, key)
            return
        self._items[name] = obj
        for fn in self._listeners:
            fn(name, obj)

    def _drop(self, key: str) -> None:
        name = key.removeprefix(self.prefix)
        self._items.pop(name, None)
        for fn in self._listeners:
            fn(name, None)

    async def _run(self) -> None:
        while True:
            try:
                async for ev in self.store.watch(self.prefix, self.revision):
                    if ev.type is EventType.PUT:
                        self._put(ev.kv.key, ev.kv.value)
                    else:
                        self._drop(ev.kv.key)
                    self._advance(ev.revision)
            except Compacted:
                await self._load()  # missed events: start over from a fresh list
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mirror %s: watch failed; retrying", self.prefix)
                await asyncio.sleep(1)

    async def fetch(self, name: str) -> Obj | None:
        """As get(), but a miss is read from the store: the watch may not yet carry a write
        made a moment ago (a namespace created just before a pod in it)."""
        obj = self._items.get(name)
        if obj is not None:
            return obj
        kv = await self.store.get(self.prefix + name)
        if kv is None:
            return None
        try:
            found: Obj = json.loads(kv.value)
        except ValueError:
            return None
        return found

    def on_change(self, fn: Callable[[str, Obj | None], None]) -> None:
        self._listeners.append(fn)

    def get(self, name: str) -> Obj | None:
        return self._items.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def items(self) -> Iterator[tuple[str, Obj]]:
        return iter(list(self._items.items()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
