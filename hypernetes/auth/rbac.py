"""RBAC inside a tenant: rbac.authorization.k8s.io Roles and RoleBindings narrow what a tenant's
user or service account may do; they never widen it and never reach across tenants.

The model (docs/tenants.md, "RBAC inside a tenant"):

- The **tenant role is the ceiling**: a user's `spec.role`; a service account's
  `hypernetes.io/role` annotation, or `member` for one without (an account never administers a
  tenant). `TenantAuthorizer` checks it, with the tenant boundary, before anything here.
- A subject is **bound** when a RoleBinding in a namespace of *its own tenant* names it (as a
  User, a ServiceAccount, or a Group it is in). Bindings anywhere else (another tenant's
  namespaces, operators' namespaces) are never read for it, so they can neither grant it nor
  restrict it.
- A bound subject may do, on namespaced kinds, what the rules bound to it *in that namespace*
  allow, within its ceiling; nothing in a namespace where nothing is bound to it.
- An unbound subject does what its tenant role says, as before: users in every namespace of the
  tenant, service accounts (with the annotation) in their own namespace.
- Cluster-scoped kinds (namespaces, the Tenant, Users, Networks, PVs) follow the tenant role
  alone, and ClusterRoleBindings grant tenants' subjects nothing.
- **No escalation**, as upstream: a tenant caller creates or changes a Role only with rules it
  holds itself in that namespace, and a RoleBinding only to a role all of whose rules it holds
  there ("holds": the authorizer allows it, so a ceiling and earlier bindings both count).

Matching follows upstream's `rbac.go` (VerbMatches, APIGroupMatches, ResourceMatches with
`*/subresource`, ResourceNameMatches). The built-in ClusterRoles `view`, `edit` and `admin`
(`CLUSTER_ROLES`) are the tenant roles' rights on namespaced kinds written out as rules
(`role_rules`, from the authorizer's ceiling), so binding one never exceeds the role it is named
after, and a tenant admin can always bind them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from hypernetes.auth.identity import SA_PREFIX, UserInfo
from hypernetes.auth.mirror import PrefixMirror
from hypernetes.objects import Obj
from hypernetes.store.interface import Store
from hypernetes.store.keys import key_prefix

GROUP = "rbac.authorization.k8s.io"
ALL = "*"
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")
# the namespaced RBAC kinds a tenant admin writes
RBAC_RESOURCES = frozenset(((GROUP, "roles"), (GROUP, "rolebindings")))
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"  # a built-in role a server keeps current


def rule(groups: Iterable[str], resources: Iterable[str], verbs: Iterable[str]) -> Obj:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


# The built-in ClusterRoles every server makes on start (upstream's bootstrap names), and the
# tenant role each one spells out as rules; `cluster-admin` is everything (no tenant may bind it).
CLUSTER_ROLES: dict[str, str] = {"cluster-admin": "", "admin": "admin", "edit": "member", "view": "viewer"}
CLUSTER_ADMIN_RULES = (rule([ALL], [ALL], [ALL]), {"verbs": [ALL], "nonResourceURLs": [ALL]})
# the verbs a rule may grant on a subresource: reads of the ones that are read, `create` of the
# actions and streams (exec, attach, portforward, eviction, token, binding), writes of scale
SUBRESOURCE_VERBS = {"status": READ, "log": READ, "scale": (*READ, "update", "patch")}
ACTION_VERBS = ("create",)


def role_rules(
    allows: Callable[[Request], bool], kinds: Iterable[tuple[str, str, Iterable[str], Iterable[str]]]
) -> list[Obj]:
    """Rules that grant exactly the requests `allows` accepts among `kinds` ((group, resource,
    its subresources, the verbs it serves)), in upstream's shape: one rule per group and verb set."""
    verbs_of: dict[tuple[str, str], tuple[str, ...]] = {}
    for group, resource, subs, served in kinds:
        for res, sub, verbs in (
            (resource, "", tuple(v for v in (*READ, *WRITE) if v in served)),
            *((f"{resource}/{s}", s, SUBRESOURCE_VERBS.get(s, ACTION_VERBS)) for s in subs),
        ):
            held = tuple(v for v in verbs if allows(Request(v, group, resource, sub)))
            if held:
                verbs_of[(group, res)] = held
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, res), verbs in sorted(verbs_of.items()):
        grouped.setdefault((group, verbs), []).append(res)
    return [rule([g], resources, verbs) for (g, verbs), resources in grouped.items()]


def cluster_role_object(name: str, rules: Iterable[Obj]) -> Obj:
    """A built-in ClusterRole as it is stored (upstream's bootstrap label and annotation)."""
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {AUTOUPDATE: "true"},
        },
        "rules": [dict(r) for r in rules],
    }


# -- matching (upstream's rbac.go) ---------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One resource request as rules see it."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    name: str = ""


def _strs(v: object) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def rule_allows(r: Obj, q: Request) -> bool:
    if _strs(r.get("nonResourceURLs")):
        return False  # non-resource rules grant nothing on resources (and nothing in a namespace)
    verbs, groups, resources = _strs(r.get("verbs")), _strs(r.get("apiGroups")), _strs(r.get("resources"))
    if ALL not in verbs and q.verb not in verbs:
        return False
    if ALL not in groups and q.group not in groups:
        return False
    combined = f"{q.resource}/{q.subresource}" if q.subresource else q.resource
    if not any(
        res in (ALL, combined) or (q.subresource and res == f"*/{q.subresource}") for res in resources
    ):
        return False
    names = _strs(r.get("resourceNames"))
    return not names or q.name in names


def rules_allow(rules: Iterable[Obj], q: Request) -> bool:
    return any(rule_allows(r, q) for r in rules)


def requests_of(r: Obj) -> Iterator[Request] | None:
    """Every single request a rule grants, or None when it has a wildcard (which only a holder
    of the same wildcard may grant) or is a non-resource rule."""
    verbs, groups, resources = _strs(r.get("verbs")), _strs(r.get("apiGroups")), _strs(r.get("resources"))
    if _strs(r.get("nonResourceURLs")) or ALL in verbs or ALL in groups:
        return None
    if any(res == ALL or res.startswith("*/") for res in resources):
        return None
    names = _strs(r.get("resourceNames")) or [""]

    def gen() -> Iterator[Request]:
        for g in groups:
            for res in resources:
                resource, _, sub = res.partition("/")
                for v in verbs:
                    for n in names:
                        yield Request(v, g, resource, sub, n)

    return gen()


def show_rule(r: Obj) -> str:
    """rbacv1helpers.CompactString: a rule as upstream's escalation error prints it, each
    non-empty list in this order."""

    def q(xs: list[str]) -> str:
        return "[" + " ".join(json.dumps(x) for x in xs) + "]"

    parts = []
    for key, label in (
        ("apiGroups", "APIGroups"),
        ("resources", "Resources"),
        ("nonResourceURLs", "NonResourceURLs"),
        ("resourceNames", "ResourceNames"),
        ("verbs", "Verbs"),
    ):
        if _strs(r.get(key)):
            parts.append(f"{label}:{q(_strs(r.get(key)))}")
    return "{" + ", ".join(parts) + "}"


def breakdown(r: Obj) -> list[Obj]:
    """BreakdownRule's resource part: rules of one group, resource, verb and (if any) name. The
    non-resource URLs are left out: bound in a namespace they grant nothing (not_held)."""
    names = _strs(r.get("resourceNames"))
    return [
        {"apiGroups": [g], "resources": [res], "verbs": [v], **({"resourceNames": [n]} if n else {})}
        for g in _strs(r.get("apiGroups"))
        for res in _strs(r.get("resources"))
        for v in _strs(r.get("verbs"))
        for n in (names or [""])
    ]


def compact(rules: list[Obj]) -> list[Obj]:
    """CompactRules: rules of one group, one resource and at most one name merge their verbs."""
    merged: dict[tuple[str, str, str | None], Obj] = {}
    out: list[Obj] = []
    for r in rules:
        groups, resources, names = (
            _strs(r.get("apiGroups")),
            _strs(r.get("resources")),
            _strs(r.get("resourceNames")),
        )
        simple = len(groups) == 1 and len(resources) == 1 and len(names) <= 1
        if not simple or _strs(r.get("nonResourceURLs")):
            out.append(r)
            continue
        key = (groups[0], resources[0], names[0] if names else None)
        if key in merged:
            merged[key]["verbs"] = [*merged[key]["verbs"], *_strs(r.get("verbs"))]
        else:
            merged[key] = {**r, "verbs": _strs(r.get("verbs"))}
    return out + list(merged.values())


# -- the bindings, mirrored ----------------------------------------------------------------------


def subject_keys(user: UserInfo) -> list[str]:
    """How bindings may name this caller: `User:<name>` (a service account's full name too) and
    `Group:<group>` for each of its groups."""
    return [f"User:{user.name}", *(f"Group:{g}" for g in user.groups)]


def _binding_subjects(namespace: str, obj: Obj) -> set[str]:
    out = set()
    for s in obj.get("subjects") or []:
        if not isinstance(s, dict) or not s.get("name"):
            continue
        kind, name = s.get("kind"), str(s["name"])
        if kind == "User":
            out.add(f"User:{name}")
        elif kind == "Group":
            out.add(f"Group:{name}")
        elif kind == "ServiceAccount":
            # upstream: a subject without a namespace is the binding's own namespace's account
            out.add(f"User:{SA_PREFIX}{s.get('namespace') or namespace}:{name}")
    return out


def _rules(role: Obj | None) -> list[Obj] | None:
    return None if role is None else [r for r in role.get("rules") or [] if isinstance(r, dict)]


class RoleBindings:
    """Roles, RoleBindings and ClusterRoles, mirrored from the store (started and stopped with the
    Directory), with the bindings indexed by the subjects they name."""

    def __init__(self, store: Store, namespaces: PrefixMirror) -> None:
        self.namespaces = namespaces  # the Directory's: a binding older than its namespace is void
        self.roles = PrefixMirror(store, key_prefix(GROUP, "roles", None))  # "ns/name"
        self.bindings = PrefixMirror(store, key_prefix(GROUP, "rolebindings", None))
        self.cluster_roles = PrefixMirror(store, key_prefix(GROUP, "clusterroles", None))
        self.mirrors = (self.roles, self.bindings, self.cluster_roles)
        self._named: dict[str, set[str]] = {}  # subject key -> "ns/name" of the bindings naming it
        self._subjects: dict[str, set[str]] = {}  # "ns/name" -> its subject keys
        self.bindings.on_change(self._changed)

    def _changed(self, key: str, obj: Obj | None) -> None:
        for s in self._subjects.pop(key, set()):
            self._named.get(s, set()).discard(key)
        if obj is not None:
            subjects = _binding_subjects(key.split("/", 1)[0], obj)
            self._subjects[key] = subjects
            for s in subjects:
                self._named.setdefault(s, set()).add(key)

    def naming(self, user: UserInfo) -> set[str]:
        """The "ns/name" of every RoleBinding that names `user`, in any namespace: of its
        namespace's current incarnation (a leftover of an earlier namespace of that name, which
        another tenant may have held, binds no one; as api/history.py hides leftovers)."""
        out: set[str] = set()
        for s in subject_keys(user):
            out |= self._named.get(s, set())
        return {key for key in out if self._current(key)}

    def _current(self, key: str) -> bool:
        ns = self.namespaces.get(key.split("/", 1)[0])
        binding = self.bindings.get(key)
        if ns is None or binding is None:
            return False
        born = str((ns.get("metadata") or {}).get("creationTimestamp") or "")
        return str((binding.get("metadata") or {}).get("creationTimestamp") or "") >= born

    def bound_namespaces(self, user: UserInfo, owner: Callable[[str], str | None]) -> set[str]:
        """The namespaces of `user`'s own tenant in which a RoleBinding names it."""
        namespaces = {key.split("/", 1)[0] for key in self.naming(user)}
        return {ns for ns in namespaces if user.tenant and owner(ns) == user.tenant}

    def _role(self, namespace: str, ref: Obj) -> tuple[PrefixMirror, str] | None:
        kind, name = ref.get("kind"), str(ref.get("name") or "")
        if kind == "Role":
            return self.roles, f"{namespace}/{name}"
        return (self.cluster_roles, name) if kind == "ClusterRole" else None

    def role_rules(self, namespace: str, ref: Obj) -> list[Obj] | None:
        """The rules a roleRef names, as seen from `namespace`; None if the role does not exist."""
        where = self._role(namespace, ref)
        return _rules(where[0].get(where[1])) if where is not None else None

    async def fetch_role_rules(self, namespace: str, ref: Obj) -> list[Obj] | None:
        """As role_rules, reading the store on a miss (a role created a moment ago)."""
        where = self._role(namespace, ref)
        return _rules(await where[0].fetch(where[1])) if where is not None else None

    def rules_in(self, user: UserInfo, namespace: str) -> list[Obj]:
        """Every rule the RoleBindings of `namespace` bind to `user`."""
        out: list[Obj] = []
        for key in sorted(self.naming(user)):
            ns = key.split("/", 1)[0]
            binding = self.bindings.get(key) if ns == namespace else None
            if binding is not None:
                out.extend(self.role_rules(namespace, binding.get("roleRef") or {}) or [])
        return out


# -- escalation (upstream's ConfirmNoEscalation) -------------------------------------------------

Holds = Callable[[Request], Awaitable[bool]]


async def not_held(rules: Iterable[Obj], holds: Holds) -> list[Obj]:
    """Upstream's Covers: the single-verb, single-resource pieces of the rules (of a Role being
    written, or of the role a RoleBinding names) that `holds` says the caller does not hold; a
    wildcard is never held by a tenant."""
    missing: list[Obj] = []
    for r in rules:
        for sub in breakdown(r):
            requests = requests_of(sub)
            if requests is None or not all([await holds(q) for q in requests]):
                missing.append(sub)
    return missing


class RoleNotFound(LookupError):
    """The role a RoleBinding names does not exist: upstream's rule resolver reads it from the
    storage, so the write fails as that get does (404 NotFound), not as an escalation (403)."""

    def __init__(self, resource: str, name: str) -> None:
        super().__init__(f'{resource}.{GROUP} "{name}" not found')
        self.resource, self.name = resource, name


def escalation_message(user: UserInfo, missing: list[Obj]) -> str:
    """ConfirmNoEscalation's message: the missing pieces compacted, each once, sorted."""
    groups = " ".join(json.dumps(g) for g in user.groups)
    held_not = sorted({show_rule(r) for r in compact(missing)})
    return (
        f"user {json.dumps(user.name)} (groups=[{groups}]) is attempting to grant RBAC permissions not "
        "currently held:\n" + "\n".join(held_not)
    )
