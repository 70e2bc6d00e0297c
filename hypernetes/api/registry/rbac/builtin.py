"""The tenant roles written out as RBAC rules: what the built-in ClusterRoles `view`, `edit` and
`admin` hold, and what `kubectl auth can-i --list` starts from. They are derived from the
authorizer's ceiling (`role_probe`) over the kinds tenants work with and the subresources the
registry serves for them, so a kind added to the tenants' list is in the roles too."""

from __future__ import annotations

from functools import cache

from hypernetes.api.registry.kind import CRUD
from hypernetes.auth.authorizer import TENANT_KINDS, role_probe
from hypernetes.auth.rbac import CLUSTER_ADMIN_RULES, CLUSTER_ROLES, RBAC_RESOURCES, role_rules
from hypernetes.objects import Obj as JSON

STREAMS = ("attach", "portforward")  # pods' streams: served beside the registry's subresources


def tenant_kinds() -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """(group, resource, served subresources, served verbs) of every namespaced kind a tenant role
    covers (a kind not served yet: every verb, no subresources)."""
    from hypernetes.api import registry  # the registry imports this package

    served = {(k.group, k.plural): k for k in registry.KINDS}
    out = []
    for g, r in sorted(TENANT_KINDS | RBAC_RESOURCES):
        k = served.get((g, r))
        subs = k.subresources if k is not None else ()
        if (g, r) == ("", "pods"):
            subs = (*subs, *(s for s in STREAMS if s not in subs))
        out.append((g, r, subs, k.verbs if k is not None else CRUD))
    return out


@cache
def tenant_role_rules(role: str) -> tuple[JSON, ...]:
    """The rules of tenant role `role` ("viewer", "member", "admin") on namespaced kinds."""
    return tuple(role_rules(role_probe(role), tenant_kinds()))


def cluster_role_rules(name: str) -> tuple[JSON, ...]:
    """The rules of built-in ClusterRole `name` (auth/rbac.py CLUSTER_ROLES)."""
    role = CLUSTER_ROLES[name]
    return tenant_role_rules(role) if role else CLUSTER_ADMIN_RULES
