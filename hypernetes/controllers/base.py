"""What every controller shares: the worker loop over a rate-limited work queue, expectations
(so a burst of events does not create too many pods), and a few write helpers.

A sync that did not reach its goal raises (after writing what it could, such as a status
condition): the key then comes back with per-key back-off. A sync that swallows its failure
and returns would be forgotten by the queue and retried as fast as the next event arrives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers.events import EventRecorder
from hypernetes.controllers.informer import Informer, InformerFactory, key_of
from hypernetes.controllers.queue import RateLimiter, WorkQueue, controller_rate_limiter
from hypernetes.logfmt import log_fields
from hypernetes.objects import Obj

log = logging.getLogger(__name__)


class Retry(Exception):
    """A sync that cannot finish yet for a reason worth a log line, not a traceback: the key
    backs off as after any failure."""


class Controller:
    """Subclasses set `name`, register handlers on informers in __init__ and implement
    `reconcile(key)`; an exception requeues the key with back-off."""

    name = "controller"
    workers = 2

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        self.client, self.informers = client, informers
        self.queue = WorkQueue(self.rate_limiter())
        self.events = EventRecorder(client, f"{self.name}-controller")
        self._watched: list[Informer] = []
        self.syncs = self.sync_errors = 0  # for the manager's metrics
        self.sync_seconds = 0.0

    @staticmethod
    def rate_limiter() -> RateLimiter:
        """How failed keys back off; client-go's default unless a controller says otherwise."""
        return controller_rate_limiter()

    def informer(self, api_version: str, plural: str) -> Informer:
        inf = self.informers.get(api_version, plural)
        self._watched.append(inf)
        return inf

    def enqueue(self, obj: Obj) -> None:
        self.queue.add(key_of(obj))

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        await self.informers.wait_synced(self._watched)
        workers = [
            asyncio.create_task(self._worker(), name=f"{self.name} worker") for _ in range(self.workers)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            self.queue.shutdown()
            for w in workers:
                w.cancel()

    async def _worker(self) -> None:
        while (key := await self.queue.get()) is not None:
            namespace, _, name = key.rpartition("/")
            with log_fields(controller=self.name, namespace=namespace, name=name):  # hypernetes.logfmt
                start = time.monotonic()
                try:
                    await self.reconcile(key)
                    self.queue.forget(key)
                except asyncio.CancelledError:
                    raise
                except (ApiException, Retry) as e:
                    # conflicts are routine (our cache was behind): retry quietly
                    quiet = isinstance(e, ApiException) and e.status in (404, 409)
                    log.log(
                        logging.DEBUG if quiet else logging.WARNING,
                        "%s: sync %s: %s (retry %d)",
                        self.name,
                        key,
                        e,
                        self.queue.failures(key) + 1,
                    )
                    self.sync_errors += 1
                    self.queue.add_rate_limited(key)
                except Exception:
                    log.exception("%s: sync %s failed", self.name, key)
                    self.sync_errors += 1
                    self.queue.add_rate_limited(key)
                finally:
                    self.syncs += 1
                    self.sync_seconds += time.monotonic() - start
                    self.queue.done(key)


class Expectations:
    """Per controller key: how many creations and which deletions it still waits to observe.
    A controller only creates or deletes again once its expectations are met (or expired, in
    case an event was lost), as upstream's ControllerExpectations."""

    TTL = 300.0

    def __init__(self) -> None:
        self._adds: dict[str, int] = {}
        self._dels: dict[str, set[str]] = {}
        self._stamp: dict[str, float] = {}

    def satisfied(self, key: str) -> bool:
        if key not in self._stamp:
            return True
        if self._adds.get(key, 0) <= 0 and not self._dels.get(key):
            return True
        return time.monotonic() - self._stamp[key] > self.TTL

    def expect(self, key: str, adds: int = 0, deletes: Iterable[str] = ()) -> None:
        self._adds[key] = adds
        self._dels[key] = set(deletes)
        self._stamp[key] = time.monotonic()

    def created(self, key: str, n: int = 1) -> None:
        """A creation was observed, or will never happen (a failed create)."""
        if key in self._adds:
            self._adds[key] -= n

    def deleted(self, key: str, uid: str) -> None:
        if key in self._dels:
            self._dels[key].discard(uid)

    def forget(self, key: str) -> None:
        self._adds.pop(key, None)
        self._dels.pop(key, None)
        self._stamp.pop(key, None)


async def update_status(
    client: ApiClient, api_version: str, plural: str, obj: Obj, status: Obj
) -> Obj | None:
    """Write a status we computed in full (PUT .../status), retrying once on a stale
    resourceVersion. None if the object is gone."""
    for attempt in range(2):
        body = {**obj, "status": status}
        try:
            out: Obj = await client.replace(api_version, plural, body, subresource="status")
            return out
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status != 409 or attempt:
                raise
            meta = obj["metadata"]
            fresh = await client.get_or_none(api_version, plural, meta["name"], meta.get("namespace"))
            if fresh is None or fresh["metadata"].get("uid") != meta.get("uid"):
                return None
            obj = fresh
    return None


def namespace_terminating(e: ApiException) -> bool:
    """A create refused because the namespace is being deleted: nothing to retry."""
    causes = (e.body.get("details") or {}).get("causes") or []
    return e.status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in causes)
