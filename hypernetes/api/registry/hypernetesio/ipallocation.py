"""IPAllocation: one address, node port or network id taken; written by the network
controller."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import HYPERNETES
from hypernetes.api.registry.kind import Printer, kind, no_defaults, schema_only
from hypernetes.api.schema.access import as_dict as _d
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
    Column("Network", "string", "", "The network the address belongs to."),
    Column("IP", "string", "", "The address, the node port, or the network id."),
    Column("Owner", "string", "", "The object holding it: kind/namespace/name."),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    o = _d(spec.get("owner"))
    where = "/".join(str(x) for x in (o.get("kind"), o.get("namespace"), o.get("name")) if x)
    taken = spec.get("ip") or str(spec.get("nodePort") or spec.get("networkID") or "")
    return [name_of(obj), spec.get("network") or "", taken, where, age_of(obj, ctx)]


KIND = kind(
    HYPERNETES,
    "IPAllocation",
    "ipallocations",
    namespaced=False,
    short=("ipa",),
    subs=(),
    defaults=no_defaults,
    validate=schema_only,
    printer=Printer(COLUMNS, _row),
)
