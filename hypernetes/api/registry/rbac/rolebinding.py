"""RoleBinding: grants a Role of its namespace, or a ClusterRole, to users, groups and service
accounts in its namespace. For a tenant's subjects it narrows the tenant role (auth/rbac.py)."""

from __future__ import annotations

from hypernetes.api.registry.groups import RBAC
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.registry.rbac import policy
from hypernetes.objects import Obj as JSON


def _validate(obj: JSON, errs: Errs) -> None:
    policy.binding(obj, errs, namespaced=True)


KIND = kind(
    RBAC,
    "RoleBinding",
    "rolebindings",
    defaults=policy.binding_defaults,
    validate=_validate,
    validate_update=policy.role_ref_immutable,
    name_format=policy.path_segment_name,
    printer=Printer(policy.BINDING_COLUMNS, policy.binding_row),
)
