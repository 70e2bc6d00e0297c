"""Tenant network host plumbing on real netlink and nftables, in namespaces the tests make.

Each test gets a fake host namespace wired to a "management" peer (10.99.0.0/24, must stay out of
reach of pods) and to a "world" peer (198.51.100.0/24, reachable only with egress on; it has no
route back, so reaching it proves the NAT). The library's router namespaces appear under a unique
prefix; pods are namespaces with a veth on the bridge (a tap needs a VM to read it; one test
drives a real tap through its fd). Teardown checks that nothing with the prefix is left.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest

from hypernetes.network import (
    Endpoint,
    Network,
    NetworkState,
    Pod,
    Service,
    ServicePort,
    TenantNetworkHost,
)
from hypernetes.network import nft as nftmod
from hypernetes.network.host import tap_mac
from hypernetes.network.state import DEFAULT_LINK_POOL, validate
from tests.support.netns import (
    NO_ANSWER,
    REFUSED,
    Namespaces,
    Responder,
    Sniffer,
    arp_frame,
    leftovers,
    mac_bytes,
    parse_arp_reply,
    ping,
    send_raw,
    sh,
    tcp_ask,
    udp_ask,
    udp_frame,
    unique_prefix,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network plumbing needs root")

HOST_MGMT, MGMT_PEER = "10.99.0.1", "10.99.0.2"
HOST_WAN, WORLD = "198.51.100.1", "198.51.100.2"
CIDR, GW = "10.1.0.0/24", "10.1.0.1"
WEB_IP = "10.96.0.10"


def pod(i: int, cidr_base: str = "10.1.0") -> Pod:
    # Every network uses the same MACs too: isolation must not depend on any address differing.
    return Pod(f"p{i}", f"02:00:00:00:00:{i:02x}", f"{cidr_base}.{i}")


def network(nid: int, *pods: Pod, cidr: str = CIDR, gateway: str = GW, **kw: object) -> Network:
    return Network(id=nid, cidr=cidr, gateway=gateway, pods=pods, **kw)  # type: ignore[arg-type]


@dataclass
class Lab:
    prefix: str
    ns: Namespaces
    host_ns: str
    mgmt_ns: str
    world_ns: str
    host: TenantNetworkHost
    responders: list[Responder] = field(default_factory=list)

    def apply(self, *nets: Network) -> None:
        self.host.apply(NetworkState(nets))

    def pod_ns(self, net: Network, p: Pod, serve: bool = True) -> str:
        """A namespace playing pod `p`, on the network's bridge; it answers on port 8080."""
        ns = self.ns.add(f"{net.id}{p.ifname}")
        self.host.attach_veth(net, p.ifname, p.mac, ns, ip=p.ip)
        if serve:
            self.serve(ns, f"{net.id}/{p.ifname}", 8080)
        return ns

    def serve(self, ns: str, name: str, port: int) -> Responder:
        r = Responder(ns, name, port)
        self.responders.append(r)
        return r

    def router(self, net: Network) -> str:
        return self.host.router_netns(net.id)


@pytest.fixture
def lab() -> Iterator[Lab]:
    prefix = unique_prefix()
    ns = Namespaces(prefix)
    made: Lab | None = None
    try:
        host_ns, mgmt_ns, world_ns = ns.add("host"), ns.add("mgmt"), ns.add("world")
        ns.wire(host_ns, "mgmt0", f"{HOST_MGMT}/24", mgmt_ns, "eth0", f"{MGMT_PEER}/24")
        ns.wire(host_ns, "wan0", f"{HOST_WAN}/24", world_ns, "eth0", f"{WORLD}/24")
        host = TenantNetworkHost(host_ns, prefix, management=["10.99.0.0/24"])
        made = Lab(prefix, ns, host_ns, mgmt_ns, world_ns, host)
        for name, where in (("host", host_ns), ("mgmt", mgmt_ns), ("world", world_ns)):
            made.serve(where, name, 7000)
        yield made
        # What the library must leave after apply(empty), whatever the test did.
        host.apply(NetworkState())
        assert [n for n in leftovers(prefix) if n.startswith(f"{prefix}-")] == []
        assert f"{prefix}-" not in sh("ip", "-o", "link", "show", netns=host_ns).stdout
        assert f"{prefix}_host" not in sh("nft", "list", "tables", netns=host_ns).stdout
    finally:
        if made is not None:
            for r in made.responders:
                r.close()
        ns.close()
        for name in leftovers(prefix):  # after a failure: router namespaces included
            sh("ip", "netns", "delete", name, check=False)


# -- isolation ---------------------------------------------------------------------------


def test_two_tenants_with_the_same_cidr_and_macs_stay_apart(lab: Lab) -> None:
    a, b = network(1, pod(2), pod(3)), network(2, pod(2), pod(3))
    c = network(3, pod(2, "10.2.0"), cidr="10.2.0.0/24", gateway="10.2.0.1")
    lab.apply(a, b, c)
    a2, a3 = lab.pod_ns(a, pod(2)), lab.pod_ns(a, pod(3))
    b2, _ = lab.pod_ns(b, pod(2)), lab.pod_ns(b, pod(3))
    c2 = lab.pod_ns(c, c.pods[0])

    assert ping(a2, "10.1.0.3") and ping(a2, GW)
    assert tcp_ask(a2, "10.1.0.3", 8080) == "1/p3"
    assert tcp_ask(b2, "10.1.0.3", 8080) == "2/p3"
    assert udp_ask(b2, "10.1.0.3", 8080) == "2/p3"

    # Make the host route the tenant CIDRs to the routers, as a confused or hostile host config
    # would: the rules, not the lack of a route, must keep the networks apart.
    sh("ip", "route", "add", "10.2.0.0/24", "via", lab.host.link(3).router, netns=lab.host_ns)
    sh("ip", "route", "add", "10.1.0.0/24", "via", lab.host.link(1).router, netns=lab.host_ns)
    assert tcp_ask(a2, "10.2.0.2", 8080) == NO_ANSWER
    assert tcp_ask(c2, "10.1.0.2", 8080) == NO_ANSWER
    assert not ping(c2, "10.1.0.3")
    # Nor to another router itself.
    assert tcp_ask(a2, lab.host.link(2).router, 53) == NO_ANSWER
    assert not ping(a3, lab.host.link(2).router)


def test_pods_reach_neither_host_nor_management_network(lab: Lab) -> None:
    a = network(1, pod(2))
    lab.apply(a)
    a2 = lab.pod_ns(a, pod(2))
    assert tcp_ask(a2, WORLD, 7000) == "world"  # egress works, so the misses below are the rules
    for target in (HOST_MGMT, HOST_WAN, lab.host.link(1).host, MGMT_PEER):
        assert tcp_ask(a2, target, 7000) == NO_ANSWER, target
        assert udp_ask(a2, target, 7000) == NO_ANSWER, target
    assert not ping(a2, lab.host.link(1).host)
    # The router answers only DNS and ping on the gateway.
    lab.serve(lab.router(a), "router", 7000)
    assert tcp_ask(a2, GW, 7000) == NO_ANSWER
    assert tcp_ask(a2, lab.host.link(1).router, 7000) == NO_ANSWER


def test_egress_nat_on_and_off(lab: Lab) -> None:
    a, b = network(1, pod(2)), network(2, pod(2), egress=False)
    lab.apply(a, b)
    a2, b2 = lab.pod_ns(a, pod(2)), lab.pod_ns(b, pod(2))
    assert tcp_ask(a2, WORLD, 7000) == "world"
    assert udp_ask(a2, WORLD, 7000) == "world"
    assert tcp_ask(b2, WORLD, 7000) == NO_ANSWER
    lab.apply(a, replace(b, egress=True))
    assert tcp_ask(b2, WORLD, 7000) == "world"
    lab.apply(replace(a, egress=False), replace(b, egress=True))
    assert tcp_ask(a2, WORLD, 7000) == NO_ANSWER
    assert tcp_ask(b2, WORLD, 7000) == "world"


def test_a_pod_sends_only_from_its_own_mac_and_ip(lab: Lab) -> None:
    p2, p3, p4 = pod(2), pod(3), pod(4)
    a = network(1, p2, p3, p4)
    lab.apply(a)
    attacker, victim = lab.pod_ns(a, p2), lab.pod_ns(a, p3)
    lab.pod_ns(a, p4)
    sniff = Sniffer(victim, "eth0")
    bcast = "ff:ff:ff:ff:ff:ff"
    try:
        frames = {
            b"genuine": udp_frame(p2.mac, bcast, p2.ip, "10.1.0.255", b"genuine"),
            b"spoofed-ip": udp_frame(p2.mac, bcast, p4.ip, "10.1.0.255", b"spoofed-ip"),
            b"spoofed-mac": udp_frame(p4.mac, bcast, p2.ip, "10.1.0.255", b"spoofed-mac"),
            b"both": udp_frame(p4.mac, bcast, p4.ip, "10.1.0.255", b"both"),
        }
        for frame in frames.values():
            send_raw(attacker, "eth0", frame)
        assert sniff.saw(b"genuine")
        for token in (b"spoofed-ip", b"spoofed-mac", b"both"):
            assert not sniff.saw(token, wait=0.1), token
        # ARP: claiming the gateway's address (or another pod's) never reaches anyone.
        send_raw(attacker, "eth0", arp_frame(p2.mac, p2.mac, GW, p3.ip))
        send_raw(attacker, "eth0", arp_frame(p2.mac, p2.mac, p4.ip, p3.ip))
        send_raw(attacker, "eth0", arp_frame(p2.mac, p2.mac, p2.ip, p3.ip))
        assert sniff.saw(mac_bytes(p2.mac) + socket.inet_aton(p2.ip))
        assert not sniff.saw(mac_bytes(p2.mac) + socket.inet_aton(GW), wait=0.1)
        assert not sniff.saw(mac_bytes(p2.mac) + socket.inet_aton(p4.ip), wait=0.1)
        # Nor anything but IPv4 and ARP (here IPv6 and a VLAN tag) from the genuine MAC.
        for ethertype, token in ((b"\x86\xdd", b"ipv6-frame"), (b"\x81\x00", b"vlan-frame")):
            send_raw(attacker, "eth0", mac_bytes(bcast) + mac_bytes(p2.mac) + ethertype + token * 4)
            assert not sniff.saw(token, wait=0.1)
    finally:
        sniff.close()
    # The kernel's own traffic from the spoofed address goes nowhere either.
    sh("ip", "addr", "add", f"{p4.ip}/32", "dev", "eth0", netns=attacker)
    sh("ip", "neigh", "replace", p3.ip, "lladdr", p3.mac, "dev", "eth0", netns=attacker)
    assert udp_ask(attacker, p3.ip, 8080, src=p4.ip) == NO_ANSWER
    assert udp_ask(attacker, p3.ip, 8080, src=p2.ip) == "1/p3"


def test_tap_fd_works_from_outside_the_router_namespace(lab: Lab) -> None:
    p2 = pod(2)
    a = network(1, p2)
    lab.apply(a)
    fd = lab.host.create_tap(a, p2.ifname, p2.mac)
    try:
        show = sh("ip", "-d", "link", "show", p2.ifname, netns=lab.router(a)).stdout
        assert tap_mac(p2.mac) in show and "master br0" in show and "tun" in show
        vnet = b"\0" * 10  # the virtio-net header QEMU would read and write

        def gateway_mac_via_tap(sender_ip: str) -> str | None:
            os.write(fd, vnet + arp_frame(p2.mac, p2.mac, sender_ip, GW))
            while select.select([fd], [], [], 0.3)[0]:
                reply = parse_arp_reply(os.read(fd, 65536)[len(vnet) :])
                if reply and reply[0] == GW:
                    return reply[1]
            return None

        assert gateway_mac_via_tap(p2.ip) == a.gateway_mac
        assert gateway_mac_via_tap("10.1.0.77") is None  # not its IP: dropped on the bridge
        lab.apply(a)  # a re-apply keeps a listed tap
        assert p2.ifname in sh("ip", "link", netns=lab.router(a)).stdout
    finally:
        os.close(fd)
    assert p2.ifname not in sh("ip", "link", netns=lab.router(a)).stdout  # gone with its last fd


# -- services ----------------------------------------------------------------------------


def web(*eps: Endpoint, ip: str = WEB_IP, node_port: int | None = None, udp: bool = False) -> Service:
    ports = [ServicePort("TCP", 80, eps, node_port)]
    if udp:
        ports.append(ServicePort("UDP", 53, tuple(Endpoint(e.ip, 5353) for e in eps), node_port))
    return Service("default/web", ip, tuple(ports))


def test_cluster_ip_balances_over_ready_endpoints_only(lab: Lab) -> None:
    pods = [pod(i) for i in (2, 3, 4, 5)]
    # p3 serves on 8080, p4 on 8081: a named target port may resolve differently per pod.
    svc = web(Endpoint("10.1.0.3", 8080), Endpoint("10.1.0.4", 8081), udp=True)
    empty = Service("default/empty", "10.96.0.11", (ServicePort("TCP", 80), ServicePort("UDP", 53)))
    selfish = Service("default/self", "10.96.0.12", (ServicePort("TCP", 80, (Endpoint("10.1.0.2", 8080),)),))
    headless = Service("default/headless", None, (ServicePort("TCP", 80, (Endpoint("10.1.0.3", 8080),)),))
    a = network(1, *pods, services=(svc, empty, selfish, headless))
    lab.apply(a)
    client, p3 = lab.pod_ns(a, pods[0]), lab.pod_ns(a, pods[1])
    p4 = lab.pod_ns(a, pods[2], serve=False)
    lab.pod_ns(a, pods[3])  # p5: running but not ready, so not an endpoint
    for ns, name, port in ((p4, "1/p4", 8081), (p3, "1/p3", 5353), (p4, "1/p4", 5353)):
        lab.serve(ns, name, port)

    seen = [tcp_ask(client, WEB_IP, 80) for _ in range(40)]
    assert set(seen) == {"1/p3", "1/p4"}, seen
    assert {udp_ask(client, WEB_IP, 53) for _ in range(20)} == {"1/p3", "1/p4"}
    # No endpoint, or not a service port: refused at once, like kube-proxy.
    assert tcp_ask(client, "10.96.0.11", 80) == REFUSED
    assert udp_ask(client, "10.96.0.11", 53) == REFUSED
    assert tcp_ask(client, WEB_IP, 81) == REFUSED
    # Hairpin: a pod reaching itself through its own service.
    assert tcp_ask(client, "10.96.0.12", 80) == "1/p2"
    # Headless: nothing to load-balance, and nothing in the tables for it.
    nat = sh("nft", "list", "table", "ip", "nat", netns=lab.router(a)).stdout
    assert "default/web" in nat and "default/headless" not in nat

    # Endpoints change: new connections follow at once, and so does a UDP client that keeps its
    # source port (its conntrack entry to the old endpoint is dropped).
    fixed = [udp_ask(client, WEB_IP, 53, src_port=40000) for _ in range(6)]
    assert set(fixed) in ({"1/p3"}, {"1/p4"})  # one flow, one endpoint
    gone = fixed[0]
    stays = ({"1/p3", "1/p4"} - {gone}).pop()
    keep = Endpoint("10.1.0.4", 8081) if stays == "1/p4" else Endpoint("10.1.0.3", 8080)
    lab.apply(replace(a, services=(web(keep, udp=True),)))
    assert {tcp_ask(client, WEB_IP, 80) for _ in range(10)} == {stays}
    assert udp_ask(client, WEB_IP, 53, src_port=40000) == stays


def test_a_service_is_reachable_only_from_its_own_network(lab: Lab) -> None:
    a = network(1, pod(2), pod(3), services=(web(Endpoint("10.1.0.3", 8080)),))
    b = network(2, pod(2), pod(4))
    lab.apply(a, b)
    a2, b2 = lab.pod_ns(a, pod(2)), lab.pod_ns(b, pod(2))
    lab.pod_ns(a, pod(3))
    lab.pod_ns(b, pod(4))
    assert tcp_ask(a2, WEB_IP, 80) == "1/p3"
    assert tcp_ask(b2, WEB_IP, 80) not in ("1/p3", "2/p3")
    # The same cluster IP in the other network is that network's own service.
    lab.apply(a, replace(b, services=(web(Endpoint("10.1.0.4", 8080)),)))
    assert tcp_ask(b2, WEB_IP, 80) == "2/p4"
    assert tcp_ask(a2, WEB_IP, 80) == "1/p3"


def test_node_port_is_published_on_the_host(lab: Lab) -> None:
    svc = web(Endpoint("10.1.0.3", 8080), node_port=30080, udp=True)
    dead = Service("default/dead", "10.96.0.11", (ServicePort("TCP", 80, (), 30081),))
    # Egress off does not stop replies to node port clients.
    a = network(1, pod(2), pod(3), services=(svc, dead), egress=False)
    b = network(2, pod(2))
    lab.apply(a, b)
    lab.pod_ns(a, pod(2))
    p3 = lab.pod_ns(a, pod(3))
    lab.serve(p3, "1/p3", 5353)
    b2 = lab.pod_ns(b, pod(2))
    lab.serve(lab.host_ns, "host:30080", 30080)  # shadowed while the node port is published
    assert tcp_ask(lab.mgmt_ns, HOST_MGMT, 30080) == "1/p3"  # from outside
    assert udp_ask(lab.mgmt_ns, HOST_MGMT, 30080) == "1/p3"
    assert tcp_ask(lab.host_ns, HOST_MGMT, 30080) == "1/p3"  # from the host itself
    assert tcp_ask(lab.world_ns, HOST_WAN, 30080) == "1/p3"
    assert tcp_ask(lab.mgmt_ns, HOST_MGMT, 30081) == REFUSED  # no ready endpoint
    assert tcp_ask(b2, HOST_WAN, 30080) == NO_ANSWER  # never from a tenant network
    lab.apply(replace(a, services=()), b)
    assert tcp_ask(lab.mgmt_ns, HOST_MGMT, 30080) == "host:30080"  # unpublished: the host's own port


# -- reconciliation ------------------------------------------------------------------------


def test_reapply_rebuilds_and_removes_what_is_not_desired(lab: Lab) -> None:
    a = network(1, pod(2), pod(3))
    b = network(2, pod(2))
    lab.apply(a, b)
    a2, a3 = lab.pod_ns(a, pod(2)), lab.pod_ns(a, pod(3))
    router = lab.router(a)
    before = sh("ip", "-o", "link", netns=router).stdout

    # An agent restart: a new instance applying the same state changes nothing.
    again = TenantNetworkHost(lab.host_ns, lab.prefix, management=["10.99.0.0/24"])
    again.apply(NetworkState((a, b)))
    assert sh("ip", "-o", "link", netns=router).stdout == before
    assert tcp_ask(a2, "10.1.0.3", 8080) == "1/p3"

    # Debris of every kind with our names, and a pod that went away.
    sh("ip", "link", "add", f"{lab.prefix}-77", "type", "veth", "peer", "junk77", netns=lab.host_ns)
    sh("ip", "netns", "add", f"{lab.prefix}-78")
    open(f"/run/netns/{lab.prefix}-79", "w").close()  # a name without a namespace behind it
    sh("ip", "link", "add", "rogue0", "type", "veth", "peer", "rogue1", netns=router)
    sh("ip", "addr", "add", "10.1.0.99/24", "dev", "br0", netns=router)
    sh("ip", "addr", "add", "169.254.99.1/30", "dev", lab.host.host_ifname(1), netns=lab.host_ns)
    again.apply(NetworkState((replace(a, pods=(pod(2),)), b)))
    links = sh("ip", "-o", "link", netns=router).stdout
    assert "rogue" not in links and "p3@" not in links and "p2@" in links
    assert "10.1.0.99" not in sh("ip", "addr", netns=router).stdout
    host_addrs = sh("ip", "addr", netns=lab.host_ns).stdout
    assert f"{lab.prefix}-77" not in host_addrs and "169.254.99.1" not in host_addrs
    assert f"{lab.prefix}-78" not in leftovers(lab.prefix) and f"{lab.prefix}-79" not in leftovers(lab.prefix)
    assert tcp_ask(a2, WORLD, 7000) == "world"
    assert "eth0" not in sh("ip", "-o", "link", netns=a3).stdout  # the gone pod's veth, both ends

    # Network deletion: its namespace, host link and host rules go; the other stays.
    again.apply(NetworkState((b,)))
    assert router not in leftovers(lab.prefix)
    assert lab.host.host_ifname(1) not in sh("ip", "-o", "link", netns=lab.host_ns).stdout
    host_rules = sh("nft", "list", "table", "inet", f"{lab.prefix}_host", netns=lab.host_ns).stdout
    assert f'"{lab.host.host_ifname(1)}"' not in host_rules and f'"{lab.host.host_ifname(2)}"' in host_rules


def test_a_namespace_deleted_by_hand_is_rebuilt(lab: Lab) -> None:
    a = network(1, pod(2))
    lab.apply(a)
    a2 = lab.pod_ns(a, pod(2))
    assert tcp_ask(a2, WORLD, 7000) == "world"
    sh("ip", "netns", "delete", lab.router(a))  # a reboot, for this network
    lab.apply(a)
    assert "br0" in sh("ip", "-o", "link", netns=lab.router(a)).stdout
    # And a name whose namespace is gone but whose file stayed (a crash while creating it).
    sh("ip", "netns", "delete", lab.router(a))
    open(f"/run/netns/{lab.router(a)}", "w").close()
    lab.apply(a)
    assert "br0" in sh("ip", "-o", "link", netns=lab.router(a)).stdout
    lab.host.attach_veth(a, "p2", pod(2).mac, a2, ip=pod(2).ip)  # the pod's port is made again
    assert ping(a2, GW)
    # a fresh bridge learns the port's address first: a loaded machine may miss one short probe
    assert wait_for(lambda: tcp_ask(a2, WORLD, 7000) == "world", timeout=10, what="world again")


def test_apply_empty_leaves_nothing(lab: Lab) -> None:
    a = network(1, pod(2))
    b = network(2, pod(2), services=(web(Endpoint("10.1.0.2", 8080), node_port=30080),))
    lab.apply(a, b)
    lab.pod_ns(a, pod(2))
    fd = lab.host.create_tap(b, "p2", pod(2).mac)
    try:
        lab.apply()
        assert [n for n in leftovers(lab.prefix) if n.startswith(f"{lab.prefix}-")] == []
        assert f"{lab.prefix}-" not in sh("ip", "-o", "link", netns=lab.host_ns).stdout
        assert lab.prefix not in sh("nft", "list", "ruleset", netns=lab.host_ns).stdout
    finally:
        os.close(fd)


# -- the desired state is checked before anything is touched --------------------------------


@pytest.mark.parametrize(
    ("state", "error"),
    [
        (NetworkState((network(1), network(1))), "duplicate network id"),
        (NetworkState((network(99999),)), "link pool"),
        (NetworkState((network(1, cidr="10.1.0.1/24"),)), "host bits"),
        (NetworkState((network(1, gateway="10.2.0.1"),)), "gateway"),
        (NetworkState((network(1, Pod("p2", "03:00:00:00:00:02", "10.1.0.2")),)), "multicast"),
        (NetworkState((network(1, Pod("br0", "02:00:00:00:00:02", "10.1.0.2")),)), "interface name"),
        (NetworkState((network(1, Pod("p2", "02:00:00:00:00:02", GW)),)), "router's"),
        (NetworkState((network(1, pod(2), pod(2)),)), "duplicate port name"),
        (NetworkState((network(1, services=(web(ip="10.1.0.50"),)),)), "inside"),
        (
            NetworkState(
                (network(1, services=(web(node_port=30080),)), network(2, services=(web(node_port=30080),)))
            ),
            "node port",
        ),
    ],
)
def test_validation(state: NetworkState, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        validate(state, "hn", DEFAULT_LINK_POOL)


def test_names_fit_ifnamsiz() -> None:
    with pytest.raises(ValueError, match="over 15"):
        validate(NetworkState((network(16000),)), "abcdefghij", "169.254.0.0/16")
    validate(NetworkState((network(8191),)), "abcdefghij", DEFAULT_LINK_POOL)  # the default pool fits
    assert nftmod.host_table("hn") == ("inet", "hn_host")
