"""The node's side of tenant networks (`hypernetes/node/network.py`).

Unit tests of `build_state`, `guest_dns` and `guest_hosts` on hand-made API objects (no root).
Then, as root, `PodNetworks` against a real API server and real netlink/nftables in a host
namespace the test makes: a pod's attach (address, DNS, hosts, a tap on the router's bridge that
dies with its fd), not-ready pods, the network's status.hosts entry, DNS for a Service answered
on the gateway to a "pod" (a veth on the bridge), an agent restart that keeps the live tap, and
the pod's deletion leaving nothing of the prefix. Network ids and pod address annotations are
set directly (as the operator); no controller runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hypernetes.apiclient import ApiClient
from hypernetes.network import NetworkState, TenantNetworkHost
from hypernetes.network.dns import A, DnsServer, Message, Question, decode, encode
from hypernetes.network.ingress import IngressProxy
from hypernetes.network.policy import PodPolicy, Rule
from hypernetes.network.state import DEFAULT_LINK_POOL, Endpoint, Pod, ServicePort, validate
from hypernetes.node import network as nodenet
from hypernetes.node.network import (
    NetworkNotReady,
    PodNetworks,
    build_state,
    guest_dns,
    guest_hosts,
    tap_name,
)
from hypernetes.objects import Obj
from tests.support.apiserver import ApiServerThread, async_client
from tests.support.nethttp import Http, get
from tests.support.netns import NO_ANSWER, Namespaces, leftovers, ns_socket, sh, tcp_ask, unique_prefix
from tests.support.waiting import wait_for_async

NODE = "node1"
GV = "hypernetes.io/v1"
CIDR, GW = "10.1.0.0/24", "10.1.0.1"
SEARCH = ("web.svc.cluster.local", "svc.cluster.local", "cluster.local")

# -- API objects, as the informers deliver them ------------------------------------------------


def network(
    name: str,
    nid: int | None,
    cidr: str = CIDR,
    gateway: str = GW,
    *,
    tenant: str | None = None,
    default: bool = False,
    **spec: Any,
) -> Obj:
    meta: Obj = {"name": name}
    if default:
        meta["labels"] = {"hypernetes.io/default-network": "true"}
    body: Obj = {"cidr": cidr, "gateway": gateway, **spec}
    if nid is not None:
        body["id"] = nid
    if tenant is not None:
        body["tenant"] = tenant
    return {"apiVersion": GV, "kind": "Network", "metadata": meta, "spec": body}


def namespace(name: str, *, tenant: str | None = None, net: str | None = None) -> Obj:
    meta: Obj = {"name": name}
    if tenant is not None:
        meta["labels"] = {"hypernetes.io/tenant": tenant}
    if net is not None:
        meta["annotations"] = {"hypernetes.io/network": net}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def mac(i: int) -> str:
    return f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}"


def uid(i: int) -> str:
    return f"{i:08x}-0000-4000-8000-000000000000"


def pod(
    name: str,
    ns: str = "web",
    *,
    net: str | None = "default",
    ip: str | None = None,
    i: int = 5,
    node: str | None = NODE,
    phase: str | None = None,
    **spec: Any,
) -> Obj:
    notes = (
        {}
        if net is None
        else {
            "hypernetes.io/network": net,
            "hypernetes.io/ip": ip or f"10.1.0.{i}",
            "hypernetes.io/mac": mac(i),
        }
    )
    body: Obj = {"containers": [{"name": "c", "image": "busybox"}], **spec}
    if node is not None:
        body["nodeName"] = node
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid(i), "annotations": notes},
        "spec": body,
    }
    if phase is not None:
        obj["status"] = {"phase": phase}
    return obj


def service(
    name: str, ns: str = "web", cluster_ip: str = "10.96.0.10", ports: list[Obj] | None = None, **spec: Any
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": f"svc-{ns}-{name}"},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": ports
            if ports is not None
            else [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            **spec,
        },
    }


def endpoints(name: str, ns: str = "web", *subsets: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns},
        "subsets": list(subsets),
    }


def subset(*ips: str, port: int = 8080, name: str = "http", not_ready: tuple[str, ...] = ()) -> Obj:
    return {
        "addresses": [{"ip": ip} for ip in ips],
        "notReadyAddresses": [{"ip": ip} for ip in not_ready],
        "ports": [{"name": name, "port": port, "protocol": "TCP"}],
    }


PLURAL = {
    "NetworkPolicy": "networkpolicies",
    "Network": "networks",
    "Namespace": "namespaces",
    "Service": "services",
    "Endpoints": "endpoints",
    "Pod": "pods",
    "IPAllocation": "ipallocations",
}


def id_record(net: Obj) -> Obj:
    """The controller's record that gives a network its id."""
    nid = net["spec"]["id"]
    owner = {"kind": "Network", "name": net["metadata"]["name"], "uid": net["metadata"].get("uid")}
    return {
        "apiVersion": GV,
        "kind": "IPAllocation",
        "metadata": {"name": f"networkid.{nid}"},
        "spec": {"networkID": nid, "owner": owner},
    }


def objects(*items: Obj, records: bool = True) -> dict[str, dict[str, Obj]]:
    """The informers' stores, keyed as PodNetworks keeps them; with `records`, every network with
    an id holds it (the first one listed, when two claim one id)."""
    out: dict[str, dict[str, Obj]] = {k: {} for k in nodenet.KINDS}
    for o in items:
        out[PLURAL[o["kind"]]][PodNetworks._key(o)] = o
        if records and o["kind"] == "Network" and "id" in o["spec"]:
            out["ipallocations"].setdefault(f"networkid.{o['spec']['id']}", id_record(o))
    return out


def build(*items: Obj) -> nodenet.Desired:
    desired = build_state(objects(*items), NODE)
    validate(desired.state, "tst", DEFAULT_LINK_POOL)  # whatever it builds, the host can realise
    return desired


WEB = (network("default", 1), namespace("web"))


# -- build_state --------------------------------------------------------------------------------


def test_a_pod_puts_its_network_in_the_state_with_its_port() -> None:
    d = build(*WEB, pod("a", i=5), pod("b", i=6))
    (net,) = d.state.networks
    assert (net.id, net.cidr, net.gateway, net.mtu, net.egress) == (1, CIDR, GW, 1500, True)
    assert set(net.pods) == {
        Pod(tap_name(uid(5)), mac(5), "10.1.0.5"),
        Pod(tap_name(uid(6)), mac(6), "10.1.0.6"),
    }
    assert d.names == {1: "default"} and d.skipped == []
    assert tap_name(uid(5)) == "tap000000050000" and len(tap_name(uid(5))) == 15


def test_only_this_nodes_running_addressed_pods_count() -> None:
    d = build(
        *WEB,
        pod("other", i=5, node="node2"),
        pod("unbound", i=6, node=None),
        pod("done", i=7, phase="Succeeded"),
        pod("failed", i=8, phase="Failed"),
        pod("bare", net=None, i=9),
    )
    assert d.state.networks == () and d.skipped == []
    d = build(*WEB, pod("other", i=5, node="node2"), pod("running", i=6, phase="Running"))
    assert [p.ip for p in d.state.network(1).pods] == ["10.1.0.6"]


def test_a_network_without_id_is_skipped_with_the_reason() -> None:
    d = build(network("noid", None), namespace("web"), pod("a", net="noid"), pod("b", net="missing", i=6))
    assert d.state.networks == ()
    assert len(d.skipped) == 2
    assert d.skipped[0].startswith("pod web/a: network noid") and "no id" in d.skipped[0]
    assert d.skipped[1].startswith("pod web/b: network missing")


@pytest.mark.parametrize(
    "notes",
    [
        {"ip": "10.1.0.5"},  # the same IP as the first pod
        {"mac": mac(5)},  # the same MAC
        {"ip": GW},  # the gateway's
        {"ip": "10.1.0.255"},  # broadcast
        {"ip": "10.2.0.7"},  # outside the cidr
        {"ip": "not-an-ip"},
    ],
)
def test_a_second_pod_with_a_taken_or_bad_address_is_skipped(notes: dict[str, str]) -> None:
    second = pod("b", i=6)
    for k, v in notes.items():
        second["metadata"]["annotations"][f"hypernetes.io/{k}"] = v
    d = build(*WEB, pod("a", i=5), second)
    assert [p.ip for p in d.state.network(1).pods] == ["10.1.0.5"]
    assert len(d.skipped) == 1 and d.skipped[0].startswith("pod web/b: address")


@pytest.mark.parametrize("bad", ["02:00:00:00:00:AA", "03:00:00:00:00:07", "00:00:00:00:00:00", "zz"])
def test_a_pod_with_an_unusable_mac_is_skipped_not_fatal_to_the_state(bad: str) -> None:
    second = pod("b", i=6)
    second["metadata"]["annotations"]["hypernetes.io/mac"] = bad
    d = build(*WEB, pod("a", i=5), second)  # build() checks the host would accept the state
    assert [p.ip for p in d.state.network(1).pods] == ["10.1.0.5"]
    assert len(d.skipped) == 1 and d.skipped[0].startswith("pod web/b: address")


@pytest.mark.parametrize(
    "spec",
    [
        {"gateway": "10.9.0.1"},
        {"gateway": "10.1.0.0"},
        {"cidr": "10.1.0.0/31"},
        {"cidr": "10.1.0.1/24"},
        {"gateway": "nope"},
    ],
)
def test_a_network_the_host_cannot_build_is_skipped(spec: Obj) -> None:
    bad = network("bad", 2, **spec)
    d = build(*WEB, bad, pod("a", i=5), pod("b", net="bad", i=6))
    assert [n.id for n in d.state.networks] == [1]
    assert len(d.skipped) == 1 and d.skipped[0].startswith("pod web/b: network bad")


def test_of_two_networks_with_one_id_only_the_holder_is_built() -> None:
    items = (
        network("a", 3),
        network("b", 3, "10.2.0.0/24", "10.2.0.1"),
        network("c", 4, "10.3.0.0/24", "10.3.0.1"),
        namespace("web"),
        pod("pa", net="a", i=5),
        pod("pb", net="b", ip="10.2.0.6", i=6),
        pod("pc", net="c", ip="10.3.0.7", i=7),
    )
    d = build(*items)
    assert [n.id for n in d.state.networks] == [3, 4] and d.names == {3: "a", 4: "c"}
    assert any("does not hold its id 3" in s for s in d.skipped)
    # without the records (say, a store restored by hand) neither would be safe: neither is built
    bare = build_state(objects(*items, records=False), NODE)
    assert bare.state.networks == () and len(bare.skipped) == 3


def test_services_follow_the_namespace_to_its_network() -> None:
    nets = (
        network("default", 1),
        network("acme", 2, "10.2.0.0/24", "10.2.0.1", tenant="acme", default=True),
        network("acme-db", 3, "10.3.0.0/24", "10.3.0.1", tenant="acme"),
    )
    spaces = (
        namespace("web"),
        namespace("shop", tenant="acme"),
        namespace("db", tenant="acme", net="acme-db"),
    )
    pods = (
        pod("w", i=5),
        pod("s", "shop", net="acme", ip="10.2.0.5", i=6),
        pod("d", "db", net="acme-db", ip="10.3.0.5", i=7),
    )
    svcs = (
        service("web", "web", "10.96.0.1"),
        service("shop", "shop", "10.96.0.2"),
        service("db", "db", "10.96.0.3"),
    )
    eps = (
        endpoints("web", "web", subset("10.1.0.5")),
        endpoints("shop", "shop", subset("10.2.0.5")),
        endpoints("db", "db", subset("10.3.0.5")),
    )
    d = build(*nets, *spaces, *pods, *svcs, *eps)
    got = {n.id: [(s.name, s.cluster_ip, s.ports[0].endpoints) for s in n.services] for n in d.state.networks}
    assert got == {
        1: [("web/web", "10.96.0.1", (Endpoint("10.1.0.5", 8080),))],
        2: [("shop/shop", "10.96.0.2", (Endpoint("10.2.0.5", 8080),))],
        3: [("db/db", "10.96.0.3", (Endpoint("10.3.0.5", 8080),))],
    }
    for nid, name in ((1, "web"), (2, "shop"), (3, "db")):
        svc_objs, ep_objs = d.dns[nid]
        assert [o["metadata"]["name"] for o in svc_objs] == [name] == [o["metadata"]["name"] for o in ep_objs]
    # a tenant's namespace never lands on the cluster network, even naming it
    d = build(
        *nets,
        namespace("sneaky", tenant="acme", net="default"),
        pod("w", i=5),
        pod("s", "shop", net="acme", ip="10.2.0.5", i=6),
        service("x", "sneaky", "10.96.0.9"),
    )
    assert [s.name for s in d.state.network(2).services] == ["sneaky/x"]
    assert d.state.network(1).services == ()


def test_only_ready_addresses_in_the_cidr_become_endpoints() -> None:
    ep = endpoints("web", "web", subset("10.1.0.5", "10.1.0.6", GW, "10.9.9.9", not_ready=("10.1.0.7",)))
    d = build(*WEB, pod("a", i=5), service("web"), ep)
    (svc,) = d.state.network(1).services
    assert svc.ports == (ServicePort("TCP", 80, (Endpoint("10.1.0.5", 8080), Endpoint("10.1.0.6", 8080))),)


def test_named_target_ports_are_resolved_per_subset() -> None:
    ports = [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
    ]
    ep = endpoints(
        "web",
        "web",
        subset("10.1.0.5", port=8080),
        subset("10.1.0.6", port=9090),
        {"addresses": [{"ip": "10.1.0.5"}], "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}]},
    )
    d = build(*WEB, pod("a", i=5), service("web", ports=ports), ep)
    (svc,) = d.state.network(1).services
    assert svc.ports == (
        ServicePort("TCP", 80, (Endpoint("10.1.0.5", 8080), Endpoint("10.1.0.6", 9090))),
        ServicePort("UDP", 53, (Endpoint("10.1.0.5", 5353),)),
    )


def test_headless_and_external_name_services_are_dns_only() -> None:
    d = build(
        *WEB,
        pod("a", i=5),
        service("hl", cluster_ip="None"),
        endpoints("hl", "web", subset("10.1.0.5")),
        service("ext", cluster_ip="", type="ExternalName", externalName="example.com"),
    )
    assert d.state.network(1).services == ()
    svc_objs, ep_objs = d.dns[1]
    assert sorted(o["metadata"]["name"] for o in svc_objs) == ["ext", "hl"]
    assert [o["metadata"]["name"] for o in ep_objs] == ["hl"]
    assert d.skipped == []


@pytest.mark.parametrize("cip", ["10.1.0.50", "", "fd00::1", "garbage"])
def test_an_unusable_cluster_ip_is_skipped(cip: str) -> None:
    d = build(*WEB, pod("a", i=5), service("bad", cluster_ip=cip), service("ok", cluster_ip="10.96.0.11"))
    assert [s.name for s in d.state.network(1).services] == ["web/ok"]
    if cip:  # none yet is normal for a moment (the controller gives it): not worth a warning
        assert len(d.skipped) == 1 and d.skipped[0].startswith("service web/bad: cluster IP")
    else:
        assert d.skipped == []
    assert sorted(o["metadata"]["name"] for o in d.dns[1][0]) == ["bad", "ok"]  # DNS still knows it


def test_node_ports_are_carried_and_one_node_port_is_published_once() -> None:
    def np(name: str, ns: str, cip: str, node_port: int, kind: str = "NodePort") -> Obj:
        return service(
            name,
            ns,
            cip,
            [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": node_port}],
            type=kind,
        )

    d = build(
        network("default", 1),
        network("other", 2, "10.2.0.0/24", "10.2.0.1"),
        namespace("web"),
        namespace("o", net="other"),
        pod("a", i=5),
        pod("b", "o", net="other", ip="10.2.0.5", i=6),
        np("web", "web", "10.96.0.1", 30080),
        np("clash", "o", "10.96.0.1", 30080),
        np("lb", "o", "10.96.0.2", 30081, "LoadBalancer"),
        service("plain", "web", "10.96.0.3", [{"port": 81, "nodePort": 30082}]),
    )
    ports = {s.name: s.ports[0].node_port for n in d.state.networks for s in n.services}
    # the first by uid keeps it ("svc-o-clash" < "svc-web-web"); the other is still a ClusterIP
    assert ports == {"o/clash": 30080, "web/web": None, "o/lb": 30081, "web/plain": None}
    assert [s for s in d.skipped if "30080" in s] == ["service web/web: node port 30080 is used twice"]


def test_services_of_networks_without_local_pods_are_absent() -> None:
    d = build(
        network("default", 1),
        network("other", 2, "10.2.0.0/24", "10.2.0.1"),
        namespace("web"),
        namespace("o", net="other"),
        pod("a", i=5),
        pod("far", "o", net="other", ip="10.2.0.5", i=6, node="node2"),
        service("web"),
        service("o", "o"),
        service("orphan", "nowhere"),
    )
    assert [n.id for n in d.state.networks] == [1] and set(d.dns) == {1}
    assert [s.name for s in d.state.network(1).services] == ["web/web"]


def test_services_on_the_same_port_are_all_published_but_one_address_only_once() -> None:
    d = build(
        *WEB,
        pod("a", i=5),
        service("one", cluster_ip="10.96.0.1"),
        service("two", cluster_ip="10.96.0.2"),
        service("three", cluster_ip="10.96.0.1"),
    )
    got = [(s.name, s.cluster_ip, [p.port for p in s.ports]) for s in d.state.network(1).services]
    assert got == [
        ("web/one", "10.96.0.1", [80]),
        ("web/three", "10.96.0.1", []),
        ("web/two", "10.96.0.2", [80]),
    ]
    assert d.skipped == ["service web/three: 10.96.0.1 TCP/80 is another service's"]


def test_network_policies_cover_the_networks_pods_on_every_node_and_no_other_network() -> None:
    """Policies of the network's namespaces, resolved over its pods on all nodes (a remote pod, known
    by its address record and the labels the controller copies there, is a peer and is itself held
    to its policies here); another network's pods and policies never count, even at the same
    addresses."""
    web_pod = pod("web", i=5)
    web_pod["metadata"]["labels"] = {"app": "web"}

    def remote(net: str, ns: str, ip: str, labels: dict[str, str]) -> Obj:
        owner = {"kind": "Pod", "namespace": ns, "name": ip, "uid": ip}
        spec = {"network": net, "ip": ip, "mac": mac(9), "node": "node2", "owner": owner, "labels": labels}
        return {"apiVersion": GV, "kind": "IPAllocation", "metadata": {"name": f"{net}.{ip}"}, "spec": spec}

    client = remote("default", "web", "10.1.0.6", {"app": "client"})
    other_net = remote("othernet", "other", "10.1.0.7", {"app": "client"})  # another network
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}]}
            ],
        },
    }
    elsewhere = {**policy, "metadata": {"name": "deny", "namespace": "other"}, "spec": {"podSelector": {}}}
    d = build(
        *WEB,
        network("othernet", 2),
        namespace("other", net="othernet"),
        web_pod,
        client,
        other_net,
        policy,
        elsewhere,
    )
    (net,) = d.state.networks
    assert net.policies == (PodPolicy("10.1.0.5", (Rule(("10.1.0.6/32",), ()),), None),)
    client["spec"]["labels"] = {"app": "stranger"}  # the controller copied a label change
    assert build(*WEB, web_pod, client, policy).state.network(1).policies == (
        PodPolicy("10.1.0.5", (Rule((), ()),), None),  # a rule whose peers are no pod
    )
    assert build(*WEB, web_pod).state.network(1).policies == ()  # no policy: nothing isolated


def test_an_egress_off_network_and_the_mtu_are_carried() -> None:
    d = build_state(objects(network("default", 1, egressNAT=False), namespace("web"), pod("a")), NODE, 1400)
    net = d.state.network(1)
    assert (net.egress, net.mtu) == (False, 1400)
    assert net.services == ()


# -- guest_dns, guest_hosts ---------------------------------------------------------------------


def test_cluster_first_is_the_gateway_with_the_search_path() -> None:
    assert guest_dns(pod("a"), GW, ["9.9.9.9"]) == ((GW,), SEARCH, ("ndots:5",))
    p = pod(
        "a",
        dnsPolicy="ClusterFirst",
        dnsConfig={
            "nameservers": ["1.1.1.1", GW],
            "searches": ["corp.example", "svc.cluster.local"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}, {"value": "nameless"}],
        },
    )
    assert guest_dns(p, GW, []) == ((GW, "1.1.1.1"), (*SEARCH, "corp.example"), ("ndots:2", "edns0"))


def test_default_is_the_networks_upstreams_else_the_gateway() -> None:
    upstreams = ["9.9.9.9", "8.8.8.8"]
    assert guest_dns(pod("a", dnsPolicy="Default"), GW, upstreams) == (tuple(upstreams), (), ())
    assert guest_dns(pod("a", dnsPolicy="Default"), GW, []) == ((GW,), (), ())


def test_none_is_only_the_dns_config_within_the_c_librarys_limits() -> None:
    assert guest_dns(pod("a", dnsPolicy="None"), GW, ["9.9.9.9"]) == ((), (), ())
    cfg = {
        "nameservers": [f"10.0.0.{i}" for i in range(5)],
        "searches": [f"s{i}.example" for i in range(8)],
        "options": [{"name": "timeout", "value": "1"}],
    }
    servers, searches, options = guest_dns(pod("a", dnsPolicy="None", dnsConfig=cfg), GW, [])
    assert servers == ("10.0.0.0", "10.0.0.1", "10.0.0.2")
    assert searches == tuple(f"s{i}.example" for i in range(6)) and options == ("timeout:1",)


def test_hosts_has_the_pod_its_subdomain_name_and_its_aliases() -> None:
    assert guest_hosts(pod("a"), "10.1.0.5") == ("10.1.0.5\ta",)
    p = pod(
        "a",
        hostname="db-0",
        subdomain="db",
        hostAliases=[
            {"ip": "10.9.0.1", "hostnames": ["foo", "foo.local"]},
            {"ip": "10.9.0.2", "hostnames": []},
        ],
    )
    assert guest_hosts(p, "10.1.0.5") == (
        "10.1.0.5\tdb-0.db.web.svc.cluster.local db-0",
        "10.9.0.1\tfoo foo.local",
    )


# -- PodNetworks, as root ----------------------------------------------------------------------

root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="tenant network plumbing needs root and iproute2"
)


@dataclass
class Node:
    api: ApiServerThread
    client: ApiClient
    prefix: str
    ns: Namespaces
    host_ns: str
    dns: DnsServer
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def host(self) -> TenantNetworkHost:
        return TenantNetworkHost(self.host_ns, self.prefix)

    def start(self) -> PodNetworks:
        pn = PodNetworks(self.client, self.host(), NODE, dns=self.dns)
        self.tasks.append(asyncio.create_task(pn.run()))
        return pn

    async def stop(self, pn: PodNetworks) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

        # a cancelled apply may still run in its worker thread: wait for the host's lock
        def idle() -> None:
            with pn.host._lock:
                pass

        await asyncio.to_thread(idle)

    def router(self, nid: int) -> str:
        return f"{self.prefix}-{nid}"

    def links(self, netns: str) -> str:
        return sh("ip", "-o", "-d", "link", "show", netns=netns).stdout

    async def create(self, obj: Obj) -> Obj:
        made = await self.client.create("v1" if obj["apiVersion"] == "v1" else GV, PLURAL[obj["kind"]], obj)
        if obj["kind"] == "Network" and "id" in obj["spec"]:  # as the controller does
            await self.client.create(GV, "ipallocations", id_record(made))
        return dict(made)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServerThread]:
    server = ApiServerThread(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def node(api: ApiServerThread) -> AsyncIterator[Node]:
    prefix = unique_prefix()
    ns = Namespaces(prefix)
    dns = DnsServer(upstreams=[])
    made: Node | None = None
    try:
        async with async_client(api) as client:
            made = Node(api, client, prefix, ns, ns.add("host"), dns)
            try:
                yield made
            finally:
                for t in made.tasks:
                    t.cancel()
                await asyncio.gather(*made.tasks, return_exceptions=True)
                await dns.close()
                for fd in made.fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                if made.host_ns in leftovers(prefix):
                    await asyncio.to_thread(made.host().apply, NetworkState())
    finally:
        ns.close()
        for name in leftovers(prefix):
            sh("ip", "netns", "delete", name, check=False)


def dns_query(netns: str, server: str, name: str) -> list[str]:
    """The A records a resolver in `netns` gets for `name` from `server`:53 (blocking)."""
    with ns_socket(netns, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        labels = tuple(label.encode() for label in name.split("."))
        s.sendto(encode(Message(id=0x1234, rd=True, questions=[Question(labels, A)])), (server, 53))
        reply = decode(s.recv(4096))
    assert reply.id == 0x1234 and reply.qr
    return [
        socket.inet_ntoa(rr.rdata) for rr in reply.answers if rr.rtype == A and isinstance(rr.rdata, bytes)
    ]


def pod_body(name: str, i: int, net: str = "default", ip: str | None = None) -> Obj:
    p = pod(name, i=i, net=net, ip=ip)
    del p["metadata"]["uid"]  # the server's
    return p


@root
async def test_attach_dns_status_restart_and_delete(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodenet, "DEBOUNCE", 0.01)
    for obj in (network("default", 7), namespace("web")):
        await node.create(obj)
    p = await node.create(pod_body("a", 5))
    peer = await node.create(pod_body("b", 6))  # played by a namespace with a veth on the bridge
    await node.create(service("web"))
    await node.create(endpoints("web", "web", subset("10.1.0.6")))
    pn = node.start()
    router = node.router(7)

    cfg = await asyncio.wait_for(pn.attach(p), 15)
    assert cfg.tap_fd is not None
    node.fds.append(cfg.tap_fd)
    assert (cfg.mac, cfg.addresses, cfg.gateway, cfg.mtu) == (mac(5), ("10.1.0.5/24",), GW, 1500)
    assert (cfg.dns_servers, cfg.dns_search, cfg.dns_options) == ((GW,), SEARCH, ("ndots:5",))
    assert cfg.hosts == ("10.1.0.5\ta",)
    tap = tap_name(p["metadata"]["uid"])
    assert f"{tap}:" in node.links(router) and "master br0" in node.links(router).split(f"{tap}:")[1]

    # the network's status has this node's entry
    async def reported() -> Obj | None:
        net = await node.client.get(GV, "networks", "default")
        hosts = (net.get("status") or {}).get("hosts") or []
        return next((h for h in hosts if h.get("node") == NODE and h.get("ready") is True), None)

    await wait_for_async(reported, 10, 0.05, "status.hosts for node1")

    # a "pod" on the bridge asks the gateway for the service
    peer_ns = node.ns.add("peer")
    peer_tap = tap_name(peer["metadata"]["uid"])
    net = pn.applied.state.network(7) if pn.applied else None
    assert net is not None and any(x.ifname == peer_tap for x in net.pods)
    await asyncio.to_thread(pn.host.attach_veth, net, peer_tap, mac(6), peer_ns, ip="10.1.0.6")
    answer = await asyncio.to_thread(dns_query, peer_ns, GW, "web.web.svc.cluster.local")
    assert answer == ["10.96.0.10"]

    # an agent restart: the live VM's tap (and the veth pod) outlive the new instance's first apply
    await node.stop(pn)
    pn2 = node.start()
    await wait_for_async(lambda: pn2.applied, 10, 0.05, "the new instance's first apply")
    await asyncio.sleep(0.1)
    links = node.links(router)
    assert f"{tap}:" in links and f"{peer_tap}@" in links
    answer = await asyncio.to_thread(dns_query, peer_ns, GW, "web.web.svc.cluster.local")
    assert answer == ["10.96.0.10"]

    # closing the fd (QEMU exiting) removes the tap
    os.close(cfg.tap_fd)
    node.fds.remove(cfg.tap_fd)
    await wait_for_async(lambda: f"{tap}:" not in node.links(router), 10, 0.05, "the tap to go")

    # deleting the pods removes the router and everything of the prefix
    for name in ("a", "b"):
        await node.client.delete("v1", "pods", name, "web", body={"gracePeriodSeconds": 0})
    await wait_for_async(
        lambda: pn2.applied is not None and pn2.applied.state.networks == (),
        10,
        0.05,
        "an empty state applied",
    )
    assert not pn2.errors
    assert [n for n in leftovers(node.prefix) if n.startswith(f"{node.prefix}-")] == []
    assert f"{node.prefix}-" not in node.links(node.host_ns)
    assert f"{node.prefix}_host" not in sh("nft", "list", "tables", netns=node.host_ns).stdout
    assert pn2.dns is not None and pn2.dns.networks() == []


@root
async def test_pods_that_cannot_be_attached_are_not_ready(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodenet, "DEBOUNCE", 0.01)
    monkeypatch.setattr(nodenet, "ATTACH_TIMEOUT", 1.0)
    for obj in (network("default", 7), network("noid", None, "10.2.0.0/24", "10.2.0.1"), namespace("web")):
        await node.create(obj)
    pn = node.start()
    bare = pod_body("bare", 5, net="default")
    bare["metadata"]["annotations"] = {}
    started = time.monotonic()
    with pytest.raises(NetworkNotReady, match="address"):
        await pn.attach(await node.create(bare))
    assert time.monotonic() - started < 0.5
    p = await node.create(pod_body("noid", 6, net="noid", ip="10.2.0.6"))
    started = time.monotonic()
    with pytest.raises(NetworkNotReady, match=r"network noid is not set up on this node: .*no id") as err:
        await pn.attach(p)
    assert 0.9 < time.monotonic() - started < 5
    assert err.value.reason == "ContainerCreating"
    assert pn.applied is not None and pn.applied.state.networks == ()
    assert leftovers(f"{node.prefix}-") == []


class _StubHost:
    """Stands in for TenantNetworkHost where attach only needs names and a tap."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def router_netns(self, nid: int) -> str:
        return f"tst-{nid}"

    def create_tap(self, net: object, ifname: str, mac: str) -> int:
        if self.fail:
            raise RuntimeError("network 1 is not set up on this host")
        return 99


async def test_attach_of_a_placed_pod_and_a_router_gone_meanwhile() -> None:
    items = (*WEB, pod("a", i=5))
    for fail in (False, True):
        pn = PodNetworks(None, _StubHost(fail), NODE)  # type: ignore[arg-type]
        pn.objs = objects(*items)
        pn.applied = build(*items)
        if not fail:
            cfg = await pn.attach(pod("a", i=5))
            assert (cfg.tap_fd, cfg.addresses, cfg.dns_servers) == (99, ("10.1.0.5/24",), (GW,))
            continue
        with pytest.raises(NetworkNotReady, match="not set up"):
            await pn.attach(pod("a", i=5))


@root
async def test_network_policy_and_ingress_from_the_api(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects created through a real API server reach the host: a NetworkPolicy isolates the web
    pod (veth "pods" on the bridge), and an Ingress gets this network's ingress port, routes to
    the web service through the router, and its status names this node's address and the port."""
    monkeypatch.setattr(nodenet, "DEBOUNCE", 0.01)
    node_ip = "192.0.2.10"
    await node.client.create(
        "v1",
        "nodes",
        {"metadata": {"name": NODE, "annotations": {"hypernetes.io/underlay-address": node_ip}}},
    )
    for obj in (network("default", 7), namespace("web")):
        await node.create(obj)
    pods = {}
    for name, i, app in (("web", 5, "web"), ("client", 6, "client"), ("other", 7, "other")):
        body = pod_body(name, i)
        body["metadata"]["labels"] = {"app": app}
        pods[name] = await node.create(body)
    await node.create(service("web"))
    await node.create(endpoints("web", "web", subset("10.1.0.5")))
    base = 21000 + secrets.randbelow(4000)
    pn = PodNetworks(
        node.client,
        node.host(),
        NODE,
        dns=node.dns,
        ingress=IngressProxy(node.host_ns, lambda nid: base + nid),
    )
    node.tasks.append(asyncio.create_task(pn.run()))
    await wait_for_async(lambda: pn.applied and pn.applied.state.networks, 10, 0.05, "the network built")
    assert pn.applied is not None
    net = pn.applied.state.network(7)
    spaces = {}
    for name, i in (("web", 5), ("client", 6), ("other", 7)):
        spaces[name] = node.ns.add(name)
        ifname = tap_name(pods[name]["metadata"]["uid"])
        await asyncio.to_thread(pn.host.attach_veth, net, ifname, mac(i), spaces[name], ip=f"10.1.0.{i}")
    web = Http(spaces["web"], "web")
    try:
        assert (await asyncio.to_thread(get, spaces["other"], "10.1.0.5", 8080, "x"))[0] == 200  # open
        policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "web"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
            },
        }
        await node.client.create("networking.k8s.io/v1", "networkpolicies", policy)
        await wait_for_async(
            lambda: pn.applied and pn.applied.state.network(7).policies, 10, 0.05, "the policy applied"
        )
        got = await asyncio.to_thread(get, spaces["client"], "10.1.0.5", 8080, "x")
        assert got[0] == 200
        assert await asyncio.to_thread(tcp_ask, spaces["other"], "10.1.0.5", 8080) == NO_ANSWER

        ing = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": "web"},
            "spec": {
                "rules": [
                    {
                        "host": "shop.example",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "web", "port": {"name": "http"}}},
                                }
                            ]
                        },
                    }
                ]
            },
        }
        await node.client.create("networking.k8s.io/v1", "ingresses", ing)

        async def published() -> Obj | None:
            got = await node.client.get("networking.k8s.io/v1", "ingresses", "shop", "web")
            return next(iter((got.get("status") or {}).get("loadBalancer", {}).get("ingress") or []), None)

        entry = await wait_for_async(published, 10, 0.05, "the Ingress status")
        assert entry == {"ip": node_ip, "ports": [{"port": base + 7, "protocol": "TCP"}]}
        status, body = await asyncio.to_thread(get, node.host_ns, "127.0.0.1", base + 7, "shop.example", "/a")
        assert (status, body.split(" ")[:2]) == (200, ["web", "/a"])
        assert (await asyncio.to_thread(get, node.host_ns, "127.0.0.1", base + 7, "other.example"))[0] == 404
        await node.client.delete("networking.k8s.io/v1", "ingresses", "shop", "web")
        await wait_for_async(lambda: not pn.ingress or not pn.ingress.networks, 10, 0.05, "the port closed")
    finally:
        web.close()
        await node.stop(pn)
