"""The namespace controller: empties a namespace being deleted (every namespaced kind the API
serves), waits until its content is really gone (pods wait for their node agent), then
removes the `kubernetes` finalizer through namespaces/NAME/finalize, which lets the API server
delete the namespace. Conditions as upstream's namespaced_resources_deleter."""

from __future__ import annotations

import logging

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, Retry
from hypernetes.controllers.discovery import Resource, ResourceDiscovery
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.controllers.queue import RateLimiter, controller_rate_limiter
from hypernetes.objects import Obj
from hypernetes.objects.names import NAMESPACE_FINALIZER

log = logging.getLogger(__name__)

RECHECK = 1.0  # seconds between looks at content that is going away by itself


def _group_resource(r: Resource) -> str:
    group = r.api_version.rpartition("/")[0]
    return f"{r.plural}.{group}" if group else r.plural


class NamespaceController(Controller):
    name = "namespace"

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.namespaces = self.informer("v1", "namespaces")
        self.discovery = ResourceDiscovery(client)
        self.namespaces.add_handler(Handler(add=self._maybe, update=lambda old, new: self._maybe(new)))

    @staticmethod
    def rate_limiter() -> RateLimiter:
        """As upstream's namespace controller: back off, but look again at least every minute."""
        return controller_rate_limiter(max_delay=60.0)

    def _maybe(self, ns: Obj) -> None:
        if m.deleting(ns):
            self.enqueue(ns)

    async def reconcile(self, key: str) -> None:
        ns = await self.client.get_or_none("v1", "namespaces", key)
        if ns is None or not m.deleting(ns):
            return
        if NAMESPACE_FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return
        remaining, finalizers, errors = await self._delete_content(key)
        ns = await self._set_conditions(ns, remaining, finalizers, errors)
        if errors:
            raise Retry("deleting content: " + ", ".join(errors))
        if finalizers:  # held by someone else's finalizer: as upstream, back off until it goes
            raise Retry("content held by finalizers: " + ", ".join(sorted(finalizers)))
        if remaining:  # deleted, going away (pods wait for their node): upstream's estimate
            self.queue.add_after(key, RECHECK)
            return
        ns["spec"]["finalizers"] = [f for f in ns["spec"]["finalizers"] if f != NAMESPACE_FINALIZER]
        await self.client.replace("v1", "namespaces", ns, subresource="finalize")
        log.info("namespace %s finalized", key)

    async def _delete_content(self, ns: str) -> tuple[dict[str, int], dict[str, int], list[str]]:
        """Delete everything in `ns`; what is still there (by group resource), the finalizers
        holding it (finalizer: count) and the errors met."""
        remaining: dict[str, int] = {}
        finalizers: dict[str, int] = {}
        errors: list[str] = []
        for r in await self.discovery.resources():
            if not r.namespaced or not {"list", "delete"} <= r.verbs:
                continue
            try:
                if "deletecollection" in r.verbs:
                    await self.client.delete_collection(r.api_version, r.plural, ns)
                else:
                    for item in (await self.client.list(r.api_version, r.plural, ns))["items"]:
                        await self.client.delete(r.api_version, r.plural, m.name(item), ns)
                items = (await self.client.list(r.api_version, r.plural, ns))["items"]
            except ApiException as e:
                errors.append(f"{_group_resource(r)}: {e.message}")
                continue
            if items:
                remaining[_group_resource(r)] = len(items)
            for item in items:
                for f in m.meta(item).get("finalizers") or []:
                    finalizers[f] = finalizers.get(f, 0) + 1
        return remaining, finalizers, errors

    async def _set_conditions(
        self, ns: Obj, remaining: dict[str, int], finalizers: dict[str, int], errors: list[str]
    ) -> Obj:
        old_conditions = (ns.get("status") or {}).get("conditions") or []
        status: Obj = {"phase": "Terminating", "conditions": list(old_conditions)}
        m.set_condition(
            status,
            m.condition(
                "NamespaceDeletionDiscoveryFailure",
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered",
            ),
        )
        m.set_condition(
            status,
            m.condition(
                "NamespaceDeletionGroupVersionParsingFailure",
                "False",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed",
            ),
        )
        if errors:
            m.set_condition(
                status,
                m.condition(
                    "NamespaceDeletionContentFailure",
                    "True",
                    "ContentDeletionFailed",
                    "Failed to delete all resource types, " + ", ".join(errors),
                ),
            )
        else:
            m.set_condition(
                status,
                m.condition(
                    "NamespaceDeletionContentFailure",
                    "False",
                    "ContentDeleted",
                    "All content successfully deleted, may be waiting on finalization",
                ),
            )
        if remaining:
            m.set_condition(
                status,
                m.condition(
                    "NamespaceContentRemaining",
                    "True",
                    "SomeResourcesRemain",
                    "Some resources are remaining: "
                    + ", ".join(f"{k} has {v} resource instances" for k, v in sorted(remaining.items())),
                ),
            )
        else:
            m.set_condition(
                status,
                m.condition(
                    "NamespaceContentRemaining", "False", "ContentRemoved", "All content successfully removed"
                ),
            )
        if finalizers:
            m.set_condition(
                status,
                m.condition(
                    "NamespaceFinalizersRemaining",
                    "True",
                    "SomeFinalizersRemain",
                    "Some content in the namespace has finalizers remaining: "
                    + ", ".join(f"{k} in {v} resource instances" for k, v in sorted(finalizers.items())),
                ),
            )
        else:
            m.set_condition(
                status,
                m.condition(
                    "NamespaceFinalizersRemaining",
                    "False",
                    "ContentHasNoFinalizers",
                    "All content-preserving finalizers finished",
                ),
            )
        if _strip_times(status) == _strip_times(ns.get("status") or {}):
            return ns
        try:
            out: Obj = await self.client.replace(
                "v1", "namespaces", {**ns, "status": status}, subresource="status"
            )
            return out
        except ApiException as e:
            if e.status != 409:
                raise
            return await self.client.get("v1", "namespaces", m.name(ns))


def _strip_times(status: Obj) -> Obj:
    return {
        **status,
        "conditions": sorted(
            (
                {k: v for k, v in c.items() if k != "lastTransitionTime"}
                for c in status.get("conditions") or []
            ),
            key=lambda c: str(c.get("type")),
        ),
    }
