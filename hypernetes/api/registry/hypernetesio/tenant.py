"""Tenant: owns namespaces, users and their quota. Its rules need the directory, so they
are tenant admission's (auth/admission.py)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import HYPERNETES
from hypernetes.api.registry.hypernetesio.openapi import (
    AMOUNTS,
    PREFIX,
    RESOURCE_LIST,
)
from hypernetes.api.registry.hypernetesio.openapi import (
    list_definition as _list,
)
from hypernetes.api.registry.hypernetesio.openapi import (
    object_definition as _obj,
)
from hypernetes.api.registry.hypernetesio.openapi import (
    string as _s,
)
from hypernetes.api.registry.kind import Printer, kind, no_defaults, schema_only
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    name_of,
)
from hypernetes.objects import Obj as JSON

COLUMNS = (
    NAME,
    Column("Phase", "string", "", "Active or Terminating."),
    Column("Namespaces", "integer", "", "Namespaces the tenant owns."),
    Column("Pods", "string", "", "Pods counted against the quota: used/limit."),
    Column("Memory", "string", "", "VM memory counted against the quota: used/limit."),
    Column("Display Name", "string", "", "A human-readable name.", 1),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    deleting = _d(obj.get("metadata")).get("deletionTimestamp")
    phase = "Terminating" if deleting else status.get("phase") or "Active"
    return [
        name_of(obj),
        phase,
        len(_l(status.get("namespaces"))),
        _used_of(status, spec, "pods"),
        _used_of(status, spec, "memory"),
        spec.get("displayName") or "",
        age_of(obj, ctx),
    ]


def _used_of(status: JSON, spec: JSON, key: str) -> str:
    used = _d(status.get("used")).get(key, "0")
    limit = _d(spec.get("quota")).get(key)
    return f"{used}/{limit}" if limit is not None else str(used)


DEFINITIONS: dict[str, JSON] = {
    PREFIX + "Tenant": _obj(
        "Tenant",
        "A tenant: owns namespaces, users and their quota; its workloads are "
        "isolated from every other tenant's.",
        "TenantSpec",
        "TenantStatus",
    ),
    PREFIX + "TenantList": _list("Tenant"),
    PREFIX + "TenantSpec": {
        "type": "object",
        "description": "What a tenant is allowed.",
        "properties": {
            "displayName": _s("A human-readable name."),
            "quota": {
                **RESOURCE_LIST,
                "description": "Hard limits across all the tenant's namespaces. "
                + AMOUNTS
                + " A new tenant gets the server's default for every key not given; absent: unlimited.",
            },
            "allowedRuntimeClasses": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Runtime classes pods may name (hypervm, gvisor); absent: any.",
            },
            "allowedKernels": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Guest kernels (hypernetes.io/kernel) pods may pick; absent: any "
                "registered on a node; the node's default kernel (hypernetes) is always allowed.",
            },
            "allowedRegistries": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Registries (host[:port], as image references name them: docker.io "
                "for Docker Hub) pods' images may come from; absent: any the cluster allows.",
            },
        },
    },
    PREFIX + "TenantStatus": {
        "type": "object",
        "description": "Observed state of a tenant.",
        "properties": {
            "phase": _s("Active or Terminating."),
            "namespaces": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The namespaces it owns.",
            },
            "used": {**RESOURCE_LIST, "description": "Current usage of what the quota limits."},
        },
    },
}


KIND = kind(
    HYPERNETES,
    "Tenant",
    "tenants",
    namespaced=False,
    short=(),
    subs=("status",),
    defaults=no_defaults,
    validate=schema_only,
    printer=Printer(COLUMNS, _row),
    definitions=DEFINITIONS,
)
