"""What the RBAC kinds share, as upstream's pkg/apis/rbac/validation and its printers: names,
policy rules, role references, subjects and their defaults, and the printer columns."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.kind import Errs
from hypernetes.api.schema import errors as E
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.printers import NAME, Column, Context, age_of, name_of
from hypernetes.objects import Obj as JSON
from hypernetes.objects import formats

GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def path_segment_name(name: str) -> list[str]:
    """Upstream's ValidateRBACName (path.IsValidPathSegmentName): `system:controller:x` is fine."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def rules(obj: JSON, errs: Errs, *, namespaced: bool) -> None:
    """ValidatePolicyRule for each of `rules`."""
    for i, r in enumerate(_l(obj.get("rules"))):
        r = _d(r)
        p = f"rules[{i}]"
        if not _l(r.get("verbs")):
            errs.append(E.required(f"{p}.verbs", "verbs must contain at least one value"))
        urls = _l(r.get("nonResourceURLs"))
        if urls:
            if namespaced:
                errs.append(
                    E.invalid(
                        f"{p}.nonResourceURLs", urls, "namespaced rules cannot apply to non-resource URLs"
                    )
                )
            if _l(r.get("apiGroups")) or _l(r.get("resources")) or _l(r.get("resourceNames")):
                errs.append(
                    E.invalid(
                        f"{p}.nonResourceURLs",
                        urls,
                        "rules cannot apply to both regular resources and non-resource URLs",
                    )
                )
            continue
        if not _l(r.get("apiGroups")):
            errs.append(E.required(f"{p}.apiGroups", "resource rules must supply at least one api group"))
        if not _l(r.get("resources")):
            errs.append(E.required(f"{p}.resources", "resource rules must supply at least one resource"))


def binding(obj: JSON, errs: Errs, *, namespaced: bool) -> None:
    """ValidateRoleBinding / ValidateClusterRoleBinding: the roleRef and the subjects."""
    ref = _d(obj.get("roleRef"))
    if ref.get("apiGroup") != GROUP:
        errs.append(E.not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [GROUP]))
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if ref.get("kind") not in kinds:
        errs.append(E.not_supported("roleRef.kind", ref.get("kind", ""), kinds))
    name = ref.get("name")
    if not name:
        errs.append(E.required("roleRef.name"))
    elif isinstance(name, str):
        errs.extend(E.invalid("roleRef.name", name, m) for m in path_segment_name(name))
    for i, s in enumerate(_l(obj.get("subjects"))):
        s = _d(s)
        p = f"subjects[{i}]"
        sname, group, kind = s.get("name"), s.get("apiGroup", ""), s.get("kind")
        if not sname:
            errs.append(E.required(f"{p}.name"))
        if kind == "ServiceAccount":
            if isinstance(sname, str) and sname:
                errs.extend(E.invalid(f"{p}.name", sname, m) for m in formats.dns1123_subdomain(sname))
            if group:
                errs.append(E.not_supported(f"{p}.apiGroup", group, [""]))
            if not namespaced and not s.get("namespace"):
                errs.append(E.required(f"{p}.namespace"))
        elif kind in ("User", "Group"):
            if group != GROUP:
                errs.append(E.not_supported(f"{p}.apiGroup", group, [GROUP]))
        else:
            errs.append(E.not_supported(f"{p}.kind", kind or "", SUBJECT_KINDS))


def binding_defaults(obj: JSON) -> None:
    """SetDefaults_RoleRef and SetDefaults_Subject."""
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = GROUP
    for s in _l(obj.get("subjects")):
        if isinstance(s, dict) and not s.get("apiGroup") and s.get("kind") in ("User", "Group"):
            s["apiGroup"] = GROUP


def role_ref_immutable(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if _d(new.get("roleRef")) != _d(old.get("roleRef")):
        errs.append(E.invalid("roleRef", new.get("roleRef"), "cannot change roleRef"))


# -- printers (upstream's printRole, printRoleBinding) --------------------------------------------

ROLE_COLUMNS = (
    NAME,
    Column(
        "Created At",
        "date",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
)


def role_row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), _d(obj.get("metadata")).get("creationTimestamp") or ""]


BINDING_COLUMNS = (
    NAME,
    Column(
        "Role",
        "string",
        "",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global "
        "namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This "
        "field is immutable.",
    ),
    Column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
    Column("Users", "string", "", "Users in the roleBinding", 1),
    Column("Groups", "string", "", "Groups in the roleBinding", 1),
    Column("ServiceAccounts", "string", "", "ServiceAccounts in the roleBinding", 1),
)
# printers.go words the subject columns of a ClusterRoleBinding for its own kind
CLUSTER_BINDING_COLUMNS = (
    *BINDING_COLUMNS[:3],
    Column("Users", "string", "", "Users in the clusterRoleBinding", 1),
    Column("Groups", "string", "", "Groups in the clusterRoleBinding", 1),
    Column("ServiceAccounts", "string", "", "ServiceAccounts in the clusterRoleBinding", 1),
)


def binding_row(obj: JSON, ctx: Context) -> list[Any]:
    ref = _d(obj.get("roleRef"))
    by_kind: dict[str, list[str]] = {"User": [], "Group": [], "ServiceAccount": []}
    for s in _l(obj.get("subjects")):
        s = _d(s)
        if s.get("kind") in by_kind:
            name = str(s.get("name") or "")
            if s.get("kind") == "ServiceAccount":
                name = f"{s.get('namespace') or ''}/{name}"
            by_kind[str(s["kind"])].append(name)
    return [
        name_of(obj),
        f"{ref.get('kind') or ''}/{ref.get('name') or ''}",
        age_of(obj, ctx),
        ", ".join(by_kind["User"]),
        ", ".join(by_kind["Group"]),
        ", ".join(by_kind["ServiceAccount"]),
    ]
