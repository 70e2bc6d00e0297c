"""Tenant networks and IPAM: the network controller.

- Every tenant gets a default `Network` (named after it, labelled `hypernetes.io/default-network`),
  10.0.0.0/16 for all: isolation comes from each network's own bridge and router on the hosts,
  never from addresses differing. Operators' namespaces (no tenant) use the cluster network
  `default`, made at start. A tenant's networks go once the tenant is deleting and its namespaces
  are gone.
- Pods: an address from their namespace's network (annotation `hypernetes.io/network` on the
  namespace, else the tenant's default network), written to the pod's annotations
  `hypernetes.io/network`, `hypernetes.io/ip` and `hypernetes.io/mac` before the node starts it.
- Services of type ClusterIP/NodePort/LoadBalancer without a clusterIP get one from the network's
  serviceCIDR; node ports come from 30000-32767, unique in the cluster. Headless services get none.
- Networks: every one gets `spec.id` (1-8191, unique in the cluster, lowest free first), which
  hosts derive router names and link addresses from; an operator's choice is recorded as it is,
  or warned about (NetworkIDInUse) while another network holds it. The range is shared, so no
  tenant may exhaust it: a tenant's other networks hold at most 63 ids, and the last 1024 free
  ids go to default networks only (NetworkIDLimit while a network waits). Node ports are shared
  too: one tenant's services hold at most 256 (besides its `services.nodeports` quota).

Uniqueness does not come from this process's memory: every address (node port, network id) taken
is an `IPAllocation` object whose name is the address, and the store's create-if-absent refuses a
second one (409), as upstream's IPAddress objects. So two controllers, or a controller that
restarted with a stale cache, still never hand out one address twice. An allocation is released
(its object deleted) when its owner is gone or finished; the owner's uid tells a new object of
the same name from the old one.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Iterator
from typing import Any

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.controllers import meta as m
from hypernetes.controllers.base import Controller, Retry
from hypernetes.controllers.informer import Handler, InformerFactory, split_key
from hypernetes.network.objects import (
    CLUSTER_NETWORK,
    GROUP_VERSION,
    NETWORK_IDS,
    NODE_PORTS,
    POD_ANNOTATIONS,
    default_network,
    namespace_network,
    network_id,
    network_id_record,
)
from hypernetes.objects import Obj
from hypernetes.objects.meta import annotations_of
from hypernetes.objects.names import (
    DEFAULT_NETWORK_LABEL,
    IP_ANNOTATION,
    MAC_ANNOTATION,
    NETWORK_ANNOTATION,
    TENANT_LABEL,
)

log = logging.getLogger(__name__)

__all__ = [  # the model's names, re-exported for admission and tests
    "CLUSTER_NETWORK",
    "GROUP_VERSION",
    "NETWORK_IDS",
    "POD_ANNOTATIONS",
    "NetworkController",
    "apply_defaults",
    "mac_for",
    "network_spec",
    "pod_hosts",
    "validate_network",
]

DEFAULT_CIDR = "10.0.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/16"
MIN_PREFIX, MAX_PREFIX = 16, 28
SERVICE_MIN_PREFIX = 12
TENANT_NETWORK_IDS = 64  # the most network ids one tenant holds, its default network's included
DEFAULT_NETWORK_RESERVE = 1024  # the last free ids, for tenants' default networks only
TENANT_NODE_PORTS = 256  # the most node ports (of 2768, shared by the cluster) one tenant holds


# -- the model: defaults and validation, shared with admission ---------------------------------


def first_host(cidr: str) -> str:
    return str(ipaddress.IPv4Network(cidr).network_address + 1)


def network_spec(tenant: str | None, cidr: str = DEFAULT_CIDR) -> Obj:
    """A full spec, every default written out: nodes read the fields, not these defaults."""
    spec: Obj = {
        "cidr": cidr,
        "gateway": first_host(cidr),
        "egressNAT": True,
        "serviceCIDR": DEFAULT_SERVICE_CIDR,
    }
    if tenant:
        spec = {"tenant": tenant, **spec}
    return spec


def apply_defaults(spec: Obj) -> None:
    """Fill gateway, egressNAT and serviceCIDR when absent (cidr must be valid)."""
    spec.setdefault("egressNAT", True)
    spec.setdefault("serviceCIDR", DEFAULT_SERVICE_CIDR)
    if not spec.get("gateway"):
        spec["gateway"] = first_host(str(spec["cidr"]))


def _v4(text: Any) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(str(text))
    except ValueError:
        return None


Problems = list[tuple[str, str]]  # (field path, message)


def _subnet(text: Any, path: str, lo: int, hi: int) -> tuple[ipaddress.IPv4Network | None, Problems]:
    if not isinstance(text, str) or not text:
        return None, [(path, "Required value")]
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        return None, [(path, f"Invalid value: {text!r}: must be an IPv4 CIDR with no host bits set ({e})")]
    if "/" not in text or not lo <= net.prefixlen <= hi:
        return None, [(path, f"Invalid value: {text!r}: the prefix must be /{lo} to /{hi}")]
    return net, []


def validate_network(spec: Obj, old: Obj | None = None) -> list[tuple[str, str]]:
    """(field path, message) for every problem with a Network's spec (after defaults), and for
    changes of immutable fields when `old` (the previous spec) is given."""
    errs: list[tuple[str, str]] = []
    net, e = _subnet(spec.get("cidr"), "spec.cidr", MIN_PREFIX, MAX_PREFIX)
    errs += e
    svc, e = _subnet(spec.get("serviceCIDR"), "spec.serviceCIDR", SERVICE_MIN_PREFIX, MAX_PREFIX)
    errs += e
    if net is not None and svc is not None and net.overlaps(svc):
        errs.append(("spec.serviceCIDR", f"Invalid value: {str(svc)!r}: overlaps spec.cidr {net}"))
    gw = spec.get("gateway")
    if gw is not None:
        addr = _v4(gw)
        if addr is None:
            errs.append(("spec.gateway", f"Invalid value: {gw!r}: must be an IPv4 address"))
        elif net is not None and (addr not in net or addr in (net.network_address, net.broadcast_address)):
            errs.append(("spec.gateway", f"Invalid value: {gw!r}: must be a host address of {net}"))
    dns = spec.get("dnsServers") or []
    if len(dns) > 3:
        errs.append(("spec.dnsServers", f"Too many: {len(dns)}: must have at most 3 items"))
    for i, d in enumerate(dns):
        if _v4(d) is None:
            errs.append((f"spec.dnsServers[{i}]", f"Invalid value: {d!r}: must be an IPv4 address"))
    nid = spec.get("id")
    if nid is not None and (not isinstance(nid, int) or isinstance(nid, bool) or nid not in NETWORK_IDS):
        errs.append(
            (
                "spec.id",
                f"Invalid value: {nid!r}: must be between {NETWORK_IDS.start} and "
                f"{NETWORK_IDS.stop - 1}, inclusive",
            )
        )
    if old is not None:
        for f in ("tenant", "cidr", "gateway", "serviceCIDR"):
            if (old.get(f) or None) != (spec.get(f) or None):
                errs.append((f"spec.{f}", "Invalid value: field is immutable"))
        # set once (by the controller, or an operator at creation), then fixed for the network's life
        if old.get("id") is not None and old.get("id") != nid:
            errs.append(("spec.id", "Invalid value: field is immutable"))
    return errs


def mac_for(uid: str) -> str:
    """A stable, locally administered unicast MAC (02:...) from the pod's uid."""
    d = hashlib.sha256(uid.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in d[:5])


def allocation_name(network: str, ip: str) -> str:
    return f"{network}.{ip.replace('.', '-')}"


def nodeport_name(port: int) -> str:
    return f"nodeport.{port}"


def pod_hosts(spec: Obj) -> Iterator[str]:
    """Addresses a pod may get: the cidr's hosts but the gateway (network and broadcast excluded)."""
    gw = str(spec.get("gateway") or first_host(str(spec["cidr"])))
    for a in ipaddress.IPv4Network(str(spec["cidr"])).hosts():
        if str(a) != gw:
            yield str(a)


def service_hosts(spec: Obj) -> Iterator[str]:
    for a in ipaddress.IPv4Network(str(spec.get("serviceCIDR") or DEFAULT_SERVICE_CIDR)).hosts():
        yield str(a)


def _spec(obj: Obj | None) -> Obj:
    s = (obj or {}).get("spec")
    return s if isinstance(s, dict) else {}


def _finished(pod: Obj) -> bool:
    return m.pod_phase(pod) in ("Succeeded", "Failed")


def _wants_cluster_ip(svc: Obj) -> bool:
    spec = _spec(svc)
    return (
        spec.get("type", "ClusterIP") in ("ClusterIP", "NodePort", "LoadBalancer")
        and spec.get("clusterIP") != "None"
    )


def _wants_node_ports(svc: Obj) -> bool:
    return _spec(svc).get("type") in ("NodePort", "LoadBalancer")


CREATE_GRACE = 30.0  # seconds a service's clusterIP record may wait for its service (see above)


def _grace_left(record: Obj) -> float:
    made = m.parse_time(m.meta(record).get("creationTimestamp"))
    return 0.0 if made is None else max(0.0, CREATE_GRACE - (m.now() - made).total_seconds())


class Exhausted(Exception):
    """A network (or the node port range) has no free address left."""


class NetworkController(Controller):
    """Keys: "tenant/<name>", "network/<name>", "pod/<ns>/<name>", "service/<ns>/<name>"."""

    name = "networks"
    workers = 4

    def __init__(self, client: ApiClient, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.tenants = self.informer(GROUP_VERSION, "tenants")
        self.networks = self.informer(GROUP_VERSION, "networks")
        self.allocations = self.informer(GROUP_VERSION, "ipallocations")
        self.namespaces = self.informer("v1", "namespaces")
        self.pods = self.informer("v1", "pods")
        self.services = self.informer("v1", "services")
        # taken by a worker of this process but perhaps not yet seen by the informer
        self._taken: set[str] = set()
        # keys of pods and services waiting for an address of a full network: a release wakes them
        self._waiting: dict[str, set[str]] = {}
        # (network uid, id) already warned about: NetworkIDInUse once, not on every status count
        self._id_warned: set[tuple[str, int]] = set()
        # the limits on ids are checked and an id taken under one lock (workers run concurrently),
        # counting the records this process made that the informer has not shown yet
        self._id_lock = asyncio.Lock()
        self._id_records_made: dict[str, str] = {}  # record name -> network name
        self._port_lock = asyncio.Lock()  # the same for node ports
        self._ports_made: dict[str, str] = {}  # record name -> its service's namespace

        def each(prefix: str) -> Handler:
            def add(o: Obj) -> None:
                self.queue.add(self._key(prefix, o))

            return Handler(add=add, update=lambda old, new: add(new), delete=add)

        self.tenants.add_handler(each("tenant"))
        self.networks.add_handler(each("network"))
        # a tenant's deleted default network comes back
        self.networks.add_handler(Handler(delete=self._network_gone))
        self.pods.add_handler(each("pod"))
        self.services.add_handler(each("service"))
        # uids of services seen deleted: their young records go at once (see _release_orphans)
        self._services_gone: dict[str, None] = {}
        self.services.add_handler(Handler(delete=self._service_gone))
        self.namespaces.add_handler(
            Handler(add=self._namespace, update=lambda o, n: self._namespace(n), delete=self._namespace)
        )
        self.allocations.add_handler(Handler(add=self._allocation, delete=self._released))

    def _service_gone(self, svc: Obj) -> None:
        self._services_gone[m.uid(svc)] = None
        while len(self._services_gone) > 4096:
            del self._services_gone[next(iter(self._services_gone))]

    @staticmethod
    def _key(prefix: str, o: Obj) -> str:
        ns = m.namespace(o)
        return f"{prefix}/{ns}/{m.name(o)}" if ns else f"{prefix}/{m.name(o)}"

    def _namespace(self, ns: Obj) -> None:
        # a tenant's networks wait for its namespaces to go
        tenant = m.labels(ns).get(TENANT_LABEL)
        if tenant:
            self.queue.add(f"tenant/{tenant}")

    def _network_gone(self, net: Obj) -> None:
        tenant = _spec(net).get("tenant")
        if tenant:
            self.queue.add(f"tenant/{tenant}")

    def _released(self, a: Obj) -> None:
        self._allocation(a)
        spec = _spec(a)
        if spec.get("network") or spec.get("nodePort"):
            for key in self._waiting.pop(str(spec.get("network") or "nodeport"), set()):
                self.queue.add(key)
        if spec.get("networkID") is not None:
            # a network given this id by an operator while another held it may have it now; one
            # waiting for any id (a tenant's cap, the reserve) may take one now
            for net in self.networks.list():
                if network_id(net) in (spec["networkID"], None):
                    self.queue.add(f"network/{m.name(net)}")

    def _allocation(self, a: Obj) -> None:
        self._taken.discard(m.name(a))  # the informer holds it (or it is gone) from now on
        self._id_records_made.pop(m.name(a), None)
        self._ports_made.pop(m.name(a), None)
        if _spec(a).get("network"):
            self.queue.add(f"network/{_spec(a)['network']}")  # its counts
        o = _spec(a).get("owner") or {}
        if o.get("kind") == "Network" and o.get("name"):
            self.queue.add(f"network/{o['name']}")  # its id
        kind = {"Pod": "pod", "Service": "service"}.get(str(o.get("kind")))
        if kind and o.get("namespace") and o.get("name"):
            self.queue.add(f"{kind}/{o['namespace']}/{o['name']}")

    async def run(self) -> None:
        await self.informers.wait_synced(self._watched)
        self.queue.add(f"network/{CLUSTER_NETWORK}")  # made there if absent, retried on failure
        await super().run()

    async def reconcile(self, key: str) -> None:
        kind, _, rest = key.partition("/")
        if kind == "tenant":
            await self._tenant(rest)
        elif kind == "network":
            await self._network(rest)
        elif kind in ("pod", "service"):
            try:
                await (self._pod(rest) if kind == "pod" else self._service(rest))
            except Exhausted as e:
                # not an error to back off from: it waits for a release (or a minute)
                obj = (self.pods if kind == "pod" else self.services).get(rest)
                net = self.network_of(split_key(rest)[0] or "")
                self._waiting.setdefault(
                    m.name(net) if net and "node port" not in str(e) else "nodeport", set()
                ).add(key)
                self.queue.add_after(key, 60.0)
                if obj is not None:
                    await self.events.warning(obj, "AddressesExhausted", str(e))

    # -- networks ------------------------------------------------------------------------------

    async def _create_network(self, name: str, tenant: str | None) -> None:
        body: Obj = {
            "apiVersion": GROUP_VERSION,
            "kind": "Network",
            "metadata": {"name": name, "labels": {DEFAULT_NETWORK_LABEL: "true"}},
            "spec": network_spec(tenant),
        }
        if tenant:
            body["metadata"]["labels"][TENANT_LABEL] = tenant
        try:
            self.networks.written(await self.client.create(GROUP_VERSION, "networks", body))
        except ApiException as e:
            if e.status != 409:
                raise

    async def _ensure_cluster_network(self) -> None:
        if self.networks.get(CLUSTER_NETWORK) is None:
            await self._create_network(CLUSTER_NETWORK, None)

    def default_network(self, tenant: str | None) -> Obj | None:
        return default_network(tenant, self.networks.list())

    def tenant_networks(self, tenant: str) -> list[Obj]:
        return [n for n in self.networks.list() if _spec(n).get("tenant") == tenant]

    async def _tenant(self, name: str) -> None:
        tenant = self.tenants.get(name)
        if tenant is not None and not m.deleting(tenant):
            if self.default_network(name) is None:
                # named after the tenant unless some other network has that name already
                taken = self.networks.get(name) is not None
                await self._create_network(f"{name}-{m.uid(tenant)[:8]}" if taken else name, name)
            return
        owned_ns = [ns for ns in self.namespaces.list() if m.labels(ns).get(TENANT_LABEL) == name]
        if owned_ns:
            return  # the tenant controller deletes them first; their pods release their addresses
        if tenant is None and await self.client.get_or_none(GROUP_VERSION, "tenants", name) is not None:
            return  # our cache was behind
        for net in self.tenant_networks(name):
            if not m.deleting(net):
                await self._ignore_gone(self.client.delete(GROUP_VERSION, "networks", m.name(net)))

    async def _network(self, name: str) -> None:
        net = self.networks.get(name)
        if net is None:
            # its address records stay until their owners go: pods may still run with those
            # addresses, and a network made again under the name must not hand them out twice.
            # Its id goes back once it is really gone.
            await self._release_network_ids(name)
            if name == CLUSTER_NETWORK:
                await self._ensure_cluster_network()
            return
        await self._network_id(net)
        ips = svc_ips = 0
        pods_cidr = ipaddress.IPv4Network(str(_spec(net)["cidr"]))
        for a in self.allocations.list():
            if _spec(a).get("network") == name:
                if ipaddress.IPv4Address(str(_spec(a).get("ip"))) in pods_cidr:
                    ips += 1
                else:
                    svc_ips += 1
        status = dict(net.get("status") or {})
        want = {
            **status,
            "phase": "Terminating" if m.deleting(net) else "Active",
            "allocatedIPs": ips,
            "allocatedClusterIPs": svc_ips,
        }
        if want != status:
            try:
                await self.client.patch(
                    GROUP_VERSION,
                    "networks",
                    name,
                    {"status": {k: want[k] for k in ("phase", "allocatedIPs", "allocatedClusterIPs")}},
                    subresource="status",
                )
            except ApiException as e:
                if e.status != 404:
                    raise

    # -- network ids -------------------------------------------------------------------------------

    def _id_records(self, name: str) -> list[Obj]:
        return [
            a
            for a in self.allocations.list()
            if _spec(a).get("networkID") is not None
            and (_spec(a).get("owner") or {}).get("kind") == "Network"
            and (_spec(a).get("owner") or {}).get("name") == name
        ]

    async def _release_network_ids(self, name: str) -> None:
        records = self._id_records(name)
        if not records:
            return
        live = await self.client.get_or_none(GROUP_VERSION, "networks", name)  # our cache may be behind
        for a in records:
            if live is None or (_spec(a).get("owner") or {}).get("uid") != m.uid(live):
                await self._release(a)

    async def _network_id(self, net: Obj) -> None:
        """Give the network its cluster-wide id (spec.id), or record the one an operator chose:
        the record `networkid.<id>` (create-if-absent) makes it unique. Ids of older networks of
        the same name go back."""
        name, uid = m.name(net), m.uid(net)
        mine: list[Obj] = []
        for a in self._id_records(name):
            if (_spec(a).get("owner") or {}).get("uid") == uid:
                mine.append(a)
            else:
                await self._release(a)
        owner = {"kind": "Network", "name": name, "uid": uid}
        value = network_id(net)
        if value is not None:
            record = network_id_record(value)
            for a in mine:
                if m.name(a) != record:  # taken for this network, but it was given another
                    await self._release(a)
            if any(m.name(a) == record for a in mine) or (
                self._free(record) and await self._take(record, {"networkID": value, "owner": owner})
            ):
                self._id_warned.discard((uid, value))
                return
            if self.allocations.get(record) is None and record in self._taken:
                self.queue.add_after(f"network/{name}", 1.0)  # taken by this process a moment ago
                return
            if (uid, value) not in self._id_warned:
                self._id_warned.add((uid, value))
                holder = (_spec(self.allocations.get(record)).get("owner") or {}).get("name") or "another"
                await self.events.warning(
                    {"apiVersion": GROUP_VERSION, "kind": "Network", **net},
                    "NetworkIDInUse",
                    f"network id {value} is held by {holder}: "
                    "nodes do not build this network until it has an id of its own",
                )
            return
        if _spec(net).get("id") is not None or m.deleting(net):
            return  # an invalid id (validation refuses those); or on its way out: no new id
        held = sorted(int(_spec(a)["networkID"]) for a in mine)
        value, refused = (held[0], None) if held else await self._new_network_id(net, owner)
        if refused is not None:
            if (uid, 0) not in self._id_warned:
                self._id_warned.add((uid, 0))
                await self.events.warning(
                    {"apiVersion": GROUP_VERSION, "kind": "Network", **net},
                    "NetworkIDLimit",
                    f"{refused}: nodes do not build this network until it has an id",
                )
            self.queue.add_after(f"network/{name}", 60.0)  # and whenever an id is released
            return
        self._id_warned.discard((uid, 0))
        body = {"metadata": {"resourceVersion": m.meta(net).get("resourceVersion")}, "spec": {"id": value}}
        try:
            self.networks.written(
                await self.client.patch(
                    GROUP_VERSION, "networks", name, body, content_type="application/merge-patch+json"
                )
            )
        except ApiException as e:
            if e.status == 404:
                return  # gone: the deletion event releases the record
            if e.status != 409:
                raise
            self.queue.add_rate_limited(f"network/{name}")  # changed meanwhile: the record is reused
            return
        for a in mine:
            if _spec(a).get("networkID") != value:
                await self._release(a)

    def _id_refused(self, net: Obj) -> str | None:
        """Why `net` may not take an id now, or None. Ids are one range for the whole cluster, so a
        tenant's networks besides its default hold at most TENANT_NETWORK_IDS - 1 of them, and
        the last DEFAULT_NETWORK_RESERVE free ones go to default networks only: a tenant's pods
        always get a network, whatever other tenants made."""
        tenant = _spec(net).get("tenant")
        if not tenant or m.labels(net).get(DEFAULT_NETWORK_LABEL) == "true":
            return None
        records = {
            m.name(a): str((_spec(a).get("owner") or {}).get("name"))
            for a in self.allocations.list()
            if _spec(a).get("networkID") is not None
        }
        records.update((r, n) for r, n in self._id_records_made.items() if r in self._taken)
        extra = {
            m.name(n)
            for n in self.tenant_networks(str(tenant))
            if m.labels(n).get(DEFAULT_NETWORK_LABEL) != "true"
        }
        held = sum(1 for owner in records.values() if owner in extra)
        if held >= TENANT_NETWORK_IDS - 1:
            return (
                f"tenant {tenant} holds {held} network ids besides its default network's, the most "
                "one tenant may"
            )
        free = len(NETWORK_IDS) - len(records)
        if free <= DEFAULT_NETWORK_RESERVE:
            return f"only {free} network ids are free, kept for tenants' default networks"
        return None

    async def _new_network_id(self, net: Obj, owner: Obj) -> tuple[int, str | None]:
        """(a new id, None), or (0, why the network may not have one now)."""
        async with self._id_lock:
            refused = self._id_refused(net)
            if refused is not None:
                return 0, refused
            value = await self._allocate_network_id(owner)
            self._id_records_made[network_id_record(value)] = m.name(net)
            return value, None

    async def _allocate_network_id(self, owner: Obj) -> int:
        """The lowest id neither recorded nor set on a network (an operator's choice not yet
        recorded)."""
        used = {network_id(n) for n in self.networks.list()}
        for value in NETWORK_IDS:
            record = network_id_record(value)
            if (
                value not in used
                and self._free(record)
                and await self._take(record, {"networkID": value, "owner": owner})
            ):
                return value
        raise Exhausted(f"no free network id in {NETWORK_IDS.start}-{NETWORK_IDS.stop - 1}")

    def network_of(self, namespace: str) -> Obj | None:
        """The namespace's network (objects.namespace_network: its annotation's if that is of the
        namespace's tenant, else the tenant's default, else the cluster's)."""
        ns = self.namespaces.get(namespace)
        return None if ns is None else namespace_network(ns, self.networks.list())

    # -- allocation records ----------------------------------------------------------------------

    def _owned(self, kind: str, ns: str, name: str) -> list[Obj]:
        out = []
        for a in self.allocations.list():
            o = _spec(a).get("owner") or {}
            if o.get("kind") == kind and o.get("namespace") == ns and o.get("name") == name:
                out.append(a)
        return out

    async def _take(self, name: str, spec: Obj) -> bool:
        """Create the record `name`; False if it exists already (someone else holds it)."""
        body = {"apiVersion": GROUP_VERSION, "kind": "IPAllocation", "metadata": {"name": name}, "spec": spec}
        self._taken.add(name)
        try:
            out = await self.client.create(GROUP_VERSION, "ipallocations", body)
        except ApiException as e:
            if e.status == 409:
                return False
            self._taken.discard(name)
            raise
        self.allocations.written(out)
        return True

    def _free(self, name: str) -> bool:
        return name not in self._taken and self.allocations.get(name) is None

    async def _allocate(self, network: str, candidates: Iterator[str], owner: Obj) -> str:
        for ip in candidates:
            name = allocation_name(network, ip)
            if self._free(name) and await self._take(name, {"network": network, "ip": ip, "owner": owner}):
                return ip
        raise Exhausted(f"network {network} has no free address")

    async def _release(self, a: Obj) -> None:
        await self._ignore_gone(self.client.delete(GROUP_VERSION, "ipallocations", m.name(a)))
        self._taken.discard(m.name(a))

    @staticmethod
    def _owner(kind: str, obj: Obj) -> Obj:
        return {"kind": kind, "namespace": m.namespace(obj), "name": m.name(obj), "uid": m.uid(obj)}

    # -- pods ------------------------------------------------------------------------------------

    async def _pod(self, key: str) -> None:
        ns, name = split_key(key)
        assert ns is not None
        pod = self.pods.get(key)
        live = pod is not None and not _finished(pod)
        owned = self._owned("Pod", ns, name)
        uid = m.uid(pod) if pod is not None else ""
        # released: records of an older pod of this name, or of this one once it has finished
        for a in owned:
            if not live or (_spec(a).get("owner") or {}).get("uid") != uid:
                if pod is None and await self.client.get_or_none("v1", "pods", name, ns) is not None:
                    return  # our cache was behind: the pod exists
                await self._release(a)
        if not live or pod is None or m.deleting(pod):
            return
        mine = [a for a in owned if (_spec(a).get("owner") or {}).get("uid") == uid]
        notes = annotations_of(pod)
        if notes.get(IP_ANNOTATION):
            held = {(str(_spec(a).get("network")), str(_spec(a).get("ip"))) for a in mine}
            if (notes.get(NETWORK_ANNOTATION, ""), notes[IP_ANNOTATION]) in held:
                for a in mine:  # a second record, from a retry that crashed half way
                    if (_spec(a).get("network"), _spec(a).get("ip")) != (
                        notes.get(NETWORK_ANNOTATION),
                        notes[IP_ANNOTATION],
                    ):
                        await self._release(a)
                    elif _spec(a).get("ip") == notes[IP_ANNOTATION]:
                        await self._locate(a, pod)
                return
        net = self.network_of(ns)
        if net is None:
            raise Retry(f"pod {key}: its namespace has no network yet")
        network = m.name(net)
        # a record we made before the pod's patch failed (or a crash) is reused, not leaked
        ip = next((str(_spec(a)["ip"]) for a in mine if _spec(a).get("network") == network), None)
        if ip is None:
            ip = await self._allocate(network, pod_hosts(_spec(net)), self._owner("Pod", pod))
        patch = {
            "metadata": {
                "annotations": {NETWORK_ANNOTATION: network, IP_ANNOTATION: ip, MAC_ANNOTATION: mac_for(uid)}
            }
        }
        try:
            self.pods.written(await self.client.patch("v1", "pods", name, patch, ns))
        except ApiException as e:
            if e.status != 404:
                raise
            # gone: its record is released on the pod's deletion event

    async def _locate(self, record: Obj, pod: Obj) -> None:
        """Publish where the pod's address lives (l2population, as Neutron's server does): its node
        and MAC on the record, which every node reads, so the nodes of its network program
        forwarding and ARP entries for it. Nodes see only their own pods. Its labels too: the
        NetworkPolicy peers of every node's router (a merge patch: removed labels become null)."""
        labels, had = m.labels(pod), _spec(record).get("labels") or {}
        want: Obj = {
            "node": _spec(pod).get("nodeName") or None,
            "mac": annotations_of(pod).get(MAC_ANNOTATION),
        }
        if all(_spec(record).get(k) == v for k, v in want.items()) and had == labels:
            return
        want["labels"] = {**{k: None for k in had if k not in labels}, **labels} or None
        try:
            self.allocations.written(
                await self.client.patch(GROUP_VERSION, "ipallocations", m.name(record), {"spec": want})
            )
        except ApiException as e:
            if e.status != 404:
                raise

    # -- services --------------------------------------------------------------------------------

    async def _service(self, key: str) -> None:
        ns, name = split_key(key)
        assert ns is not None
        svc = self.services.get(key)
        owned = self._owned("Service", ns, name)
        if svc is None:
            if owned and await self.client.get_or_none("v1", "services", name, ns) is not None:
                return
            await self._release_orphans(key, owned)
            return
        uid, spec = m.uid(svc), _spec(svc)
        mine = [a for a in owned if (_spec(a).get("owner") or {}).get("uid") == uid]
        await self._release_orphans(key, [a for a in owned if a not in mine])
        patch: Obj = {}
        net = self.network_of(ns)
        if _wants_cluster_ip(svc) and not spec.get("clusterIP"):
            if net is None:
                raise Retry(f"service {key}: its namespace has no network yet")
            network = m.name(net)
            ip = next(
                (
                    str(_spec(a)["ip"])
                    for a in mine
                    if _spec(a).get("network") == network and _spec(a).get("ip")
                ),
                None,
            )
            if ip is None:
                ip = await self._allocate(network, service_hosts(_spec(net)), self._owner("Service", svc))
            patch["clusterIP"], patch["clusterIPs"] = ip, [ip]
        elif spec.get("clusterIP") and spec.get("clusterIP") != "None" and net is not None:
            # a clusterIP the user chose: record it, so that nobody else is given it
            ip = str(spec["clusterIP"])
            name_ = allocation_name(m.name(net), ip)
            if (
                not any(m.name(a) == name_ for a in mine)
                and not (
                    self._free(name_)
                    and await self._take(
                        name_, {"network": m.name(net), "ip": ip, "owner": self._owner("Service", svc)}
                    )
                )
                and not await self._held_for(name_, uid)
            ):
                self._waiting.setdefault(m.name(net), set()).add(f"service/{key}")  # until it is released
                await self.events.warning(
                    svc, "ClusterIPInUse", f"clusterIP {ip} is already allocated in network {m.name(net)}"
                )
        ports = [dict(p) for p in spec.get("ports") or []]
        held = {int(_spec(a)["nodePort"]) for a in mine if _spec(a).get("nodePort")}
        if _wants_node_ports(svc):
            spare = sorted(held - {p.get("nodePort") for p in ports})
            changed = False
            async with self._port_lock:  # a tenant's share is checked and taken at once
                for p in ports:
                    if p.get("nodePort"):
                        port = int(p["nodePort"])
                        if port not in held and not await self._take_port(svc, port):
                            # taken when freed
                            self._waiting.setdefault("nodeport", set()).add(f"service/{key}")
                            await self.events.warning(svc, "NodePortInUse", f"node port {port} is taken")
                        continue
                    p["nodePort"] = spare.pop(0) if spare else await self._node_port(svc)
                    changed = True
            if changed:
                patch["ports"] = ports
        # what the service no longer uses goes back
        cluster_ips = {*(spec.get("clusterIPs") or [spec.get("clusterIP")]), *(patch.get("clusterIPs") or [])}
        in_use = {p.get("nodePort") for p in ports} if _wants_node_ports(svc) else set()
        for a in mine:
            s = _spec(a)
            stale_port = bool(s.get("nodePort")) and s["nodePort"] not in in_use
            # a service without its clusterIP yet keeps the record it is about to be given
            stale_ip = bool(s.get("ip")) and (
                not _wants_cluster_ip(svc)
                or (bool(spec.get("clusterIP") or patch) and s["ip"] not in cluster_ips)
            )
            if stale_port or stale_ip:
                await self._release(a)
        if not patch:
            return
        # the resourceVersion makes the patch conditional: ports are replaced as a whole
        body = {"metadata": {"resourceVersion": m.meta(svc).get("resourceVersion")}, "spec": patch}
        try:
            self.services.written(
                await self.client.patch(
                    "v1", "services", name, body, ns, content_type="application/merge-patch+json"
                )
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise
            self.queue.add_rate_limited(f"service/{key}")  # changed meanwhile: look again

    async def _release_orphans(self, key: str, records: list[Obj]) -> None:
        """Release records of a service that is gone (or was replaced), but not a clusterIP record
        younger than CREATE_GRACE for a service not seen deleted: the API server writes it just
        before the service it is for (api/registry/core/serviceips.py), so its owner may not be
        stored or seen yet."""
        wait = 0.0
        for a in records:
            owner = str((_spec(a).get("owner") or {}).get("uid"))
            fresh = _spec(a).get("ip") and owner not in self._services_gone
            left = _grace_left(a) if fresh else 0.0
            if left > 0:
                wait = max(wait, left)
            else:
                await self._release(a)
        if wait:
            self.queue.add_after(f"service/{key}", wait + 1)

    async def _held_for(self, record: str, uid: str) -> bool:
        """Whether `record` is held for the object `uid` (the API server takes a service's
        clusterIP in its create: our informer may not have seen that record yet)."""
        rec = await self.client.get_or_none(GROUP_VERSION, "ipallocations", record)
        return rec is not None and (_spec(rec).get("owner") or {}).get("uid") == uid

    async def _node_port(self, svc: Obj) -> int:
        # start from a point derived from the service, so concurrent services rarely collide
        start = int(hashlib.sha256(m.uid(svc).encode()).hexdigest(), 16) % len(NODE_PORTS)
        for i in range(len(NODE_PORTS)):
            port = NODE_PORTS[(start + i) % len(NODE_PORTS)]
            if await self._take_port(svc, port):
                return port
        raise Exhausted("no free node port in 30000-32767")

    async def _take_port(self, svc: Obj, port: int) -> bool:
        """Take `port` for `svc` if free; Exhausted if its tenant holds its share of the range."""
        name = nodeport_name(port)
        if not self._free(name):
            return False
        tenant = m.labels(self.namespaces.get(m.namespace(svc)) or {}).get(TENANT_LABEL)
        if tenant:
            mine = {m.name(n) for n in self.namespaces.list() if m.labels(n).get(TENANT_LABEL) == tenant}
            held = {
                m.name(a)
                for a in self.allocations.list()
                if _spec(a).get("nodePort") and (_spec(a).get("owner") or {}).get("namespace") in mine
            }
            held |= {r for r, ns in self._ports_made.items() if r in self._taken and ns in mine}
            if len(held) >= TENANT_NODE_PORTS:
                raise Exhausted(f"tenant {tenant} holds {len(held)} node ports, the most one tenant may")
        if not await self._take(name, {"nodePort": port, "owner": self._owner("Service", svc)}):
            return False
        self._ports_made[name] = m.namespace(svc)
        return True

    @staticmethod
    async def _ignore_gone(call: Any) -> None:
        try:
            await call
        except ApiException as e:
            if e.status != 404:
                raise
