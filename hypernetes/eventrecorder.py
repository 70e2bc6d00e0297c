"""core/v1 Events as upstream's event recorder writes them (client-go tools/record), for every
component that reports on objects: the controllers and the node agent.

An `EventCorrelator`, with client-go's defaults, stands between a component and the API server:

- **the same event again** (same source, object, type, reason and message) adds to `count` and
  moves `lastTimestamp` of the Event already written (one PATCH), instead of a new Event;
- **similar events**: from the 10th distinct message with the same source, object, type and
  reason within 10 minutes, they are folded into one Event, "(combined from similar events):
  <latest message>", counted as above;
- **a spam filter**: per source and object a token bucket of 25 events, refilled one every 5
  minutes; an event it refuses is not written at all (the next count written includes it).

So an object that fails the same way forever costs one Event and, after a burst, one write per
five minutes. Every cache is an LRU of 4096 keys, as upstream's. Writing is best effort: a lost
event is not worth failing (or retrying) the work it reports on. This module is a leaf (it uses
only `apiclient`), so every room may record events through it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

import aiohttp

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.objects import Obj

log = logging.getLogger(__name__)
V = TypeVar("V")

CACHE_KEYS = 4096
AGGREGATE_MAX = 10  # distinct messages of one kind of event before they are combined...
AGGREGATE_WINDOW = 600.0  # ...within this many seconds of the previous one
SPAM_BURST = 25  # events per source and object...
SPAM_REFILL = 300.0  # ...then one more every this many seconds
COMBINED = "(combined from similar events): "


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _LRU(Generic[V]):
    def __init__(self, size: int = CACHE_KEYS) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, ...], V] = OrderedDict()

    def get(self, key: tuple[str, ...]) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple[str, ...], value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.size:
            self._items.popitem(last=False)


# -- keys, as upstream's (events_cache.go) --------------------------------------------------------


def _source(ev: Obj) -> tuple[str, ...]:
    src = ev.get("source") or {}
    return str(src.get("component") or ""), str(src.get("host") or "")


def _object(ev: Obj, *, field_path: bool = False) -> tuple[str, ...]:
    o = ev.get("involvedObject") or {}
    names = (
        ("kind", "namespace", "name", "fieldPath", "uid", "apiVersion")
        if field_path
        else ("kind", "namespace", "name", "uid", "apiVersion")
    )
    return tuple(str(o.get(n) or "") for n in names)


def event_key(ev: Obj) -> tuple[str, ...]:
    """What makes two events the same one (only count and time may differ)."""
    return (
        "event",
        *_source(ev),
        *_object(ev, field_path=True),
        str(ev.get("type") or ""),
        str(ev.get("reason") or ""),
        str(ev.get("message") or ""),
    )


def spam_key(ev: Obj) -> tuple[str, ...]:
    return ("spam", *_source(ev), *_object(ev))


def aggregate_key(ev: Obj) -> tuple[str, ...]:
    """Events that differ only in their message."""
    return (
        "similar",
        *_source(ev),
        *_object(ev),
        str(ev.get("type") or ""),
        str(ev.get("reason") or ""),
        str(ev.get("reportingComponent") or ""),
        str(ev.get("reportingInstance") or ""),
    )


# -- the correlator ------------------------------------------------------------------------------


@dataclass
class _Similar:
    messages: set[str] = field(default_factory=set)
    last: float = 0.0


@dataclass(frozen=True)
class _Written:
    count: int
    first_timestamp: str
    name: str


class _Bucket:
    """A token bucket that refuses (TryAccept), unlike the work queue's, which delays."""

    def __init__(self, burst: int, refill: float, now: float) -> None:
        self.burst, self.refill = burst, refill
        self.tokens, self.at = float(burst), now

    def try_accept(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.refill)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True)
class Correlated:
    event: Obj  # the Event to write
    patch: Obj | None  # a merge patch of the Event already written by that name; None: create


class EventCorrelator:
    """client-go's EventCorrelator: aggregate, then count, then filter spam."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._similar: _LRU[_Similar] = _LRU()
        self._written: _LRU[_Written] = _LRU()
        self._spam: _LRU[_Bucket] = _LRU()

    def correlate(self, event: Obj) -> Correlated | None:
        """What to write for `event`; None if the spam filter drops it."""
        now = self.clock()
        event, key = self._aggregate(event, now)
        event, patch = self._count(event, key)
        bucket = self._spam.get(spam_key(event)) or _Bucket(SPAM_BURST, SPAM_REFILL, now)
        self._spam.put(spam_key(event), bucket)
        if not bucket.try_accept(now):
            return None
        return Correlated(event, patch)

    def written(self, event: Obj) -> None:
        """Remember what the API server returned (its name and count) for the next patch."""
        meta = event.get("metadata") or {}
        self._written.put(
            event_key(event),
            _Written(
                int(event.get("count") or 1),
                str(event.get("firstTimestamp") or ""),
                str(meta.get("name") or ""),
            ),
        )

    def _aggregate(self, event: Obj, now: float) -> tuple[Obj, tuple[str, ...]]:
        key = aggregate_key(event)
        similar = self._similar.get(key)
        if similar is None or now - similar.last > AGGREGATE_WINDOW:
            similar = _Similar()
        similar.messages.add(str(event.get("message") or ""))
        similar.last = now
        self._similar.put(key, similar)
        if len(similar.messages) < AGGREGATE_MAX:
            return event, event_key(event)
        similar.messages.pop()  # the set stays at the limit
        combined = copy.deepcopy(event)
        combined["metadata"]["name"] = new_name(event)
        combined["message"] = COMBINED + str(event.get("message") or "")
        combined["count"] = 1
        combined["firstTimestamp"] = combined["lastTimestamp"] = rfc3339(now)
        return combined, key  # one Event for the whole group, whatever the message

    def _count(self, event: Obj, key: tuple[str, ...]) -> tuple[Obj, Obj | None]:
        last = self._written.get(key)
        patch = None
        if last is not None:
            event = copy.deepcopy(event)
            event["metadata"]["name"] = last.name
            event["firstTimestamp"] = last.first_timestamp
            event["count"] = last.count + 1
            patch = {
                "count": event["count"],
                "lastTimestamp": event["lastTimestamp"],
                "message": event["message"],
            }
        self._written.put(
            key, _Written(int(event["count"]), str(event["firstTimestamp"]), str(event["metadata"]["name"]))
        )
        return event, patch


def new_name(event: Obj) -> str:
    """`<object>.<unique suffix>`, as upstream names events."""
    return f"{(event.get('involvedObject') or {}).get('name') or 'event'}.{secrets.token_hex(8)}"


def object_reference(obj: Obj, field_path: str = "") -> Obj:
    """The involvedObject of an event about `obj`."""
    meta = obj.get("metadata") or {}
    ref: Obj = {
        "kind": obj.get("kind", ""),
        "apiVersion": obj.get("apiVersion", ""),
        "namespace": meta.get("namespace") or None,
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if field_path:
        ref["fieldPath"] = field_path
    return ref


class EventRecorder:
    """Records events from one source (`component`, and `host` for a node's) through an
    EventCorrelator. Events about one object are written one at a time, in order, so that a
    repeat patches the Event its predecessor created."""

    def __init__(
        self,
        client: ApiClient,
        component: str,
        *,
        host: str = "",
        instance: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.component, self.host = client, component, host
        self.instance = instance or component
        self.correlator = EventCorrelator(clock)
        self.clock = clock
        self._locks: weakref.WeakValueDictionary[tuple[str, ...], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.written = self.dropped = 0  # for metrics and tests

    def event(self, ref: Obj, etype: str, reason: str, message: str) -> Obj:
        """The Event as first written, before correlation."""
        now = rfc3339(self.clock())
        source = {"component": self.component, **({"host": self.host} if self.host else {})}
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "", "namespace": ref.get("namespace") or "default"},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": etype,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
        }
        event["metadata"]["name"] = new_name(event)
        return event

    async def record(self, ref: Obj, etype: str, reason: str, message: str) -> None:
        """Best effort: failures are logged, never raised."""
        event = self.event(ref, etype, reason, message)
        key = spam_key(event)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            out = self.correlator.correlate(event)
            if out is None:
                self.dropped += 1
                log.debug(
                    "event %s about %s/%s dropped by the spam filter",
                    reason,
                    ref.get("namespace"),
                    ref.get("name"),
                )
                return
            try:
                self.correlator.written(await self._write(out))
                self.written += 1
            except (TimeoutError, ApiException, OSError, aiohttp.ClientError) as e:
                log.debug(
                    "event %s about %s/%s not recorded: %s", reason, ref.get("namespace"), ref.get("name"), e
                )

    async def _write(self, out: Correlated) -> Obj:
        meta = out.event["metadata"]
        if out.patch is not None:
            try:
                patched: Obj = await self.client.patch(
                    "v1", "events", meta["name"], out.patch, meta["namespace"]
                )
                return patched
            except ApiException as e:
                if e.status != 404:  # 404: expired (events live an hour) or deleted: create again
                    raise
        created: Obj = await self.client.create("v1", "events", out.event, meta["namespace"])
        return created
