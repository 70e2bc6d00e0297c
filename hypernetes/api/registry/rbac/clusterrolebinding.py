"""ClusterRoleBinding: operators' only; it grants tenants' users and service accounts nothing
(their rights are decided inside their tenant: auth/rbac.py)."""

from __future__ import annotations

from hypernetes.api.registry.groups import RBAC
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.registry.rbac import policy
from hypernetes.objects import Obj as JSON


def _validate(obj: JSON, errs: Errs) -> None:
    policy.binding(obj, errs, namespaced=False)


KIND = kind(
    RBAC,
    "ClusterRoleBinding",
    "clusterrolebindings",
    namespaced=False,
    defaults=policy.binding_defaults,
    validate=_validate,
    validate_update=policy.role_ref_immutable,
    name_format=policy.path_segment_name,
    printer=Printer(policy.CLUSTER_BINDING_COLUMNS, policy.binding_row),
)
