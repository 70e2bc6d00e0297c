"""Following the CustomResourceDefinitions in the store: every API server lists them on start and
watches them, so a CRD written through any server sharing the store (etcd) is served by all of
them within the watch's latency, and stops being served when it goes.

A deleted CRD carries upstream's `customresourcecleanup.apiextensions.k8s.io` finalizer: the
first server to see its deletionTimestamp deletes its objects (every namespace; one with
finalizers is marked deleted and waited for, as a DELETE would), then removes the finalizer, and
the CRD is gone. Several servers may try at once; compare-and-swap makes that safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from hypernetes.api.customresources.kinds import CustomKinds
from hypernetes.api.objects import now
from hypernetes.api.registry.apiextensions.crd import CLEANUP_FINALIZER
from hypernetes.objects import Obj
from hypernetes.store.interface import (
    Compacted,
    EventType,
    KeyNotFound,
    KeyValue,
    RevisionConflict,
    Store,
    StoreUnavailable,
)
from hypernetes.store.keys import key_prefix

log = logging.getLogger(__name__)

PREFIX = key_prefix("apiextensions.k8s.io", "customresourcedefinitions", None)
RETRY = 1.0  # seconds between attempts when the store is unavailable
FINALIZER_POLL = 0.5  # seconds between looks at a deleted CRD's objects that wait for finalizers


class CustomResources:
    """One API server's view of the CRDs: `kinds` (what it serves), kept current by `run`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.kinds = CustomKinds()
        self._crds: dict[str, Obj] = {}
        self.revision = 0  # the store revision the table reflects
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._cleaning: set[str] = set()
        self._naming: set[str] = set()

    async def start(self) -> None:
        await self._relist()
        self._task = asyncio.create_task(self._run(), name="crd-informer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def caught_up(self, revision: int, timeout: float = 5.0) -> None:
        """Wait until the table reflects the store at `revision` (a CRD this server just wrote)."""

        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.revision >= revision)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reached(), timeout)

    async def _relist(self) -> None:
        res = await self.store.list(PREFIX)
        self._crds = {kv.key: json.loads(kv.value) for kv in res.items}
        await self._publish(res.revision)

    async def _publish(self, revision: int) -> None:
        self.kinds.update(self._crds.values())
        async with self._changed:
            self.revision = max(self.revision, revision)
            self._changed.notify_all()
        for key, crd in self._crds.items():
            self._maybe_clean(crd)
            self._maybe_name(key, crd)

    async def _run(self) -> None:
        while True:
            try:
                async for ev in self.store.watch(PREFIX, self.revision):
                    if ev.type is EventType.DELETE:
                        self._crds.pop(ev.kv.key, None)
                    else:
                        self._crds[ev.kv.key] = json.loads(ev.kv.value)
                    await self._publish(ev.revision)
            except Compacted:
                await self._relist()
            except StoreUnavailable as e:
                log.warning("CRD watch: store unavailable: %s", e)
                await asyncio.sleep(RETRY)
                with contextlib.suppress(StoreUnavailable):
                    await self._relist()
            except Exception:  # never stop following the CRDs: serve what the store says
                log.exception("CRD watch failed; listing again")
                await asyncio.sleep(RETRY)
                with contextlib.suppress(StoreUnavailable):
                    await self._relist()

    # -- names: NamesAccepted and Established as the naming controller decides them ----------------

    def _maybe_name(self, key: str, crd: Obj) -> None:
        name = str((crd.get("metadata") or {}).get("name") or "")
        want = self.kinds.rejected.get(name)
        have = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
        accepted = (have.get("NamesAccepted") or {}).get("status") == "True"
        if (want is None) == accepted or key in self._naming:
            return
        self._naming.add(key)
        task = asyncio.create_task(self._set_names(key, want), name=f"crd-names-{name}")
        task.add_done_callback(lambda _: self._naming.discard(key))

    async def _set_names(self, key: str, problem: tuple[str, str] | None) -> None:
        for _ in range(5):
            kv = await self.store.get(key)
            if kv is None:
                return
            crd = json.loads(kv.value)
            status = crd.setdefault("status", {})
            others = [
                c
                for c in status.get("conditions") or []
                if c.get("type") not in ("NamesAccepted", "Established")
            ]
            stamp = now()
            if problem is None:
                status["acceptedNames"] = dict((crd.get("spec") or {}).get("names") or {})
                conds = [
                    {
                        "type": "NamesAccepted",
                        "status": "True",
                        "reason": "NoConflicts",
                        "message": "no conflicts found",
                    },
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                    },
                ]
            else:
                conds = [
                    {"type": "NamesAccepted", "status": "False", "reason": problem[0], "message": problem[1]},
                    {
                        "type": "Established",
                        "status": "False",
                        "reason": "NotAccepted",
                        "message": "not all names are accepted",
                    },
                ]
            status["conditions"] = [{**c, "lastTransitionTime": stamp} for c in conds] + others
            try:
                await self.store.update(key, json.dumps(crd, separators=(",", ":")).encode(), kv.mod_revision)
                return
            except (RevisionConflict, KeyNotFound):
                continue
            except StoreUnavailable as e:
                log.warning("CRD %s names: store unavailable: %s", key, e)
                return

    # -- cleanup of a deleted CRD's objects --------------------------------------------------------

    def _maybe_clean(self, crd: Obj) -> None:
        meta = crd.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not meta.get("deletionTimestamp") or CLEANUP_FINALIZER not in (meta.get("finalizers") or []):
            return
        if name in self._cleaning:
            return
        self._cleaning.add(name)
        task = asyncio.create_task(self._clean(crd), name=f"crd-cleanup-{name}")
        task.add_done_callback(lambda _: self._cleaning.discard(name))

    async def _clean(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        group, plural = str(spec.get("group") or ""), str((spec.get("names") or {}).get("plural") or "")
        name = str(crd["metadata"]["name"])
        try:
            while True:  # objects created meanwhile (through a server that had not seen it) too
                res = await self.store.list(key_prefix(group, plural, None))
                if not res.items:
                    break
                waiting = False
                for kv in res.items:
                    with contextlib.suppress(KeyNotFound, RevisionConflict):
                        waiting = await self._delete(kv) or waiting
                if waiting:  # objects with finalizers: their controllers finish them, as upstream
                    await asyncio.sleep(FINALIZER_POLL)
            await self._drop_finalizer(PREFIX + name)
        except StoreUnavailable as e:
            log.warning("CRD %s cleanup: store unavailable (retried on its next event): %s", name, e)
        except Exception:
            log.exception("CRD %s cleanup failed", name)

    async def _delete(self, kv: KeyValue) -> bool:
        """Delete one object as a DELETE would: at once, or, if it has finalizers, by marking it
        deleted (its controller removes them, then the API server removes it). True if it stays."""
        obj = json.loads(kv.value)
        meta = obj.setdefault("metadata", {})
        if not meta.get("finalizers"):
            await self.store.delete(kv.key, kv.mod_revision)
            return False
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"], meta["deletionGracePeriodSeconds"] = now(), 0
            await self.store.update(kv.key, json.dumps(obj, separators=(",", ":")).encode(), kv.mod_revision)
        return True

    async def _drop_finalizer(self, key: str) -> None:
        for _ in range(20):
            kv = await self.store.get(key)
            if kv is None:
                return
            crd = json.loads(kv.value)
            meta = crd["metadata"]
            finalizers = [f for f in meta.get("finalizers") or [] if f != CLEANUP_FINALIZER]
            try:
                if finalizers:
                    meta["finalizers"] = finalizers
                    await self.store.update(
                        key, json.dumps(crd, separators=(",", ":")).encode(), kv.mod_revision
                    )
                else:
                    await self.store.delete(key, kv.mod_revision)  # the last finalizer: it is gone
                return
            except (RevisionConflict, KeyNotFound):
                continue
