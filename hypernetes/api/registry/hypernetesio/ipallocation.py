"""IPAllocation: one address, node port or network id taken; written by the network
controller."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import HYPERNETES
from hypernetes.api.registry.hypernetesio.openapi import (
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
    name_of,
)
from hypernetes.objects import Obj as JSON

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


DEFINITIONS: dict[str, JSON] = {
    PREFIX + "IPAllocation": _obj(
        "IPAllocation",
        "One address (or node port, or network id) taken: the record whose create-if-absent makes "
        "allocations unique, as upstream's IPAddress objects. Named <network>.<ip with dashes> "
        "(nodeport.<port> for a node port, networkid.<id> for a network id). Written by the network "
        "controller.",
        "IPAllocationSpec",
        None,
    ),
    PREFIX + "IPAllocationList": _list("IPAllocation"),
    PREFIX + "IPAllocationSpec": {
        "type": "object",
        "required": ["owner"],
        "description": "What is taken, and by whom.",
        "properties": {
            "network": _s("The network the address belongs to (absent for a node port)."),
            "ip": _s("The address."),
            "nodePort": {
                "type": "integer",
                "format": "int32",
                "description": "A node port, 30000-32767.",
            },
            "networkID": {
                "type": "integer",
                "format": "int32",
                "description": "A network id, 1-8191 (the owner is the Network).",
            },
            "owner": {"$ref": PREFIX + "IPAllocationOwner", "description": "The object holding it."},
            "node": _s(
                "A pod's address: the node the pod is bound to (network controller; the nodes of "
                "its network program VXLAN forwarding from it)."
            ),
            "mac": _s("A pod's address: the pod's MAC (network controller)."),
            "labels": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "A pod's address: the pod's labels (network controller; NetworkPolicy peers).",
            },
        },
    },
    PREFIX + "IPAllocationOwner": {
        "type": "object",
        "required": ["kind", "name"],
        "description": "The Pod, Service or Network an allocation belongs to.",
        "properties": {
            "kind": _s("Pod, Service or Network."),
            "namespace": _s("Its namespace (absent for a Network)."),
            "name": _s("Its name."),
            "uid": _s("Its uid: a new object of the same name is another owner."),
        },
    },
}


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
    definitions=DEFINITIONS,
)
