"""nftables rulesets for a router namespace and for the host, as libnftables JSON.

Each namespace gets one document per apply: every table in it is added, deleted and re-created
in the same transaction (the `add; delete; add` idiom), so a re-apply swaps the whole ruleset
atomically and leaves no stale chain, set or element behind. docs/network.md explains each rule.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Sequence
from typing import Any

from hypernetes.network.policy import PodPolicy, Rule
from hypernetes.network.state import BRIDGE, UPLINK, VXLAN, VXLAN_PORT, LinkAddresses, Network, router_mac
from hypernetes.objects import Obj

# Router namespace tables, one per concern.
PORTS = ("bridge", "antispoof")  # what a pod's port may send: its own MAC, ARP and IPv4 source
FILTER = ("inet", "filter")  # what may reach what through the router
NAT = ("ip", "nat")  # services (ClusterIP, NodePort) and egress masquerade
LINK_LOCAL = "169.254.0.0/16"


class NftError(RuntimeError):
    pass


# -- expression helpers ------------------------------------------------------------------


def meta(key: str) -> Obj:
    return {"meta": {"key": key}}


def payload(protocol: str, fld: str) -> Obj:
    return {"payload": {"protocol": protocol, "field": fld}}


def ct(key: str) -> Obj:
    return {"ct": {"key": key}}


def concat(*items: Any) -> Obj:
    return {"concat": list(items)}


def match(left: Any, right: Any, op: str = "==") -> Obj:
    return {"match": {"op": op, "left": left, "right": right}}


def cidr_expr(cidr: str) -> Obj:
    net = ipaddress.IPv4Network(cidr)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def anon_set(*items: Any) -> Obj:
    return {"set": list(items)}


ACCEPT: Obj = {"accept": None}
DROP: Obj = {"drop": None}
ESTABLISHED = match(ct("state"), ["established", "related"], "in")
INVALID = match(ct("state"), "invalid", "in")


def proto(p: str) -> str:
    return p.lower()  # Kubernetes "TCP" → nft "tcp"


class Ruleset:
    """Collects one namespace's tables; `commands()` orders them so references resolve."""

    def __init__(self) -> None:
        self._tables: list[tuple[str, str]] = []
        self._chains: list[Obj] = []
        self._sets: list[Obj] = []
        self._rules: list[Obj] = []

    def table(self, family: str, name: str) -> None:
        self._tables.append((family, name))

    def chain(self, t: tuple[str, str], name: str, hook: tuple[str, str, int, str] | None = None) -> None:
        """hook: (type, hook, priority, policy) for a base chain."""
        c: Obj = {"family": t[0], "table": t[1], "name": name}
        if hook:
            c.update(type=hook[0], hook=hook[1], prio=hook[2], policy=hook[3])
        self._chains.append({"chain": c})

    def set(
        self,
        t: tuple[str, str],
        name: str,
        typ: str | list[str],
        elems: Sequence[Any],
        *,
        map_to: str | None = None,
        flags: Sequence[str] = (),
    ) -> None:
        s: Obj = {"family": t[0], "table": t[1], "name": name, "type": typ}
        if map_to:
            s["map"] = map_to
        if flags:
            s["flags"] = list(flags)
        if elems:
            s["elem"] = list(elems)
        self._sets.append({"map" if map_to else "set": s})

    def rule(self, t: tuple[str, str], chain: str, *expr: Obj, comment: str | None = None) -> None:
        r: Obj = {"family": t[0], "table": t[1], "chain": chain, "expr": list(expr)}
        if comment:
            r["comment"] = comment
        self._rules.append({"rule": r})

    def commands(self) -> list[Obj]:
        cmds: list[Obj] = []
        for family, name in self._tables:
            t = {"table": {"family": family, "name": name}}
            cmds += [{"add": t}, {"delete": t}, {"add": t}]
        # Regular chains before the verdict maps that jump to them, rules last.
        cmds += [{"add": c} for c in self._chains]
        cmds += [{"add": s} for s in self._sets]
        cmds += [{"add": r} for r in self._rules]
        return cmds


def delete_tables(tables: Sequence[tuple[str, str]]) -> list[Obj]:
    """Commands removing these tables, whether they exist or not."""
    cmds: list[Obj] = []
    for family, name in tables:
        t = {"table": {"family": family, "name": name}}
        cmds += [{"add": t}, {"delete": t}]
    return cmds


def _comment(text: str) -> str:
    # nft comments are at most 128 bytes; names come from the API, keep them printable.
    return "".join(c if c.isascii() and c.isprintable() and c != '"' else "?" for c in text)[:100]


def refuse_rules(r: Ruleset, t: tuple[str, str], chain: str) -> None:
    """What kube-proxy does for a service without endpoints: TCP reset, else port unreachable."""
    r.rule(t, chain, match(meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}})
    r.rule(t, chain, {"reject": {"type": "icmpx", "expr": "port-unreachable"}})


# -- the router namespace ------------------------------------------------------------------


def router_ruleset(net: Network, link: LinkAddresses) -> list[Obj]:
    r = Ruleset()
    _antispoof(r, net)
    _filter(r, net, link)
    _nat(r, net, link)
    return r.commands()


def _antispoof(r: Ruleset, net: Network) -> None:
    """Bridge-family ingress check of every frame a port sends. Ports not listed (a stray link)
    send nothing at all: the base chain's policy is drop. The VXLAN port is held to the same
    rules with what the API says lives behind it: the remote pods' MAC and IP pairs (ARP too:
    the VXLAN device answers ARP for them), and the other hosts' routers (their MAC, and their
    underlay address as source: the SNAT of their service traffic)."""
    t = PORTS
    r.table(*t)
    r.chain(t, "from_ip")
    r.chain(t, "from_arp")
    r.chain(t, "prerouting", ("filter", "prerouting", -200, "drop"))
    macs = [concat(p.ifname, p.mac) for p in net.pods]
    ips = [concat(p.ifname, p.ip) for p in net.pods]
    arps = [concat(p.ifname, p.mac, p.ip) for p in net.pods]
    ov = net.overlay
    if ov is not None:
        macs += [concat(VXLAN, p.mac) for p in ov.remote_pods]
        macs += [concat(VXLAN, router_mac(h)) for h in ov.peers]
        ips += [concat(VXLAN, p.ip) for p in ov.remote_pods] + [concat(VXLAN, h) for h in ov.peers]
        arps += [concat(VXLAN, p.mac, p.ip) for p in ov.remote_pods]
    r.set(t, "macs", ["ifname", "ether_addr"], macs)
    r.set(t, "ips", ["ifname", "ipv4_addr"], ips)
    r.set(t, "arps", ["ifname", "ether_addr", "ipv4_addr"], arps)
    if ov is not None:
        # The router's frames leave for other hosts with this host's router MAC: every host has
        # the gateway's MAC, and a bridge must never see its own address come in from a port.
        r.chain(t, "postrouting", ("filter", "postrouting", 0, "accept"))
        r.rule(
            t,
            "postrouting",
            match(meta("oifname"), VXLAN),
            match(payload("ether", "saddr"), net.gateway_mac),
            {"mangle": {"key": payload("ether", "saddr"), "value": router_mac(ov.local)}},
        )
    if ov is not None:
        # Frames other hosts' routers send to this router (replies to its SNAT address) come to
        # its router MAC: handed to the router as its own (the IP stack drops a frame for another
        # MAC, even one the bridge delivers locally).
        r.rule(
            t,
            "prerouting",
            match(meta("iifname"), VXLAN),
            match(payload("ether", "daddr"), router_mac(ov.local)),
            {"mangle": {"key": payload("ether", "daddr"), "value": net.gateway_mac}},
            {"mangle": {"key": meta("pkttype"), "value": "host"}},
        )
    # Only the port's own MAC, and then only IPv4 and ARP (no IPv6, VLAN tags or other types).
    r.rule(
        t,
        "prerouting",
        match(concat(meta("iifname"), payload("ether", "saddr")), "@macs"),
        {
            "vmap": {
                "key": payload("ether", "type"),
                "data": anon_set(
                    ["ip", {"jump": {"target": "from_ip"}}], ["arp", {"jump": {"target": "from_arp"}}]
                ),
            }
        },
    )
    r.rule(t, "from_ip", match(concat(meta("iifname"), payload("ip", "saddr")), "@ips"), ACCEPT)
    r.rule(
        t,
        "from_arp",
        match(concat(meta("iifname"), payload("arp", "saddr ether"), payload("arp", "saddr ip")), "@arps"),
        ACCEPT,
    )


def _router_addrs(net: Network) -> Obj:
    return anon_set(*sorted({net.gateway, net.snat_ip}))


def _filter(r: Ruleset, net: Network, link: LinkAddresses) -> None:
    t = FILTER
    r.table(*t)
    r.chain(t, "refuse")
    r.chain(t, "input", ("filter", "input", 0, "drop"))
    r.chain(t, "forward", ("filter", "forward", 0, "drop"))
    cluster_ips = sorted({s.cluster_ip for s in net.services if s.cluster_ip})
    dead_nodeports = sorted(
        {
            (proto(sp.protocol), sp.node_port)
            for s in net.services
            if s.cluster_ip
            for sp in s.ports
            if sp.node_port and not sp.endpoints
        }
    )
    r.set(t, "cluster_ips", "ipv4_addr", cluster_ips)
    peers = list(net.overlay.peers) if net.overlay is not None else []
    r.set(t, "remote_routers", "ipv4_addr", peers)
    r.set(t, "dead_nodeports", ["inet_proto", "inet_service"], [concat(p, n) for p, n in dead_nodeports])
    refuse_rules(r, t, "refuse")
    policies = _policy_chains(r, t, net.policies)

    # The router itself: pods may use DNS and ping on the gateway; nothing else is open.
    r.rule(t, "input", ESTABLISHED, ACCEPT)
    r.rule(t, "input", INVALID, DROP)
    r.rule(t, "input", match(meta("iifname"), "lo"), ACCEPT)
    if policies:  # the gateway's DNS is a destination like any other for an egress policy
        r.rule(t, "input", match(meta("iifname"), BRIDGE), POLICY_EGRESS)
    r.rule(
        t,
        "input",
        match(meta("iifname"), BRIDGE),
        match(payload("ip", "daddr"), _router_addrs(net)),
        match(meta("l4proto"), anon_set("tcp", "udp")),
        match(payload("th", "dport"), 53),
        ACCEPT,
    )
    r.rule(
        t,
        "input",
        match(meta("iifname"), BRIDGE),
        match(payload("ip", "daddr"), _router_addrs(net)),
        match(payload("icmp", "type"), "echo-request"),
        ACCEPT,
    )
    r.rule(
        t,
        "input",
        match(meta("iifname"), UPLINK),
        match(concat(meta("l4proto"), payload("th", "dport")), "@dead_nodeports"),
        {"goto": {"target": "refuse"}},
        comment="node port without ready endpoints",
    )

    # Through the router. An endpoint here answering another host's router (its SNAT address)
    # sends the reply to its own gateway, this router, which never saw the flow: passed on over
    # the segment untracked (routes to those addresses point at the other routers' MACs).
    if net.overlay is not None:
        r.chain(t, "raw", ("filter", "prerouting", -300, "accept"))
        r.rule(
            t,
            "raw",
            match(meta("iifname"), BRIDGE),
            match(payload("ip", "daddr"), "@remote_routers"),
            {"notrack": None},
        )
        # ... and so are the requests of those flows, which reach this router only as bridged
        # frames with NetworkPolicy on (bridge-nf-call-iptables): tracked one way, their next
        # packets would look invalid here.
        r.rule(
            t,
            "raw",
            match(meta("iifname"), BRIDGE),
            match(payload("ip", "saddr"), "@remote_routers"),
            {"notrack": None},
        )
    r.rule(
        t,
        "forward",
        match(meta("iifname"), BRIDGE),
        match(meta("oifname"), BRIDGE),
        match(payload("ip", "daddr"), "@remote_routers"),
        ACCEPT,
        comment="to other hosts' routers",
    )
    r.rule(t, "forward", ESTABLISHED, ACCEPT)
    r.rule(t, "forward", INVALID, DROP)
    # A cluster IP still in place here was not DNAT'd: no ready endpoint, or not a service port.
    r.rule(t, "forward", match(payload("ip", "daddr"), "@cluster_ips"), {"goto": {"target": "refuse"}})
    if policies:
        # Service traffic other hosts' routers SNAT'd was checked there, against the client pod.
        r.rule(t, "forward", match(payload("ip", "saddr"), "@remote_routers"), ACCEPT)
        r.rule(t, "forward", match(meta("iifname"), BRIDGE), POLICY_EGRESS)
        r.rule(t, "forward", match(meta("oifname"), BRIDGE), POLICY_INGRESS)
    r.rule(
        t,
        "forward",
        match(meta("iifname"), BRIDGE),
        match(meta("oifname"), BRIDGE),
        ACCEPT,
        comment="service traffic back onto the bridge",
    )
    r.rule(
        t,
        "forward",
        match(meta("iifname"), UPLINK),
        match(meta("oifname"), BRIDGE),
        match(ct("status"), "dnat", "in"),
        ACCEPT,
        comment="node ports",
    )
    if net.egress:
        # Never the host's link, other routers' links or link-local services (cloud metadata).
        r.rule(
            t,
            "forward",
            match(meta("iifname"), BRIDGE),
            match(meta("oifname"), UPLINK),
            match(payload("ip", "daddr"), cidr_expr(LINK_LOCAL), "!="),
            ACCEPT,
            comment="egress",
        )


POLICY_EGRESS: Obj = {"vmap": {"key": payload("ip", "saddr"), "data": "@egress_pods"}}
POLICY_INGRESS: Obj = {"vmap": {"key": payload("ip", "daddr"), "data": "@ingress_pods"}}


def _policy_chains(r: Ruleset, t: tuple[str, str], policies: Sequence[PodPolicy]) -> bool:
    """NetworkPolicy: a chain per isolated pod and direction, reached through the maps
    `ingress_pods` (by destination address) and `egress_pods` (by source address). A chain returns
    when one of its rules allows the packet, else drops it. The router sees pod-to-pod frames too
    (bridge-nf-call-iptables is on in a network with policies), so the same chains hold for
    bridged, routed (services, node ports, egress) and cross-host traffic. False: no policy."""
    ingress: list[Any] = []
    egress: list[Any] = []
    peer_sets: dict[tuple[str, ...], str] = {}  # one named set per distinct peer list, shared by the pods
    for rule in (rule for pp in policies for rs in (pp.ingress, pp.egress) for rule in rs or ()):
        if rule.peers and rule.peers not in peer_sets:
            peer_sets[rule.peers] = f"peers_{len(peer_sets)}"
    for peers, name in peer_sets.items():
        r.set(t, name, "ipv4_addr", [cidr_expr(c) for c in peers], flags=["interval"])
    for i, pp in enumerate(policies):
        for rules, addr, kind, out in (
            (pp.ingress, "saddr", "in", ingress),
            (pp.egress, "daddr", "eg", egress),
        ):
            if rules is None:
                continue
            chain = f"{kind}_{i}"
            r.chain(t, chain)
            for rule in rules:
                _policy_rule(r, t, chain, addr, rule, peer_sets)
            r.rule(
                t,
                chain,
                {"counter": None},
                DROP,
                comment=f"{pp.ip} {'ingress' if kind == 'in' else 'egress'}",
            )
            out.append([pp.ip, {"jump": {"target": chain}}])
    if not ingress and not egress:
        return False
    r.set(t, "ingress_pods", "ipv4_addr", ingress, map_to="verdict")
    r.set(t, "egress_pods", "ipv4_addr", egress, map_to="verdict")
    return True


def _policy_rule(
    r: Ruleset, t: tuple[str, str], chain: str, addr: str, rule: Rule, peer_sets: dict[tuple[str, ...], str]
) -> None:
    peers: list[Obj] = []
    if rule.peers is not None:
        if not rule.peers:
            return  # selects no peer: allows nothing
        peers = [match(payload("ip", addr), f"@{peer_sets[rule.peers]}")]
    if not rule.ports:
        r.rule(t, chain, *peers, {"return": None})
        return
    for pr in rule.ports:
        dport: Any = pr.first if pr.first == pr.last else {"range": [pr.first, pr.last]}
        r.rule(
            t,
            chain,
            *peers,
            match(meta("l4proto"), proto(pr.protocol)),
            match(payload("th", "dport"), dport),
            {"return": None},
        )


def _nat(r: Ruleset, net: Network, link: LinkAddresses) -> None:
    t = NAT
    r.table(*t)
    r.chain(t, "prerouting", ("nat", "prerouting", -100, "accept"))
    r.chain(t, "output", ("nat", "output", -100, "accept"))
    r.chain(t, "postrouting", ("nat", "postrouting", 100, "accept"))
    services: list[Any] = []
    nodeports: list[Any] = []
    n = 0
    for svc in net.services:
        if svc.cluster_ip is None:
            continue  # headless
        for sp in svc.ports:
            if not sp.endpoints:
                continue  # refused by the filter table
            chain = f"svc_{n}"
            n += 1
            r.chain(t, chain)
            backends = [[i, concat(ep.ip, ep.port)] for i, ep in enumerate(sp.endpoints)]
            r.rule(
                t,
                chain,
                match(meta("l4proto"), proto(sp.protocol)),
                {
                    "dnat": {
                        "family": "ip",
                        "addr": {
                            "map": {
                                "key": {"numgen": {"mode": "random", "mod": len(backends), "offset": 0}},
                                "data": anon_set(*backends),
                            }
                        },
                    }
                },
                comment=_comment(f"{svc.name} {sp.protocol}/{sp.port}"),
            )
            jump = {"goto": {"target": chain}}
            services.append([concat(svc.cluster_ip, proto(sp.protocol), sp.port), jump])
            if sp.node_port:
                nodeports.append([concat(proto(sp.protocol), sp.node_port), jump])
    r.set(t, "services", ["ipv4_addr", "inet_proto", "inet_service"], services, map_to="verdict")
    r.set(t, "nodeports", ["inet_proto", "inet_service"], nodeports, map_to="verdict")
    r.rule(
        t,
        "prerouting",
        match(meta("iifname"), BRIDGE),
        {
            "vmap": {
                "key": concat(payload("ip", "daddr"), meta("l4proto"), payload("th", "dport")),
                "data": "@services",
            }
        },
    )
    # The router's own connections to services: the node's ingress proxy (network/ingress.py).
    r.rule(
        t,
        "output",
        {
            "vmap": {
                "key": concat(payload("ip", "daddr"), meta("l4proto"), payload("th", "dport")),
                "data": "@services",
            }
        },
    )
    r.rule(
        t,
        "prerouting",
        match(meta("iifname"), UPLINK),
        match(payload("ip", "daddr"), link.router),
        {"vmap": {"key": concat(meta("l4proto"), payload("th", "dport")), "data": "@nodeports"}},
    )
    # Replies from an endpoint must come back through this router to be un-DNAT'd: the client may
    # sit on the same bridge, where the endpoint would answer it directly from the wrong address.
    r.rule(
        t,
        "postrouting",
        match(meta("oifname"), BRIDGE),
        match(ct("status"), "dnat", "in"),
        {"snat": {"family": "ip", "addr": net.hairpin_ip}},
        comment="service hairpin",
    )
    r.rule(t, "postrouting", match(meta("oifname"), UPLINK), {"masquerade": None}, comment="egress")


# -- the host ----------------------------------------------------------------------------


def host_table(prefix: str) -> tuple[str, str]:
    return ("inet", f"{prefix}_host")


def host_ruleset(
    prefix: str, links: dict[str, LinkAddresses], nets: Sequence[Network], management: Sequence[str]
) -> list[Obj]:
    """links: host veth name → its addresses, for every desired network (same order as nets)."""
    t = host_table(prefix)
    r = Ruleset()
    r.table(*t)
    r.chain(t, "input", ("filter", "input", 0, "accept"))
    r.chain(t, "forward", ("filter", "forward", 0, "accept"))
    r.chain(t, "prerouting", ("nat", "prerouting", -100, "accept"))
    r.chain(t, "output", ("nat", "output", -100, "accept"))
    r.chain(t, "postrouting", ("nat", "postrouting", 100, "accept"))
    names = list(links)
    r.set(t, "routers", "ifname", names)
    r.set(t, "no_egress", "ifname", [name for name, net in zip(names, nets, strict=True) if not net.egress])
    mgmt = ipaddress.collapse_addresses(ipaddress.IPv4Network(m) for m in management)  # no overlaps
    blocked = [cidr_expr(str(c)) for c in mgmt]
    r.set(t, "management", "ipv4_addr", blocked, flags=["interval"])
    nodeports = [
        [concat(proto(sp.protocol), sp.node_port), link.router]
        for (name, link), net in zip(links.items(), nets, strict=True)
        for s in net.services
        if s.cluster_ip
        for sp in s.ports
        if sp.node_port
    ]
    r.set(t, "nodeports", ["inet_proto", "inet_service"], nodeports, map_to="ipv4_addr")

    # Routers reach nothing on the host itself, except replies to what the host started.
    r.rule(t, "input", match(meta("iifname"), "@routers"), ESTABLISHED, ACCEPT)
    r.rule(t, "input", match(meta("iifname"), "@routers"), DROP)
    # Never from one tenant network to another, whatever the addresses (they may overlap).
    r.rule(t, "forward", match(meta("iifname"), "@routers"), match(meta("oifname"), "@routers"), DROP)
    r.rule(t, "forward", ESTABLISHED, ACCEPT)
    r.rule(
        t, "forward", match(meta("iifname"), "@routers"), match(payload("ip", "daddr"), "@management"), DROP
    )
    r.rule(t, "forward", match(meta("iifname"), "@no_egress"), DROP)
    _vxlan_filter(r, t, nets)

    # Node ports: the host's own addresses, from outside or from the host itself; never from a
    # router (a pod reaches its services by cluster IP).
    dnat = {
        "dnat": {
            "family": "ip",
            "addr": {"map": {"key": concat(meta("l4proto"), payload("th", "dport")), "data": "@nodeports"}},
        }
    }
    local = match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    r.rule(t, "prerouting", match(meta("iifname"), "@routers", "!="), local, dnat)
    r.rule(t, "output", local, match(payload("ip", "daddr"), cidr_expr("127.0.0.0/8"), "!="), dnat)
    # Egress leaves with the host's address; the router already hid the pod's behind its own.
    r.rule(
        t,
        "postrouting",
        match(meta("iifname"), "@routers"),
        match(meta("oifname"), "@routers", "!="),
        {"masquerade": None},
    )
    return r.commands()


VNI = {"payload": {"base": "th", "offset": 96, "len": 24}}  # VXLAN header bytes 4-6, after UDP's 8


def _vxlan_filter(r: Ruleset, t: tuple[str, str], nets: Sequence[Network]) -> None:
    """VXLAN to this host's underlay address only from the hosts of that very VNI: an unknown
    sender, or a known host sending into a network it does not share with us, is dropped before
    the VXLAN driver sees it (the driver itself would take any sender, for any VNI with a device)."""
    overlays = [(net.id, net.overlay) for net in nets if net.overlay is not None]
    if not overlays:
        return
    local = overlays[0][1].local
    verdicts = []
    for vni, ov in overlays:
        chain = f"vni_{vni}"
        r.chain(t, chain)
        if ov.peers:
            r.rule(t, chain, match(payload("ip", "saddr"), anon_set(*sorted(ov.peers))), ACCEPT)
        verdicts.append([vni, {"jump": {"target": chain}}])
    to_us = [match(payload("ip", "daddr"), local), match(payload("udp", "dport"), VXLAN_PORT)]
    r.rule(t, "input", *to_us, {"vmap": {"key": VNI, "data": anon_set(*verdicts)}})
    r.rule(
        t, "input", *to_us, {"counter": None}, DROP, comment="VXLAN from an unknown host or for another VNI"
    )


# -- running nft ---------------------------------------------------------------------------


def apply(commands: list[Obj], netns: str | None) -> None:
    """Run the commands as one nft transaction in namespace `netns` (None: ours)."""
    cmd = ["nft", "-j", "-f", "-"]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    doc = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]})
    proc = subprocess.run(cmd, input=doc, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NftError(f"nft in {netns or 'host'}: {proc.stderr.strip()}")


def list_ruleset(netns: str | None) -> list[Obj]:
    cmd = ["nft", "-j", "list", "ruleset"]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NftError(f"nft list in {netns or 'host'}: {proc.stderr.strip()}")
    items: list[Obj] = json.loads(proc.stdout)["nftables"]
    return items
