"""Shared informers: one list+watch per resource feeding a local cache and event handlers.

Controllers read the cache, never the API, when deciding what to do; they write through the
API and may put what the API returned back into the cache (`Informer.written`) so that their
next decision does not act on the state from before their own write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hypernetes.apiclient import ApiClient
from hypernetes.objects import Obj

log = logging.getLogger(__name__)


@dataclass
class Handler:
    add: Callable[[Obj], None] | None = None
    update: Callable[[Obj, Obj], None] | None = None
    delete: Callable[[Obj], None] | None = None


def key_of(obj: Obj) -> str:
    """ "namespace/name", or "name" for cluster-scoped objects (client-go's MetaNamespaceKey)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def split_key(key: str) -> tuple[str | None, str]:
    ns, _, name = key.rpartition("/")
    return ns or None, name


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Informer:
    def __init__(self, client: ApiClient, api_version: str, plural: str) -> None:
        self.client, self.api_version, self.plural = client, api_version, plural
        self._cache: dict[str, Obj] = {}
        self._by_ns: dict[str, dict[str, Obj]] = {}
        self._handlers: list[Handler] = []
        self.synced = asyncio.Event()

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        return self._cache.get(key)

    def list(self, namespace: str | None = None) -> list[Obj]:
        if namespace is None:
            return list(self._cache.values())
        return list(self._by_ns.get(namespace, {}).values())

    def __len__(self) -> int:
        return len(self._cache)

    # -- writes --------------------------------------------------------------------------------

    def written(self, obj: Obj) -> None:
        """A controller's own write: the cache holds it unless it already has something newer."""
        cur = self._cache.get(key_of(obj))
        if cur is not None and _same_object(cur, obj) and _rv(obj) > _rv(cur):
            self._store(key_of(obj), obj)

    def _store(self, key: str, obj: Obj) -> None:
        self._cache[key] = obj
        self._by_ns.setdefault((obj.get("metadata") or {}).get("namespace") or "", {})[key] = obj

    def _drop(self, key: str) -> Obj | None:
        obj = self._cache.pop(key, None)
        if obj is not None:
            ns = (obj.get("metadata") or {}).get("namespace") or ""
            self._by_ns.get(ns, {}).pop(key, None)
        return obj

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        async for ev in self.client.informer(self.api_version, self.plural):
            if ev.type == "SYNC":
                self._replace(ev.object)
                self.synced.set()
                continue
            obj = ev.object
            key = key_of(obj)
            if ev.type == "DELETED":
                gone = self._drop(key)
                self._emit("delete", gone or obj)
                continue
            old = self._cache.get(key)
            if old is not None and _same_object(old, obj) and _rv(obj) < _rv(old):
                continue  # older than what we wrote ourselves
            self._store(key, obj)
            if old is None:
                self._emit("add", obj)
            elif not _same_object(old, obj):
                # deleted and re-created between two events: tell both
                self._emit("delete", old)
                self._emit("add", obj)
            else:
                self._emit("update", old, obj)

    def _replace(self, listed: Obj) -> None:
        kind = str(listed.get("kind", "")).removesuffix("List")
        fresh: dict[str, Obj] = {}
        for item in listed.get("items") or []:
            item.setdefault("apiVersion", listed.get("apiVersion"))
            item.setdefault("kind", kind)
            fresh[key_of(item)] = item
        old_cache = dict(self._cache)
        for key, gone in old_cache.items():
            if key not in fresh:
                self._drop(key)
                self._emit("delete", gone)
        for key, obj in fresh.items():
            old = old_cache.get(key)
            self._store(key, obj)
            if old is None:
                self._emit("add", obj)
            elif _rv(old) != _rv(obj):
                self._emit("update", old, obj)

    def _emit(self, what: str, *objs: Obj) -> None:
        for h in self._handlers:
            fn: Any = getattr(h, what)
            if fn is None:
                continue
            try:
                fn(*objs)
            except Exception:
                log.exception("%s handler for %s failed", what, self.plural)


def _same_object(a: Obj, b: Obj) -> bool:
    return (a.get("metadata") or {}).get("uid") == (b.get("metadata") or {}).get("uid")


class InformerFactory:
    """One informer per (api_version, plural), shared by every controller that asks for it."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._informers: dict[tuple[str, str], Informer] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def get(self, api_version: str, plural: str) -> Informer:
        key = (api_version, plural)
        if key not in self._informers:
            self._informers[key] = Informer(self.client, api_version, plural)
        return self._informers[key]

    def start(self) -> None:
        """Start every informer asked for so far (and not yet running); may be called again."""
        for key, inf in self._informers.items():
            if key not in self._tasks:
                self._tasks[key] = asyncio.create_task(inf.run(), name=f"informer {key[1]}")

    async def wait_synced(self, informers: Iterable[Informer] | None = None) -> None:
        await asyncio.gather(*(i.synced.wait() for i in (informers or self._informers.values())))

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
