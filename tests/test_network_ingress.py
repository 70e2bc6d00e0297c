"""Ingress: the routing rules (`pick`, `routes_for`), and the node's proxy on real namespaces and
nftables: a client outside reaches a tenant's Services by host and path on that tenant network's
ingress port, through the network's router; two tenants with the same CIDR, cluster IPs, host
names and service names never reach each other."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from hypernetes.network import Endpoint, Network, NetworkState, Pod, Service, ServicePort, TenantNetworkHost
from hypernetes.network import ingress as ingress_mod
from hypernetes.network.ingress import IngressProxy, Path, Routes, Rule, Target, pick, routes_for, served_here
from hypernetes.network.netns import run_in_netns
from hypernetes.objects import Obj
from tests.support.nethttp import Http, get
from tests.support.netns import Namespaces, leftovers, sh, unique_prefix

T = {
    k: Target(k, ("10.96.0.1", i))
    for i, k in enumerate(("exact", "long", "short", "wild", "any", "default"), 1)
}


def test_pick_follows_upstreams_matching_rules() -> None:
    routes = Routes(
        (
            Rule("any.example", (Path("/", "Prefix", T["any"]),)),
            Rule("shop.example", (Path("/foo", "Prefix", T["short"]), Path("/foo/bar", "Prefix", T["long"]))),
            Rule("shop.example", (Path("/foo/bar", "Exact", T["exact"]),)),
            Rule("*.example", (Path("/", "ImplementationSpecific", T["wild"]),)),
            Rule("", (Path("/everyone", "Prefix", T["any"]),)),
        ),
        T["default"],
    )
    assert pick(routes, "shop.example", "/foo/bar") == T["exact"]  # Exact before any Prefix
    assert pick(routes, "SHOP.example.", "/foo/bar/") == T["long"]  # the longest prefix
    assert pick(routes, "shop.example", "/foo/baz") == T["short"]
    assert pick(routes, "shop.example", "/foobar") == T["default"]  # prefixes match whole elements
    assert pick(routes, "x.example", "/anything") == T["wild"]  # a wildcard: one label
    assert pick(routes, "a.b.example", "/everyone/x") == T["any"]  # not two labels; the hostless rule
    assert pick(routes, "example", "/") == T["default"]
    assert pick(Routes(), "x", "/") is None


def ingress(ns: str, name: str, host: str, service: str, *, path: str = "/", cls: str | None = None) -> Obj:
    rule = {
        "host": host,
        "http": {"paths": [{"path": path, "pathType": "Prefix", "backend": svc_ref(service)}]},
    }
    spec: Obj = {"rules": [rule]}
    if cls:
        spec["ingressClassName"] = cls
    return {"metadata": {"namespace": ns, "name": name, "uid": name}, "spec": spec}


def svc_ref(name: str, port: int = 80) -> Obj:
    return {"service": {"name": name, "port": {"number": port}}}


def service(ns: str, name: str, ip: str, port: int = 80) -> Obj:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip, "ports": [{"port": port}]}}


def test_routes_only_reach_services_of_the_ingress_namespace() -> None:
    services = {"a/web": service("a", "web", "10.96.0.10"), "b/db": service("b", "db", "10.96.0.20")}
    got = routes_for(
        [ingress("a", "i", "shop.example", "web"), ingress("a", "j", "db.example", "db")], services
    )
    assert pick(got, "shop.example", "/") == Target("a/web", ("10.96.0.10", 80))
    assert pick(got, "db.example", "/") == Target("a/db", None)  # b's db is not a's: 503, never b's
    classes = {
        "ours": {"spec": {"controller": "hypernetes.io/ingress"}},
        "nginx": {"spec": {"controller": "k8s.io/x"}},
    }
    assert served_here(ingress("a", "i", "h", "web"), classes)
    assert served_here(ingress("a", "i", "h", "web", cls="ours"), classes)
    assert not served_here(ingress("a", "i", "h", "web", cls="nginx"), classes)
    assert not served_here(ingress("a", "i", "h", "web", cls="missing"), classes)


# -- the proxy on real namespaces ------------------------------------------------------------------

pytestmark_root = pytest.mark.skipif(os.geteuid() != 0, reason="network plumbing needs root")
HOST_WAN, CLIENT = "198.51.100.1", "198.51.100.2"
CIDR, GW, CLUSTER_IP = "10.1.0.0/24", "10.1.0.1", "10.96.0.10"


@dataclass
class Lab:
    host: TenantNetworkHost
    host_ns: str
    client_ns: str
    proxy: IngressProxy
    spaces: Namespaces
    servers: list[Http] = field(default_factory=list)

    def pod(self, net: Network, p: Pod, name: str) -> None:
        where = self.spaces.add(f"{net.id}{p.ifname}")
        self.host.attach_veth(net, p.ifname, p.mac, where, ip=p.ip)
        self.servers.append(Http(where, name))


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    prefix = unique_prefix()
    spaces = Namespaces(prefix)
    made: Lab | None = None
    base = 21000 + secrets.randbelow(4000)  # the tests' own ports, never a real node's
    try:
        host_ns, client_ns = spaces.add("host"), spaces.add("client")
        spaces.wire(host_ns, "wan0", f"{HOST_WAN}/24", client_ns, "eth0", f"{CLIENT}/24")
        host = TenantNetworkHost(host_ns, prefix)
        made = Lab(host, host_ns, client_ns, IngressProxy(host_ns, port_of=lambda nid: base + nid), spaces)
        yield made
        await made.proxy.close()
        host.apply(NetworkState())
        assert [n for n in leftovers(prefix) if n.startswith(f"{prefix}-")] == []
    finally:
        if made is not None:
            await made.proxy.close()
            for s in made.servers:
                s.close()
        spaces.close()
        for name in leftovers(prefix):
            sh("ip", "netns", "delete", name, check=False)


def pod(i: int) -> Pod:
    return Pod(f"p{i}", f"02:00:00:00:00:{i:02x}", f"10.1.0.{i}")


@pytestmark_root
async def test_each_tenant_network_has_its_own_ingress_port_and_routes(lab: Lab) -> None:
    # Two tenants, the same CIDR, cluster IP, service name and host name.
    web = Service("t/web", CLUSTER_IP, (ServicePort("TCP", 80, (Endpoint("10.1.0.2", 8080),)),))
    api = Service("t/api", "10.96.0.11", (ServicePort("TCP", 80, (Endpoint("10.1.0.3", 8080),)),))
    a = Network(id=1, cidr=CIDR, gateway=GW, pods=(pod(2), pod(3)), services=(web, api))
    b = Network(id=2, cidr=CIDR, gateway=GW, pods=(pod(2),), services=(web,))
    lab.host.apply(NetworkState((a, b)))
    lab.pod(a, pod(2), "a-web")
    lab.pod(a, pod(3), "a-api")
    lab.pod(b, pod(2), "b-web")
    a_services = {"a/web": service("a", "web", CLUSTER_IP), "a/api": service("a", "api", "10.96.0.11")}
    a_routes = routes_for(
        [
            ingress("a", "shop", "shop.example", "web"),
            ingress("a", "api", "shop.example", "api", path="/api"),
        ],
        a_services,
    )
    # b claims a's host name and a's service names: in its own network, that reaches only b's
    b_routes = routes_for(
        [ingress("b", "steal", "shop.example", "web"), ingress("b", "api", "api.example", "api")],
        {"b/web": service("b", "web", CLUSTER_IP)},
    )
    port_a = await lab.proxy.serve(a.id, lab.host.router_netns(a.id), a_routes)
    port_b = await lab.proxy.serve(b.id, lab.host.router_netns(b.id), b_routes)
    assert port_a != port_b

    async def ask(port: int, host: str, path: str = "/") -> tuple[int, str]:
        return await asyncio.to_thread(get, lab.client_ns, HOST_WAN, port, host, path)

    assert await ask(port_a, "shop.example", "/cart") == (200, f"a-web /cart {CLIENT}")
    assert await ask(port_a, "shop.example:80", "/api/v1?x=1") == (200, f"a-api /api/v1?x=1 {CLIENT}")
    assert await ask(port_b, "shop.example", "/api/v1") == (200, f"b-web /api/v1 {CLIENT}")
    assert (await ask(port_b, "api.example"))[0] == 503  # b's Ingress names an "api" that b does not have
    assert (await ask(port_a, "other.example"))[0] == 404
    # routes change in place; a network without Ingresses closes its port
    await lab.proxy.serve(a.id, lab.host.router_netns(a.id), Routes())
    assert (await ask(port_a, "shop.example"))[0] == 404
    await lab.proxy.stop(a.id)
    with pytest.raises(ConnectionRefusedError):
        await ask(port_a, "shop.example")


@pytestmark_root
async def test_a_networks_clients_cannot_take_the_agents_descriptors(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections past a network's bound are closed at once, before anything is read or
    dialled: the proxy lives in the node agent, whose descriptors every tenant needs."""
    monkeypatch.setattr(ingress_mod, "MAX_CONNECTIONS", 2)
    web = Service("t/web", CLUSTER_IP, (ServicePort("TCP", 80, (Endpoint("10.1.0.2", 8080),)),))
    net = Network(id=1, cidr=CIDR, gateway=GW, pods=(pod(2),), services=(web,))
    lab.host.apply(NetworkState((net,)))
    lab.pod(net, pod(2), "web")
    routes = routes_for(
        [ingress("a", "shop", "shop.example", "web")], {"a/web": service("a", "web", CLUSTER_IP)}
    )
    port = await lab.proxy.serve(net.id, lab.host.router_netns(net.id), routes)

    def dial() -> socket.socket:
        s = run_in_netns(lab.client_ns, lambda: socket.create_connection((HOST_WAN, port), timeout=5))
        s.settimeout(5)
        return s

    idle = [await asyncio.to_thread(dial) for _ in range(2)]  # say nothing: held until HEAD_TIMEOUT
    await asyncio.sleep(0.2)
    extra = await asyncio.to_thread(dial)
    assert await asyncio.to_thread(extra.recv, 1) == b""  # closed at once, not a 10 s wait
    extra.close()
    for s in idle:
        s.close()
    await asyncio.sleep(0.2)
    status, _ = await asyncio.to_thread(get, lab.client_ns, HOST_WAN, port, "shop.example", "/")
    assert status == 200
