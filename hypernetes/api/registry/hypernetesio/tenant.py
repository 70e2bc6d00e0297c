"""Tenant: owns namespaces, users and their quota. Its rules need the directory, so they
are tenant admission's (auth/admission.py)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import HYPERNETES
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

JSON = dict[str, Any]


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
)
