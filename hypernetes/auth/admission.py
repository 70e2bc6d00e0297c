"""Tenant admission: what a write into a tenant's namespaces may contain, and how much of it.

Runs on every create and update after validation, for every caller: the rules follow the
*namespace's* tenant, not the caller, because controllers (running as operators) create pods from
a tenant's deployments and those pods must obey the same quota and policy.

- Namespaces: a tenant user's new namespace is stamped with its tenant (label
  `hypernetes.io/tenant`); only operators may set or change that label.
- Users: a tenant admin creates users of its own tenant only; a user's tenant never changes.
- Networks: a tenant admin's network is its tenant's (spec.tenant), defaults filled (gateway,
  egressNAT, serviceCIDR) and every field checked (422 with the field's path); only operators set
  the default-network label and the network id (spec.id, which an update without it keeps). A
  namespace's `hypernetes.io/network` annotation must name a network of the namespace's tenant.
  A pod's address annotations (`hypernetes.io/ip`, `.../mac`, `.../network`) are the network
  controller's: other callers may not set or change them.
- Pods and pod templates in a tenant's namespaces, whoever writes them (a controller creating a
  tenant's pods is held to the tenant's rules): no host namespaces, no privileged containers, no
  node chosen (placement is the scheduler's), runtime classes and registries only from the
  tenant's allowed lists, a kernel (`hypernetes.io/kernel`) only if its name is well-formed, the
  tenant may use it and some Node offers it. A template is checked when the workload is written;
  an update that leaves a pod or template as it was is not checked again.
- New pods name a RuntimeClass that exists, and get its overhead and scheduling
  (auth/runtimeclass.py, upstream's RuntimeClass plugin), after the pod policy above and before
  LimitRanges and quotas count them.
- Quota, across all of a tenant's namespaces: pods, vCPUs and memory (each VM's real size, guest
  overhead included, plus the pod's spec.overhead memory), namespaces, persistent volume claims
  and the storage they request (on create, and when a bound claim grows), node ports, and the
  number of objects of every other kind a tenant can create (`count/<resource>.<group>`, the
  kinds in controllers/tenant.py; Networks and Users by their spec.tenant). A new Tenant gets a
  default for every key it was not given. A refusal says which quota, what was asked, used and
  allowed.
- Persistent volumes, in every namespace (upstream's DefaultStorageClass,
  StorageObjectInUseProtection and PersistentVolumeClaimResize admission plugins): a new claim
  without a class gets the default class, claims and PVs get their protection finalizers, a
  created status is dropped, and a claim may grow only if its class allows expansion. A node may
  change a PV only by removing its `local.hypernetes.io/backing-file` finalizer.

Quota checks and the write they admit must not interleave with another write of the same tenant,
or two pods could both take the last slot: `lock(tenant)` serializes them, across every API server
when they share the store (etcd; auth/tenantlock.py).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hypernetes.auth.directory import Directory, owner, user_spec
from hypernetes.auth.identity import UserInfo
from hypernetes.auth.limitranger import InvalidDefault, LimitRangeDenied, admit_limits
from hypernetes.auth.namespacequota import QuotaDenied, admit_quota
from hypernetes.auth.podtoken import add_token_volume
from hypernetes.auth.runtimeclass import RuntimeClassDenied
from hypernetes.auth.runtimeclass import admit_pod as admit_runtime_class
from hypernetes.auth.tenantlock import TenantLocks
from hypernetes.controllers.networks import apply_defaults, validate_network
from hypernetes.controllers.tenant import (
    COUNTED,
    COUNTED_BY_KIND,
    DEFAULT_QUOTA,
    NODE_PORTS_KEY,
    Counted,
    node_ports,
)
from hypernetes.controllers.volumes import (
    claim_class,
    claim_request,
    default_class,
    storage_usage,
)
from hypernetes.network.objects import POD_ANNOTATIONS
from hypernetes.objects import Obj
from hypernetes.objects.names import (
    BACKING_FILE_FINALIZER,
    BETA_STORAGE_CLASS_ANNOTATION,
    DEFAULT_NETWORK_LABEL,
    KERNEL_ANNOTATION,
    NETWORK_ANNOTATION,
    PV_PROTECTION_FINALIZER,
    PVC_PROTECTION_FINALIZER,
    TENANT_FINALIZER,
    TENANT_LABEL,
)
from hypernetes.objects.quantity import Quantity, format_bytes
from hypernetes.runtime import kernels
from hypernetes.runtime.images.errors import InvalidReference
from hypernetes.runtime.images.reference import parse_reference
from hypernetes.runtime.podsize import pod_ephemeral_storage, pod_vm, quota_usage, tenant_cost
from hypernetes.store.keys import key_prefix, object_key

# every custom object (of any CRD) in a tenant's namespaces, under one count: kinds come and go
# with their CRDs, and none may let a tenant fill the store
CUSTOM_KEY = "count/customresources"  # every custom object in the tenant's namespaces
EPHEMERAL = "ephemeral-storage"  # pods' scratch disks on nodes (podsize.pod_ephemeral_storage)
QUOTA_KEYS = (
    "pods",
    "vcpus",
    "memory",
    EPHEMERAL,
    "namespaces",
    "storage",
    "persistentvolumeclaims",
    NODE_PORTS_KEY,
    *(c.key for c in COUNTED),
    CUSTOM_KEY,
)
# Writes whose quota check must not interleave with another write of the same tenant (the API
# server holds `lock_for` from admission to commit): creates of every counted kind, and updates
# that can take more (a claim growing, a service taking node ports).
LOCKED_CREATES = frozenset(("Pod", "Namespace", "PersistentVolumeClaim", *COUNTED_BY_KIND))
LOCKED_UPDATES = frozenset(("PersistentVolumeClaim", "Service"))
CONTAINER_GROUPS = ("initContainers", "containers", "ephemeralContainers")
_LABEL_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class Denied(Exception):
    """A write admission refuses (403 Forbidden), with the reason the caller sees."""


class Invalid(Exception):
    """A write whose content cannot be admitted (422), at `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def quantity(key: str, value: Any) -> int:
    """A quota amount as an integer: bytes for memory and storage (a Kubernetes quantity, rounded
    up as upstream's Value(): "500M" and "1k" are decimal, "512m" is milli), counts otherwise.
    ValueError if it is not a quantity, or a count is not whole."""
    amount = Quantity.from_json(value)
    if key in ("memory", "storage", EPHEMERAL):
        return amount.value()
    millis = amount.milli_value()
    if millis % 1000:
        raise ValueError(f"{key} must be a whole number")
    return millis // 1000


def show(key: str, amount: int) -> str:
    """Memory and storage as a canonical binary quantity (5Gi, 1536Mi, 1000000000), counts as
    they are."""
    if key in ("memory", "storage", EPHEMERAL):
        return format_bytes(amount)
    return str(amount)


@dataclass(frozen=True)
class Usage:
    pods: int = 0
    vcpus: int = 0
    memory: int = 0
    namespaces: int = 0
    ephemeral_storage: int = 0

    def get(self, key: str) -> int:
        return int(getattr(self, key.replace("-", "_"), 0))

    def as_quantities(self) -> dict[str, str]:
        return {k: show(k, self.get(k)) for k in ("pods", "vcpus", "memory", EPHEMERAL, "namespaces")}


def _meta_path(spec_path: str) -> str:
    """`metadata` for a pod's `spec`, `spec.template.metadata` for a template's."""
    return "metadata" if spec_path == "spec" else spec_path.removesuffix(".spec") + ".metadata"


def _policy_view(holder: Obj) -> tuple[Any, Any]:
    """What pod policy looks at: the spec and the kernel annotation."""
    notes = (holder.get("metadata") or {}).get("annotations") or {}
    return holder.get("spec"), notes.get(KERNEL_ANNOTATION)


def registry_host(entry: str) -> str | None:
    """An allow-list entry (`host[:port]`) as image references name the registry (the shared
    parser: `index.docker.io` is `docker.io`), or None if it is not one."""
    if not entry or "/" in entry or "@" in entry:
        return None
    try:
        ref = parse_reference(f"{entry}/x")
    except InvalidReference:
        return None
    # a bare word ("busybox") is a Docker Hub repository, not a registry
    return ref.domain.lower() if ref.path in ("x", "library/x") else None


class TenantAdmission:
    """`pod_specs`: where each kind with a pod spec holds it ("spec" for a Pod,
    "spec.template.spec" for a workload's template), as the API's registry entries say
    (hypernetes/api/registry, which this room cannot import); every one is held to pod policy."""

    def __init__(
        self, directory: Directory, locks: TenantLocks | None = None, *, pod_specs: Mapping[str, str]
    ) -> None:
        self.d = directory
        self.locks = locks or TenantLocks()
        self.pod_specs = dict(pod_specs)
        # RBAC's no-escalation rule (TenantAuthorizer.escalation; api/tenancy.py sets it): why a
        # tenant's caller may not write this Role or RoleBinding, or None
        self.escalation: Callable[[UserInfo, str, str, Obj], Awaitable[str | None]] | None = None

    def pod_templates(self, kind: str, obj: Obj) -> Iterator[tuple[str, Obj]]:
        """(field path, pod spec holder) of a pod or of a workload's pod template."""
        path = self.pod_specs.get(kind)
        if path is None:
            return
        holder: Any = obj
        for key in path.split(".")[:-1]:  # the holder has the spec and its metadata
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            yield path, holder

    def lock(self, tenant: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.locks.hold(tenant)

    async def lock_for(
        self, user: UserInfo, namespace: str | None
    ) -> contextlib.AbstractAsyncContextManager[None] | None:
        """The lock a create must hold from admission to commit: its tenant's, if any."""
        tenant = user.tenant or (await self.d.fetch_namespace_owner(namespace) if namespace else None)
        return self.lock(tenant) if tenant else None

    async def admit(
        self, user: UserInfo, kind: str, namespace: str | None, obj: Obj, old: Obj | None
    ) -> None:
        """Mutates `obj` (the namespace owner stamp) or raises Denied / Invalid."""
        node = user.node
        if node is not None and kind in ("Node", "Lease") and (obj.get("metadata") or {}).get("name") != node:
            raise Denied(f"node {node} may create or change only its own {kind}")
        if kind in ("Role", "RoleBinding") and self.escalation is not None and not user.operator:
            why = await self.escalation(user, namespace or "", kind, obj)
            if why is not None:
                raise Denied(why)
        if kind == "Namespace":
            await self._namespace(user, obj, old)
            return
        if kind == "User":
            await self._user(user, obj, old)
            if old is None:
                await self._count_quota(str(user_spec(obj).get("tenant") or ""), kind)
            return
        if kind == "Tenant":
            self._tenant(obj, old)
            if old is None:  # the tenant controller deletes its namespaces and users before it goes
                finalizers = obj["metadata"].setdefault("finalizers", [])
                if TENANT_FINALIZER not in finalizers:
                    finalizers.append(TENANT_FINALIZER)
            return
        if kind == "PersistentVolume":
            self._volume(user, obj, old)
            return
        if kind == "Network":
            await self._network(user, obj, old)
            labels = (obj.get("metadata") or {}).get("labels") or {}
            # a tenant's default network is the network controller's and always made (only
            # operators may set the label); every other one counts
            if old is None and labels.get(DEFAULT_NETWORK_LABEL) != "true":
                await self._count_quota(str((obj.get("spec") or {}).get("tenant") or ""), kind)
            return
        if not namespace:
            return
        if "." in kind:  # a custom resource, named plural.group by the API server: it counts
            tenant = await self.d.fetch_namespace_owner(namespace)
            if tenant is not None and old is None:
                await self._custom_quota(tenant)
            return
        tenant = await self.d.fetch_namespace_owner(namespace)
        template = self.pod_specs.get(kind, "spec") != "spec"  # a workload's, not a Pod's
        for path, holder in self.pod_templates(kind, obj):
            # operators change pods' addresses (the network controller); but a pod they create or
            # a template they write in a tenant's namespace is the tenant's, so its rules apply
            if not user.operator or (tenant is not None and (old is None or template)):
                self._pod_network_annotations(path, holder, old)
        if kind == "PersistentVolumeClaim":
            await self._claim(obj, old)
        if kind == "Pod" and old is None:
            kv = await self.d.store.get(
                object_key(
                    "",
                    "serviceaccounts",
                    namespace,
                    str((obj.get("spec") or {}).get("serviceAccountName") or "default"),
                )
            )
            add_token_volume(obj, json.loads(kv.value) if kv is not None else None)
        t = await self.d.fetch_tenant(tenant) if tenant is not None else None
        tspec: Obj = (t or {}).get("spec") or {}
        for path, holder in self.pod_templates(kind, obj):
            before = next((h for _, h in self.pod_templates(kind, old)), None) if old is not None else None
            await self._pod_policy(tenant, tspec, kind, path, holder, before)
        if kind == "Pod" and old is None:
            # its RuntimeClass's overhead and scheduling (once the tenant may use the class),
            # before LimitRanges and quotas count the pod
            try:
                await admit_runtime_class(self.d.store, obj)
            except RuntimeClassDenied as e:
                raise Denied(str(e)) from None
        await self._namespace_limits(kind, namespace, obj, old)
        if tenant is None:
            return  # operators' namespaces
        if kind == "Pod" and old is None:
            # a new pod starts Pending whatever its body claims (upstream drops a created status):
            # quotas skip finished pods, so one created as "Succeeded" would never count
            qos = (obj.get("status") or {}).get("qosClass")
            obj["status"] = {"phase": "Pending", **({"qosClass": qos} if qos else {})}
            await self._pod_quota(tenant, tspec, obj)
        if kind == "PersistentVolumeClaim":
            await self._claim_quota(tenant, tspec, obj, old)
        if kind == "Service":
            await self._node_port_quota(tenant, tspec, namespace, obj, old)
        if old is None:
            await self._count_quota(tenant, kind, tspec)

    async def _namespace_limits(self, kind: str, namespace: str, obj: Obj, old: Obj | None) -> None:
        """The namespace's LimitRanges and ResourceQuotas (limitranger.py, namespacequota.py), in every
        namespace: they only restrict further, before the tenant's quota."""
        try:
            await admit_limits(self.d.store, kind, namespace, obj, old)
        except LimitRangeDenied as e:
            raise Denied(str(e)) from None
        except InvalidDefault as e:
            raise Invalid(e.field, str(e)) from None
        try:
            await admit_quota(self.d.store, kind, namespace, obj, old)
        except QuotaDenied as e:
            raise Denied(str(e)) from None

    # -- namespaces, users, tenants --------------------------------------------------------------

    async def _namespace(self, user: UserInfo, obj: Obj, old: Obj | None) -> None:
        labels = obj.setdefault("metadata", {}).setdefault("labels", {}) or {}
        obj["metadata"]["labels"] = labels
        if old is None:
            if user.tenant:
                if user.name.startswith("system:serviceaccount:"):
                    raise Denied("service accounts may not create namespaces")
                labels[TENANT_LABEL] = user.tenant
            elif not user.operator and TENANT_LABEL in labels:
                raise Denied(f"only operators may set the {TENANT_LABEL} label")
            tenant = labels.get(TENANT_LABEL)
            await self._namespace_network(obj, old)
            if tenant:
                t = await self.d.fetch_tenant(tenant)
                if t is None or (t.get("metadata") or {}).get("deletionTimestamp"):
                    raise Denied(f'tenant "{tenant}" does not exist or is being deleted')
                owned = len(await self.namespaces_of(tenant))
                self._check(tenant, t.get("spec") or {}, "namespaces", 1, owned)
            return
        if owner(old) != labels.get(TENANT_LABEL) and not user.operator:
            raise Denied(f"the {TENANT_LABEL} label of a namespace may be changed by operators only")
        await self._namespace_network(obj, old)

    async def _user(self, caller: UserInfo, obj: Obj, old: Obj | None) -> None:
        tenant = user_spec(obj).get("tenant")
        if old is not None and user_spec(old).get("tenant") != tenant:
            raise Invalid("spec.tenant", "field is immutable")
        if caller.tenant and tenant != caller.tenant:
            raise Denied(f'a tenant admin may manage users of tenant "{caller.tenant}" only')
        if old is None and await self.d.fetch_tenant(str(tenant)) is None:
            raise Invalid("spec.tenant", f'tenant "{tenant}" does not exist')

    @staticmethod
    def _tenant(obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        if old is None:  # a new tenant is limited in everything it did not set
            spec["quota"] = {**DEFAULT_QUOTA, **(spec.get("quota") or {})}
        for i, name in enumerate(spec.get("allowedKernels") or []):
            problem = kernels.name_problem(str(name))
            if problem is not None:
                raise Invalid(f"spec.allowedKernels[{i}]", f"Invalid value: {name!r}: {problem}")
        for i, entry in enumerate(spec.get("allowedRegistries") or []):
            if registry_host(str(entry)) is None:
                raise Invalid(
                    f"spec.allowedRegistries[{i}]",
                    f"Invalid value: {entry!r}: must be a "
                    "registry host, with a port if it has one (host[:port])",
                )
        quota = spec.get("quota") or {}
        for key, value in quota.items():
            if key not in QUOTA_KEYS:
                raise Invalid(f"spec.quota[{key}]", f"unsupported quota; supported: {', '.join(QUOTA_KEYS)}")
            try:
                if quantity(key, value) < 0:
                    raise ValueError("must not be negative")
            except ValueError as e:
                raise Invalid(f"spec.quota[{key}]", f"{value!r}: {e}") from None

    # -- networks --------------------------------------------------------------------------------

    async def _network(self, caller: UserInfo, obj: Obj, old: Obj | None) -> None:
        meta, spec = obj.setdefault("metadata", {}), obj.setdefault("spec", {})
        if old is None:
            obj.pop("status", None)  # the controller and the nodes write it, as upstream drops it
        name = str(meta.get("name") or "")
        if old is None and not _LABEL_NAME.fullmatch(name):
            raise Invalid(
                "metadata.name",
                f"Invalid value: {name!r}: a network's name must be a DNS-1123 "
                "label (lower case alphanumerics and '-', at most 63 characters)",
            )
        if caller.tenant:
            if old is None:
                spec.setdefault("tenant", caller.tenant)
            if spec.get("tenant") != caller.tenant:
                raise Denied(f'a tenant admin may manage networks of tenant "{caller.tenant}" only')
        labels = meta.setdefault("labels", {}) or {}
        meta["labels"] = labels
        old_labels = ((old or {}).get("metadata") or {}).get("labels") or {}
        if not caller.operator and labels.get(DEFAULT_NETWORK_LABEL) != old_labels.get(DEFAULT_NETWORK_LABEL):
            raise Denied(f"only operators may set the {DEFAULT_NETWORK_LABEL} label")
        old_id = ((old or {}).get("spec") or {}).get("id")
        if old_id is not None and spec.get("id") is None:
            spec["id"] = old_id  # kept as upstream keeps an allocated clusterIP on a PUT without it
        if not caller.operator and spec.get("id") != old_id:
            raise Denied(
                "spec.id: a network's id is given by the network controller; only operators may choose it"
            )
        tenant = spec.get("tenant")
        if tenant:
            labels[TENANT_LABEL] = tenant  # for label selectors: kubectl get networks -l
            if old is None:
                t = await self.d.fetch_tenant(str(tenant))
                if t is None or (t.get("metadata") or {}).get("deletionTimestamp"):
                    raise Invalid("spec.tenant", f'tenant "{tenant}" does not exist or is being deleted')
        elif not caller.operator:
            raise Denied("only operators may create networks without a tenant")
        with contextlib.suppress(KeyError, ValueError):  # a missing or bad cidr is reported below
            apply_defaults(spec)
        problems = validate_network(spec, (old or {}).get("spec") if old is not None else None)
        if problems:
            (field, first), rest = problems[0], problems[1:]
            raise Invalid(field, first + "".join(f"; {f}: {msg}" for f, msg in rest))

    async def _namespace_network(self, obj: Obj, old: Obj | None) -> None:
        """A namespace may name a network of its own tenant (operators' namespaces: a network
        without a tenant)."""
        meta = obj.get("metadata") or {}
        named = (meta.get("annotations") or {}).get(NETWORK_ANNOTATION)
        before = (((old or {}).get("metadata") or {}).get("annotations") or {}).get(NETWORK_ANNOTATION)
        if not named or named == before:
            return
        kv = await self.d.store.get(object_key("hypernetes.io", "networks", None, str(named)))
        net = json.loads(kv.value) if kv is not None else None
        tenant = owner(obj)
        if net is None or ((net.get("spec") or {}).get("tenant") or None) != tenant:
            whose = f'tenant "{tenant}"' if tenant else "the operators (no tenant)"
            raise Invalid(
                f"metadata.annotations[{NETWORK_ANNOTATION}]",
                f'network "{named}" does not exist or does not belong to {whose}',
            )

    def _pod_network_annotations(self, path: str, holder: Obj, old: Obj | None) -> None:
        """A pod's address annotations are the network controller's: a caller who could set them
        could take another pod's address (the controller trusts only its own records, but the
        node might start the VM first)."""
        notes = (holder.get("metadata") or {}).get("annotations") or {}
        before: Obj = {}
        if old is not None:
            for _, old_holder in self.pod_templates(str(old.get("kind") or "Pod"), old):
                before = (old_holder.get("metadata") or {}).get("annotations") or {}
        for key in POD_ANNOTATIONS:
            if notes.get(key) != before.get(key):
                raise Denied(f"{_meta_path(path)}.annotations[{key}]: set by the network controller only")

    # -- persistent volumes ----------------------------------------------------------------------

    @staticmethod
    def _volume(user: UserInfo, obj: Obj, old: Obj | None) -> None:
        meta = obj.setdefault("metadata", {})
        if old is None:
            obj["status"] = {"phase": "Pending"}  # upstream drops a created status; the controller sets it
            finalizers = meta.setdefault("finalizers", [])
            if PV_PROTECTION_FINALIZER not in finalizers:
                finalizers.append(PV_PROTECTION_FINALIZER)
            return
        if user.node is None:
            return
        # a node removes its backing-file finalizer and nothing else: a node that could relabel or
        # re-point a PV could hand one tenant's disk to another
        before, after = dict(old), dict(obj)
        before_meta, after_meta = dict(old.get("metadata") or {}), dict(meta)
        had, has = set(before_meta.get("finalizers") or []), set(after_meta.get("finalizers") or [])
        removed_only = has <= had and had - has <= {BACKING_FILE_FINALIZER}
        for md in (before_meta, after_meta):
            for field in ("finalizers", "resourceVersion", "managedFields", "generation"):
                md.pop(field, None)
        before["metadata"], after["metadata"] = before_meta, after_meta
        before.pop("status", None)
        after.pop("status", None)
        if before != after or not removed_only:
            raise Denied(
                f"node {user.node} may only remove the {BACKING_FILE_FINALIZER} finalizer of a "
                "persistentvolume"
            )

    async def _class(self, name: str) -> Obj | None:
        if not name:
            return None
        kv = await self.d.store.get(object_key("storage.k8s.io", "storageclasses", None, name))
        return json.loads(kv.value) if kv is not None else None

    async def _claim(self, obj: Obj, old: Obj | None) -> None:
        meta = obj.setdefault("metadata", {})
        if old is None:
            obj["status"] = {"phase": "Pending"}  # a created status could claim to be Bound
            finalizers = meta.setdefault("finalizers", [])
            if PVC_PROTECTION_FINALIZER not in finalizers:
                finalizers.append(PVC_PROTECTION_FINALIZER)
            spec = obj.setdefault("spec", {})
            beta_class = BETA_STORAGE_CLASS_ANNOTATION in (meta.get("annotations") or {})
            if "storageClassName" not in spec and not beta_class:
                res = await self.d.store.list(key_prefix("storage.k8s.io", "storageclasses", None))
                default = default_class(json.loads(kv.value) for kv in res.items)
                if default is not None:
                    spec["storageClassName"] = default["metadata"]["name"]
            return
        if claim_request(obj) > claim_request(old):
            cls = await self._class(claim_class(old))
            if cls is None or cls.get("allowVolumeExpansion") is not True:
                raise Denied(
                    "only dynamically provisioned pvc can be resized and the storageclass that "
                    "provisions the pvc must support resize"
                )

    async def claim_usage(self, tenant: str) -> tuple[int, int]:
        """(claims, storage bytes requested) in the tenant's namespaces, read from the store."""
        claims: list[Obj] = []
        for ns in await self.namespaces_of(tenant):
            res = await self.d.store.list(key_prefix("", "persistentvolumeclaims", ns))
            claims.extend(json.loads(kv.value) for kv in res.items)
        return storage_usage(claims)

    async def _claim_quota(self, tenant: str, tspec: Obj, obj: Obj, old: Obj | None) -> None:
        quota = tspec.get("quota") or {}
        if not any(k in quota for k in ("storage", "persistentvolumeclaims")):
            return
        grow = claim_request(obj) - (claim_request(old) if old is not None else 0)
        if old is not None and grow <= 0:
            return  # only a new claim or a growing one takes more
        count, storage = await self.claim_usage(tenant)
        if old is None:
            self._check(tenant, tspec, "persistentvolumeclaims", 1, count)
        self._check(tenant, tspec, "storage", grow, storage)

    # -- pods ------------------------------------------------------------------------------------

    async def _pod_policy(
        self, tenant: str | None, tspec: Obj, kind: str, path: str, holder: Obj, before: Obj | None
    ) -> None:
        """`holder` (a pod, or a template with metadata and spec) in a namespace of `tenant` (None:
        the operators'); `before`: the same as it was, on an update."""
        if before is not None and _policy_view(before) == _policy_view(holder):
            return  # an update leaving it as it was: what was admitted stays admitted
        await self._kernel(tenant, tspec, path, holder)
        if tenant is None:
            return
        spec = holder.get("spec") or {}
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field) is True:
                raise Denied(f"{path}.{field}: a pod VM has no access to the host's namespaces")
        # placement is the scheduler's: a tenant must not pick the host its VM shares. A pod gets a
        # node later only through a binding; a template never has one
        if spec.get("nodeName") and (kind != "Pod" or before is None):
            raise Denied(f"{path}.nodeName: tenants may not choose a node; the scheduler places pods")
        for group in CONTAINER_GROUPS:
            for i, c in enumerate(spec.get(group) or []):
                sc = (c or {}).get("securityContext") or {}
                if sc.get("privileged") is True:
                    raise Denied(
                        f"{path}.{group}[{i}].securityContext.privileged: tenants may not run "
                        "privileged containers"
                    )
        for i, v in enumerate(spec.get("volumes") or []):
            if isinstance(v, dict) and "hostPath" in v:
                raise Denied(f"{path}.volumes[{i}].hostPath: host paths are not reachable from a pod VM")
        rc = spec.get("runtimeClassName")
        allowed_rc = tspec.get("allowedRuntimeClasses")
        if rc and allowed_rc is not None and rc not in allowed_rc:
            raise Denied(
                f'{path}.runtimeClassName: runtime class "{rc}" is not allowed for tenant "{tenant}" '
                f"(allowed: {', '.join(allowed_rc) or 'none'})"
            )
        self._registries(tenant, tspec, path, spec)

    async def _kernel(self, tenant: str | None, tspec: Obj, path: str, holder: Obj) -> None:
        """The pod's kernel: a well-formed name (it becomes a path on the node), one the tenant may
        use, registered on some node (its agent lists them on its Node)."""
        name = ((holder.get("metadata") or {}).get("annotations") or {}).get(KERNEL_ANNOTATION)
        if name is None or name == kernels.KernelRegistry.DEFAULT:
            return  # the node's default kernel: always there, always allowed
        field = f"{_meta_path(path)}.annotations[{KERNEL_ANNOTATION}]"
        problem = kernels.name_problem(str(name))
        if problem is not None:
            raise Invalid(field, f"Invalid value: {name!r}: {problem}")
        allowed = tspec.get("allowedKernels")
        if tenant is not None and allowed is not None and name not in allowed:
            raise Denied(
                f'{field}: kernel "{name}" is not allowed for tenant "{tenant}" '
                f"(allowed: {', '.join([kernels.KernelRegistry.DEFAULT, *allowed])})"
            )
        res = await self.d.store.list(key_prefix("", "nodes", None))
        if not any(name in kernels.offered(json.loads(kv.value)) for kv in res.items):
            raise Denied(
                f'{field}: kernel "{name}" is not registered on any node (`hypernetes kernel '
                f"register` on the nodes that should offer it)"
            )

    @staticmethod
    def _registries(tenant: str, tspec: Obj, path: str, spec: Obj) -> None:
        """Every image from a registry the tenant may pull from (absent list: any)."""
        allowed = tspec.get("allowedRegistries")
        if allowed is None:
            return
        hosts = {registry_host(str(a)) for a in allowed}
        for group in CONTAINER_GROUPS:
            for i, c in enumerate(spec.get(group) or []):
                image = str((c or {}).get("image") or "")
                field = f"{path}.{group}[{i}].image"
                try:
                    ref = parse_reference(image)
                except InvalidReference as e:
                    raise Invalid(field, f"Invalid value: {image!r}: {e}") from None
                if ref.domain.lower() not in hosts:
                    raise Denied(
                        f'{field}: registry "{ref.domain}" is not allowed for tenant "{tenant}" '
                        f"(allowed: {', '.join(map(str, allowed)) or 'none'})"
                    )

    async def namespaces_of(self, tenant: str) -> list[str]:
        """The tenant's namespaces as the store has them now. Not the directory's copy: it follows
        the store through a watch, so right after a create it may not hold the new namespace yet,
        and the next create (under the same lock) would pass a full namespace quota."""
        res = await self.d.store.list(key_prefix("", "namespaces", None))
        found = (json.loads(kv.value) for kv in res.items)
        return [str(ns["metadata"]["name"]) for ns in found if owner(ns) == tenant]

    async def usage(self, tenant: str) -> Usage:
        """What the tenant's namespaces hold now, read from the store."""
        namespaces = await self.namespaces_of(tenant)
        pods: list[Obj] = []
        for ns in namespaces:
            res = await self.d.store.list(key_prefix("", "pods", ns))
            pods.extend(json.loads(kv.value) for kv in res.items)
        count, vcpus, memory, ephemeral = quota_usage(pods)
        return Usage(count, vcpus, memory, len(namespaces), ephemeral)

    async def _pod_quota(self, tenant: str, tspec: Obj, pod: Obj) -> None:
        quota = tspec.get("quota") or {}
        if not any(k in quota for k in ("pods", "vcpus", "memory", EPHEMERAL)):
            return
        try:
            pod_vm(pod)
        except ValueError as e:
            raise Invalid("spec.containers", str(e)) from None
        try:
            pod_ephemeral_storage(pod)
        except ValueError as e:
            raise Invalid("spec.volumes", str(e)) from None
        try:
            vcpus, memory, disk = tenant_cost(pod)  # the VM, plus the overhead's memory
        except ValueError as e:
            raise Invalid("spec.overhead", str(e)) from None
        used = await self.usage(tenant)
        self._check(tenant, tspec, "pods", 1, used.pods)
        self._check(tenant, tspec, "vcpus", vcpus, used.vcpus)
        self._check(tenant, tspec, "memory", memory, used.memory)
        self._check(tenant, tspec, EPHEMERAL, disk, used.ephemeral_storage)

    async def count(self, tenant: str, c: Counted) -> int:
        """How many objects of kind `c` the tenant has now, read from the store."""
        if not c.namespaced:  # networks and users: theirs by spec.tenant
            res = await self.d.store.list(key_prefix(c.group, c.plural, None))
            specs = ((json.loads(kv.value).get("spec") or {}) for kv in res.items)
            return sum(1 for spec in specs if spec.get("tenant") == tenant)
        total = 0
        for ns in await self.namespaces_of(tenant):
            total += await self.d.store.count(key_prefix(c.group, c.plural, ns))
        return total

    async def _count_quota(self, tenant: str, kind: str, tspec: Obj | None = None) -> None:
        c = COUNTED_BY_KIND.get(kind)
        if c is None or not tenant:
            return
        if tspec is None:
            tspec = ((await self.d.fetch_tenant(tenant)) or {}).get("spec") or {}
        if c.key in (tspec.get("quota") or {}):
            self._check(tenant, tspec, c.key, 1, await self.count(tenant, c))

    async def custom_count(self, tenant: str) -> int:
        """How many custom objects (of every namespaced CRD) the tenant's namespaces hold now."""
        crds = await self.d.store.list(key_prefix("apiextensions.k8s.io", "customresourcedefinitions", None))
        kinds = []
        for kv in crds.items:
            spec = json.loads(kv.value).get("spec") or {}
            if spec.get("scope") == "Namespaced":
                names = spec.get("names") or {}
                kinds.append((str(spec.get("group") or ""), str(names.get("plural") or "")))
        total = 0
        for ns in await self.namespaces_of(tenant):
            for group, plural in kinds:
                total += await self.d.store.count(key_prefix(group, plural, ns))
        return total

    async def _custom_quota(self, tenant: str) -> None:
        tspec = ((await self.d.fetch_tenant(tenant)) or {}).get("spec") or {}
        if CUSTOM_KEY in (tspec.get("quota") or {}):
            self._check(tenant, tspec, CUSTOM_KEY, 1, await self.custom_count(tenant))

    async def _node_port_quota(
        self, tenant: str, tspec: Obj, namespace: str, obj: Obj, old: Obj | None
    ) -> None:
        """Node ports come from one range for the whole cluster: a tenant takes its quota's worth."""
        asked = node_ports(obj)
        if NODE_PORTS_KEY not in (tspec.get("quota") or {}) or asked <= (node_ports(old) if old else 0):
            return
        name = (obj.get("metadata") or {}).get("name")
        used = 0
        for ns in await self.namespaces_of(tenant):
            for kv in (await self.d.store.list(key_prefix("", "services", ns))).items:
                svc = json.loads(kv.value)
                if (ns, (svc.get("metadata") or {}).get("name")) != (namespace, name):
                    used += node_ports(svc)
        self._check(tenant, tspec, NODE_PORTS_KEY, asked, used)

    @staticmethod
    def _check(tenant: str, tspec: Obj, key: str, asked: int, used: int) -> None:
        limit_text = (tspec.get("quota") or {}).get(key)
        if limit_text is None:
            return
        limit = quantity(key, limit_text)
        if used + asked > limit:
            over = used + asked - limit
            raise Denied(
                f'exceeded quota of tenant "{tenant}": {key}: requested {show(key, asked)}, '
                f"used {show(key, used)}, limited {show(key, limit)} (over by {show(key, over)})"
            )
