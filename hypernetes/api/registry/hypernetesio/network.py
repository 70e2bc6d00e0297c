"""Network: a tenant's L2 network. Its defaults and rules are the network model's
(controllers/networks.py), applied by tenant admission."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import HYPERNETES
from hypernetes.api.registry.hypernetesio.openapi import (
    META,
    PREFIX,
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
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    int_or_zero,
    name_of,
)
from hypernetes.objects import Obj as JSON

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


COND = META + "Condition"
DEFINITIONS: dict[str, JSON] = {
    PREFIX + "Network": _obj(
        "Network",
        "A tenant network: one L2 segment of a tenant with its own router on every host, so two "
        "tenants may use the same CIDR. Pods of a namespace get their addresses from the network "
        "the namespace names (annotation hypernetes.io/network), else from their tenant's default "
        "network.",
        "NetworkSpec",
        "NetworkStatus",
    ),
    PREFIX + "NetworkList": _list("Network"),
    PREFIX + "NetworkSpec": {
        "type": "object",
        "required": ["cidr"],
        "description": "The addresses of a network and how it reaches the outside.",
        "properties": {
            "tenant": _s("The tenant that owns the network; absent: an operators' network. Immutable."),
            "id": {
                "type": "integer",
                "format": "int32",
                "description": "The network's cluster-wide number, 1-8191: the same on every host "
                "(router namespace names and link addresses derive from it). Given by the network "
                "controller when absent; only operators may choose it. Immutable once set.",
            },
            "cidr": _s("The pods' IPv4 subnet, e.g. 10.0.0.0/16; prefix /16 to /28. Immutable."),
            "gateway": _s(
                "The router's address on the network (pods' default route and DNS server). "
                "Default: the first host address of cidr. Immutable."
            ),
            "dnsServers": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Upstream resolvers (IPv4 addresses, at most 3) for names outside "
                "cluster.local; absent: the host's.",
            },
            "egressNAT": {
                "type": "boolean",
                "description": "Whether pods reach outside the cluster, masqueraded behind the "
                "host. Default: true.",
            },
            "serviceCIDR": _s(
                "The range ClusterIPs of the network's Services come from. Default: "
                "10.96.0.0/16 (each network has its own, as each has its own router). "
                "Must not overlap cidr. Immutable."
            ),
        },
    },
    PREFIX + "NetworkStatus": {
        "type": "object",
        "description": "Observed state of a network.",
        "properties": {
            "phase": _s(
                "Active (addresses are given out), or Terminating while it is being deleted; "
                "what the hosts built is in hosts."
            ),
            "allocatedIPs": {
                "type": "integer",
                "format": "int32",
                "description": "Pod addresses allocated from cidr.",
            },
            "allocatedClusterIPs": {
                "type": "integer",
                "format": "int32",
                "description": "Service addresses allocated from serviceCIDR.",
            },
            "hosts": {
                "type": "array",
                "items": {"$ref": PREFIX + "NetworkHost"},
                "description": "What each host has built for the network (written by the nodes; "
                "a strategic merge patch changes one node's entry).",
                "x-kubernetes-patch-merge-key": "node",
                "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["node"],
            },
            "conditions": {
                "type": "array",
                "items": {"$ref": COND},
                "description": "Observations of the network's state.",
            },
        },
    },
    PREFIX + "NetworkHost": {
        "type": "object",
        "required": ["node"],
        "description": "The network as one host built it.",
        "properties": {
            "node": _s("The node's name."),
            "ready": {"type": "boolean", "description": "Router, bridge and rules are in place."},
            "message": _s("Why it is not ready."),
            "lastUpdateTime": {"$ref": META + "Time", "description": "When the node last wrote this."},
        },
    },
}


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
    definitions=DEFINITIONS,
)
