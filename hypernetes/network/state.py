"""The desired state of one host's tenant networks, as plain frozen dataclasses.

The caller (the node agent) builds a `NetworkState` from API objects: it maps tenants to networks,
takes pod addresses from IPAM and resolves named target ports. Nothing here knows tenants or
allocates addresses; `validate` only refuses states the plumbing could not realise safely.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from hypernetes.network.policy import PodPolicy

Protocol = Literal["TCP", "UDP"]

IFNAMSIZ = 15  # usable characters of a Linux interface name (16 with the NUL)
BRIDGE = "br0"  # inside a router namespace, which is ours alone, fixed names are safe
UPLINK = "uplink"  # router end of the veth pair to the host
VXLAN = "vxlan0"  # the network's VXLAN port on the bridge (its UDP socket lives in the host's namespace)
RESERVED_IFNAMES = frozenset({"lo", BRIDGE, UPLINK, VXLAN})
VXLAN_PORT = 4789  # IANA
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
# The default pool stays below 169.254.128.0 so that 169.254.169.254 (cloud metadata) is never
# routed to a router: 8192 networks per host, one /30 each.
DEFAULT_LINK_POOL = "169.254.0.0/17"

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$")
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


@dataclass(frozen=True)
class Endpoint:
    """A ready endpoint: the pod IP and the resolved (possibly named) target port."""

    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    protocol: Protocol
    port: int
    endpoints: tuple[Endpoint, ...] = ()  # ready ones only; empty → clients are refused
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    name: str  # shown in nft comments only ("namespace/name")
    cluster_ip: str | None  # None: headless, no load balancing at all
    ports: tuple[ServicePort, ...] = ()


@dataclass(frozen=True)
class Pod:
    """One bridge port: a VM's tap (or a test/gVisor veth) named `ifname` in the router netns."""

    ifname: str
    mac: str
    ip: str


@dataclass(frozen=True)
class RemotePod:
    """A pod of the network on another host: its frames go to `host`, that host's underlay address."""

    mac: str
    ip: str
    host: str


@dataclass(frozen=True)
class Overlay:
    """The network as one L2 segment across hosts over VXLAN (VNI = the network's id).

    local: this host's underlay address. It is also the source address of the service traffic
    this host's router sends onto the segment (the hairpin SNAT): unique per host, so an endpoint
    on another host answers this host's router, not its own (every host has the gateway's address
    and MAC). peers: the underlay addresses of the other hosts of the network, the only ones it
    accepts VXLAN from. remote_pods: forwarding and ARP entries, programmed, never learnt."""

    local: str
    peers: tuple[str, ...] = ()
    remote_pods: tuple[RemotePod, ...] = ()


def router_mac(underlay: str) -> str:
    """The MAC this host's router uses on a segment (frames it sends over VXLAN, the address other
    hosts reach its SNAT address at): from the host's underlay address, so every host agrees."""
    b = ipaddress.IPv4Address(underlay).packed
    return "06:68:" + ":".join(f"{x:02x}" for x in b)


@dataclass(frozen=True)
class Network:
    id: int  # small integer chosen by the controllers; names and link addresses derive from it
    cidr: str
    gateway: str
    mtu: int = 1500
    egress: bool = True  # pods may reach the world through NAT
    # Source address for service traffic sent back onto the bridge (the hairpin SNAT). None uses
    # the gateway, which is right while the network lives on one host; see docs/network.md.
    service_ip: str | None = None
    pods: tuple[Pod, ...] = ()
    services: tuple[Service, ...] = ()
    overlay: Overlay | None = None  # None: the network lives on this host alone
    # NetworkPolicy: every isolated pod of the network (local and remote), see network/policy.py
    policies: tuple[PodPolicy, ...] = ()

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.cidr).prefixlen

    @property
    def snat_ip(self) -> str:
        """The router's own address on the bridge besides the gateway."""
        return self.service_ip or self.gateway

    @property
    def hairpin_ip(self) -> str:
        """The source of service traffic the router sends onto the segment: with an overlay, this
        host's underlay address (see Overlay), else `snat_ip`."""
        return self.overlay.local if self.overlay is not None else self.snat_ip

    @property
    def gateway_mac(self) -> str:
        """Fixed, so the gateway's MAC does not change as ports come and go (a bridge otherwise
        takes the lowest port MAC); the same on every host, as a distributed gateway needs."""
        i = self.id
        return f"02:68:6e:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


@dataclass(frozen=True)
class NetworkState:
    networks: tuple[Network, ...] = ()

    def network(self, network_id: int) -> Network:
        for net in self.networks:
            if net.id == network_id:
                return net
        raise KeyError(network_id)


@dataclass(frozen=True)
class LinkAddresses:
    """The /30 joining a router namespace to the host: .1 on the host, .2 in the router."""

    host: str
    router: str
    prefixlen: int = field(default=30)


def validate_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"network prefix {prefix!r}: 1-10 of [a-z0-9], starting with a letter")


def link_pool_size(pool: str) -> int:
    return ipaddress.IPv4Network(pool).num_addresses // 4


def link_addresses(pool: str, network_id: int) -> LinkAddresses:
    """Deterministic from the id, so a restarted agent or a rebooted host finds the same ones."""
    net = ipaddress.IPv4Network(pool)
    if not 0 <= network_id < link_pool_size(pool):
        raise ValueError(f"network id {network_id} outside the link pool {pool}")
    base = net.network_address + 4 * network_id
    return LinkAddresses(host=str(base + 1), router=str(base + 2))


def validate_ifname(name: str) -> None:
    if not _IFNAME_RE.match(name) or name in RESERVED_IFNAMES:
        raise ValueError(f"bad interface name {name!r} (at most {IFNAMSIZ} of [A-Za-z0-9_.-], not reserved)")


def validate_mac(mac: str) -> None:
    if not _MAC_RE.match(mac):
        raise ValueError(f"bad MAC {mac!r} (lower-case aa:bb:cc:dd:ee:ff)")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise ValueError(f"MAC {mac} is multicast or zero")


def _host_in(cidr: ipaddress.IPv4Network, ip: str, what: str) -> ipaddress.IPv4Address:
    addr = ipaddress.IPv4Address(ip)
    if addr not in cidr or addr in (cidr.network_address, cidr.broadcast_address):
        raise ValueError(f"{what} {ip} is not a host address of {cidr}")
    return addr


def _unique(items: Iterable[object], what: str) -> None:
    seen: set[object] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"duplicate {what} {item}")
        seen.add(item)


def validate(state: NetworkState, prefix: str, pool: str) -> None:
    """Raise ValueError for anything the host could not realise exactly and safely."""
    validate_prefix(prefix)
    _unique((n.id for n in state.networks), "network id")
    node_ports: set[tuple[str, int]] = set()  # node ports are host-wide, across all networks
    for net in state.networks:
        link_addresses(pool, net.id)
        if len(f"{prefix}-{net.id}") > IFNAMSIZ:
            raise ValueError(f"prefix {prefix!r} and network id {net.id} make a name over {IFNAMSIZ} chars")
        cidr = ipaddress.IPv4Network(net.cidr)  # strict: host bits must be zero
        if cidr.prefixlen > 30:
            raise ValueError(f"network {net.id}: {cidr} is too small")
        if not 68 <= net.mtu <= 65535:
            raise ValueError(f"network {net.id}: MTU {net.mtu}")
        gw = _host_in(cidr, net.gateway, "gateway")
        snat = _host_in(cidr, net.snat_ip, "service_ip")
        _unique((p.ifname for p in net.pods), f"port name in network {net.id}")
        _unique((p.mac for p in net.pods), f"MAC in network {net.id}")
        _unique((p.ip for p in net.pods), f"pod IP in network {net.id}")
        for pod in net.pods:
            validate_ifname(pod.ifname)
            validate_mac(pod.mac)
            if pod.mac == net.gateway_mac:
                raise ValueError(f"pod {pod.ifname}: MAC {pod.mac} is the gateway's")
            if _host_in(cidr, pod.ip, f"pod {pod.ifname} IP") in (gw, snat):
                raise ValueError(f"pod {pod.ifname}: IP {pod.ip} is the router's")
        if net.overlay is not None:
            _validate_overlay(net, cidr)
        keys: list[tuple[str, str, int]] = []
        for svc in net.services:
            if svc.cluster_ip is None:
                continue  # headless: the endpoints are for DNS, nothing to plumb
            cip = ipaddress.IPv4Address(svc.cluster_ip)
            if cip in cidr:  # on-link addresses never reach the router
                raise ValueError(f"service {svc.name}: cluster IP {cip} inside {cidr}")
            for sp in svc.ports:
                if sp.protocol not in ("TCP", "UDP"):
                    raise ValueError(f"service {svc.name}: protocol {sp.protocol} not supported")
                if not 1 <= sp.port <= 65535:
                    raise ValueError(f"service {svc.name}: port {sp.port}")
                keys.append((svc.cluster_ip, sp.protocol, sp.port))
                for ep in sp.endpoints:
                    _host_in(cidr, ep.ip, f"service {svc.name} endpoint")
                    if not 1 <= ep.port <= 65535:
                        raise ValueError(f"service {svc.name}: endpoint port {ep.port}")
                if sp.node_port is not None:
                    if not 1 <= sp.node_port <= 65535:
                        raise ValueError(f"service {svc.name}: node port {sp.node_port}")
                    np = (sp.protocol, sp.node_port)
                    if np in node_ports:
                        raise ValueError(f"node port {sp.protocol}/{sp.node_port} used twice")
                    node_ports.add(np)
        _unique(keys, f"service address in network {net.id}")


def _validate_overlay(net: Network, cidr: ipaddress.IPv4Network) -> None:
    ov = net.overlay
    assert ov is not None
    hosts = [ipaddress.IPv4Address(ov.local), *(ipaddress.IPv4Address(p) for p in ov.peers)]
    _unique(hosts, f"underlay address in network {net.id}")
    for h in hosts:
        if h in cidr:  # the SNAT address and the routes to other hosts' routers would shadow pods
            raise ValueError(f"network {net.id}: underlay address {h} is inside {cidr}")
    if not 1 <= net.id < 1 << 24:
        raise ValueError(f"network {net.id}: not a VNI")
    local_macs = {p.mac for p in net.pods}
    local_ips = {p.ip for p in net.pods}
    _unique((p.mac for p in ov.remote_pods), f"remote MAC in network {net.id}")
    _unique((p.ip for p in ov.remote_pods), f"remote pod IP in network {net.id}")
    gw = ipaddress.IPv4Address(net.gateway)
    for rp in ov.remote_pods:
        validate_mac(rp.mac)
        if rp.mac in local_macs or rp.ip in local_ips or rp.mac == net.gateway_mac:
            raise ValueError(f"network {net.id}: remote pod {rp.ip}/{rp.mac} clashes with a local one")
        if _host_in(cidr, rp.ip, "remote pod IP") == gw or rp.host not in ov.peers:
            raise ValueError(f"network {net.id}: remote pod {rp.ip} on unknown host {rp.host}")
