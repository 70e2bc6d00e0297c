"""The declarative reconciler for one host's tenant networks.

`TenantNetworkHost.apply(desired)` makes the host match `desired` and removes everything of its
prefix that is not in it, so agent restart, pod churn, network deletion and a host reboot (all
namespaces gone) are the same code path. Pods' ports are the one thing it never creates: a tap
must be opened for the VM that reads it (`create_tap`), so apply only keeps the listed ones and
deletes the rest.

All calls block (netlink, nft subprocesses); from asyncio code run them in a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import struct
import threading
from collections.abc import Sequence

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.conntrack import Conntrack, NFCTAttrTuple  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from hypernetes.network import netns, nft
from hypernetes.network.state import (
    BRIDGE,
    DEFAULT_LINK_POOL,
    RESERVED_IFNAMES,
    UPLINK,
    VXLAN,
    VXLAN_PORT,
    LinkAddresses,
    Network,
    NetworkState,
    Overlay,
    link_addresses,
    router_mac,
    validate,
    validate_ifname,
    validate_mac,
    validate_prefix,
)

_IPS_DST_NAT = 1 << 5  # conntrack status bit: the flow was DNAT'd
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_NTF_SELF, _NTF_MASTER = 0x02, 0x04
_NUD_NOARP, _NUD_PERMANENT = 0x40, 0x80
_AF_BRIDGE = 7
_RTPROT_STATIC = 4


class NoBridgeError(RuntimeError):
    """`open_tap` found no bridge of that name in its namespace (the tap is closed again)."""


class NetworkApplyError(RuntimeError):
    """Some networks could not be brought to the desired state; the others were."""

    def __init__(self, errors: dict[str, BaseException]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{what}: {type(err).__name__}: {err}" for what, err in errors.items()))


def _lookup(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _delete(ipr: IPRoute, index: int) -> None:
    """Delete a link that may vanish meanwhile: deleting a veth takes its peer with it, and a
    namespace deleted by hand tears its links down asynchronously."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def _set_addresses(ipr: IPRoute, index: int, wanted: set[tuple[str, int]]) -> None:
    """Exactly these IPv4 addresses on the link: missing ones added, any other removed."""
    have = {(a.get("address"), int(a["prefixlen"])) for a in ipr.get_addr(index=index, family=2)}
    for address, plen in have - wanted:
        ipr.addr("del", index=index, address=address, prefixlen=plen)
    for address, plen in wanted - have:
        ipr.addr("add", index=index, address=address, prefixlen=plen)


class TenantNetworkHost:
    """Host plumbing for tenant networks, confined to names starting with `prefix`.

    host_netns: the namespace that plays the host (None: the one this process runs in; tests
    pass one they made). management: CIDRs that pods must never reach, even with egress on
    (the hosts' own network, the API servers).
    """

    def __init__(
        self,
        host_netns: str | None,
        prefix: str,
        *,
        link_pool: str = DEFAULT_LINK_POOL,
        management: Sequence[str] = (),
    ) -> None:
        validate_prefix(prefix)
        self.host_netns = host_netns
        self.prefix = prefix
        self.link_pool = link_pool
        self.management = tuple(management)
        self._name_re = re.compile(rf"^{re.escape(prefix)}-(\d+)$")
        self._lock = threading.Lock()

    # -- names ---------------------------------------------------------------------------

    def router_netns(self, network_id: int) -> str:
        """The namespace holding the network's bridge, gateway, services and DNS."""
        return f"{self.prefix}-{network_id}"

    def host_ifname(self, network_id: int) -> str:
        """The host end of the router's veth pair."""
        return f"{self.prefix}-{network_id}"

    def link(self, network_id: int) -> LinkAddresses:
        return link_addresses(self.link_pool, network_id)

    def _ours(self, name: str) -> bool:
        return self._name_re.match(name) is not None

    # -- apply ---------------------------------------------------------------------------

    def apply(self, desired: NetworkState) -> None:
        validate(desired, self.prefix, self.link_pool)
        with self._lock:
            self._apply(desired)

    def _apply(self, desired: NetworkState) -> None:
        names = {self.router_netns(n.id) for n in desired.networks}
        errors: dict[str, BaseException] = {}
        # Stale networks go first, so that the host ruleset never stops covering a live router.
        netns.run_in_netns(self.host_netns, lambda: self._remove_host_links(names))
        for ns in netns.list_netns():
            if self._ours(ns) and ns not in names:
                try:
                    netns.delete(ns)
                except netns.NetnsError as exc:
                    errors[ns] = exc
        links = {self.host_ifname(n.id): self.link(n.id) for n in desired.networks}
        if desired.networks:
            nft.apply(
                nft.host_ruleset(self.prefix, links, desired.networks, self.management), self.host_netns
            )
        else:
            nft.apply(nft.delete_tables([nft.host_table(self.prefix)]), self.host_netns)
            if errors:
                raise NetworkApplyError(errors)
            return
        for net in desired.networks:
            try:
                self._apply_router(net)
            except Exception as exc:
                errors[self.router_netns(net.id)] = exc
        netns.run_in_netns(self.host_netns, lambda: self._host_links(desired.networks))
        if errors:
            raise NetworkApplyError(errors) from next(iter(errors.values()))

    def _remove_host_links(self, keep: set[str]) -> None:
        with IPRoute() as ipr:
            for link in ipr.get_links():
                name = link.get("ifname")
                if self._ours(name) and name not in keep:
                    _delete(ipr, link["index"])

    def _apply_router(self, net: Network) -> None:
        ns = self.router_netns(net.id)
        link = self.link(net.id)
        netns.create(ns)
        netns.run_in_netns(ns, lambda: _router_sysctls(bool(net.policies)))
        # Rules before links: a port is filtered from the moment it exists.
        nft.apply(nft.router_ruleset(net, link), ns)
        netns.run_in_netns(ns, lambda: _forget_stale_udp(net, link))
        if not netns.run_in_netns(ns, lambda: _lookup_once(UPLINK) is not None):
            # A veth end left on the host (its namespace deleted while a tap kept it alive) would
            # block re-creating the pair.
            netns.run_in_netns(self.host_netns, lambda: _delete_link(self.host_ifname(net.id)))
        host_fd = netns.open_netns(self.host_netns)
        try:
            netns.run_in_netns(ns, lambda: self._router_links(net, link, host_fd))
        finally:
            os.close(host_fd)
        ov = net.overlay
        if ov is None:  # on this host alone (again): no VXLAN port, no routes to other routers
            netns.run_in_netns(ns, lambda: _delete_link(VXLAN))
            netns.run_in_netns(ns, lambda: _program_peers(()))
            return
        if not netns.run_in_netns(ns, lambda: _vxlan_matches(net.id, ov.local)):
            netns.run_in_netns(ns, lambda: _delete_link(VXLAN))
            router_fd = netns.open_netns(ns)
            try:
                netns.run_in_netns(self.host_netns, lambda: _create_vxlan(net.id, ov.local, router_fd))
            finally:
                os.close(router_fd)
        netns.run_in_netns(ns, lambda: _program_overlay(net, ov))

    def _router_links(self, net: Network, link: LinkAddresses, host_fd: int) -> None:
        with IPRoute() as ipr:
            ipr.link("set", index=_lookup(ipr, "lo"), state="up")
            br = _lookup(ipr, BRIDGE)
            if br is None:
                ipr.link("add", ifname=BRIDGE, kind="bridge", address=net.gateway_mac, mtu=net.mtu)
                br = _lookup(ipr, BRIDGE)
            ipr.link("set", index=br, address=net.gateway_mac, mtu=net.mtu, state="up")
            assert br is not None
            netns.write_sysctl(f"net/ipv4/conf/{BRIDGE}/send_redirects", "0")
            _set_addresses(ipr, br, {(net.gateway, net.prefixlen), (net.snat_ip, net.prefixlen)})
            up = _lookup(ipr, UPLINK)
            if up is None:
                ipr.link(
                    "add",
                    ifname=UPLINK,
                    kind="veth",
                    peer={"ifname": self.host_ifname(net.id), "net_ns_fd": host_fd},
                )
                up = _lookup(ipr, UPLINK)
            assert up is not None
            ipr.link("set", index=up, mtu=net.mtu, state="up")
            _set_addresses(ipr, up, {(link.router, link.prefixlen)})
            ipr.route("replace", dst="0.0.0.0/0", gateway=link.host, oif=up)
            # Ports: keep the desired ones on the bridge, delete everything else.
            wanted = {p.ifname for p in net.pods}
            for dev in ipr.get_links():
                name = dev.get("ifname")
                if name in RESERVED_IFNAMES:
                    continue
                if name not in wanted:
                    _delete(ipr, dev["index"])
                elif dev.get("master") != br:
                    ipr.link("set", index=dev["index"], master=br, mtu=net.mtu, state="up")

    def _host_links(self, nets: Sequence[Network]) -> None:
        netns.write_sysctl("net/ipv4/ip_forward", "1")
        with IPRoute() as ipr:
            for net in nets:
                name = self.host_ifname(net.id)
                index = _lookup(ipr, name)
                if index is None:
                    continue  # its router failed; reported there
                link = self.link(net.id)
                netns.write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1", optional=True)
                ipr.link("set", index=index, mtu=net.mtu, state="up")
                _set_addresses(ipr, index, {(link.host, link.prefixlen)})

    def underlay_mtu(self, address: str) -> int | None:
        """The MTU of the host's link holding `address` (None if no link has it)."""

        def find() -> int | None:
            with IPRoute() as ipr:
                for a in ipr.get_addr(family=socket.AF_INET):
                    if a.get_attr("IFA_ADDRESS") == address:
                        return int(ipr.get_links(a["index"])[0].get_attr("IFLA_MTU"))
            return None

        return netns.run_in_netns(self.host_netns, find)

    # -- ports -----------------------------------------------------------------------------

    def create_tap(self, network: Network, name: str, mac: str, *, vnet_hdr: bool = True) -> int:
        """Open a tap named `name` for a guest NIC with MAC `mac` on the network's bridge; return its fd.

        The tap lives in the router namespace but the fd works from anywhere: give it to QEMU
        (`-netdev tap,fd=N`, passing the fd; it is close-on-exec). The tap disappears when the
        last fd on it closes. The pod must be in the state given to `apply` (or apply deletes the
        port), with this name and MAC: the anti-spoofing rules are keyed on them.
        """
        validate_ifname(name)
        validate_mac(mac)

        def body() -> int:
            try:
                return open_tap(name, mac, network.mtu, BRIDGE, vnet_hdr=vnet_hdr)
            except NoBridgeError:
                raise RuntimeError(f"network {network.id} is not set up on this host") from None

        with self._lock:
            return netns.run_in_netns(self.router_netns(network.id), body)

    def attach_veth(
        self,
        network: Network,
        name: str,
        mac: str,
        peer_netns: str,
        *,
        ip: str | None = None,
        peer_ifname: str = "eth0",
    ) -> None:
        """Put a veth port `name` on the bridge whose other end, `peer_ifname` with MAC `mac`,
        is in `peer_netns`, and (with `ip`) give that end the pod's address and a default route
        via the gateway. For sandboxes that take a namespace rather than a tap (gVisor), and
        for tests that play pods without VMs."""
        validate_ifname(name)
        validate_mac(mac)

        def router_side(peer_fd: int) -> None:
            with IPRoute() as ipr:
                br = _lookup(ipr, BRIDGE)
                if br is None:
                    raise RuntimeError(f"network {network.id} is not set up on this host")
                old = _lookup(ipr, name)
                if old is not None:
                    _delete(ipr, old)
                ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer_ifname, "net_ns_fd": peer_fd})
                ipr.link("set", index=_lookup(ipr, name), master=br, mtu=network.mtu, state="up")

        def pod_side() -> None:
            with IPRoute() as ipr:
                ipr.link("set", index=_lookup(ipr, "lo"), state="up")
                index = _lookup(ipr, peer_ifname)
                ipr.link("set", index=index, address=mac, mtu=network.mtu, state="up")
                if ip is not None:
                    ipr.addr("add", index=index, address=ip, prefixlen=network.prefixlen)
                    ipr.route("replace", dst="0.0.0.0/0", gateway=network.gateway, oif=index)

        with self._lock:
            peer_fd = netns.open_netns(peer_netns)
            try:
                netns.run_in_netns(self.router_netns(network.id), lambda: router_side(peer_fd))
            finally:
                os.close(peer_fd)
            netns.run_in_netns(peer_netns, pod_side)

    def remove_port(self, network_id: int, name: str) -> None:
        """Delete a pod's port (a tap still open by a VM, a veth with its peer); no-op if gone."""
        ns = self.router_netns(network_id)
        with self._lock:
            if netns.exists(ns):
                netns.run_in_netns(ns, lambda: _delete_link(name))


def open_tap(name: str, mac: str, mtu: int, bridge: str, *, vnet_hdr: bool = True) -> int:
    """Open a tap `name` (IFF_TAP | IFF_NO_PI, with IFF_VNET_HDR unless told not to) in the calling
    thread's namespace for a guest whose NIC has `mac`, put it up on `bridge` with `mtu` and
    return its fd.

    The tap itself gets `tap_mac(mac)`, never the guest's MAC: a bridge takes its ports' own
    addresses as local and would deliver frames for the guest to itself instead of out of the
    tap (only the gateway could then reach the VM). Anti-spoofing matches the frames' source MAC
    and the port's name, not the tap's address.

    A tap is created in the namespace of its opener: call this inside `netns.run_in_netns`. The
    fd then works from anywhere, and the tap disappears when the last fd on it closes.
    """
    flags = _IFF_TAP | _IFF_NO_PI | (_IFF_VNET_HDR if vnet_hdr else 0)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        with IPRoute() as ipr:
            br = _lookup(ipr, bridge)
            if br is None:
                raise NoBridgeError(f"no bridge {bridge} in this namespace")
            index = _lookup(ipr, name)
            ipr.link("set", index=index, address=tap_mac(mac), mtu=mtu)
            ipr.link("set", index=index, master=br, state="up")
    except BaseException:
        os.close(fd)
        raise
    return fd


def tap_mac(guest_mac: str) -> str:
    """The host end's MAC for a guest's: `fe` for the first byte, as libvirt does (locally
    administered, unicast, and sorting after every `02:` guest MAC)."""
    return "fe" + guest_mac[2:]


def _router_sysctls(policies: bool) -> None:
    netns.write_sysctl("net/ipv4/ip_forward", "1")
    # Tenant networks are IPv4 only: no IPv6 addresses on the router for pods to talk to.
    for scope in ("all", "default"):
        netns.write_sysctl(f"net/ipv6/conf/{scope}/disable_ipv6", "1", optional=True)
    # Service traffic is routed back out of the bridge it came in on; no ICMP redirects for that
    # (they would also eat the ICMP rate limit meant for "port unreachable").
    for scope in ("all", "default"):
        netns.write_sysctl(f"net/ipv4/conf/{scope}/send_redirects", "0")
    # Bridged frames go through the inet hooks only in a network with NetworkPolicies: its router
    # then filters pod-to-pod traffic too, with connection tracking (which the bridge family lacks
    # on kernels without nf_conntrack_bridge); otherwise the bridge family's own rules check them.
    netns.write_sysctl("net/bridge/bridge-nf-call-iptables", "1" if policies else "0", optional=True)
    for table in ("ip6tables", "arptables"):
        netns.write_sysctl(f"net/bridge/bridge-nf-call-{table}", "0", optional=True)


def _forget_stale_udp(net: Network, link: LinkAddresses) -> None:
    """Delete UDP flows DNAT'd to a backend that is no longer an endpoint of that service port.

    New rules only steer new flows; a UDP client reusing its source port (a resolver, a game)
    would otherwise keep talking to a gone endpoint until the conntrack entry times out. TCP flows
    end on their own (kube-proxy does the same). Stateless, so an agent restart loses nothing.
    """
    backends: dict[tuple[str, int], set[tuple[str, int]]] = {}
    for svc in net.services:
        if svc.cluster_ip is None:
            continue
        for sp in svc.ports:
            if sp.protocol != "UDP":
                continue
            eps = {(ep.ip, ep.port) for ep in sp.endpoints}
            backends[(svc.cluster_ip, sp.port)] = eps
            if sp.node_port:
                backends[(link.router, sp.node_port)] = eps
    # pyroute2's sync Conntrack closes its event loop after each call: one socket per call.
    with Conntrack() as ct:
        entries = list(ct.dump_entries(tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP)))
    for entry in entries:
        if not entry.status & _IPS_DST_NAT:
            continue
        orig, reply = entry.tuple_orig, entry.tuple_reply
        if (reply.saddr, reply.sport) in backends.get((orig.daddr, orig.dport), set()):
            continue
        try:
            with Conntrack() as ct:
                ct.delete(entry)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:  # expired meanwhile
                raise


def _vxlan_matches(vni: int, local: str) -> bool:
    with IPRoute() as ipr:
        index = _lookup(ipr, VXLAN)
        if index is None:
            return False
        data = ipr.get_links(index)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        return data is not None and data.get("IFLA_VXLAN_ID") == vni and data.get("IFLA_VXLAN_LOCAL") == local


def _create_vxlan(vni: int, local: str, router_fd: int) -> None:
    """Called in the host's namespace: the device goes straight into the router namespace, its UDP
    socket stays here, on the underlay. No learning (forwarding is programmed from the API), ARP
    answered by the device from its neighbour table (`proxy`, so ARP never crosses hosts), and no
    default (all-zeros) forwarding entry, so unknown and broadcast frames are never sent."""
    with IPRoute() as ipr:
        ipr.link(
            "add",
            ifname=VXLAN,
            kind="vxlan",
            vxlan_id=vni,
            vxlan_local=local,
            vxlan_port=VXLAN_PORT,
            vxlan_learning=0,
            vxlan_proxy=1,
            vxlan_ttl=64,
            net_ns_fd=router_fd,
        )


def _fdb(ipr: IPRoute, index: int, flags: int) -> dict[str, str | None]:
    """The link's static forwarding entries of one kind (self: the VXLAN's own, mac → remote
    address; master: the bridge's, mac → this port)."""
    out: dict[str, str | None] = {}
    for e in ipr.get_neighbours(family=_AF_BRIDGE, ifindex=index):
        # the bridge reports its entries without NTF_MASTER but with NDA_MASTER
        kind = _NTF_SELF if e["flags"] & _NTF_SELF else _NTF_MASTER if e.get_attr("NDA_MASTER") else 0
        if e["ifindex"] != index or kind != flags or not e["state"] & (_NUD_NOARP | _NUD_PERMANENT):
            continue
        if flags == _NTF_MASTER and e["state"] & _NUD_PERMANENT:
            continue  # the port's own address, the bridge's to keep
        out[str(e.get_attr("NDA_LLADDR"))] = e.get_attr("NDA_DST")
    return out


def _program_overlay(net: Network, ov: Overlay) -> None:
    """Called in the router namespace: make the VXLAN port's forwarding entries, its ARP answers and
    the routes to the other hosts' routers exactly what `ov` says (l2population, programmed)."""
    wanted = {p.mac: p.host for p in ov.remote_pods} | {router_mac(h): h for h in ov.peers}
    arp = {p.ip: p.mac for p in ov.remote_pods}
    with IPRoute() as ipr:
        br, vx = _lookup(ipr, BRIDGE), _lookup(ipr, VXLAN)
        assert br is not None and vx is not None
        # learning off before the port is up: a learnt entry would block the static one
        ipr.link("set", index=vx, master=br, mtu=net.mtu)
        ipr.brport("set", index=vx, learning=0)
        ipr.link("set", index=vx, state="up")
        have = _fdb(ipr, vx, _NTF_SELF)
        for mac, dst in have.items():
            if wanted.get(mac) != dst:
                ipr.fdb("del", ifindex=vx, lladdr=mac, dst=dst, flags=_NTF_SELF)
        for mac, dst in wanted.items():
            if have.get(mac) != dst:
                ipr.fdb("replace", ifindex=vx, lladdr=mac, dst=dst, flags=_NTF_SELF, state=_NUD_PERMANENT)
        # the bridge's own entries, so it never floods a remote pod's frames to local ports
        have_master = _fdb(ipr, vx, _NTF_MASTER)
        for mac in set(have_master) - set(wanted):
            ipr.fdb("del", ifindex=vx, lladdr=mac, flags=_NTF_MASTER)
        for mac in set(wanted) - set(have_master):  # replace: over an entry learnt meanwhile, too
            ipr.fdb("replace", ifindex=vx, lladdr=mac, flags=_NTF_MASTER, state=_NUD_NOARP)
        _set_neighbours(ipr, vx, arp)
    _program_peers(ov.peers)


def _program_peers(peers: Sequence[str]) -> None:
    """Called in the router namespace: the other hosts' SNAT addresses (their underlay addresses)
    on the segment, at their routers' MACs: a route and a permanent neighbour entry each."""
    with IPRoute() as ipr:
        br = _lookup(ipr, BRIDGE)
        if br is None:
            return
        _set_neighbours(ipr, br, {h: router_mac(h) for h in peers})
        have_routes = {
            r.get_attr("RTA_DST")
            for r in ipr.get_routes(family=socket.AF_INET, oif=br)
            if r["dst_len"] == 32 and r["proto"] == _RTPROT_STATIC  # ours: the kernel's are proto kernel
        }
        for h in have_routes - set(peers):
            ipr.route("del", dst=f"{h}/32", oif=br)
        for h in set(peers) - have_routes:
            ipr.route("replace", dst=f"{h}/32", oif=br, proto=_RTPROT_STATIC)


def _set_neighbours(ipr: IPRoute, index: int, wanted: dict[str, str]) -> None:
    """Exactly these permanent IPv4 neighbours on the link (ip → mac); dynamic ones left alone."""
    have = {
        str(n.get_attr("NDA_DST")): str(n.get_attr("NDA_LLADDR"))
        for n in ipr.get_neighbours(family=socket.AF_INET, ifindex=index)
        if n["ifindex"] == index and n["state"] & _NUD_PERMANENT
    }
    for ip, mac in have.items():
        if wanted.get(ip) != mac:
            ipr.neigh("del", dst=ip, ifindex=index)
    for ip, mac in wanted.items():
        if have.get(ip) != mac:
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state=_NUD_PERMANENT)


def _lookup_once(ifname: str) -> int | None:
    with IPRoute() as ipr:
        return _lookup(ipr, ifname)


def _delete_link(ifname: str) -> None:
    with IPRoute() as ipr:
        index = _lookup(ipr, ifname)
        if index is not None:
            _delete(ipr, index)
