"""This node's side of tenant networks: from API objects to the host's routers, taps and DNS.

`PodNetworks` watches the Networks, Namespaces, Services and Endpoints of the cluster and the
pods bound to this node, and keeps the host equal to what they say (`TenantNetworkHost.apply`):
a router namespace for every network that has a pod here, every such pod's port, every service
of those networks with its ready endpoints. The state is a pure function of the API objects
(`build_state`), so an agent restart or a host reboot is just another apply; an adopted VM's tap
survives because its pod is in the state from the first apply on.

A pod worker calls `attach(pod)` before it starts the VM: once the pod has its address (set by
the network controller) and the host has applied a state that holds it, it opens the pod's tap
and returns the guest's `NetworkConfig` with the tap's fd, which the runtime hands to QEMU. The
tap dies with QEMU; nothing needs detaching.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

from hypernetes.apiclient import ApiClient, ApiException
from hypernetes.asyncwait import wait_event
from hypernetes.network import NetworkApplyError, TenantNetworkHost
from hypernetes.network.dns import DnsServer, records_for
from hypernetes.network.ingress import IngressProxy, Routes, routes_for, served_here
from hypernetes.network.netns import run_in_netns
from hypernetes.network.objects import (
    GROUP_VERSION,
    holds_network_id,
    namespace_network,
    network_id,
    network_id_record,
    spec_of,
    underlay_address,
)
from hypernetes.network.policy import PodPolicy, PolicyPod, policy_pod, resolve
from hypernetes.network.state import (
    VXLAN_OVERHEAD,
    Endpoint,
    Network,
    NetworkState,
    Overlay,
    Pod,
    Protocol,
    RemotePod,
    Service,
    ServicePort,
    validate_mac,
)
from hypernetes.node.podspec import ConfigError
from hypernetes.objects import Obj
from hypernetes.objects.meta import metadata
from hypernetes.objects.names import IP_ANNOTATION, MAC_ANNOTATION, NETWORK_ANNOTATION
from hypernetes.runtime.interface import NetworkConfig

log = logging.getLogger(__name__)

DOMAIN = "cluster.local"
DEBOUNCE = 0.05  # changes arriving together (a deployment's pods, a service and its endpoints) apply once
RETRY = 5.0  # a failed apply is tried again this often
ATTACH_TIMEOUT = 30.0
MAX_NAMESERVERS, MAX_SEARCHES = 3, 6  # what the C library reads
KINDS = (
    "networks",
    "ipallocations",
    "namespaces",
    "services",
    "endpoints",
    "pods",
    "nodes",
    "networkpolicies",
    "ingresses",
    "ingressclasses",
)
NETWORKING = "networking.k8s.io/v1"


CONNECT_TIMEOUT = 10.0  # a port-forward's connection to a pod


class NetworkNotReady(ConfigError):
    """The pod cannot be given its network yet; it stays ContainerCreating and retries."""

    reason = "ContainerCreating"
    event = "NetworkNotReady"

    @property
    def event_message(self) -> str:
        return f"network is not ready: {self}"


def tap_name(uid: str) -> str:
    """The pod's port on its network's bridge: unique per pod, within IFNAMSIZ."""
    return "tap" + uid.replace("-", "").lower()[:12]


@dataclass(frozen=True)
class PodAddress:
    network: str
    ip: str
    mac: str


def pod_address(pod: Obj) -> PodAddress | None:
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    network, ip, mac = (notes.get(k) for k in (NETWORK_ANNOTATION, IP_ANNOTATION, MAC_ANNOTATION))
    if not (network and ip and mac):
        return None
    return PodAddress(str(network), str(ip), str(mac))


def _finished(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _host_address(cidr: ipaddress.IPv4Network, gateway: str, ip: Any) -> bool:
    try:
        addr = ipaddress.IPv4Address(str(ip))
    except ValueError:
        return False
    return (
        addr in cidr and addr not in (cidr.network_address, cidr.broadcast_address) and str(addr) != gateway
    )


def _usable_mac(mac: str) -> bool:
    try:
        validate_mac(mac)
    except ValueError:
        return False
    return True


@dataclass
class _Net:
    """One network being built: its plumbing and what its DNS serves."""

    name: str
    spec: Network
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    service_objs: list[Obj] = field(default_factory=list)
    endpoint_objs: list[Obj] = field(default_factory=list)


@dataclass(frozen=True)
class Desired:
    """What `build_state` makes of the API objects: the host's state, each network's DNS data
    (by network id: its Services and Endpoints objects), and what had to be left out, and why."""

    state: NetworkState
    names: dict[int, str]  # network id -> Network name
    dns: dict[int, tuple[list[Obj], list[Obj]]]
    skipped: list[str]
    # Ingress: each network with Ingresses served here, its routes and its Ingress objects
    ingress: dict[int, tuple[Routes, list[Obj]]] = field(default_factory=dict)


def _network_of(net: Obj, mtu: int) -> Network | None:
    spec, nid = spec_of(net), network_id(net)
    try:
        cidr = ipaddress.IPv4Network(str(spec.get("cidr")))
        gateway = str(ipaddress.IPv4Address(str(spec.get("gateway"))))
    except ValueError:
        return None
    if nid is None or cidr.prefixlen > 30 or not _host_address(cidr, "", gateway):
        return None
    egress = spec.get("egressNAT", True) is not False
    return Network(id=nid, cidr=str(cidr), gateway=gateway, mtu=mtu, egress=egress)


def _service_ports(svc: Obj, ep: Obj | None, cidr: ipaddress.IPv4Network, gateway: str) -> list[ServicePort]:
    """Each TCP/UDP port of the service with its ready endpoints. An Endpoints subset names its
    ports as the service does and carries the resolved (possibly named) target port, which may
    differ between subsets."""
    spec = spec_of(svc)
    node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    out = []
    for p in spec.get("ports") or []:
        proto: Protocol = "UDP" if p.get("protocol") == "UDP" else "TCP"
        port = p.get("port")
        if p.get("protocol", "TCP") not in ("TCP", "UDP") or not isinstance(port, int):
            continue
        endpoints: list[Endpoint] = []
        for subset in (ep or {}).get("subsets") or []:
            target = next(
                (
                    sp.get("port")
                    for sp in subset.get("ports") or []
                    if (sp.get("name") or "") == (p.get("name") or "")
                    and (sp.get("protocol") or "TCP") == proto
                ),
                None,
            )
            if not isinstance(target, int) or not 1 <= target <= 65535:
                continue
            for a in subset.get("addresses") or []:  # the ready ones; notReadyAddresses never
                if _host_address(cidr, gateway, a.get("ip")):
                    e = Endpoint(str(a["ip"]), target)
                    if e not in endpoints:
                        endpoints.append(e)
        node_port = p.get("nodePort") if node_ports and isinstance(p.get("nodePort"), int) else None
        out.append(ServicePort(proto, port, tuple(endpoints), node_port))
    return out


def build_state(objs: dict[str, dict[str, Obj]], node: str, mtu: int = 1500) -> Desired:
    """The host state for this node's pods. Never raises for bad objects: whatever cannot be
    realised (a network without its id yet, a duplicate address, a cluster IP inside the pod
    cidr, a node port used twice) is left out and said in `skipped`, so one bad object never
    stops the rest of the host's networks."""
    networks = objs["networks"]
    nets: dict[str, _Net] = {}
    skipped: list[str] = []
    seen: dict[str, set[str]] = {}
    for pod in sorted(objs["pods"].values(), key=lambda p: str(metadata(p).get("uid"))):
        addr = pod_address(pod)
        if addr is None or _finished(pod) or spec_of(pod).get("nodeName") != node:
            continue
        what = f"pod {metadata(pod).get('namespace')}/{metadata(pod).get('name')}"
        net_obj = networks.get(addr.network)
        base = _network_of(net_obj, mtu) if net_obj is not None else None
        if base is None:
            skipped.append(f"{what}: network {addr.network} does not exist or has no id yet")
            continue
        assert net_obj is not None
        if not holds_network_id(net_obj, objs["ipallocations"].get(network_id_record(base.id))):
            # an operator chose an id another network holds: building it would share that one's
            # router names and link addresses
            skipped.append(f"{what}: network {addr.network} does not hold its id {base.id} (yet)")
            continue
        n = nets.setdefault(addr.network, _Net(addr.network, base))
        cidr = ipaddress.IPv4Network(base.cidr)
        taken = seen.setdefault(addr.network, set())
        if (
            not _host_address(cidr, base.gateway, addr.ip)
            or addr.ip in taken
            or addr.mac in taken
            or addr.mac == base.gateway_mac
            or not _usable_mac(addr.mac)
        ):
            skipped.append(f"{what}: address {addr.ip} / {addr.mac} is invalid or taken in {addr.network}")
            continue
        taken |= {addr.ip, addr.mac}
        n.pods.append(Pod(tap_name(str(metadata(pod).get("uid"))), addr.mac, addr.ip))
    # A node port answers on every node: a network with one is built on every node, with or
    # without pods here, and every node with an underlay address is one of its hosts.
    # So does an Ingress: its network's ingress port is open on every node.
    everywhere: set[str] = set()
    ingresses = [i for i in objs["ingresses"].values() if served_here(i, objs["ingressclasses"])]
    published = [
        s for s in objs["services"].values() if spec_of(s).get("type") in ("NodePort", "LoadBalancer")
    ]
    for svc in published + ingresses:
        home = _home(objs, svc)
        if home is None:
            continue
        name = str(metadata(home).get("name"))
        everywhere.add(name)
        base = _network_of(home, mtu)
        if (
            name not in nets
            and base is not None
            and holds_network_id(home, objs["ipallocations"].get(network_id_record(base.id)))
        ):
            nets[name] = _Net(name, base)
    node_ports: set[tuple[str, int | None]] = set()
    for svc in sorted(objs["services"].values(), key=lambda s: str(metadata(s).get("uid"))):
        ns, name = str(metadata(svc).get("namespace")), str(metadata(svc).get("name"))
        home = _home(objs, svc)
        found = nets.get(str(metadata(home).get("name"))) if home is not None else None
        if found is None:
            continue  # its network has no pod on this node
        n = found
        ep = objs["endpoints"].get(f"{ns}/{name}")
        n.service_objs.append(svc)
        if ep is not None:
            n.endpoint_objs.append(ep)
        spec = spec_of(svc)
        if spec.get("type") == "ExternalName":
            continue
        cip = spec.get("clusterIP")
        if cip == "None" or not cip:
            continue  # headless: DNS only; none yet: the controller is about to give it one
        cidr = ipaddress.IPv4Network(n.spec.cidr)
        try:
            if ipaddress.IPv4Address(str(cip)) in cidr:
                raise ValueError
        except ValueError:
            skipped.append(f"service {ns}/{name}: cluster IP {cip!r} is not usable in {n.name}")
            continue
        ports = _service_ports(svc, ep, cidr, n.spec.gateway)
        keys = {(s.cluster_ip, p.protocol, p.port) for s in n.services for p in s.ports if s.cluster_ip}
        kept = []
        for p in ports:
            if (str(cip), p.protocol, p.port) in keys:
                skipped.append(f"service {ns}/{name}: {cip} {p.protocol}/{p.port} is another service's")
                continue
            if p.node_port is not None:
                if (p.protocol, p.node_port) in node_ports:
                    skipped.append(f"service {ns}/{name}: node port {p.node_port} is used twice")
                    p = ServicePort(p.protocol, p.port, p.endpoints, None)
                else:
                    node_ports.add((p.protocol, p.node_port))
            kept.append(p)
        n.services.append(Service(f"{ns}/{name}", str(cip), tuple(kept)))
    local = underlay_address(objs["nodes"].get(node))
    built = tuple(
        Network(
            id=n.spec.id,
            cidr=n.spec.cidr,
            gateway=n.spec.gateway,
            mtu=n.spec.mtu,
            egress=n.spec.egress,
            pods=tuple(n.pods),
            services=tuple(n.services),
            overlay=_overlay(objs, node, local, n, n.name in everywhere, skipped) if local else None,
            policies=_policies(objs, node, n),
        )
        for n in sorted(nets.values(), key=lambda n: n.spec.id)
    )
    served: dict[int, tuple[Routes, list[Obj]]] = {}
    for n in nets.values():
        mine = [
            i
            for i in ingresses
            if (home := _home(objs, i)) is not None and metadata(home).get("name") == n.name
        ]
        if mine:
            services = {
                f"{metadata(s).get('namespace')}/{metadata(s).get('name')}": s for s in n.service_objs
            }
            served[n.spec.id] = (routes_for(mine, services), mine)
    return Desired(
        NetworkState(built),
        {n.spec.id: n.name for n in nets.values()},
        {n.spec.id: (n.service_objs, n.endpoint_objs) for n in nets.values()},
        skipped,
        served,
    )


def _policies(objs: dict[str, dict[str, Obj]], node: str, n: _Net) -> tuple[PodPolicy, ...]:
    """The network's NetworkPolicies resolved over all its pods, on every node: this node's
    router checks traffic to and from remote pods too (egress of its own pods to them, and
    service traffic it sends them on their behalf). Nodes see only their own pods: the others'
    labels come from their address records (the network controller copies them there), without
    their container ports, so an egress port by name resolves only against pods of this node."""
    policies = [
        pol
        for pol in objs["networkpolicies"].values()
        if (home := _home(objs, pol)) is not None and metadata(home).get("name") == n.name
    ]
    if not policies:
        return ()
    cidr = ipaddress.IPv4Network(n.spec.cidr)
    pods = [
        policy_pod(pod, addr.ip)
        for pod in objs["pods"].values()
        if (addr := pod_address(pod)) is not None
        and spec_of(pod).get("nodeName") == node
        and addr.network == n.name
        and not _finished(pod)
        and _host_address(cidr, n.spec.gateway, addr.ip)
    ]
    for rec in objs["ipallocations"].values():
        spec = spec_of(rec)
        owner = spec.get("owner") or {}
        if (
            spec.get("network") == n.name
            and owner.get("kind") == "Pod"
            and spec.get("node") not in (None, node)
            and _host_address(cidr, n.spec.gateway, spec.get("ip"))
        ):
            labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
            pods.append(PolicyPod(str(owner.get("namespace")), labels, str(spec["ip"]), {}))
    return resolve(policies, pods, objs["namespaces"])


def _home(objs: dict[str, dict[str, Obj]], svc: Obj) -> Obj | None:
    """The network of the service's namespace."""
    ns_obj = objs["namespaces"].get(str(metadata(svc).get("namespace")))
    return namespace_network(ns_obj, objs["networks"].values()) if ns_obj is not None else None


def _overlay(
    objs: dict[str, dict[str, Obj]], node: str, local: str, n: _Net, everywhere: bool, skipped: list[str]
) -> Overlay | None:
    """The network's pods on other nodes, from the address records the network controller
    locates (node and MAC: nodes see only their own pods), at their nodes' underlay addresses;
    None while the network lives on this node alone. Its hosts: the nodes of its pods, or every
    node with an underlay address if it has a node port (`everywhere`). Every node computes the
    same set from the same objects, so each accepts VXLAN from exactly the others."""
    cidr = ipaddress.IPv4Network(n.spec.cidr)
    taken = {p.ip for p in n.pods} | {p.mac for p in n.pods} | {local}
    remote: list[RemotePod] = []
    for rec in sorted(objs["ipallocations"].values(), key=lambda r: str(metadata(r).get("name"))):
        spec = spec_of(rec)
        owner = spec.get("owner") or {}
        there, ip, mac = spec.get("node"), spec.get("ip"), spec.get("mac")
        if spec.get("network") != n.name or owner.get("kind") != "Pod" or not there or there == node:
            continue
        host = underlay_address(objs["nodes"].get(str(there)))
        if host is None:
            skipped.append(f"remote pod {ip} in {n.name}: node {there} has no underlay address")
            continue
        mac = str(mac or "")
        if (
            not _host_address(cidr, n.spec.gateway, ip)
            or not _usable_mac(mac)
            or mac == n.spec.gateway_mac
            or ip in taken
            or mac in taken
            or _inside(cidr, host)
        ):
            skipped.append(f"remote pod {ip} / {mac} in {n.name}: invalid or taken")
            continue
        taken |= {str(ip), mac}
        remote.append(RemotePod(mac, str(ip), host))
    hosts = {p.host for p in remote}
    if everywhere:
        hosts |= {a for a in map(underlay_address, objs["nodes"].values()) if a and not _inside(cidr, a)}
    peers = tuple(sorted(hosts - {local}))
    if not peers:
        return None  # this node alone: no VXLAN device, the gateway is the hairpin's source
    return Overlay(local, peers, tuple(p for p in remote if p.host in peers))


def _inside(cidr: ipaddress.IPv4Network, address: str) -> bool:
    """An underlay address inside a tenant's cidr would shadow a pod (and is refused by validate)."""
    try:
        return ipaddress.IPv4Address(address) in cidr
    except ValueError:
        return True


def guest_dns(
    pod: Obj, gateway: str, upstreams: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(nameservers, searches, options) for the pod's resolv.conf, after its dnsPolicy and
    dnsConfig as upstream: ClusterFirst (the default) is the network's DNS server on the gateway
    with the namespace search path and ndots:5; Default is the network's upstream resolvers (the
    gateway forwards when it has none of its own); None is only what dnsConfig says."""
    spec = spec_of(pod)
    ns = str(metadata(pod).get("namespace") or "default")
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    servers: list[str] = []
    searches: list[str] = []
    options: dict[str, str | None] = {}
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        servers = [gateway]
        searches = [f"{ns}.svc.{DOMAIN}", f"svc.{DOMAIN}", DOMAIN]
        options = {"ndots": "5"}
    elif policy == "Default":
        servers = list(upstreams) or [gateway]
    cfg = spec.get("dnsConfig") or {}
    for s in cfg.get("nameservers") or []:
        if s not in servers:
            servers.append(str(s))
    for s in cfg.get("searches") or []:
        if s not in searches:
            searches.append(str(s))
    for o in cfg.get("options") or []:
        if o.get("name"):
            options[str(o["name"])] = None if o.get("value") is None else str(o["value"])
    opts = tuple(k if v is None else f"{k}:{v}" for k, v in options.items())
    return tuple(servers[:MAX_NAMESERVERS]), tuple(searches[:MAX_SEARCHES]), opts


def guest_hosts(pod: Obj, ip: str) -> tuple[str, ...]:
    """/etc/hosts lines beyond localhost: the pod's own name, then its hostAliases, as kubelet."""
    spec = spec_of(pod)
    hostname = str(spec.get("hostname") or metadata(pod).get("name"))
    ns = str(metadata(pod).get("namespace") or "default")
    names = [hostname]
    if spec.get("subdomain"):
        names.insert(0, f"{hostname}.{spec['subdomain']}.{ns}.svc.{DOMAIN}")
    lines = [f"{ip}\t{' '.join(names)}"]
    for alias in spec.get("hostAliases") or []:
        hosts = [str(h) for h in alias.get("hostnames") or []]
        if alias.get("ip") and hosts:
            lines.append(f"{alias['ip']}\t{' '.join(hosts)}")
    return tuple(lines)


class PodNetworks:
    """See the module docstring. `dns`: serve each network's DNS on its gateway (None: no DNS,
    for tests of the plumbing alone). `mtu`: of every bridge, tap and guest interface.
    `underlay`: this node's address for other nodes' VXLAN, published on its Node object."""

    def __init__(
        self,
        client: ApiClient,
        host: TenantNetworkHost,
        node_name: str,
        *,
        dns: DnsServer | None = None,
        mtu: int | None = None,
        underlay: str | None = None,
        ingress: IngressProxy | None = None,
    ) -> None:
        self.client = client
        self.host = host
        self.node = node_name
        self.dns = dns
        self.ingress = ingress  # None: no ingress listeners (tests of the plumbing alone)
        self.mtu = mtu  # None: the underlay's less the VXLAN overhead
        self.underlay = underlay  # published on the Node (the agent); None: its InternalIP
        self._underlay_mtu: dict[str, int] = {}
        self.objs: dict[str, dict[str, Obj]] = {k: {} for k in KINDS}
        self._synced: set[str] = set()
        self._dirty = asyncio.Event()
        self._applied_event = asyncio.Event()
        self.applied: Desired | None = None
        self.errors: dict[str, str] = {}  # router netns -> why its apply failed
        self._served: set[int] = set()
        self._reported: dict[str, tuple[bool, str]] = {}

    # -- watching -------------------------------------------------------------------------------

    async def run(self) -> None:
        watches = [
            self._watch("networks", GROUP_VERSION, "networks"),
            self._watch("ipallocations", GROUP_VERSION, "ipallocations"),
            self._watch("namespaces", "v1", "namespaces"),
            self._watch("services", "v1", "services"),
            self._watch("endpoints", "v1", "endpoints"),
            self._watch("pods", "v1", "pods", f"spec.nodeName={self.node}"),
            self._watch("nodes", "v1", "nodes"),
            self._watch("networkpolicies", NETWORKING, "networkpolicies"),
            self._watch("ingresses", NETWORKING, "ingresses"),
            self._watch("ingressclasses", NETWORKING, "ingressclasses"),
        ]
        tasks = [asyncio.create_task(w) for w in watches]
        try:
            await self._reconcile()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._converge_once_more()
            if self.dns is not None:
                for nid in list(self._served):
                    await self.dns.stop_network(str(nid))
            if self.ingress is not None:
                await self.ingress.close()

    @staticmethod
    def _key(obj: Obj) -> str:
        meta = metadata(obj)
        return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta.get("name"))

    async def _watch(self, kind: str, api_version: str, plural: str, field_selector: str = "") -> None:
        store = self.objs[kind]
        async for ev in self.client.informer(api_version, plural, field_selector=field_selector):
            if ev.type == "SYNC":
                store.clear()
                store.update({self._key(o): o for o in ev.object.get("items") or []})
                self._synced.add(kind)
            elif ev.type == "DELETED":
                store.pop(self._key(ev.object), None)
            else:
                key = self._key(ev.object)
                before = store.get(key)
                store[key] = ev.object
                heartbeat = kind == "nodes" and before is not None
                if heartbeat and underlay_address(before) == underlay_address(ev.object):
                    continue  # only a node's underlay address matters here
            self._dirty.set()

    # -- reconciling ----------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(DEBOUNCE)
            self._dirty.clear()
            if len(self._synced) < len(KINDS):
                continue  # a partial view would delete the routers and taps of pods not yet seen
            try:
                await self._apply(build_state(self.objs, self.node, await self._mtu()))
            except Exception:  # never let one bad round end the node's networking
                log.exception("tenant networks: reconciling failed; retrying in %.0f s", RETRY)
                asyncio.get_running_loop().call_later(RETRY, self._dirty.set)

    async def _mtu(self) -> int:
        """Of bridges, taps and guests: as configured, else the MTU of the link holding this node's
        underlay address less the VXLAN overhead."""
        if self.mtu is not None:
            return self.mtu
        local = underlay_address(self.objs["nodes"].get(self.node))
        if local is not None and local not in self._underlay_mtu:
            found = await asyncio.to_thread(self.host.underlay_mtu, local)
            if found is not None:
                self._underlay_mtu[local] = found
        if local is None:
            return 1500  # no underlay address: no overlay either
        return self._underlay_mtu.get(local, 1500) - VXLAN_OVERHEAD

    async def _converge_once_more(self) -> None:
        """On the way out, apply what the last changes asked for (a network whose last pod left
        within the debounce): stopping the agent must not leave a router namespace behind."""
        if not self._dirty.is_set() or len(self._synced) < len(KINDS):
            return
        try:
            desired = build_state(self.objs, self.node, await self._mtu())
            await asyncio.to_thread(self.host.apply, desired.state)
        except Exception as e:  # best effort: the next start converges anyway
            log.warning("tenant networks: last apply before stopping failed: %s", e)

    async def _apply(self, desired: Desired) -> None:
        for why in desired.skipped:
            log.warning("tenant networks: left out %s", why)
        unchanged = self.applied is not None and self.applied.state == desired.state
        if not unchanged or self.errors:
            errors: dict[str, str] = {}
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.host.apply, desired.state)
            except NetworkApplyError as e:
                errors = {k: f"{type(v).__name__}: {v}" for k, v in e.errors.items()}
            except (ValueError, OSError, RuntimeError) as e:
                errors = {"*": f"{type(e).__name__}: {e}"}
            self.errors = errors
            if errors:
                log.warning("tenant networks: %s", "; ".join(f"{k}: {v}" for k, v in errors.items()))
                asyncio.get_running_loop().call_later(RETRY, self._dirty.set)
            log.debug(
                "tenant networks: applied %d networks in %.0f ms",
                len(desired.state.networks),
                (time.monotonic() - started) * 1000,
            )
        self.applied = desired
        await self._serve_dns(desired)
        await self._serve_ingress(desired)
        await self._report(desired)
        self._applied_event.set()
        self._applied_event = asyncio.Event()

    def _failed(self, nid: int) -> str | None:
        return self.errors.get(self.host.router_netns(nid)) or self.errors.get("*")

    async def _serve_dns(self, desired: Desired) -> None:
        if self.dns is None:
            return
        for net in desired.state.networks:
            if self._failed(net.id):
                continue
            services, endpoints = desired.dns[net.id]
            try:
                self.dns.set_records(str(net.id), records_for(services, endpoints, DOMAIN))
                upstreams = spec_of(self.objs["networks"].get(desired.names[net.id])).get("dnsServers")
                await self.dns.serve_network(
                    str(net.id), self.host.router_netns(net.id), net.gateway, upstreams=upstreams or None
                )
                self._served.add(net.id)
            except (ValueError, OSError) as e:
                log.warning("tenant network %s: DNS: %s", desired.names[net.id], e)
        for nid in self._served - {n.id for n in desired.state.networks}:
            await self.dns.stop_network(str(nid))
            self._served.discard(nid)

    async def _serve_ingress(self, desired: Desired) -> None:
        """Each network's ingress listener with its routes, and this node's address and port in
        its Ingresses' status (status.loadBalancer.ingress, one entry per node serving it)."""
        if self.ingress is None:
            return
        for nid, (routes, ingresses) in desired.ingress.items():
            if self._failed(nid):
                continue
            try:
                port = await self.ingress.serve(nid, self.host.router_netns(nid), routes)
            except OSError as e:
                log.warning("tenant network %s: ingress port: %s", desired.names[nid], e)
                continue
            address = underlay_address(self.objs["nodes"].get(self.node))
            if address is not None:
                for ing in ingresses:
                    await self._ingress_status(ing, address, port)
        for nid in self.ingress.networks - set(desired.ingress):
            await self.ingress.stop(nid)

    async def _ingress_status(self, ing: Obj, address: str, port: int) -> None:
        status = ing.get("status") or {}
        entries = [
            e for e in (status.get("loadBalancer") or {}).get("ingress") or [] if e.get("ip") != address
        ]
        mine = {"ip": address, "ports": [{"port": port, "protocol": "TCP"}]}
        want = sorted([*entries, mine], key=lambda e: str(e.get("ip")))
        if want == (status.get("loadBalancer") or {}).get("ingress"):
            return
        body = {**ing, "status": {**status, "loadBalancer": {"ingress": want}}}
        try:  # conditional on the resourceVersion: a conflict is retried from the next event
            self.objs["ingresses"][self._key(ing)] = await self.client.replace(
                NETWORKING, "ingresses", body, subresource="status"
            )
        except (ApiException, OSError) as e:
            log.info("ingress %s: status: %s", self._key(ing), e)

    async def _report(self, desired: Desired) -> None:
        """Each network's `status.hosts` entry for this node: built, or why not."""
        for net in desired.state.networks:
            name = desired.names[net.id]
            failed = self._failed(net.id)
            entry = (failed is None, failed or "")
            if self._reported.get(name) == entry:
                continue
            host: Obj = {
                "node": self.node,
                "ready": entry[0],
                "lastUpdateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            if failed:
                host["message"] = failed[:1024]
            try:
                await self.client.patch(
                    GROUP_VERSION,
                    "networks",
                    name,
                    {"status": {"hosts": [host]}},
                    subresource="status",
                    content_type="application/strategic-merge-patch+json",
                )
                self._reported[name] = entry
            except (ApiException, OSError) as e:
                log.warning("tenant network %s: status: %s", name, e)
        for name in set(self._reported) - set(desired.names.values()):
            del self._reported[name]

    # -- pods -----------------------------------------------------------------------------------

    def _placed(self, ifname: str) -> Network | None:
        if self.applied is None:
            return None
        for net in self.applied.state.networks:
            if any(p.ifname == ifname for p in net.pods) and not self._failed(net.id):
                return net
        return None

    async def attach(self, pod: Obj) -> NetworkConfig:
        """The pod's guest network, with its tap opened (the caller owns `tap_fd`)."""
        addr = pod_address(pod)
        if addr is None:
            raise NetworkNotReady("waiting for the pod's address from the network controller")
        ifname = tap_name(str(metadata(pod).get("uid")))
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while (net := self._placed(ifname)) is None:
            waiter = self._applied_event
            self._dirty.set()
            left = deadline - time.monotonic()
            if left <= 0:
                why = self._why_not(pod, addr)
                raise NetworkNotReady(f"network {addr.network} is not set up on this node: {why}")
            await wait_event(waiter, min(left, 1.0))
        upstreams = [str(s) for s in spec_of(self.objs["networks"].get(addr.network)).get("dnsServers") or []]
        servers, searches, options = guest_dns(pod, net.gateway, upstreams)
        config = NetworkConfig(
            mac=addr.mac,
            addresses=(f"{addr.ip}/{net.prefixlen}",),
            gateway=net.gateway,
            mtu=net.mtu,
            dns_servers=servers,
            dns_search=searches,
            dns_options=options,
            hosts=guest_hosts(pod, addr.ip),
        )
        return replace(config, tap_fd=await self._open_tap(net, ifname, addr))

    async def connect(
        self, pod: Obj, port: int, timeout: float = CONNECT_TIMEOUT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to the pod's `port` (for port-forward), made from its network's router
        namespace as the kubelet enters a pod's network namespace: the socket is created in the
        namespace and keeps it, so the connection leaves from the pod's own L2 network."""
        addr = pod_address(pod)
        net = self._placed(tap_name(str(metadata(pod).get("uid")))) if addr is not None else None
        if addr is None or net is None:
            raise NetworkNotReady("the pod has no network on this node")
        router = self.host.router_netns(net.id)

        def open_socket() -> socket.socket:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

        sock = await asyncio.to_thread(run_in_netns, router, open_socket)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (addr.ip, port)), timeout)
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise

    async def _open_tap(self, net: Network, ifname: str, addr: PodAddress) -> int:
        """create_tap in a thread; if our caller is cancelled meanwhile, the fd the thread still
        returns is closed, so no tap outlives a pod worker that gave up on it."""
        opening = asyncio.ensure_future(asyncio.to_thread(self.host.create_tap, net, ifname, addr.mac))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_result)
            raise
        except RuntimeError as e:  # the router went away meanwhile (its network deleted)
            raise NetworkNotReady(f"network {addr.network}: {e}") from e

    def _why_not(self, pod: Obj, addr: PodAddress) -> str:
        if len(self._synced) < len(KINDS):
            return "the node has not yet read the cluster's networks"
        what = f"pod {metadata(pod).get('namespace')}/{metadata(pod).get('name')}"
        for why in self.applied.skipped if self.applied is not None else []:
            if why.startswith(what):
                return why
        net = self.objs["networks"].get(addr.network)
        nid = network_id(net) if net is not None else None
        if nid is not None and (failed := self._failed(nid)):
            return failed
        return "the pod is not yet in this node's view of the cluster"


def _close_result(task: asyncio.Future[int]) -> None:
    if not task.cancelled() and task.exception() is None:
        with contextlib.suppress(OSError):
            os.close(task.result())
