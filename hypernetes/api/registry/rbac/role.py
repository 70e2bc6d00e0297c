"""Role: namespaced rules; a tenant's admin writes them in the tenant's namespaces (holding every
rule it grants: hypernetes/auth/rbac.py)."""

from __future__ import annotations

from hypernetes.api.registry.groups import RBAC
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.registry.rbac import policy
from hypernetes.objects import Obj as JSON


def _validate(obj: JSON, errs: Errs) -> None:
    policy.rules(obj, errs, namespaced=True)


KIND = kind(
    RBAC,
    "Role",
    "roles",
    defaults=no_defaults,
    validate=_validate,
    name_format=policy.path_segment_name,
    printer=Printer(policy.ROLE_COLUMNS, policy.role_row),
)
