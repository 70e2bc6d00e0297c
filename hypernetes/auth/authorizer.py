"""Authorization: may this caller do this verb on this resource, and, for lists and watches, which
objects may it see.

`TenantAuthorizer` is the multi-tenant rule set:

- operators (`system:masters`) may do anything;
- tenant users reach namespaced objects only in namespaces their tenant owns, with verbs by role
  (viewer reads, member reads and writes workloads, admin also manages the tenant's namespaces
  and users); lists and watches across namespaces, of namespaces, tenants and users are
  *filtered* to what is theirs rather than refused;
- service accounts act as their `hypernetes.io/role` annotation says, in their own namespace only;
- RoleBindings in a tenant's namespaces narrow what its users and service accounts may do there,
  within the tenant role (hypernetes/auth/rbac.py has the model); tenants' admins write Roles and
  RoleBindings, everyone in a tenant reads ClusterRoles;
- tenant users read their tenant's Networks (`spec.tenant`), admins also write them; IPAllocations
  are operators' (nodes read both, and write Networks' status);
- tenant users read their tenant's PersistentVolumes (label `hypernetes.io/tenant`) and nothing
  else of that kind: another tenant's PV is refused by name whether it exists or not, so PV names
  cannot be probed;
- node agents as upstream's NodeRestriction: their own Node and Lease, pods bound to them (and
  their status), the configmaps, secrets, service accounts and claims those pods use (and the
  claims' status), the PVs on the node or bound to those claims, and events.

A `Decision` may carry a `scope`: the predicate a list or watch applies to every object.
Decisions are made from the in-memory `Directory`, with a store read only for objects a node asks
about.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hypernetes.auth.customkinds import namespaced_custom
from hypernetes.auth.directory import GROUP, Directory, owner, user_spec
from hypernetes.auth.identity import MASTERS, SA_PREFIX, UserInfo
from hypernetes.auth.rbac import GROUP as RBAC_GROUP
from hypernetes.auth.rbac import (
    RBAC_RESOURCES,
    Request,
    RoleNotFound,
    escalation_message,
    not_held,
    rules_allow,
)
from hypernetes.objects import Obj
from hypernetes.objects.meta import metadata
from hypernetes.objects.names import TENANT_LABEL
from hypernetes.store.keys import key_prefix, object_key
from hypernetes.volumes.objects import pv_node

Scope = Callable[[Obj], bool]

READ = frozenset(("get", "list", "watch"))
WRITE = frozenset(("create", "update", "patch", "delete", "deletecollection"))
# Namespaced kinds a tenant works with (group, resource); writes need member.
TENANT_KINDS = frozenset(
    (
        ("", "pods"),
        ("", "services"),
        ("", "endpoints"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "serviceaccounts"),
        ("", "events"),
        ("", "persistentvolumeclaims"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "controllerrevisions"),
        ("", "replicationcontrollers"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("policy", "poddisruptionbudgets"),
        ("", "limitranges"),
        ("", "resourcequotas"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("metrics.k8s.io", "pods"),  # read-only: the kind serves get and list alone
        ("coordination.k8s.io", "leases"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "networkpolicies"),
        ("networking.k8s.io", "ingresses"),
    )
)
# A namespace's limits (upstream: the admin role, not edit): members read them, admins write them.
ADMIN_WRITTEN = frozenset((("", "limitranges"), ("", "resourcequotas")))
# Namespaced kinds a tenant may read in its namespaces (where none can be: `kubectl get all` lists
# them) but never write: a daemon set runs a pod on every node, and nodes are the operators'.
READ_ONLY_KINDS = frozenset((("apps", "daemonsets"),))
# Subresources a member may write (status belongs to controllers and nodes; binding to the scheduler).
MEMBER_SUBRESOURCES = frozenset(("exec", "attach", "portforward", "eviction", "scale", "token"))
# What a node may read when a pod bound to it names the object.
NODE_READABLE = frozenset(
    (("", "configmaps"), ("", "secrets"), ("", "serviceaccounts"), ("", "persistentvolumeclaims"))
)
# What a node reads to build its networks' policies and ingress routes.
NODE_NETWORKING = (
    ("networking.k8s.io", "networkpolicies"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "ingressclasses"),
)
# Review kinds every authenticated caller may create about itself.
SELF_REVIEWS = frozenset(
    (
        ("authentication.k8s.io", "selfsubjectreviews"),
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectrulesreviews"),
    )
)
PUBLIC_READS = frozenset(
    (
        ("apiregistration.k8s.io", "apiservices"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),  # which custom kinds exist
        ("storage.k8s.io", "storageclasses"),
        ("networking.k8s.io", "ingressclasses"),
        ("node.k8s.io", "runtimeclasses"),  # which runtimes pods may name
    )
)
NON_RESOURCE_OK = ("/api", "/apis", "/openapi/", "/version", "/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class Attributes:
    """As upstream's authorizer.Attributes: resource requests carry group/resource/namespace;
    others (discovery, /version, /openapi) only the path."""

    user: UserInfo
    verb: str  # get list watch create update patch delete deletecollection; or the HTTP verb
    resource_request: bool
    path: str
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    scope: Scope | None = None  # lists/watches/gets see only objects this accepts


ALLOW = Decision(True)


def deny(reason: str = "no rule allows it") -> Decision:
    return Decision(False, reason)


class Authorizer(Protocol):
    async def authorize(self, attrs: Attributes) -> Decision: ...


class AllowAll:
    async def authorize(self, attrs: Attributes) -> Decision:
        return ALLOW


class GroupAuthorizer:
    """Allows members of any of `groups` (e.g. system:masters) and denies everyone else."""

    def __init__(self, groups: tuple[str, ...] = (MASTERS,)) -> None:
        self._groups = frozenset(groups)

    async def authorize(self, attrs: Attributes) -> Decision:
        if self._groups.intersection(attrs.user.groups):
            return ALLOW
        return deny()


def role_allows(role: str, verb: str, sub: str) -> bool:
    """The verbs of a tenant role on the tenant's namespaced workloads."""
    if sub in ("log",) or (sub and verb in READ):
        return role in ("viewer", "member", "admin") and verb in READ
    if sub:
        return role in ("member", "admin") and sub in MEMBER_SUBRESOURCES
    if verb in READ:
        return role in ("viewer", "member", "admin")
    return role in ("member", "admin") and verb in WRITE


def ceiling_allows(role: str, a: Attributes) -> bool:
    """What a tenant role allows on namespaced kinds, wherever the caller may act: the ceiling
    RoleBindings narrow. Roles and RoleBindings are a tenant admin's (as upstream's `admin`)."""
    gr = (a.api_group, a.resource)
    if gr in READ_ONLY_KINDS:
        return a.verb in READ
    if gr in RBAC_RESOURCES:
        return role == "admin" and not a.subresource and (a.verb in READ or a.verb in WRITE)
    if namespaced_custom(*gr):  # a tenant's custom objects are its workloads; its operators write status
        return role_allows(role, a.verb, "" if a.subresource == "status" else a.subresource)
    if gr not in TENANT_KINDS or not role_allows(role, a.verb, a.subresource):
        return False
    if gr in ADMIN_WRITTEN and a.verb not in READ and role != "admin":
        return False
    return not (role == "viewer" and a.resource == "secrets")


def role_probe(role: str) -> Callable[[Request], bool]:
    """`ceiling_allows` of `role` for one request (to write the built-in roles out as rules)."""
    probe = UserInfo("probe")
    return lambda q: ceiling_allows(
        role, Attributes(probe, q.verb, True, "", q.group, "", q.resource, q.subresource, "probe", q.name)
    )


class TenantAuthorizer:
    def __init__(self, directory: Directory) -> None:
        self.d = directory
        self.rbac = directory.rbac

    async def authorize(self, a: Attributes) -> Decision:
        u = a.user
        if u.operator:
            return ALLOW
        if not a.resource_request:
            if a.verb == "get" and any(
                a.path == p or a.path.startswith(p.rstrip("/") + "/") for p in NON_RESOURCE_OK
            ):
                return ALLOW
            return deny()
        if (a.api_group, a.resource) in SELF_REVIEWS and a.verb == "create":
            return ALLOW
        if (a.api_group, a.resource) in PUBLIC_READS and a.verb in READ:
            return ALLOW
        node = u.node
        if node is not None:
            return await self._node(a, node)
        if not u.tenant or not self.d.tenant_active(u.tenant):
            return deny("the caller belongs to no active tenant")
        if u.name.startswith(SA_PREFIX):
            return await self._service_account(a)  # with or without a role: RoleBindings may grant
        if not u.role:
            return deny("the caller belongs to no active tenant")
        return await self._tenant_user(a)

    # -- RBAC inside the tenant (auth/rbac.py) ---------------------------------------------------

    def _bound(self, a: Attributes) -> Callable[[str], bool] | None:
        """For a caller that RoleBindings of its own tenant name: in which namespaces the rules
        bound to it allow `a`. None for an unbound caller (its tenant role decides alone)."""
        u = a.user
        bound = self.rbac.bound_namespaces(u, self.d.namespace_owner)
        if not bound:
            return None
        q = Request(a.verb, a.api_group, a.resource, a.subresource, a.name)
        return lambda ns: ns in bound and rules_allow(self.rbac.rules_in(u, ns), q)

    def _bound_list(self, a: Attributes, where: Callable[[str], bool]) -> Decision:
        """A list or watch across namespaces by a bound caller: the namespaces its rules allow."""
        allowed = frozenset(ns for ns in self.d.tenant_namespaces(a.user.tenant) if where(ns))
        return Decision(True, scope=lambda o: metadata(o).get("namespace") in allowed)

    async def escalation(self, user: UserInfo, namespace: str, kind: str, obj: Obj) -> str | None:
        """Upstream's no-escalation rule for a Role or RoleBinding a tenant's caller writes: why it
        may not (a rule it does not hold), or None; RoleNotFound for a role that does not exist."""
        if kind == "Role":
            rules = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
        else:
            ref = obj.get("roleRef") or {}
            found = await self.rbac.fetch_role_rules(namespace, ref)
            if found is None:
                raise RoleNotFound(
                    "roles" if ref.get("kind") == "Role" else "clusterroles", ref.get("name") or ""
                )
            rules = found

        async def holds(q: Request) -> bool:
            if (q.group, q.resource) not in TENANT_KINDS and (q.group, q.resource) not in RBAC_RESOURCES:
                return False  # a role grants only namespaced kinds, and a tenant holds only its own
            attrs = Attributes(
                user, q.verb, True, "", q.group, "", q.resource, q.subresource, namespace, q.name
            )
            return (await self.authorize(attrs)).allowed

        missing = await not_held(rules, holds)
        return escalation_message(user, missing) if missing else None

    # -- tenant users ----------------------------------------------------------------------------

    def _in_tenant(self, tenant: str) -> Scope:
        d = self.d

        def scope(obj: Obj) -> bool:
            return d.namespace_owner(str(metadata(obj).get("namespace", ""))) == tenant

        return scope

    async def _tenant_user(self, a: Attributes) -> Decision:
        u = a.user
        gr = (a.api_group, a.resource)
        if gr == ("", "namespaces"):
            return await self._namespaces(a)
        if gr == (GROUP, "tenants"):
            if a.subresource or a.verb not in READ:
                return deny("tenants are managed by operators")
            if a.name:
                return ALLOW if a.name == u.tenant else deny()
            return Decision(True, scope=lambda o: metadata(o).get("name") == u.tenant)
        if gr == (GROUP, "users"):
            return await self._users(a)
        if gr == (GROUP, "networks"):
            return await self._networks(a)
        if gr == ("", "persistentvolumes"):
            return await self._tenant_volumes(a)
        if gr in READ_ONLY_KINDS and a.verb not in READ:
            return deny("a daemon set runs a pod on every node, and nodes are the operators'")
        if gr == (RBAC_GROUP, "clusterroles"):
            # to see what `view`, `edit`, `admin` (or an operator's) hold before binding them
            return ALLOW if a.verb in READ and not a.subresource else deny("clusterroles are operators'")
        if (
            gr not in TENANT_KINDS | READ_ONLY_KINDS
            and gr not in RBAC_RESOURCES
            and not namespaced_custom(*gr)
        ):
            return deny()
        if gr in ADMIN_WRITTEN and a.verb not in READ and u.role != "admin":
            return deny("only a tenant admin changes limit ranges and resource quotas")
        if not ceiling_allows(u.role, a):
            return deny(f"role {u.role!r} does not allow it")
        where = self._bound(a)
        if a.namespace:
            if await self.d.fetch_namespace_owner(a.namespace) != u.tenant:
                return deny("the namespace belongs to no tenant of the caller")
            if where is not None and not where(a.namespace):
                return deny(f'RBAC: no RoleBinding in namespace "{a.namespace}" allows it')
            return ALLOW
        if a.verb in ("list", "watch"):
            if where is not None:
                return self._bound_list(a, where)
            return Decision(True, scope=self._in_tenant(u.tenant))
        return deny()

    async def _namespaces(self, a: Attributes) -> Decision:
        u = a.user
        if a.subresource in ("status", "finalize") and a.verb not in READ:
            return deny("namespace status belongs to the namespace controller")
        if a.verb in ("list", "watch") and not a.name:
            # the object's own label, not the directory: a watcher must see its new namespace's
            # ADDED event even before the directory's copy has caught up
            return Decision(True, scope=lambda o: owner(o) == u.tenant)
        if a.verb == "create":
            return ALLOW if u.role == "admin" else deny("only a tenant admin creates namespaces")
        if await self.d.fetch_namespace_owner(a.name) != u.tenant:
            return deny()
        if a.verb in READ:
            return ALLOW
        return ALLOW if u.role == "admin" else deny("only a tenant admin changes namespaces")

    async def _volume(self, name: str) -> Obj | None:
        kv = await self.d.store.get(object_key("", "persistentvolumes", None, name))
        return json.loads(kv.value) if kv is not None else None

    async def _tenant_volumes(self, a: Attributes) -> Decision:
        u = a.user
        if a.verb not in READ:
            return deny("persistentvolumes are made by the volume controller and operators")

        def own(o: Obj) -> bool:
            return (metadata(o).get("labels") or {}).get(TENANT_LABEL) == u.tenant

        if a.verb in ("list", "watch"):
            return Decision(True, scope=own)  # with or without a name (a watch of one)
        pv = await self._volume(a.name) if a.name else None
        # one refusal for absent and foreign: a 404 would tell that a name is free
        return (
            ALLOW
            if pv is not None and own(pv)
            else deny("the persistentvolume belongs to no tenant of the caller")
        )

    async def _users(self, a: Attributes) -> Decision:
        u = a.user
        if u.role != "admin":
            # anyone may read their own user object
            own = a.verb == "get" and a.name == u.name
            return ALLOW if own else deny("only a tenant admin manages users")
        if a.subresource:
            return deny()
        if a.verb == "create":
            # named or not, and whoever holds the name: admission checks the new user's tenant is
            # the caller's, and a taken name is the store's 409 (docs/tenants.md, "Names")
            return ALLOW
        if not a.name:
            if a.verb in ("list", "watch"):
                return Decision(True, scope=lambda o: user_spec(o).get("tenant") == u.tenant)
            return deny()
        user = await self.d.fetch_user(a.name)
        # one refusal for absent and foreign names
        return ALLOW if user is not None and user_spec(user).get("tenant") == u.tenant else deny()

    async def _networks(self, a: Attributes) -> Decision:
        """Every role reads its tenant's networks; admins create, change and delete them
        (admission checks a new network's spec.tenant). Foreign and absent names get one refusal,
        so names cannot be probed."""
        u = a.user

        def own(o: Obj) -> bool:
            return ((o.get("spec") or {}).get("tenant") or None) == u.tenant

        if a.subresource and a.verb not in READ:
            return deny("network status belongs to the nodes")
        if a.verb in ("list", "watch"):
            return Decision(True, scope=own)
        if a.verb == "create" and not a.subresource:
            return ALLOW if u.role == "admin" else deny("only a tenant admin creates networks")
        if not a.name:
            return deny()
        kv = await self.d.store.get(object_key(GROUP, "networks", None, a.name))
        if kv is None or not own(json.loads(kv.value)):
            return deny("the network belongs to no tenant of the caller")
        if a.verb in READ:
            return ALLOW
        return ALLOW if u.role == "admin" else deny("only a tenant admin changes networks")

    # -- service accounts ------------------------------------------------------------------------

    async def _service_account(self, a: Attributes) -> Decision:
        """Unbound: its `hypernetes.io/role` in its own namespace (none: nothing). Bound by
        RoleBindings of its tenant: what they allow, within its role (`member` without one)."""
        u = a.user
        own_ns = u.name.split(":")[2]
        if not ceiling_allows(u.role or "member", a):
            return deny()
        where = self._bound(a)
        if where is None:
            if not u.role:
                return deny("the service account has no hypernetes.io/role and no RoleBinding")
            if a.namespace:
                return ALLOW if a.namespace == own_ns else deny("a service account acts in its own namespace")
            if a.verb in ("list", "watch"):
                return Decision(True, scope=lambda o: metadata(o).get("namespace") == own_ns)
            return deny()
        if a.namespace:
            if await self.d.fetch_namespace_owner(a.namespace) != u.tenant:
                return deny("the namespace belongs to no tenant of the caller")
            if not where(a.namespace):
                return deny(f'RBAC: no RoleBinding in namespace "{a.namespace}" allows it')
            return ALLOW
        if a.verb in ("list", "watch"):
            return self._bound_list(a, where)
        return deny()

    # -- node agents (NodeRestriction) -----------------------------------------------------------

    async def _node(self, a: Attributes, node: str) -> Decision:
        gr, v = (a.api_group, a.resource), a.verb
        if gr == ("", "nodes"):
            if v in READ:
                return ALLOW
            if v in ("create", "update", "patch") and a.name == node:
                return ALLOW
            if v == "create" and not a.name and not a.subresource:
                return ALLOW  # the name is in the body: admission checks it is the node's own
            return deny("a node may change only its own Node object")
        if gr == ("coordination.k8s.io", "leases"):
            own = a.name == node or (v == "create" and not a.name)  # admission checks a created name
            return ALLOW if a.namespace == "kube-node-lease" and own else deny()
        if gr == ("", "events"):
            return ALLOW if v in ("create", "update", "patch") else deny()
        if gr == ("", "namespaces") and v in READ:
            return ALLOW
        if gr == ("", "pods"):
            return await self._node_pods(a, node)
        if gr == ("", "persistentvolumes"):
            return await self._node_volumes(a, node)
        claim_status = gr == ("", "persistentvolumeclaims") and a.subresource == "status"
        if claim_status and v in ("get", "update", "patch"):
            # the node writes a claim's new capacity once it has grown the disk
            return (
                ALLOW
                if await self._node_uses(node, a.namespace, a.resource, a.name)
                else deny(f"no pod bound to node {node} uses this persistentvolumeclaim")
            )
        if (
            gr in (("", "services"), ("", "endpoints"), (GROUP, "networks"), (GROUP, "ipallocations"))
            or gr in NODE_NETWORKING
        ) and v in READ:
            return ALLOW  # a node builds every network its pods use and serves their services
        ingress_status = gr == ("networking.k8s.io", "ingresses") and a.subresource == "status"
        if ingress_status and v in ("get", "update", "patch"):
            return ALLOW  # status.loadBalancer: the nodes serving it
        if gr == (GROUP, "networks") and a.subresource == "status" and v in ("update", "patch"):
            return ALLOW  # status.hosts: what each host built
        stage = gr == ("", "secrets") and v == "get" and not a.subresource and bool(a.name)
        if stage and await self._node_stage_secret(node, a.namespace, a.name):
            return ALLOW  # an RBD volume's credentials, for the QEMU of a pod it runs
        token = a.subresource == "token" and v == "create"
        if gr in NODE_READABLE and ((v == "get" and not a.subresource) or token):
            return (
                ALLOW
                if await self._node_uses(node, a.namespace, a.resource, a.name)
                else deny(f"no pod bound to node {node} uses this {a.resource[:-1]}")
            )
        return deny()

    async def _node_pods(self, a: Attributes, node: str) -> Decision:
        def on_node(o: Obj) -> bool:
            return (o.get("spec") or {}).get("nodeName") == node

        if a.verb in ("list", "watch") and not a.name:
            return Decision(True, scope=on_node)
        if not a.name or a.subresource not in ("", "status", "log", "exec", "attach", "portforward"):
            return deny()
        if a.verb == "create" and not a.subresource:
            return deny("a node may not create pods")
        if a.verb in ("update", "patch") and not a.subresource:
            return deny("a node may change only the status of its pods")  # as upstream's NodeRestriction
        kv = await self.d.store.get(object_key("", "pods", a.namespace, a.name))
        if kv is None:
            return deny()
        return ALLOW if on_node(json.loads(kv.value)) else deny(f"the pod is not bound to node {node}")

    async def _node_volumes(self, a: Attributes, node: str) -> Decision:
        """Lists and watches: the PVs on the node. A get: those and the PVs bound to claims its pods
        use. Updates: only PVs on the node (it removes its backing-file finalizer; admission checks
        that it changes nothing else)."""

        def on_node(o: Obj) -> bool:
            return pv_node(o) == node

        if a.verb in ("list", "watch"):
            return Decision(True, scope=on_node)
        if a.subresource or a.verb not in ("get", "update", "patch") or not a.name:
            return deny()
        pv = await self._volume(a.name)
        if pv is None:
            return deny()
        if on_node(pv):
            return ALLOW
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        if (
            a.verb == "get"
            and ref.get("name")
            and await self._node_uses(
                node, str(ref.get("namespace") or ""), "persistentvolumeclaims", str(ref["name"])
            )
        ):
            return ALLOW
        return deny(f"the persistentvolume is not on node {node}")

    async def _node_stage_secret(self, node: str, namespace: str, name: str) -> bool:
        """Is this Secret the nodeStageSecretRef of a PV bound to a claim a pod on `node` uses
        (upstream's node graph has the same PV -> Secret edge)."""
        res = await self.d.store.list(key_prefix("", "persistentvolumes", None))
        for kv in res.items:
            spec = json.loads(kv.value).get("spec") or {}
            ref = (spec.get("csi") or {}).get("nodeStageSecretRef") or {}
            claim = spec.get("claimRef") or {}
            if (
                ref.get("namespace") == namespace
                and ref.get("name") == name
                and claim.get("name")
                and await self._node_uses(
                    node, str(claim.get("namespace") or ""), "persistentvolumeclaims", str(claim["name"])
                )
            ):
                return True
        return False

    async def _node_uses(self, node: str, namespace: str, resource: str, name: str) -> bool:
        """Does a pod bound to `node` in `namespace` refer to this object (upstream's node graph)."""
        res = await self.d.store.list(key_prefix("", "pods", namespace))
        for kv in res.items:
            pod = json.loads(kv.value)
            spec = pod.get("spec") or {}
            if spec.get("nodeName") == node and name in pod_references(spec).get(resource, set()):
                return True
        return False


def pod_references(spec: Obj) -> dict[str, set[str]]:
    """The configmaps, secrets, service accounts and claims a pod spec names."""
    refs: dict[str, set[str]] = {
        "configmaps": set(),
        "secrets": set(),
        "serviceaccounts": set(),
        "persistentvolumeclaims": set(),
    }
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    refs["serviceaccounts"].add(str(sa))
    for s in spec.get("imagePullSecrets") or []:
        if isinstance(s, dict):
            refs["secrets"].add(str(s.get("name")))
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if not isinstance(c, dict):
            continue
        for e in c.get("envFrom") or []:
            for key, res in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if isinstance(e, dict) and isinstance(e.get(key), dict):
                    refs[res].add(str(e[key].get("name")))
        for e in c.get("env") or []:
            vf = (e or {}).get("valueFrom") if isinstance(e, dict) else None
            if isinstance(vf, dict):
                for key, res in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
                    if isinstance(vf.get(key), dict):
                        refs[res].add(str(vf[key].get("name")))
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        if isinstance(v.get("configMap"), dict):
            refs["configmaps"].add(str(v["configMap"].get("name")))
        if isinstance(v.get("secret"), dict):
            refs["secrets"].add(str(v["secret"].get("secretName")))
        if isinstance(v.get("persistentVolumeClaim"), dict):
            refs["persistentvolumeclaims"].add(str(v["persistentVolumeClaim"].get("claimName")))
        projected = v["projected"] if isinstance(v.get("projected"), dict) else {}
        for p in projected.get("sources") or []:
            if isinstance(p, dict):
                for key, res in (("configMap", "configmaps"), ("secret", "secrets")):
                    if isinstance(p.get(key), dict):
                        refs[res].add(str(p[key].get("name")))
    return refs
