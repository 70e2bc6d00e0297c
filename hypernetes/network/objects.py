"""What the API objects of tenant networks mean, shared by the network controller (which allocates)
and the node agent (which builds): the names of the annotations and labels, and the rule that
maps a namespace to its network. Pure functions of API objects; nothing here allocates.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypernetes.objects import Obj
from hypernetes.objects.meta import deleting, metadata
from hypernetes.objects.names import (
    DEFAULT_NETWORK_LABEL,
    IP_ANNOTATION,
    MAC_ANNOTATION,
    NETWORK_ANNOTATION,
    TENANT_LABEL,
)

GROUP_VERSION = "hypernetes.io/v1"
POD_ANNOTATIONS = (NETWORK_ANNOTATION, IP_ANNOTATION, MAC_ANNOTATION)
CLUSTER_NETWORK = "default"
# Network ids name router namespaces and pick link addresses on every host (and become VNIs);
# 0 is never allocated, so an absent id can never be mistaken for one. The default link pool
# (169.254.0.0/17) has room for 8192 /30s.
NETWORK_IDS = range(1, 8192)
# The cluster's node port range, as upstream's default --service-node-port-range: the schema
# checks chosen ones against it, the controller allocates from it.
NODE_PORTS = range(30000, 32768)
NETWORK_ID_PREFIX = "networkid."  # the IPAllocation that makes a network id unique: networkid.<id>


def spec_of(obj: Obj | None) -> Obj:
    spec = (obj or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def network_id(net: Obj) -> int | None:
    """The network's cluster-wide id (spec.id, set by the controller), or None if not yet set."""
    value = spec_of(net).get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) and value in NETWORK_IDS else None


def network_id_record(value: int) -> str:
    """The name of the IPAllocation holding network id `value`."""
    return f"{NETWORK_ID_PREFIX}{value}"


def holds_network_id(net: Obj, record: Obj | None) -> bool:
    """Whether `record` (the IPAllocation named network_id_record(spec.id), or None if there is
    none) gives the network its id: owned by this very network (kind, name and uid). A network
    whose id another network holds (an operator chose a taken id) must not be built: two routers
    would share names and link addresses."""
    value = network_id(net)
    if value is None or record is None or metadata(record).get("name") != network_id_record(value):
        return False
    owner = spec_of(record).get("owner") or {}
    return (
        owner.get("kind") == "Network"
        and owner.get("name") == metadata(net).get("name")
        and owner.get("uid") == metadata(net).get("uid")
        and spec_of(record).get("networkID") == value
    )


def default_network(tenant: str | None, networks: Iterable[Obj]) -> Obj | None:
    """The tenant's default network (for no tenant: the cluster network `default`)."""
    for net in networks:
        if tenant is None and metadata(net).get("name") == CLUSTER_NETWORK:
            return net
        if (
            tenant is not None
            and (metadata(net).get("labels") or {}).get(DEFAULT_NETWORK_LABEL) == "true"
            and spec_of(net).get("tenant") == tenant
            and not deleting(net)
        ):
            return net
    return None


def namespace_network(ns: Obj, networks: Iterable[Obj]) -> Obj | None:
    """The namespace's network: the one its annotation names if that belongs to the namespace's
    tenant (admission checks this; a network moved or deleted since is ignored), else the
    tenant's default, else (operators' namespaces) the cluster network."""
    nets = list(networks)
    tenant = (metadata(ns).get("labels") or {}).get(TENANT_LABEL) or None
    named = (metadata(ns).get("annotations") or {}).get(NETWORK_ANNOTATION)
    if named:
        for net in nets:
            if (
                metadata(net).get("name") == named
                and (spec_of(net).get("tenant") or None) == tenant
                and not deleting(net)
            ):
                return net
    return default_network(tenant, nets)


UNDERLAY_ANNOTATION = "hypernetes.io/underlay-address"


def underlay_address(node: Obj | None) -> str | None:
    """Where other hosts send a node's VXLAN: its `hypernetes.io/underlay-address` annotation if
    set, else its InternalIP (`node join --node-ip`, by default the address it reaches the API
    server from)."""
    if node is None:
        return None
    noted = (metadata(node).get("annotations") or {}).get(UNDERLAY_ANNOTATION)
    if noted:
        return str(noted)
    status = node.get("status")
    for a in (status.get("addresses") if isinstance(status, dict) else None) or []:
        if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return None
