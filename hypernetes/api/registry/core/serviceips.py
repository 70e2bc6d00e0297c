"""A Service's ClusterIP, allocated in its create as upstream's service REST storage does
(pkg/registry/core/service/storage: BeginCreate), so the create response carries it.

The address comes from the service CIDR of the namespace's network (each tenant network has its
own; objects.namespace_network picks it) and is held by the same `IPAllocation` record the network
controller writes (controllers/networks.py: named <network>.<ip>, owner = the service). The
store's create-if-absent on that record is what makes an address unique: two creates, on one API
server or several, never get the same one. A namespace whose network does not exist yet gets its
address later from the network controller, as before.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Awaitable, Callable, Iterator

from hypernetes.api import objects
from hypernetes.api.status import ApiError, internal, invalid
from hypernetes.controllers.networks import (
    DEFAULT_SERVICE_CIDR,
    GROUP_VERSION,
    allocation_name,
)
from hypernetes.network.objects import namespace_network
from hypernetes.objects import Obj
from hypernetes.store.interface import KeyExists, Store

Finish = Callable[[bool], Awaitable[None]]  # called with whether the object was stored

GROUP, PLURAL = GROUP_VERSION.split("/")[0], "ipallocations"
RANDOM_PROBES = 16  # tries at random addresses before reading which ones are held


def wants_cluster_ip(spec: Obj) -> bool:
    return spec.get("type", "ClusterIP") in ("ClusterIP", "NodePort", "LoadBalancer") and (
        spec.get("clusterIP") != "None"
    )


async def _network(store: Store, namespace: str) -> Obj | None:
    kv = await store.get(objects.object_key("", "namespaces", None, namespace))
    if kv is None:
        return None
    nets = await store.list(objects.key_prefix(GROUP, "networks", None))
    return namespace_network(objects.decode(kv), (objects.decode(n) for n in nets.items))


def _record(network: str, ip: str, svc: Obj) -> tuple[str, bytes]:
    name = allocation_name(network, ip)
    meta = svc["metadata"]
    owner = {"kind": "Service", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}
    rec: Obj = {"metadata": {"name": name}, "spec": {"network": network, "ip": ip, "owner": owner}}
    objects.stamp_create(rec, api_version=GROUP_VERSION, kind="IPAllocation", namespace=None)
    return objects.object_key(GROUP, PLURAL, None, name), objects.encode(rec)


async def _take(store: Store, network: str, ip: str, svc: Obj) -> str | None:
    key, value = _record(network, ip, svc)
    try:
        await store.create(key, value)
    except KeyExists:
        return None
    return key


def _candidates(spec: Obj, held: set[str] | None) -> Iterator[str]:
    """The service CIDR's host addresses (service_hosts), without listing a /12's million."""
    net = ipaddress.IPv4Network(str(spec.get("serviceCIDR") or DEFAULT_SERVICE_CIDR))
    first, count = int(net.network_address) + 1, net.num_addresses - 2
    if held is None:  # first a few random picks, as upstream's allocator: creates rarely collide
        for i in random.sample(range(count), min(RANDOM_PROBES, count)):
            yield str(ipaddress.IPv4Address(first + i))
        return
    start = random.randrange(count)
    for i in range(count):
        ip = str(ipaddress.IPv4Address(first + (start + i) % count))
        if ip not in held:
            yield ip


async def _held(store: Store, network: str) -> set[str]:
    out = await store.list(objects.key_prefix(GROUP, PLURAL, None) + f"{network}.")
    return {str((objects.decode(kv).get("spec") or {}).get("ip")) for kv in out.items}


async def allocate_cluster_ip(store: Store, svc: Obj) -> Finish | None:
    """Give `svc` its clusterIP (or hold the one it asks for); the returned Finish releases the
    address if the service was not stored. None: nothing to allocate here."""
    spec = svc.setdefault("spec", {})
    if not wants_cluster_ip(spec):
        return None
    net = await _network(store, svc["metadata"]["namespace"])
    if net is None:
        return None  # the network controller allocates once the namespace's network exists
    network, net_spec = net["metadata"]["name"], net.get("spec") or {}
    asked = spec.get("clusterIP") or next(iter(spec.get("clusterIPs") or []), None)
    key: str | None = None
    if asked:
        cidr = ipaddress.ip_network(str(net_spec.get("serviceCIDR") or DEFAULT_SERVICE_CIDR))
        if ipaddress.ip_address(str(asked)) not in cidr:
            raise _refused(
                svc, asked, f"provided IP is not in the valid range. The range of valid IPs is {cidr}"
            )
        key = await _take(store, network, asked, svc)
        if key is None:
            raise _refused(svc, asked, "provided IP is already allocated")
        ip = str(asked)
    else:
        ip = ""
        for round_ in range(2):  # random picks, then the free ones the records leave
            held = None if round_ == 0 else await _held(store, network)
            for candidate in _candidates(net_spec, held):
                if key := await _take(store, network, candidate, svc):
                    ip = candidate
                    break
            if key:
                break
        if not key:
            raise internal(f"failed to allocate a serviceIP: range is full (network {network})")
    spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")

    async def finish(stored: bool) -> None:
        if not stored and key is not None:
            await store.delete(key)

    return finish


def _refused(svc: Obj, ip: str, why: str) -> ApiError:
    return invalid(
        "Service",
        svc["metadata"]["name"],
        "",
        [
            {
                "reason": "FieldValueInvalid",
                "message": f'Invalid value: ["{ip}"]: failed to allocate IP {ip}: {why}',
                "field": "spec.clusterIPs",
            }
        ],
    )
