"""What a tenant may read of the store's history when names change hands.

The store keeps every revision (kine-style: row id = resourceVersion), and names are reused: a
namespace deleted by one tenant is created by another, a tenant is deleted and created again
under the same name. A list at an old resourceVersion, a continue token or a watch from an old
revision would otherwise replay the previous holder's objects, data included. The rules for a
tenant caller (operators and nodes see everything, as before):

- **Expired before the current holding.** A list, continue token or watch at a revision before
  the caller's Tenant object was created, or (namespaced kinds) before the current ownership of
  the namespace began (its creation, or the relabel that handed it over), is answered as
  compacted history is: 410 Expired / "too old resource version", which every client answers by
  listing again (client-go's reflector relists).
- **Each object and event by the holding it belongs to.** An object or watch event in namespace N
  at revision r is shown only if N belonged to the caller's tenant at r and the object was created
  in N's incarnation of then (a leftover of an earlier namespace of the same name never is); an
  object or event of any kind only if the caller's tenant at r is the caller's tenant of now.
- **Events about older objects.** An Event whose involvedObject/regarding is a version older
  than its namespace's incarnation is not shown.

`Ownership` keeps the timeline of every namespace's owners and every tenant's incarnations in
memory, fed by one store-wide watch, so it also knows how far it has read: a check at revision r
first waits until the timeline has seen r (`caught_up`), then is a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from hypernetes.api.objects import key_prefix
from hypernetes.api.status import ApiError
from hypernetes.auth.directory import GROUP, owner
from hypernetes.auth.identity import UserInfo
from hypernetes.objects import Obj
from hypernetes.store.interface import Compacted, Event, EventType, KeyValue, Store

log = logging.getLogger(__name__)

NAMESPACES = key_prefix("", "namespaces", None)
TENANTS = key_prefix(GROUP, "tenants", None)
MAX_SPANS = 16  # holdings remembered per name: enough for watchers lagging across a hand-over
FORGET_AFTER = 100_000  # revisions after which a name's ended holdings are dropped
EVENT_KINDS = (("v1", "Event"), ("events.k8s.io/v1", "Event"))


@dataclass
class Span:
    """One holding of a name: from `start` (its creation, or the hand-over to `owner`) to `end`
    (its deletion or the next hand-over; 0 while current). `created` is the object's
    create_revision: its incarnation."""

    start: int
    created: int
    owner: str | None
    end: int = 0

    def covers(self, revision: int) -> bool:
        return self.start <= revision and (self.end == 0 or revision < self.end)


@dataclass
class Timeline:
    """The holdings of every name under one key prefix; unknown history is no holding at all."""

    owner_of: Callable[[Obj], str | None]
    spans: dict[str, list[Span]] = field(default_factory=dict)

    def at(self, name: str, revision: int) -> Span | None:
        for span in reversed(self.spans.get(name, ())):
            if span.covers(revision):
                return span
            if span.start <= revision:
                return None
        return None

    def current(self, name: str) -> Span | None:
        spans = self.spans.get(name)
        return spans[-1] if spans and spans[-1].end == 0 else None

    def held_by(self, holder: str) -> list[Span]:
        return [s[-1] for s in self.spans.values() if s[-1].end == 0 and s[-1].owner == holder]

    def decode_owner(self, value: bytes) -> str | None:
        try:
            obj = json.loads(value)
        except ValueError:
            return None
        return self.owner_of(obj) if isinstance(obj, dict) else None

    def apply(self, name: str, kv: KeyValue | None, revision: int, start: int | None = None) -> None:
        """The name's state as of `revision` (None: it is gone). `start`: when the holding began,
        if known to be earlier (a timeline loaded from a list)."""
        cur = self.current(name)
        if kv is None:
            if cur is not None:
                cur.end = revision
            return
        holder = self.decode_owner(kv.value)
        if cur is not None and cur.created == kv.create_revision and cur.owner == holder:
            return
        if cur is not None:
            cur.end = revision
        spans = self.spans.setdefault(name, [])
        spans.append(Span(revision if start is None else start, kv.create_revision, holder))
        del spans[:-MAX_SPANS]

    def end_all(self, revision: int, keep: set[str]) -> None:
        for name, spans in self.spans.items():
            if name not in keep and spans[-1].end == 0:
                spans[-1].end = revision

    def forget(self, before: int) -> None:
        gone = [n for n, s in self.spans.items() if s[-1].end and s[-1].end < before]
        for name in gone:
            del self.spans[name]


class Ownership:
    """Who held each namespace and tenant name when, fed by a store-wide watch."""

    def __init__(self, store: Store, *, wait: float = 10.0) -> None:
        self.store, self.wait = store, wait
        self.namespaces = Timeline(owner)
        self.tenants = Timeline(lambda _: None)
        self.seen = 0  # every store event up to this revision is in the timelines
        self._advanced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._events = 0

    async def start(self) -> None:
        async with self._starting:
            if self._task is None:
                await self._load()
                self._task = asyncio.create_task(self._run(), name="ownership timeline")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def caught_up(self, revision: int) -> None:
        """Wait until the timelines have seen `revision`; 503 if they do not within `wait`."""
        await self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while self.seen < revision:
            left = deadline - loop.time()
            if left <= 0:
                raise ApiError(
                    503,
                    "ServiceUnavailable",
                    f"namespace ownership is not known yet at revision {revision}; try again",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), left)

    def _advance(self, revision: int) -> None:
        self.seen = max(self.seen, revision)
        self._advanced.set()
        self._advanced = asyncio.Event()

    async def _load(self) -> None:
        """Both timelines as of one revision; holdings the watch lost track of end conservatively
        (right after the last revision seen), so nothing in between is shown for them."""
        ns = await self.store.list(NAMESPACES)
        tenants = await self.store.list(TENANTS, revision=ns.revision)
        lost_at = self.seen + 1
        for timeline, prefix, res in ((self.namespaces, NAMESPACES, ns), (self.tenants, TENANTS, tenants)):
            names = set()
            for kv in res.items:
                name = kv.key.removeprefix(prefix)
                names.add(name)
                cur = timeline.current(name)
                holder = timeline.decode_owner(kv.value)
                if cur is not None and cur.created == kv.create_revision and cur.owner == holder:
                    continue
                if cur is not None:
                    cur.end = lost_at
                since = await self._held_since(timeline, kv, holder)
                timeline.apply(name, kv, ns.revision, start=max(since, lost_at if cur else 0))
            timeline.end_all(lost_at, names)
        self._advance(ns.revision)

    async def _held_since(self, timeline: Timeline, kv: KeyValue, holder: str | None) -> int:
        """The revision from which `kv`'s key has been held by `holder` without a break: walk its
        versions back while the holder stays. History lost to compaction is unreadable anyway."""
        since, cur = kv.mod_revision, kv
        while cur.mod_revision != cur.create_revision:
            try:
                res = await self.store.list(kv.key, limit=1, revision=cur.mod_revision - 1)
            except Compacted:
                break
            prev = next((p for p in res.items if p.key == kv.key), None)
            if prev is None or timeline.decode_owner(prev.value) != holder:
                break
            since, cur = prev.mod_revision, prev
        return since

    async def _run(self) -> None:
        while True:
            try:
                async for ev in self.store.watch("/", self.seen):
                    self._apply(ev)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # compacted past us, lagged, or a broken store: start over
                log.warning("ownership timeline: watch stopped (%s); reloading", e)
                await asyncio.sleep(0.1)
                with contextlib.suppress(Exception):
                    await self._load()

    def _apply(self, ev: Event) -> None:
        key = ev.kv.key
        kv = ev.kv if ev.type is EventType.PUT else None
        if key.startswith(NAMESPACES):
            self.namespaces.apply(key.removeprefix(NAMESPACES), kv, ev.revision)
        elif key.startswith(TENANTS):
            self.tenants.apply(key.removeprefix(TENANTS), kv, ev.revision)
        self._events += 1
        if self._events % 10_000 == 0:
            self.namespaces.forget(ev.revision - FORGET_AFTER)
            self.tenants.forget(ev.revision - FORGET_AFTER)
        self._advance(ev.revision)

    async def view(self, user: UserInfo | None) -> TenantView | None:
        """The rules for `user` (None: operators, nodes, the server itself see everything)."""
        if user is None or not user.tenant or user.operator or user.node is not None:
            return None
        now = await self.store.current_revision()
        await self.caught_up(now)
        tenant = self.tenants.current(user.tenant)
        return TenantView(self, user.tenant, tenant.created if tenant is not None else -1, now)


@dataclass(frozen=True)
class TenantView:
    """One tenant caller's part of history (see the module's docstring)."""

    ownership: Ownership
    tenant: str
    incarnation: int  # its Tenant object's create_revision (-1: none, so it sees nothing)
    revision: int  # the store revision the timelines were known at when the request began

    def floor(self, namespace: str | None, namespaced: bool) -> int:
        """The oldest revision this caller may list or watch from."""
        low = self.incarnation
        if namespaced:
            t = self.ownership.namespaces
            spans = [t.current(namespace)] if namespace else t.held_by(self.tenant)
            low = max([low, *(s.start for s in spans if s is not None and s.owner == self.tenant)])
        return low

    async def sync(self, revision: int) -> None:
        await self.ownership.caught_up(revision)

    def visible(self, obj: Obj, created: int, revision: int) -> bool:
        """May this caller see `obj` (created at `created`) as it was at `revision`?"""
        meta = obj.get("metadata") or {}
        return self.visible_at(str(meta.get("namespace") or ""), subject_version(obj), created, revision)

    def visible_at(self, namespace: str, subject: int | None, created: int, revision: int) -> bool:
        """`visible` from what it looks at: the object's namespace ("" if cluster-scoped) and, for
        an Event, `subject_version` (the watch cache keeps these, not the decoded object)."""
        own = self.ownership
        held = own.tenants.at(self.tenant, revision)
        if held is None or held.created != self.incarnation:
            return False
        if not namespace:
            return True
        span = own.namespaces.at(namespace, revision)
        if span is None or span.owner != self.tenant or created <= span.created:
            return False
        # an Event about an object version from before its namespace's incarnation
        return subject is None or subject > span.created


def subject_version(obj: Obj) -> int | None:
    """For an Event about an object in the Event's own namespace, that object's resourceVersion
    (None for anything else): what decides whether the Event is about an older incarnation."""
    if (obj.get("apiVersion"), obj.get("kind")) not in EVENT_KINDS:
        return None
    ref = obj.get("involvedObject") or obj.get("regarding")
    namespace = (obj.get("metadata") or {}).get("namespace")
    if not isinstance(ref, dict) or (ref.get("namespace") or namespace) != namespace:
        return None
    rv = str(ref.get("resourceVersion") or "")
    return int(rv) if rv.isdigit() else None
