"""The tenant controller: a Tenant's status (phase, the namespaces it owns, what its pods' VMs and
its persistent volume claims use against its quota), and its deletion: every namespace it owns
and every user of it goes first (namespace deletion takes the pods' VMs with it), then the
`hypernetes.io/tenant` finalizer that admission put on the Tenant is removed and the object goes."""

from __future__ import annotations

from typing import Any

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.controllers.volumes import format_storage, storage_usage
from hypernetes.runtime.podsize import quota_usage

Obj = dict[str, Any]
GROUP_VERSION = "hypernetes.io/v1"
TENANT_LABEL = "hypernetes.io/tenant"
FINALIZER = "hypernetes.io/tenant"
MiB = 1024 * 1024


def owner(ns: Obj) -> str | None:
    return m.labels(ns).get(TENANT_LABEL) or None


class TenantController(Controller):
    name = "tenant"

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.tenants = self.informer(GROUP_VERSION, "tenants")
        self.users = self.informer(GROUP_VERSION, "users")
        self.namespaces = self.informer("v1", "namespaces")
        self.pods = self.informer("v1", "pods")
        self.claims = self.informer("v1", "persistentvolumeclaims")
        self.tenants.add_handler(Handler(add=self.enqueue, update=lambda old, new: self.enqueue(new)))
        self.namespaces.add_handler(Handler(add=self._ns, update=self._ns_moved, delete=self._ns))
        self.pods.add_handler(Handler(add=self._member, update=lambda old, new: self._member(new),
                                      delete=self._member))
        # claims count whatever their state: only their arrival, growth and departure matter
        self.claims.add_handler(Handler(add=self._member, update=self._claim_changed, delete=self._member))

    def _ns_moved(self, old: Obj, new: Obj) -> None:
        self._ns(old)
        self._ns(new)

    def _ns(self, ns: Obj) -> None:
        tenant = owner(ns)
        if tenant:
            self.queue.add(tenant)

    def _member(self, obj: Obj) -> None:
        ns = self.namespaces.get(m.namespace(obj))
        if ns is not None:
            self._ns(ns)

    def _claim_changed(self, old: Obj, new: Obj) -> None:
        if (old.get("spec") or {}).get("resources") != (new.get("spec") or {}).get("resources"):
            self._member(new)

    def owned(self, tenant: str) -> list[Obj]:
        return [ns for ns in self.namespaces.list() if owner(ns) == tenant]

    async def reconcile(self, key: str) -> None:
        tenant = self.tenants.get(key)
        if tenant is None:
            return
        namespaces = self.owned(key)
        if m.deleting(tenant):
            await self._finalize(tenant, namespaces)
            return
        await self._status(tenant, namespaces)

    async def _status(self, tenant: Obj, namespaces: list[Obj]) -> None:
        names = sorted(m.name(ns) for ns in namespaces)
        pods = [p for n in names for p in self.pods.list(n)]
        count, vcpus, memory = quota_usage(pods)
        claims, storage = storage_usage(c for n in names for c in self.claims.list(n))
        status = {"phase": "Active", "namespaces": names,
                  "used": {"pods": str(count), "vcpus": str(vcpus), "memory": f"{memory // MiB}Mi",
                           "namespaces": str(len(names)), "storage": format_storage(storage),
                           "persistentvolumeclaims": str(claims)}}
        if tenant.get("status") == status:
            return
        try:
            await self.client.patch(GROUP_VERSION, "tenants", m.name(tenant), {"status": status},
                                    subresource="status")
        except ApiException as e:
            if e.status != 404:
                raise

    async def _finalize(self, tenant: Obj, namespaces: list[Obj]) -> None:
        name = m.name(tenant)
        if (tenant.get("status") or {}).get("phase") != "Terminating":
            terminating = {"status": {"phase": "Terminating"}}
            await self._ignore_gone(self.client.patch(GROUP_VERSION, "tenants", name, terminating,
                                                      subresource="status"))
        for ns in namespaces:
            if not m.deleting(ns):
                await self._ignore_gone(self.client.delete("v1", "namespaces", m.name(ns)))
        for user in self.users.list():
            if (user.get("spec") or {}).get("tenant") == name and not m.deleting(user):
                await self._ignore_gone(self.client.delete(GROUP_VERSION, "users", m.name(user)))
        if namespaces:
            return  # namespaces are still finalizing; their deletion events bring us back
        finalizers = [f for f in (m.meta(tenant).get("finalizers") or []) if f != FINALIZER]
        if finalizers != (m.meta(tenant).get("finalizers") or []):
            rv = m.meta(tenant).get("resourceVersion")
            await self._ignore_gone(self.client.patch(GROUP_VERSION, "tenants", name, {
                "metadata": {"finalizers": finalizers, "resourceVersion": rv}}))
            await self.events.normal(tenant, "Deleted", f"tenant {name}: namespaces and users deleted")

    @staticmethod
    async def _ignore_gone(call: Any) -> None:
        try:
            await call
        except ApiException as e:
            if e.status not in (404, 409):
                raise
