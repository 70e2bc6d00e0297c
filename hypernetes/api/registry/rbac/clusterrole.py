"""ClusterRole: rules for the whole cluster, written by operators. Tenants may read them and bind
them in their namespaces (the built-in `view`, `edit`, `admin`: auth/rbac.py CLUSTER_ROLES), where
they grant at most the tenant role. Aggregation (aggregationRule) is not implemented: refused."""

from __future__ import annotations

from hypernetes.api.registry.groups import RBAC
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.registry.rbac import policy
from hypernetes.api.schema import errors as E
from hypernetes.objects import Obj as JSON


def _validate(obj: JSON, errs: Errs) -> None:
    policy.rules(obj, errs, namespaced=False)
    if obj.get("aggregationRule") is not None:
        errs.append(
            E.FieldError(
                E.NOT_SUPPORTED,
                "aggregationRule",
                f"Unsupported value: aggregated ClusterRoles are {E.UNSUPPORTED_BY_US}: list the rules",
            )
        )


KIND = kind(
    RBAC,
    "ClusterRole",
    "clusterroles",
    namespaced=False,
    defaults=no_defaults,
    validate=_validate,
    name_format=policy.path_segment_name,
    printer=Printer(policy.ROLE_COLUMNS, policy.role_row),
)
