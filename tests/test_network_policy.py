"""NetworkPolicy: what `network/policy.py` resolves from the API objects, and what the router's
rules then let through, on real netlink and nftables in namespaces the test makes (pods are
namespaces with a veth on the bridge, as in test_network_plumbing.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from hypernetes.network import Endpoint, Network, NetworkState, Pod, Service, ServicePort, TenantNetworkHost
from hypernetes.network.policy import PodPolicy, PolicyPod, PortRange, Rule, policy_pod, resolve
from hypernetes.objects import Obj
from hypernetes.objects.names import TENANT_LABEL
from tests.support.netns import (
    NO_ANSWER,
    Namespaces,
    Responder,
    leftovers,
    ping,
    sh,
    tcp_ask,
    udp_ask,
    unique_prefix,
)

CIDR, GW, SVC = "10.1.0.0/24", "10.1.0.1", "10.96.0.10"
HOST_WAN, WORLD = "198.51.100.1", "198.51.100.2"


def ns(name: str, tenant: str | None, **extra: str) -> Obj:
    lbl = {"kubernetes.io/metadata.name": name, **extra}
    if tenant:
        lbl[TENANT_LABEL] = tenant
    return {"metadata": {"name": name, "labels": lbl}}


def npol(namespace: str, name: str, spec: Obj) -> Obj:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


def ppod(namespace: str, ip: str, named: dict[str, tuple[str, int]] | None = None, **lbl: str) -> PolicyPod:
    return PolicyPod(namespace, lbl, ip, named or {})


NAMESPACES = {
    "a-web": ns("a-web", "acme", team="web"),
    "a-ops": ns("a-ops", "acme", team="ops"),
    "b-evil": ns("b-evil", "globex", team="web"),  # another tenant, labelled to look like acme's
}


# -- resolving (pure) ---------------------------------------------------------------------------


def test_selected_pods_are_isolated_and_rules_are_a_union() -> None:
    pods = [
        ppod("a-web", "10.1.0.4", {"http": ("TCP", 8080)}, app="web"),
        ppod("a-web", "10.1.0.2", app="client"),
        ppod("a-ops", "10.1.0.3", app="probe"),
        ppod("a-web", "10.1.0.5", app="other"),
    ]
    allow_clients = npol(
        "a-web",
        "clients",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]}
            ],
        },
    )
    allow_ops = npol(
        "a-web",
        "ops",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]}],
        },
    )
    deny_egress = npol(
        "a-web", "no-egress", {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]}
    )
    got = {p.ip: p for p in resolve([allow_clients, allow_ops, deny_egress], pods, NAMESPACES)}
    assert set(got) == {"10.1.0.4", "10.1.0.2"}  # the others are selected by nothing
    web = got["10.1.0.4"]
    assert web.egress is None
    assert set(web.ingress or ()) == {
        Rule(("10.1.0.2/32",), (PortRange("TCP", 8080, 8080),)),  # the named port, resolved on the pod
        Rule(("10.1.0.3/32",), ()),
    }
    assert got["10.1.0.2"] == PodPolicy("10.1.0.2", None, ())  # isolated for egress, nothing allowed


def test_a_namespace_selector_never_matches_another_tenants_namespace() -> None:
    """The attack: tenant globex labels its namespace like acme's (team=web), and acme's
    namespaceSelector {} ("every namespace") or team=web must still not let globex's pod in; nor
    may globex's policy name acme's namespaces to reach into them (it only selects its own pods)."""
    pods = [
        ppod("a-web", "10.1.0.4", app="web"),
        ppod("b-evil", "10.1.0.9", app="web"),
        ppod("a-ops", "10.1.0.3"),
    ]
    everyone = npol(
        "a-web", "all-ns", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}
    )
    labelled = npol(
        "a-web",
        "team-web",
        {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]}]},
    )
    got = resolve([everyone, labelled], pods, NAMESPACES)
    assert got == (
        PodPolicy("10.1.0.4", (Rule(("10.1.0.3/32", "10.1.0.4/32"), ()), Rule(("10.1.0.4/32",), ())), None),
    )
    evil = npol(
        "b-evil",
        "reach",
        {"podSelector": {}, "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]}]},
    )
    assert resolve([evil], pods, NAMESPACES) == (PodPolicy("10.1.0.9", (), (Rule(("10.1.0.9/32",), ()),)),)


def test_ip_blocks_ports_and_policy_types() -> None:
    pods = [ppod("a-web", "10.1.0.2"), ppod("a-web", "10.1.0.7", {"dns": ("UDP", 5353)}, app="dns")]
    pol = npol(
        "a-web",
        "egress",
        {
            "podSelector": {},
            "egress": [
                {"to": [{"ipBlock": {"cidr": "198.51.100.0/24", "except": ["198.51.100.128/25"]}}]},
                {
                    "ports": [
                        {"protocol": "TCP", "port": 30000, "endPort": 30100},
                        {"protocol": "UDP", "port": "dns"},
                    ]
                },
            ],
        },
    )
    got = {p.ip: p for p in resolve([pol], pods, NAMESPACES)}
    # policyTypes defaulted: Ingress (no rules: nothing in) and Egress (it has egress rules)
    assert got["10.1.0.2"].ingress == ()
    assert got["10.1.0.2"].egress == (
        Rule(("198.51.100.0/25",), ()),
        Rule(None, (PortRange("TCP", 30000, 30100),)),
        Rule(("10.1.0.7/32",), (PortRange("UDP", 5353, 5353),)),  # a named port: the pods that have it
    )


def test_policy_pod_reads_named_ports() -> None:
    pod = {
        "metadata": {"namespace": "a-web", "labels": {"app": "web"}},
        "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 80}, {"containerPort": 81}]}]},
    }
    assert policy_pod(pod, "10.1.0.4") == PolicyPod(
        "a-web", {"app": "web"}, "10.1.0.4", {"http": ("TCP", 80)}
    )


# -- enforcing (real namespaces and nftables) -----------------------------------------------------

pytestmark_root = pytest.mark.skipif(os.geteuid() != 0, reason="network plumbing needs root")


@dataclass
class Lab:
    host: TenantNetworkHost
    ns: Namespaces
    host_ns: str
    world_ns: str
    responders: list[Responder] = field(default_factory=list)

    def pod(self, net: Network, p: Pod, *ports: int) -> str:
        where = self.ns.add(f"{net.id}{p.ifname}")
        self.host.attach_veth(net, p.ifname, p.mac, where, ip=p.ip)
        for port in ports:
            self.responders.append(Responder(where, p.ifname, port))
        return where


@pytest.fixture
def lab() -> Iterator[Lab]:
    prefix = unique_prefix()
    spaces = Namespaces(prefix)
    made: Lab | None = None
    try:
        host_ns, world_ns = spaces.add("host"), spaces.add("world")
        spaces.wire(host_ns, "wan0", f"{HOST_WAN}/24", world_ns, "eth0", f"{WORLD}/24")
        made = Lab(TenantNetworkHost(host_ns, prefix), spaces, host_ns, world_ns)
        made.responders.append(Responder(world_ns, "world", 7000))
        yield made
        made.host.apply(NetworkState())
        assert [n for n in leftovers(prefix) if n.startswith(f"{prefix}-")] == []
    finally:
        if made is not None:
            for r in made.responders:
                r.close()
        spaces.close()
        for name in leftovers(prefix):
            sh("ip", "netns", "delete", name, check=False)


def p(i: int) -> Pod:
    return Pod(f"p{i}", f"02:00:00:00:00:{i:02x}", f"10.1.0.{i}")


POD_NS = {"10.1.0.2": "a-web", "10.1.0.3": "a-web", "10.1.0.4": "a-web", "10.1.0.5": "a-ops"}
POD_LABELS = {
    "10.1.0.2": {"app": "client"},
    "10.1.0.3": {"app": "other"},
    "10.1.0.4": {"app": "web"},
    "10.1.0.5": {},
}


def policies(*pols: Obj) -> tuple[PodPolicy, ...]:
    pods = [PolicyPod(POD_NS[ip], POD_LABELS[ip], ip, {"http": ("TCP", 8080)}) for ip in POD_NS]
    return resolve(pols, pods, NAMESPACES)


WEB_ONLY_FROM_CLIENTS = npol(
    "a-web",
    "web",
    {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress", "Egress"],  # and no egress rule: the web pod starts nothing itself
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]}
        ],
    },
)


def _ask(ns_: str, ip: str, port: int) -> str:
    return tcp_ask(ns_, ip, port)


@pytestmark_root
def test_ingress_policy_on_the_bridge_and_through_a_service(lab: Lab) -> None:
    svc = Service("a-web/web", SVC, (ServicePort("TCP", 80, (Endpoint("10.1.0.4", 8080),), node_port=30080),))
    base = Network(id=1, cidr=CIDR, gateway=GW, pods=(p(2), p(3), p(4), p(5)), services=(svc,))
    lab.host.apply(NetworkState((base,)))
    client, other, web = lab.pod(base, p(2)), lab.pod(base, p(3)), lab.pod(base, p(4), 8080, 8081)
    ops = lab.pod(base, p(5))
    # No policy: everyone reaches the web pod, directly and through its service and node port.
    assert _ask(other, "10.1.0.4", 8080) == "p4" and _ask(other, SVC, 80) == "p4"
    assert ping(web, "10.1.0.3")

    lab.host.apply(NetworkState((replace(base, policies=policies(WEB_ONLY_FROM_CLIENTS)),)))
    assert _ask(client, "10.1.0.4", 8080) == "p4"  # allowed peer and port, bridged
    assert _ask(client, SVC, 80) == "p4"  # the same through the cluster IP (routed, DNAT'd)
    assert _ask(client, "10.1.0.4", 8081) == NO_ANSWER  # not an allowed port
    assert _ask(other, "10.1.0.4", 8080) == NO_ANSWER  # not an allowed peer
    assert _ask(other, SVC, 80) == NO_ANSWER
    assert _ask(ops, "10.1.0.4", 8080) == NO_ANSWER  # another namespace of the tenant
    assert not ping(web, "10.1.0.3")  # egress isolated, nothing allowed: it starts nothing
    assert udp_ask(web, GW, 53) == NO_ANSWER  # not even DNS (upstream: no exception)
    assert _ask(lab.world_ns, HOST_WAN, 30080) == NO_ANSWER  # node port: from outside, not allowed
    # The other pods are not selected: they still talk to each other and to the world.
    assert ping(client, "10.1.0.3") and _ask(other, WORLD, 7000) == "world"

    # ipBlock for outside clients: the node port opens to the world's addresses only.
    from_world = npol(
        "a-web",
        "world",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}],
        },
    )
    lab.host.apply(NetworkState((replace(base, policies=policies(WEB_ONLY_FROM_CLIENTS, from_world)),)))
    assert _ask(lab.world_ns, HOST_WAN, 30080) == "p4"
    assert _ask(other, "10.1.0.4", 8080) == NO_ANSWER

    lab.host.apply(NetworkState((base,)))  # policies gone: open again
    assert _ask(other, "10.1.0.4", 8080) == "p4" and ping(web, "10.1.0.3")


@pytestmark_root
def test_egress_policy_and_dns(lab: Lab) -> None:
    base = Network(id=1, cidr=CIDR, gateway=GW, pods=(p(2), p(3), p(4)))
    lab.host.apply(NetworkState((base,)))
    client, _, web = lab.pod(base, p(2)), lab.pod(base, p(3), 8080), lab.pod(base, p(4), 8080)
    router = lab.host.router_netns(base.id)
    lab.responders.append(Responder(router, "dns", 53))  # stands in for the network's DNS server

    def only(*egress: Any) -> Obj:
        return npol(
            "a-web", "egress", {"podSelector": {"matchLabels": {"app": "client"}}, "egress": list(egress)}
        )

    to_web = {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 8080}]}
    lab.host.apply(NetworkState((replace(base, policies=policies(only(to_web))),)))
    assert _ask(client, "10.1.0.4", 8080) == "p4"
    assert _ask(client, "10.1.0.3", 8080) == NO_ANSWER
    assert _ask(client, WORLD, 7000) == NO_ANSWER
    assert udp_ask(client, GW, 53) == NO_ANSWER  # DNS only if a rule allows it
    assert _ask(web, "10.1.0.3", 8080) == "p3"  # unselected pods are free

    dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    world = {"to": [{"ipBlock": {"cidr": "198.51.100.0/24", "except": ["198.51.100.2/32"]}}]}
    lab.host.apply(NetworkState((replace(base, policies=policies(only(to_web, dns, world))),)))
    assert udp_ask(client, GW, 53) == "dns" and _ask(client, GW, 53) == "dns"
    assert _ask(client, WORLD, 7000) == NO_ANSWER  # excepted from the block
    lab.host.apply(
        NetworkState(
            (
                replace(
                    base,
                    policies=policies(only(to_web, dns, {"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]})),
                ),
            )
        )
    )
    assert _ask(client, WORLD, 7000) == "world"
