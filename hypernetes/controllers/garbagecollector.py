"""The garbage collector (upstream pkg/controller/garbagecollector): a graph of every object's
ownerReferences, built from informers on every deletable kind the API serves.

- An object whose owners are all gone (no object with that uid) is deleted: background
  propagation, the owner went first.
- An owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted;
  the finalizer goes (and with it the owner) once no dependent with blockOwnerDeletion is left.
- An owner being deleted with the `orphan` finalizer has its ownerReference removed from its
  dependents, then the finalizer.

Absence is always confirmed with a read from the API (by name, comparing uids) before anything
is deleted: the graph only says where to look.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller
from hypernetes.controllers.discovery import Resource, ResourceDiscovery
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.objects import Obj

log = logging.getLogger(__name__)

FOREGROUND, ORPHAN = "foregroundDeletion", "orphan"
IGNORED = {("v1", "events"), ("events.k8s.io/v1", "events")}  # as upstream: never owners' dependents
REDISCOVER = 60.0


@dataclass
class Node:
    resource: Resource
    namespace: str
    name: str
    uid: str
    owners: list[Obj] = field(default_factory=list)
    finalizers: list[str] = field(default_factory=list)
    deleting: bool = False

    @property
    def deleting_dependents(self) -> bool:
        return self.deleting and FOREGROUND in self.finalizers


class GarbageCollector(Controller):
    name = "garbagecollector"
    workers = 4

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.discovery = ResourceDiscovery(client, ttl=REDISCOVER / 2)
        self.nodes: dict[str, Node] = {}
        self.dependents: dict[str, set[str]] = {}
        self._monitored: set[tuple[str, str]] = set()

    async def run(self) -> None:
        while True:  # discovery must work once before there is a graph to build
            try:
                await self._monitor()
                break
            except (ApiException, OSError) as e:
                log.warning("garbage collector: discovery failed, retrying: %s", e)
                await asyncio.sleep(1.0)
        rediscover = asyncio.create_task(self._rediscover())
        try:
            await super().run()
        finally:
            rediscover.cancel()

    async def _rediscover(self) -> None:
        while True:
            await asyncio.sleep(REDISCOVER)
            try:
                await self._monitor()
            except (ApiException, OSError) as e:
                log.warning("garbage collector: discovery failed: %s", e)

    async def _monitor(self) -> None:
        """An informer for every kind that can be listed, watched and deleted."""
        for res in await self.discovery.resources():
            ident = (res.api_version, res.plural)
            if ident in self._monitored or ident in IGNORED or not {"list", "watch", "delete"} <= res.verbs:
                continue
            self._monitored.add(ident)
            self.informer(res.api_version, res.plural).add_handler(self._handler(res))
        self.informers.start()

    def _handler(self, res: Resource) -> Handler:
        return Handler(
            add=lambda obj: self._observe(res, obj),
            update=lambda old, new: self._observe(res, new),
            delete=self._forget,
        )

    # -- the graph -----------------------------------------------------------------------------

    def _observe(self, res: Resource, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        old = self.nodes.get(uid)
        node = Node(
            res,
            str(meta.get("namespace") or ""),
            str(meta.get("name", "")),
            uid,
            list(meta.get("ownerReferences") or []),
            list(meta.get("finalizers") or []),
            bool(meta.get("deletionTimestamp")),
        )
        self.nodes[uid] = node
        old_owners = {r.get("uid") for r in old.owners} if old else set()
        new_owners = {r.get("uid") for r in node.owners}
        for gone in old_owners - new_owners:
            self.dependents.get(str(gone), set()).discard(uid)
            self._poke_owner(str(gone))  # a foreground owner may be waiting for this one
        for owner in new_owners:
            self.dependents.setdefault(str(owner), set()).add(uid)
        if node.deleting and (FOREGROUND in node.finalizers or ORPHAN in node.finalizers):
            self.queue.add(uid)
            if node.deleting_dependents:
                for dep in self.dependents.get(uid, ()):
                    self.queue.add(dep)
        elif any(
            r.get("uid") not in self.nodes or self.nodes[str(r.get("uid"))].deleting_dependents
            for r in node.owners
        ):
            self.queue.add(uid)  # an owner we have not seen (gone?) or one deleting its dependents

    def _forget(self, obj: Obj) -> None:
        uid = m.uid(obj)
        node = self.nodes.pop(uid, None)
        for dep in self.dependents.get(uid, ()):
            self.queue.add(dep)
        if node is not None:
            for ref in node.owners:
                self.dependents.get(str(ref.get("uid")), set()).discard(uid)
                self._poke_owner(str(ref.get("uid")))
        if not self.dependents.get(uid):
            self.dependents.pop(uid, None)

    def _poke_owner(self, owner_uid: str) -> None:
        owner = self.nodes.get(owner_uid)
        if owner is not None and owner.deleting_dependents:
            self.queue.add(owner_uid)

    # -- processing ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            return
        if node.deleting:
            if ORPHAN in node.finalizers:
                await self._orphan_dependents(node)
            if FOREGROUND in node.finalizers:
                await self._delete_dependents(node)
            return
        if node.owners and not self._owners_present(node):
            await self._attempt_delete(node)

    def _owners_present(self, node: Node) -> bool:
        """Every owner is in the graph and not deleting its dependents: nothing to check."""
        for ref in node.owners:
            owner = self.nodes.get(str(ref.get("uid")))
            if (
                owner is None
                or owner.deleting_dependents
                or (owner.resource.namespaced and owner.namespace != node.namespace)
            ):
                return False
        return True

    async def _latest(self, node: Node) -> Obj | None:
        obj = await self.client.get_or_none(
            node.resource.api_version, node.resource.plural, node.name, node.namespace or None
        )
        return obj if obj is not None and m.uid(obj) == node.uid else None

    async def _owner_state(self, ref: Obj, namespace: str) -> str:
        """ "solid", "dangling" (gone) or "waiting" (being deleted in the foreground)."""
        res = await self.discovery.by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        if res is None:
            log.warning("garbage collector: unknown owner kind %s %s", ref.get("apiVersion"), ref.get("kind"))
            return "solid"  # what we cannot check, we do not delete
        owner = await self.client.get_or_none(
            res.api_version, res.plural, str(ref.get("name", "")), namespace if res.namespaced else None
        )
        if owner is None or m.uid(owner) != ref.get("uid"):
            return "dangling"
        if m.deleting(owner) and FOREGROUND in (m.meta(owner).get("finalizers") or []):
            return "waiting"
        return "solid"

    async def _attempt_delete(self, node: Node) -> None:
        latest = await self._latest(node)
        if latest is None or m.deleting(latest):
            return
        refs = list(m.meta(latest).get("ownerReferences") or [])
        if not refs:
            return
        states = {str(r.get("uid")): await self._owner_state(r, node.namespace) for r in refs}
        solid = [r for r in refs if states[str(r.get("uid"))] == "solid"]
        waiting = [r for r in refs if states[str(r.get("uid"))] == "waiting"]
        if solid:
            if len(solid) < len(refs):  # drop the references to owners that are gone or going
                await self._patch_refs(node, latest, solid)
            return
        finalizers = m.meta(latest).get("finalizers") or []
        if waiting and self.dependents.get(node.uid):
            # it has dependents of its own: delete it in the foreground too, and let its owner
            # go without waiting on it (or the two would wait for each other)
            unblocked = [{**r, "blockOwnerDeletion": False} if r in waiting else r for r in refs]
            latest = await self._patch_refs(node, latest, unblocked) or latest
            policy = "Foreground"
        elif ORPHAN in finalizers:
            policy = "Orphan"
        elif FOREGROUND in finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        log.info(
            "garbage collector: deleting %s %s/%s (owners gone), propagation %s",
            node.resource.kind,
            node.namespace,
            node.name,
            policy,
        )
        try:
            await self.client.delete(
                node.resource.api_version,
                node.resource.plural,
                node.name,
                node.namespace or None,
                {"propagationPolicy": policy, "preconditions": {"uid": node.uid}},
            )
        except ApiException as e:
            if e.status != 409:  # 409: a different object by that name now
                raise

    async def _patch_refs(self, node: Node, latest: Obj, refs: list[Obj]) -> Obj | None:
        patch = {
            "metadata": {
                "ownerReferences": refs or None,
                "resourceVersion": m.meta(latest)["resourceVersion"],
            }
        }
        try:
            out: Obj = await self.client.patch(
                node.resource.api_version, node.resource.plural, node.name, patch, node.namespace or None
            )
            return out
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def _delete_dependents(self, owner: Node) -> None:
        """Foreground deletion: every dependent goes; the owner goes once none that blocks it
        is left."""
        blocking = 0
        for dep_uid in list(self.dependents.get(owner.uid, ())):
            dep = self.nodes.get(dep_uid)
            if dep is None:
                continue
            if any(r.get("uid") == owner.uid and r.get("blockOwnerDeletion") for r in dep.owners):
                blocking += 1
            if not dep.deleting:
                self.queue.add(dep_uid)
        if blocking == 0:
            await self._remove_finalizer(owner, FOREGROUND)

    async def _orphan_dependents(self, owner: Node) -> None:
        for dep_uid in list(self.dependents.get(owner.uid, ())):
            dep = self.nodes.get(dep_uid)
            if dep is None:
                continue
            for _ in range(5):
                latest = await self._latest(dep)
                if latest is None:
                    break
                refs = [r for r in m.meta(latest).get("ownerReferences") or [] if r.get("uid") != owner.uid]
                try:
                    await self._patch_refs(dep, latest, refs)
                    break
                except ApiException as e:
                    if e.status != 409:
                        raise
        await self._remove_finalizer(owner, ORPHAN)

    async def _remove_finalizer(self, node: Node, finalizer: str) -> None:
        for _ in range(5):
            latest = await self._latest(node)
            if latest is None:
                return
            finalizers = list(m.meta(latest).get("finalizers") or [])
            if finalizer not in finalizers:
                return
            finalizers.remove(finalizer)
            patch = {
                "metadata": {
                    "finalizers": finalizers or None,
                    "resourceVersion": m.meta(latest)["resourceVersion"],
                }
            }
            try:
                await self.client.patch(
                    node.resource.api_version, node.resource.plural, node.name, patch, node.namespace or None
                )
                log.info(
                    "garbage collector: %s %s/%s: removed %s",
                    node.resource.kind,
                    node.namespace,
                    node.name,
                    finalizer,
                )
                return
            except ApiException as e:
                if e.status == 404:
                    return
                if e.status != 409:
                    raise
