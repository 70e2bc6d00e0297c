"""The tenant controller: a Tenant's status (phase, the namespaces it owns, what its pods' VMs,
its persistent volume claims and its objects of every other kind use against its quota), and its
deletion: every namespace it owns and every user of it goes first (namespace deletion takes the
pods' VMs with it), then the `hypernetes.io/tenant` finalizer that admission put on the Tenant is
removed and the object goes.

`COUNTED` is the one list of object-count quotas (upstream's `count/<resource>.<group>`), read by
admission too; `DEFAULT_QUOTA` is what a new tenant gets for every key it was not given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller
from hypernetes.controllers.informer import Handler, InformerFactory
from hypernetes.controllers.volumes import storage_usage
from hypernetes.objects import Obj
from hypernetes.objects.names import TENANT_FINALIZER, TENANT_LABEL
from hypernetes.objects.quantity import format_bytes
from hypernetes.runtime.podsize import quota_usage

GROUP_VERSION = "hypernetes.io/v1"
NODE_PORTS_KEY = "services.nodeports"  # upstream's quota key: node ports taken from the shared range


@dataclass(frozen=True)
class Counted:
    """A kind every object of which counts against the quota key `count/<plural>[.<group>]`."""

    group: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def key(self) -> str:
        return f"count/{self.plural}" + (f".{self.group}" if self.group else "")

    @property
    def api_version(self) -> str:
        served = {"": "v1", "apps": "apps/v1", "batch": "batch/v1", "autoscaling": "autoscaling/v2"}
        return served.get(self.group, f"{self.group}/v1")


# Every kind a tenant can create besides pods, namespaces and claims (their own keys below):
# nothing a tenant makes may grow without bound, in its namespaces or cluster-wide. (EndpointSlices
# join when the API serves them.)
COUNTED = (
    Counted("", "services", "Service"),
    Counted("", "secrets", "Secret"),
    Counted("", "configmaps", "ConfigMap"),
    Counted("", "serviceaccounts", "ServiceAccount"),
    Counted("", "endpoints", "Endpoints"),
    Counted("", "events", "Event"),
    Counted("apps", "deployments", "Deployment"),
    Counted("apps", "replicasets", "ReplicaSet"),
    Counted("apps", "statefulsets", "StatefulSet"),
    Counted("apps", "controllerrevisions", "ControllerRevision"),
    Counted("", "replicationcontrollers", "ReplicationController"),
    Counted("batch", "jobs", "Job"),
    Counted("autoscaling", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    Counted("rbac.authorization.k8s.io", "roles", "Role"),
    Counted("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    Counted("batch", "cronjobs", "CronJob"),
    Counted("policy", "poddisruptionbudgets", "PodDisruptionBudget"),
    Counted("", "limitranges", "LimitRange"),
    Counted("", "resourcequotas", "ResourceQuota"),
    Counted("coordination.k8s.io", "leases", "Lease"),
    Counted("networking.k8s.io", "networkpolicies", "NetworkPolicy"),
    Counted("networking.k8s.io", "ingresses", "Ingress"),
    Counted("hypernetes.io", "networks", "Network", namespaced=False),
    Counted("hypernetes.io", "users", "User", namespaced=False),
)
COUNTED_BY_KIND = {c.kind: c for c in COUNTED}


def node_ports(service: Obj) -> int:
    """How many node ports of the cluster-wide range a service takes (one per port)."""
    spec = service.get("spec") or {}
    if spec.get("type") not in ("NodePort", "LoadBalancer"):
        return 0
    ports = spec.get("ports")
    return len(ports) if isinstance(ports, list) else 0


# A new tenant's limits for what it did not set: generous for real use, far from what would hurt
# the cluster. Resource sizes (vcpus, memory, storage) stay the operator's choice.
DEFAULT_QUOTA: dict[str, str] = {
    "pods": "100",
    "namespaces": "20",
    "persistentvolumeclaims": "50",
    NODE_PORTS_KEY: "10",
    "count/services": "100",
    "count/secrets": "500",
    "count/configmaps": "500",
    "count/serviceaccounts": "200",
    "count/endpoints": "200",
    "count/events": "2000",
    "count/deployments.apps": "100",
    "count/replicasets.apps": "1100",
    "count/statefulsets.apps": "100",
    "count/controllerrevisions.apps": "1100",
    "count/replicationcontrollers": "100",
    "count/jobs.batch": "200",
    "count/horizontalpodautoscalers.autoscaling": "100",
    "count/roles.rbac.authorization.k8s.io": "200",
    "count/rolebindings.rbac.authorization.k8s.io": "200",
    "count/cronjobs.batch": "100",
    "count/poddisruptionbudgets.policy": "100",
    "count/limitranges": "20",
    "count/resourcequotas": "20",
    "count/leases.coordination.k8s.io": "100",
    "count/networkpolicies.networking.k8s.io": "100",
    "count/ingresses.networking.k8s.io": "100",
    "count/networks.hypernetes.io": "16",
    "count/users.hypernetes.io": "100",
    "count/customresources": "1000",  # objects of every CRD together (auth/admission.py)
}


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
        # shared with the garbage collector, which informs every kind anyway
        self.counted = {c: self.informer(c.api_version, c.plural) for c in COUNTED}
        self.tenants.add_handler(Handler(add=self.enqueue, update=lambda old, new: self.enqueue(new)))
        self.namespaces.add_handler(Handler(add=self._ns, update=self._ns_moved, delete=self._ns))
        self.pods.add_handler(
            Handler(add=self._member, update=lambda old, new: self._member(new), delete=self._member)
        )
        # claims count whatever their state: only their arrival, growth and departure matter
        self.claims.add_handler(Handler(add=self._member, update=self._claim_changed, delete=self._member))
        for c, informer in self.counted.items():
            if c.kind == "Service":  # its node ports count too, and may change
                informer.add_handler(
                    Handler(add=self._member, update=lambda old, new: self._member(new), delete=self._member)
                )
            elif c.namespaced:
                informer.add_handler(Handler(add=self._member, delete=self._member))
            else:
                informer.add_handler(Handler(add=self._spec_tenant, delete=self._spec_tenant))

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

    def _spec_tenant(self, obj: Obj) -> None:
        tenant = (obj.get("spec") or {}).get("tenant")
        if isinstance(tenant, str) and tenant:
            self.queue.add(tenant)

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
        count, vcpus, memory, ephemeral = quota_usage(pods)
        claims, storage = storage_usage(c for n in names for c in self.claims.list(n))
        status = {
            "phase": "Active",
            "namespaces": names,
            "used": {
                "pods": str(count),
                "vcpus": str(vcpus),
                "memory": format_bytes(memory),
                "ephemeral-storage": format_bytes(ephemeral),
                "namespaces": str(len(names)),
                "storage": format_bytes(storage),
                "persistentvolumeclaims": str(claims),
                **self._counts(m.name(tenant), names),
            },
        }
        if tenant.get("status") == status:
            return
        try:
            await self.client.patch(
                GROUP_VERSION, "tenants", m.name(tenant), {"status": status}, subresource="status"
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def _counts(self, tenant: str, namespaces: list[str]) -> dict[str, str]:
        """Usage of every object-count quota (and of services.nodeports)."""
        out: dict[str, str] = {}
        for c, informer in self.counted.items():
            if c.namespaced:
                objs = [o for n in namespaces for o in informer.list(n)]
            else:
                objs = [o for o in informer.list() if (o.get("spec") or {}).get("tenant") == tenant]
            out[c.key] = str(len(objs))
            if c.kind == "Service":
                out[NODE_PORTS_KEY] = str(sum(node_ports(s) for s in objs))
        return out

    async def _finalize(self, tenant: Obj, namespaces: list[Obj]) -> None:
        name = m.name(tenant)
        if (tenant.get("status") or {}).get("phase") != "Terminating":
            terminating = {"status": {"phase": "Terminating"}}
            await self._ignore_gone(
                self.client.patch(GROUP_VERSION, "tenants", name, terminating, subresource="status")
            )
        for ns in namespaces:
            if not m.deleting(ns):
                await self._ignore_gone(self.client.delete("v1", "namespaces", m.name(ns)))
        for user in self.users.list():
            if (user.get("spec") or {}).get("tenant") == name and not m.deleting(user):
                await self._ignore_gone(self.client.delete(GROUP_VERSION, "users", m.name(user)))
        if namespaces:
            return  # namespaces are still finalizing; their deletion events bring us back
        # Then its cluster-scoped objects (networks: their pods are gone with the namespaces), so a
        # tenant created again under this name inherits nothing of this one.
        left = [
            (c, obj)
            for c in COUNTED
            if not c.namespaced
            for obj in self.counted[c].list()
            if (obj.get("spec") or {}).get("tenant") == name
        ]
        for c, obj in left:
            if not m.deleting(obj):
                await self._ignore_gone(self.client.delete(c.api_version, c.plural, m.name(obj)))
        if left:
            return  # their deletion events bring us back
        finalizers = [f for f in (m.meta(tenant).get("finalizers") or []) if f != TENANT_FINALIZER]
        if finalizers != (m.meta(tenant).get("finalizers") or []):
            rv = m.meta(tenant).get("resourceVersion")
            await self._ignore_gone(
                self.client.patch(
                    GROUP_VERSION,
                    "tenants",
                    name,
                    {"metadata": {"finalizers": finalizers, "resourceVersion": rv}},
                )
            )
            await self.events.normal(tenant, "Deleted", f"tenant {name}: everything it held is deleted")

    @staticmethod
    async def _ignore_gone(call: Any) -> None:
        try:
            await call
        except ApiException as e:
            if e.status not in (404, 409):
                raise
