"""The registry: one entry (`Kind`) per served kind, one module per kind, grouped by API group as
upstream's pkg/registry/<group>/<kind>/ (core/pod.py, apps/deployment.py, ...). Discovery,
OpenAPI, Table output, defaults, validation and CRUD read these entries and nothing else.

Adding a kind: write its module (see docs/api-schema.md, "Adding a kind") and list its KIND in its
group's __init__; tests/test_api_registry.py checks the entry is complete and that discovery,
OpenAPI and Table agree with it.
"""

from __future__ import annotations

from hypernetes.api.registry import (
    apiextensions,
    apiregistration,
    apps,
    authentication,
    authorization,
    autoscaling,
    batch,
    coordination,
    core,
    hypernetesio,
    metrics,
    networking,
    node,
    policy,
    rbac,
    storage,
)
from hypernetes.api.registry.apiextensions.served import SERVED
from hypernetes.api.registry.kind import CRUD, Group, Kind, Printer, no_defaults, schema_only
from hypernetes.api.registry.subresources import SUBRESOURCES, Subresource

# serving order: discovery lists groups and kinds in this order
KINDS: tuple[Kind, ...] = (
    *core.KINDS,
    *storage.KINDS,
    *node.KINDS,
    *coordination.KINDS,
    *apps.KINDS,
    *batch.KINDS,
    *networking.KINDS,
    *policy.KINDS,
    *autoscaling.KINDS,
    *hypernetesio.KINDS,
    *authentication.KINDS,
    *authorization.KINDS,
    *apiextensions.KINDS,
    *rbac.KINDS,
    *apiregistration.KINDS,
    *metrics.KINDS,
)
REVIEW_KINDS = frozenset(k for k in KINDS if k.creates_only)
# kind -> where it holds a pod spec, for tenant admission (auth/ cannot import the registry)
POD_SPECS = {k.kind: k.pod_spec for k in KINDS if k.pod_spec}

_BY_PLURAL = {(k.group, k.version, k.plural): k for k in KINDS}
_BY_NAME = {(k.api_version, k.kind): k for k in KINDS}
_BY_GROUP_KIND = {(k.group, k.kind): k for k in reversed(KINDS)}


# Each lookup falls back to the custom kinds (CustomResourceDefinitions) of the API server serving
# the current request (apiextensions/served.py); a CRD cannot claim a built-in group.


def kind_for(group: str, version: str, plural: str) -> Kind | None:
    k = _BY_PLURAL.get((group, version, plural))
    custom = SERVED.get() if k is None else None
    return custom.kind_for(group, version, plural) if custom is not None else k


def kind_by_name(api_version: str, kind: str) -> Kind | None:
    k = _BY_NAME.get((api_version, kind))
    custom = SERVED.get() if k is None else None
    return custom.kind_by_name(api_version, kind) if custom is not None else k


def kind_in_group(group: str, kind: str) -> Kind | None:
    """The served kind of that name in `group`, whatever its version (the first served)."""
    k = _BY_GROUP_KIND.get((group, kind))
    custom = SERVED.get() if k is None else None
    return custom.kind_in_group(group, kind) if custom is not None else k


def builtin_groups() -> frozenset[str]:
    """The API groups of the built-in kinds (no CustomResourceDefinition may claim one)."""
    return frozenset(k.group for k in KINDS)


def group_versions() -> list[str]:
    """ "v1", "apps/v1", ... in serving order."""
    return list(dict.fromkeys(k.api_version for k in KINDS))


__all__ = [
    "CRUD",
    "KINDS",
    "POD_SPECS",
    "REVIEW_KINDS",
    "SUBRESOURCES",
    "Group",
    "Kind",
    "Printer",
    "Subresource",
    "builtin_groups",
    "group_versions",
    "kind_by_name",
    "kind_for",
    "kind_in_group",
    "no_defaults",
    "schema_only",
]
