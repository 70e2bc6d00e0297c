"""OpenAPI definitions of the kinds Hypernetes adds (group `hypernetes.io/v1`), in the same form as
the vendored upstream ones so validation, patching, /openapi and `kubectl explain` treat them alike."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
PREFIX = "io.hypernetes.v1."
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_Q = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _s(description: str, **kw: Any) -> JSON:
    return {"type": "string", "description": description, **kw}


def _obj(kind: str, description: str, spec: str | None, status: str | None) -> JSON:
    props: JSON = {
        "apiVersion": _s("APIVersion defines the versioned schema of this representation of an object."),
        "kind": _s("Kind is a string value representing the REST resource this object represents."),
        "metadata": {"$ref": _META + "ObjectMeta", "description": "Standard object's metadata."},
    }
    if spec:
        props["spec"] = {"$ref": PREFIX + spec, "description": f"The desired state of the {kind}."}
    if status:
        props["status"] = {"$ref": PREFIX + status, "description": f"The observed state of the {kind}."}
    return {
        "type": "object",
        "description": description,
        "properties": props,
        "x-kubernetes-group-version-kind": [{"group": "hypernetes.io", "kind": kind, "version": "v1"}],
    }


def _list(kind: str) -> JSON:
    return {
        "type": "object",
        "description": f"A list of {kind} objects.",
        "required": ["items"],
        "properties": {
            "apiVersion": _s("APIVersion of this representation."),
            "kind": _s("Kind of this list."),
            "items": {
                "type": "array",
                "items": {"$ref": PREFIX + kind},
                "description": f"The {kind} objects.",
            },
            "metadata": {"$ref": _META + "ListMeta", "description": "Standard list metadata."},
        },
        "x-kubernetes-group-version-kind": [
            {"group": "hypernetes.io", "kind": kind + "List", "version": "v1"}
        ],
    }


_AMOUNTS = (
    "Amounts by name: pods, vcpus (whole vCPUs of the pods' VMs), memory (the VMs' memory, "
    "guest overhead included), namespaces, storage, persistentvolumeclaims, services.nodeports, "
    "and object counts count/<resource>[.<group>] (count/secrets, count/deployments.apps, "
    "count/networks.hypernetes.io, ...)."
)
_RESOURCE_LIST: JSON = {"type": "object", "additionalProperties": {"$ref": _Q}, "description": _AMOUNTS}

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
                **_RESOURCE_LIST,
                "description": "Hard limits across all the tenant's namespaces. "
                + _AMOUNTS
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
            "used": {**_RESOURCE_LIST, "description": "Current usage of what the quota limits."},
        },
    },
    PREFIX + "User": _obj(
        "User",
        "A user of the built-in identity backend: a member of one tenant with "
        "one role. Passwords are set through the CLI and never appear in the object.",
        "UserSpec",
        None,
    ),
    PREFIX + "UserList": _list("User"),
    PREFIX + "UserSpec": {
        "type": "object",
        "required": ["tenant", "role"],
        "description": "Who the user is.",
        "properties": {
            "tenant": _s("The tenant the user belongs to. Immutable."),
            "role": _s(
                "admin (manages the tenant's users and namespaces), member (reads "
                "and writes workloads) or viewer (reads)."
            ),
            "displayName": _s("A human-readable name."),
            "disabled": {
                "type": "boolean",
                "description": "A disabled user cannot log in; its tokens stop working.",
            },
        },
    },
}

_COND = _META + "Condition"
DEFINITIONS.update(
    {
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
                    "items": {"$ref": _COND},
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
                "lastUpdateTime": {"$ref": _META + "Time", "description": "When the node last wrote this."},
            },
        },
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
)
