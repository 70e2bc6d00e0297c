"""Network: a tenant's L2 network. Its defaults and rules are the network model's
(controllers/networks.py), applied by tenant admission."""

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
    int_or_zero,
    name_of,
)

JSON = dict[str, Any]


COLUMNS = (
    NAME,
    Column("Tenant", "string", "", "The tenant that owns the network; empty: operators'."),
    Column("ID", "string", "", "The network's cluster-wide id (spec.id); <none> until it is given."),
    Column("CIDR", "string", "", "The pods' subnet."),
    Column("Gateway", "string", "", "The router's address on the network."),
    Column("Egress", "boolean", "", "Whether pods reach outside the cluster (NAT)."),
    Column("Service CIDR", "string", "", "The range of the network's ClusterIPs.", 1),
    Column("IPs", "integer", "", "Pod addresses allocated.", 1),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        name_of(obj),
        spec.get("tenant") or "",
        str(nid) if isinstance(nid := spec.get("id"), int) and not isinstance(nid, bool) else "<none>",
        spec.get("cidr") or "",
        spec.get("gateway") or "",
        spec.get("egressNAT") is not False,  # absent means the default, on
        spec.get("serviceCIDR") or "",
        int_or_zero(status.get("allocatedIPs")),
        age_of(obj, ctx),
    ]


KIND = kind(
    HYPERNETES,
    "Network",
    "networks",
    namespaced=False,
    short=("net",),
    subs=("status",),
    defaults=no_defaults,
    validate=schema_only,
    printer=Printer(COLUMNS, _row),
)
