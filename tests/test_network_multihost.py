"""Tenant networks across hosts over VXLAN, on real netlink and nftables: each host a namespace on
an underlay bridge with its own `TenantNetworkHost`, pods as namespaces on its bridges (the VM
path is the same tap on the same bridge; tests/test_network_e2e.py covers it on one host).

Two tenants on the same CIDR, with the same pod addresses and MACs, each with a pod on both
hosts: pods reach each other across hosts by IP, a ClusterIP reaches its endpoint on the other
host, a NodePort answers on the host without an endpoint; nothing crosses between tenants; VXLAN
forged on the underlay (unknown sender, a VNI the sender does not share, a spoofed inner source)
reaches no pod; forwarding entries follow the pods; a host rebuilt from scratch works again.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from hypernetes.network import Endpoint, Network, NetworkState, Pod, Service, ServicePort, TenantNetworkHost
from hypernetes.network.netns import delete as delete_netns
from hypernetes.network.state import VXLAN_PORT, Overlay, RemotePod, router_mac
from tests.support.netns import (
    NO_ANSWER,
    Namespaces,
    Responder,
    Sniffer,
    leftovers,
    sh,
    tcp_ask,
    udp_frame,
    unique_prefix,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network plumbing needs root")

UNDERLAY = "10.77.0.0/24"
H1, H2, OUTSIDER = "10.77.0.1", "10.77.0.2", "10.77.0.9"
CIDR, GW, CLUSTER_IP = "10.1.0.0/24", "10.1.0.1", "10.96.0.10"
A, B, C = 7, 8, 9  # network ids: tenant A, tenant B (same CIDR), tenant C (on h2 only)
POD1 = Pod("p1", "02:00:00:00:00:01", "10.1.0.5")  # on h1, in every network
POD2 = Pod("p2", "02:00:00:00:00:02", "10.1.0.6")  # on h2, in every network
NODE_PORT = 30080


def network(
    nid: int, here: Pod, there: Pod | None, local: str, peer: str | None, services: tuple[Service, ...] = ()
) -> Network:
    remote = (RemotePod(there.mac, there.ip, peer),) if there and peer else ()
    overlay = Overlay(local, (peer,) if peer else (), remote)
    return Network(id=nid, cidr=CIDR, gateway=GW, mtu=1450, pods=(here,), services=services, overlay=overlay)


def web(endpoints: tuple[Endpoint, ...]) -> tuple[Service, ...]:
    return (Service("a/web", CLUSTER_IP, (ServicePort("TCP", 80, endpoints, node_port=NODE_PORT),)),)


@dataclass
class World:
    ns: Namespaces
    h1: str
    h2: str
    outsider: str
    host1: TenantNetworkHost
    host2: TenantNetworkHost
    pods: dict[tuple[int, str], str]  # (network, "p1"/"p2") -> the pod's namespace
    state1: NetworkState
    state2: NetworkState


def states() -> tuple[NetworkState, NetworkState]:
    ep = (Endpoint(POD2.ip, 8080),)  # the service's only endpoint is on h2
    s1 = NetworkState((network(A, POD1, POD2, H1, H2, web(ep)), network(B, POD1, POD2, H1, H2)))
    s2 = NetworkState(
        (
            network(A, POD2, POD1, H2, H1, web(ep)),
            network(B, POD2, POD1, H2, H1),
            network(C, POD2, None, H2, None),
        )
    )
    return s1, s2


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    prefix = unique_prefix()
    ns = Namespaces(prefix)
    try:
        under = ns.add("u")
        sh("ip", "link", "add", "br0", "type", "bridge", netns=under)
        sh("ip", "link", "set", "br0", "up", netns=under)
        made = {}
        for name, addr in (("h1", H1), ("h2", H2), ("o", OUTSIDER)):
            host = ns.add(name)
            sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", name, "netns", under, netns=host)
            sh("ip", "addr", "add", f"{addr}/24", "dev", "eth0", netns=host)
            sh("ip", "link", "set", "eth0", "up", netns=host)
            sh("ip", "link", "set", name, "master", "br0", "up", netns=under)
            made[name] = host
        host1 = TenantNetworkHost(made["h1"], f"{prefix}a", management=[UNDERLAY])
        host2 = TenantNetworkHost(made["h2"], f"{prefix}b", management=[UNDERLAY])
        s1, s2 = states()
        host1.apply(s1)
        host2.apply(s2)
        pods: dict[tuple[int, str], str] = {}
        for plumbing, state in ((host1, s1), (host2, s2)):
            for net in state.networks:
                p = net.pods[0]
                pod_ns = ns.add(f"{p.ifname}n{net.id}")
                plumbing.attach_veth(net, p.ifname, p.mac, pod_ns, ip=p.ip)
                pods[(net.id, p.ifname)] = pod_ns
        yield World(ns, made["h1"], made["h2"], made["o"], host1, host2, pods, s1, s2)
        host1.apply(NetworkState())
        host2.apply(NetworkState())
    finally:
        ns.close()
    assert leftovers(prefix) == []


@pytest.fixture(scope="module")
def responders(world: World) -> Iterator[dict[tuple[int, str], Responder]]:
    made = {key: Responder(pod_ns, f"{key[1]}@{key[0]}", 8080) for key, pod_ns in world.pods.items()}
    yield made
    for r in made.values():
        r.close()


def test_pods_reach_each_other_across_hosts_inside_their_tenant_only(
    world: World, responders: dict[tuple[int, str], Responder]
) -> None:
    for nid in (A, B):
        client, want = world.pods[(nid, "p1")], f"p2@{nid}"

        def answered(c: str = client, w: str = want) -> bool:
            return tcp_ask(c, POD2.ip, 8080) == w

        assert wait_for(answered, timeout=10, what=want)
        assert tcp_ask(world.pods[(nid, "p2")], POD1.ip, 8080) == f"p1@{nid}"
    # C lives on h2 alone: its pod sees nobody at p1's address, though A's and B's p1 are there
    assert tcp_ask(world.pods[(C, "p2")], POD1.ip, 8080) == NO_ANSWER


def test_mtu_leaves_room_for_vxlan(world: World) -> None:
    out = sh("ip", "-o", "link", "show", "vxlan0", netns=world.host1.router_netns(A)).stdout
    assert (
        "mtu 1450" in out
        and "nolearning" in sh("ip", "-d", "link", "show", "vxlan0", netns=world.host1.router_netns(A)).stdout
    )


def test_cluster_ip_and_node_port_reach_an_endpoint_on_the_other_host(
    world: World, responders: dict[tuple[int, str], Responder]
) -> None:
    assert wait_for(lambda: tcp_ask(world.pods[(A, "p1")], CLUSTER_IP, 80) == f"p2@{A}", timeout=10)
    # the node port on h1, which runs no endpoint, from outside the cluster
    assert tcp_ask(world.outsider, H1, NODE_PORT) == f"p2@{A}"
    assert tcp_ask(world.outsider, H2, NODE_PORT) == f"p2@{A}"
    # tenant B has no such service: its pod is refused or unanswered, never served A's
    assert tcp_ask(world.pods[(B, "p1")], CLUSTER_IP, 80) != f"p2@{A}"


def vxlan_packet(src: str, dst: str, vni: int, inner: bytes) -> bytes:
    """IPv4 + UDP (no checksum) + VXLAN header + the inner Ethernet frame, for a raw socket."""
    vxlan = struct.pack("!II", 0x08000000, vni << 8) + inner
    udp = struct.pack("!HHHH", 40000, VXLAN_PORT, 8 + len(vxlan), 0) + vxlan
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return ip + udp


def send_ip(netns: str, packet: bytes, dst: str) -> None:
    from tests.support.netns import ns_socket

    with ns_socket(netns, socket.SOCK_RAW, socket.AF_INET, socket.IPPROTO_RAW) as s:
        s.sendto(packet, (dst, 0))


def test_forged_vxlan_reaches_no_pod(world: World) -> None:
    """Sent from the underlay with a raw socket: only a packet from a host that shares the VNI,
    with an inner source that the API puts behind that host, gets through (the control)."""
    sh("ip", "addr", "add", f"{H1}/32", "dev", "lo", netns=world.outsider)  # to spoof h1
    try:

        def forge(token: bytes, src: str, vni: int, inner_src: Pod = POD1) -> bytes:
            return vxlan_packet(
                src, H2, vni, udp_frame(inner_src.mac, POD2.mac, inner_src.ip, POD2.ip, token)
            )

        cases = {
            b"control-known-host": forge(b"control-known-host", H1, A),
            b"unknown-host": forge(b"unknown-host", OUTSIDER, A),
            b"vni-not-shared": forge(b"vni-not-shared", H1, C),  # h1 has no pod of C
            b"inner-spoofed": forge(b"inner-spoofed", H1, A, Pod("x", "02:00:00:00:00:99", "10.1.0.99")),
            b"inner-gateway": forge(b"inner-gateway", H1, A, Pod("x", "02:68:6e:00:00:07", GW)),
        }
        sniffers = {nid: Sniffer(world.pods[(nid, "p2")], "eth0") for nid in (A, B, C)}
        try:
            for packet in cases.values():
                send_ip(world.outsider, packet, H2)
            assert sniffers[A].saw(b"control-known-host", wait=3)
            for token in cases:
                for nid, sniffer in sniffers.items():
                    if (token, nid) != (b"control-known-host", A):
                        assert not sniffer.saw(token, wait=0.2), (token, nid)
        finally:
            for s in sniffers.values():
                s.close()
        dropped = sh(
            "nft", "list", "chain", "inet", world.host2.prefix + "_host", "input", netns=world.h2
        ).stdout
        assert "packets 0 " not in dropped.split("unknown host")[0].rsplit("counter", 1)[-1]
    finally:
        sh("ip", "addr", "del", f"{H1}/32", "dev", "lo", netns=world.outsider)


def fdb(world: World, host: TenantNetworkHost, nid: int) -> str:
    return sh("bridge", "fdb", "show", "dev", "vxlan0", netns=host.router_netns(nid)).stdout


def test_forwarding_follows_the_pods_and_a_rebuilt_host_works_again(
    world: World, responders: dict[tuple[int, str], Responder]
) -> None:
    # p2 leaves network B: h1 forgets it (no forwarding entry, no ARP answer), A is untouched
    s1 = world.state1
    gone = NetworkState((s1.networks[0], replace(s1.networks[1], overlay=Overlay(H1, (H2,), ()))))
    world.host1.apply(gone)
    assert POD2.mac not in fdb(world, world.host1, B) and f"{POD2.mac} dst {H2}" in fdb(world, world.host1, A)
    assert POD2.ip not in sh("ip", "neigh", "show", "dev", "vxlan0", netns=world.host1.router_netns(B)).stdout
    # B on h1 alone again: no VXLAN port, no route or neighbour for h2's router left behind
    world.host1.apply(NetworkState((s1.networks[0], replace(s1.networks[1], overlay=None))))
    router_b = world.host1.router_netns(B)
    assert "vxlan0" not in sh("ip", "-o", "link", netns=router_b).stdout
    assert H2 not in sh("ip", "route", netns=router_b).stdout + sh("ip", "neigh", netns=router_b).stdout
    world.host1.apply(s1)
    assert f"{POD2.mac} dst {H2}" in fdb(world, world.host1, B)
    # an entry the bridge learnt (a port up before its learning was off, an older agent) yields
    router_a = world.host1.router_netns(A)
    sh("bridge", "fdb", "del", POD2.mac, "dev", "vxlan0", "master", netns=router_a)
    sh("bridge", "fdb", "add", POD2.mac, "dev", "vxlan0", "master", "dynamic", netns=router_a)
    world.host1.apply(s1)
    assert f"{POD2.mac} master br0 static" in fdb(world, world.host1, A)
    # h2 loses every router (a reboot): apply builds them again; its pods' ports come back with them
    for net in world.state2.networks:
        delete_netns(world.host2.router_netns(net.id))
    world.host2.apply(world.state2)
    for net in world.state2.networks:
        p = net.pods[0]
        world.host2.attach_veth(net, p.ifname, p.mac, world.pods[(net.id, p.ifname)], ip=p.ip)
    assert wait_for(lambda: tcp_ask(world.pods[(A, "p1")], POD2.ip, 8080) == f"p2@{A}", timeout=10)
    assert tcp_ask(world.pods[(A, "p1")], CLUSTER_IP, 80) == f"p2@{A}"
    assert router_mac(H1) in fdb(world, world.host2, A)


def test_build_state_puts_the_other_nodes_pods_behind_their_underlay_address() -> None:
    """From API objects: this node's pods are ports, the other nodes' pods of the same network
    (from the address records the controller locates) are remote pods at those nodes' underlay
    addresses; another network's, an unlocated one's and one on a node without address are not."""
    from hypernetes.node.network import build_state

    def node(name: str, ip: str | None) -> dict[str, object]:
        addrs = [{"type": "InternalIP", "address": ip}] if ip else []
        return {"metadata": {"name": name}, "status": {"addresses": addrs}}

    def record(net: str, ip: str, mac: str, where: str | None) -> dict[str, object]:
        spec = {"network": net, "ip": ip, "mac": mac, "owner": {"kind": "Pod", "namespace": "a", "name": ip}}
        return {"metadata": {"name": f"{net}.{ip}"}, "spec": spec | ({"node": where} if where else {})}

    net = {"metadata": {"name": "acme", "uid": "u1"}, "spec": {"id": A, "cidr": CIDR, "gateway": GW}}
    pod = {
        "metadata": {"name": "p1", "namespace": "a", "uid": "1111",
                     "annotations": {"hypernetes.io/network": "acme", "hypernetes.io/ip": POD1.ip,
                                     "hypernetes.io/mac": POD1.mac}},
        "spec": {"nodeName": "n1"},
    }  # fmt: skip
    records = [
        record("acme", POD1.ip, POD1.mac, "n1"),
        record("acme", POD2.ip, POD2.mac, "n2"),
        record("acme", "10.1.0.7", "02:00:00:00:00:07", None),  # not bound yet
        record("acme", "10.1.0.8", "02:00:00:00:00:08", "n3"),  # n3 has no address
        record("globex", "10.1.0.9", "02:00:00:00:00:09", "n2"),
    ]
    allocs = {str(r["metadata"]["name"]): r for r in records}  # type: ignore[index]
    owner = {"kind": "Network", "name": "acme", "uid": "u1"}
    allocs[f"networkid.{A}"] = {
        "metadata": {"name": f"networkid.{A}"},
        "spec": {"networkID": A, "owner": owner},
    }
    objs = {
        "networks": {"acme": net},
        "ipallocations": allocs,
        "namespaces": {},
        "services": {},
        "endpoints": {},
        "pods": {"a/p1": pod},
        "nodes": {"n1": node("n1", H1), "n2": node("n2", H2), "n3": node("n3", None)},
        "networkpolicies": {},
        "ingresses": {},
        "ingressclasses": {},
    }
    desired = build_state(objs, "n1", 1450)
    (built,) = desired.state.networks
    assert built.overlay == Overlay(H1, (H2,), (RemotePod(POD2.mac, POD2.ip, H2),))
    assert any("node n3 has no underlay address" in why for why in desired.skipped)
    objs["nodes"] = {}
    assert build_state(objs, "n1", 1450).state.networks[0].overlay is None
    # n1's pods alone: no overlay at all (no VXLAN device; the gateway stays the hairpin's source)
    objs["nodes"] = {"n1": node("n1", H1)}
    objs["ipallocations"] = {k: v for k, v in allocs.items() if POD2.ip not in k}
    assert build_state(objs, "n1", 1450).state.networks[0].overlay is None
    # a node port: the network is built on a node without its pods too, and all nodes are its hosts
    objs["nodes"] = {"n1": node("n1", H1), "n2": node("n2", H2), "n4": node("n4", OUTSIDER)}
    objs["ipallocations"] = allocs
    objs["namespaces"] = {"a": {"metadata": {"name": "a", "annotations": {"hypernetes.io/network": "acme"}}}}
    objs["services"] = {
        "a/np": {
            "metadata": {"name": "np", "namespace": "a", "uid": "s1"},
            "spec": {
                "type": "NodePort",
                "clusterIP": CLUSTER_IP,
                "ports": [{"port": 80, "nodePort": NODE_PORT}],
            },
        }
    }
    (np_net,) = build_state(objs, "n4", 1450).state.networks
    assert np_net.pods == () and np_net.services[0].ports[0].node_port == NODE_PORT
    assert np_net.overlay == Overlay(
        OUTSIDER, (H1, H2), (RemotePod(POD1.mac, POD1.ip, H1), RemotePod(POD2.mac, POD2.ip, H2))
    )
    assert build_state(objs, "n1", 1450).state.networks[0].overlay.peers == (H2, OUTSIDER)  # type: ignore[union-attr]


def test_network_policy_across_hosts(world: World, responders: dict[tuple[int, str], Responder]) -> None:
    """Every host holds the network's policies for all its pods: ingress is enforced on the
    destination's host for pod-to-pod frames over VXLAN, and on the client's host for service
    traffic (the destination sees the client host's underlay address); egress on the source's."""
    from hypernetes.network.policy import PodPolicy, Rule

    p1, s1, s2 = world.pods[(A, "p1")], world.state1, world.state2

    def apply(*policies: PodPolicy, on: tuple[int, ...] = (1, 2)) -> None:
        for i, (host, state) in enumerate(((world.host1, s1), (world.host2, s2)), 1):
            a = replace(state.networks[0], policies=policies if i in on else ())
            host.apply(NetworkState((a, *state.networks[1:])))

    try:
        isolated = PodPolicy(POD2.ip, ingress=())
        apply(isolated, on=(2,))  # only the destination's host knows: direct frames stop there
        assert tcp_ask(p1, POD2.ip, 8080) == NO_ANSWER
        apply(isolated)
        assert tcp_ask(p1, CLUSTER_IP, 80) == NO_ANSWER  # stopped on h1, before the DNAT'd flow leaves
        assert tcp_ask(world.pods[(B, "p1")], POD2.ip, 8080) == f"p2@{B}"  # tenant B: same addresses, free
        apply(PodPolicy(POD2.ip, ingress=(Rule((f"{POD1.ip}/32",), ()),)))
        assert tcp_ask(p1, POD2.ip, 8080) == f"p2@{A}"
        assert tcp_ask(p1, CLUSTER_IP, 80) == f"p2@{A}"
        apply(PodPolicy(POD1.ip, egress=()), on=(1,))  # egress: on the source's host
        assert tcp_ask(p1, POD2.ip, 8080) == NO_ANSWER
    finally:
        world.host1.apply(s1)
        world.host2.apply(s2)
    assert tcp_ask(p1, POD2.ip, 8080) == f"p2@{A}"


async def test_ingress_on_a_host_without_the_endpoint(
    world: World, responders: dict[tuple[int, str], Responder]
) -> None:
    """h1's ingress proxy for tenant A reaches the service's only endpoint, on h2, through A's router:
    DNAT'd on h1, over VXLAN, answered back to h1's router (the hairpin SNAT to its underlay address)."""
    from hypernetes.network.ingress import IngressProxy, Path, Routes, Rule, Target
    from tests.support.nethttp import Http, get

    web = Http(world.pods[(A, "p2")], "p2-http", port=8081)
    proxy = IngressProxy(world.h1, port_of=lambda nid: 24000 + nid)
    try:
        routes = Routes((Rule("shop.example", (Path("/", "Prefix", Target("a/web", (CLUSTER_IP, 81))),)),))
        s1, s2 = world.state1, world.state2
        svc = (Service("a/web", CLUSTER_IP, (ServicePort("TCP", 81, (Endpoint(POD2.ip, 8081),)),)),)
        world.host1.apply(NetworkState((replace(s1.networks[0], services=svc), *s1.networks[1:])))
        world.host2.apply(NetworkState((replace(s2.networks[0], services=svc), *s2.networks[1:])))
        port = await proxy.serve(A, world.host1.router_netns(A), routes)
        status, body = await asyncio.to_thread(get, world.outsider, H1, port, "shop.example", "/x")
        assert (status, body.split(" ")[:2]) == (200, ["p2-http", "/x"])
    finally:
        await proxy.close()
        web.close()
        world.host1.apply(world.state1)
        world.host2.apply(world.state2)
