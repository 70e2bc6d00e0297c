"""NetworkPolicy (networking.k8s.io/v1) as the routers enforce it: per pod address, the rules that
let traffic in and out, resolved from the API objects of one tenant network.

Upstream's semantics: a pod selected by any policy of a type (Ingress, Egress) is isolated for that
direction; what is allowed is the union of every rule of every policy selecting it; replies of
allowed connections pass (the routers track connections). Peers are pods (podSelector,
namespaceSelector) and address blocks (ipBlock with except). Two rules of this platform:

- a namespaceSelector only ever matches namespaces of the policy's own tenant (operators'
  namespaces, without a tenant, only each other), so a policy cannot name another tenant's
  namespaces, whatever their labels;
- pod peers are resolved among the pods of the network being built: an address means something
  only inside its own network (two networks may use the same addresses).

`resolve` is pure: the node agent gives it the policies, the pods with addresses of one network and
the namespaces; `nft.py` turns the result into chains of the router's `inet filter` table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hypernetes.objects import Obj
from hypernetes.objects.meta import labels, metadata
from hypernetes.objects.names import TENANT_LABEL
from hypernetes.objects.selectors import Selector, SelectorError, from_label_selector


@dataclass(frozen=True)
class PortRange:
    protocol: str  # TCP, UDP or SCTP
    first: int
    last: int


@dataclass(frozen=True)
class Rule:
    """Traffic this rule allows: from (ingress) or to (egress) `peers`, on `ports`."""

    peers: tuple[str, ...] | None  # IPv4 CIDRs (a pod is a /32); None: any address
    ports: tuple[PortRange, ...] = ()  # empty: every port of every protocol


@dataclass(frozen=True)
class PodPolicy:
    """One pod address's isolation. None: not isolated in that direction; a tuple (maybe empty):
    isolated, and only what its rules allow passes."""

    ip: str
    ingress: tuple[Rule, ...] | None = None
    egress: tuple[Rule, ...] | None = None


@dataclass(frozen=True)
class PolicyPod:
    """What policies need of a pod of the network: where it is, its labels, its address and its
    named container ports (name -> (protocol, port))."""

    namespace: str
    labels: Mapping[str, str]
    ip: str
    named_ports: Mapping[str, tuple[str, int]]


def policy_pod(pod: Obj, ip: str) -> PolicyPod:
    named: dict[str, tuple[str, int]] = {}
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in c.get("ports") or []:
            if p.get("name") and isinstance(p.get("containerPort"), int):
                named.setdefault(str(p["name"]), (str(p.get("protocol") or "TCP"), p["containerPort"]))
    return PolicyPod(str(metadata(pod).get("namespace")), labels(pod), ip, named)


def policy_types(spec: Obj) -> tuple[str, ...]:
    """As upstream's defaulting: Ingress always, Egress when the policy has egress rules."""
    types = spec.get("policyTypes")
    if types:
        return tuple(str(t) for t in types)
    return ("Ingress", "Egress") if spec.get("egress") else ("Ingress",)


def _tenant(ns: Obj | None) -> str | None:
    return labels(ns).get(TENANT_LABEL) if ns is not None else None


def _selector(sel: Any) -> Selector:
    """A selector that does not convert selects nothing (the API refuses it anyway)."""
    try:
        return from_label_selector(sel if isinstance(sel, Mapping) else None)
    except SelectorError:
        return Selector(nothing=True)


def _block(ip_block: Obj) -> tuple[str, ...]:
    """cidr less its excepts, as disjoint CIDRs."""
    try:
        blocks = [ipaddress.IPv4Network(str(ip_block.get("cidr")), strict=False)]
        for ex in ip_block.get("except") or []:
            cut = ipaddress.IPv4Network(str(ex), strict=False)
            blocks = [
                part
                for b in blocks
                for part in (
                    (b,) if not b.overlaps(cut) else (() if b.subnet_of(cut) else b.address_exclude(cut))
                )
            ]
    except (ValueError, TypeError):
        return ()  # IPv6 or malformed: matches nothing here (the networks are IPv4)
    return tuple(str(b) for b in ipaddress.collapse_addresses(blocks))


class _Resolver:
    def __init__(self, pods: Iterable[PolicyPod], namespaces: Mapping[str, Obj]) -> None:
        self.pods = sorted(pods, key=lambda p: ipaddress.IPv4Address(p.ip))
        self.namespaces = namespaces

    def same_tenant(self, a: str, b: str) -> bool:
        na, nb = self.namespaces.get(a), self.namespaces.get(b)
        return na is not None and nb is not None and _tenant(na) == _tenant(nb)

    def peers(self, policy_ns: str, peers: list[Obj] | None) -> tuple[str, ...] | None:
        if not peers:
            return None  # no from/to: every address
        out: list[str] = []
        for peer in peers:
            if peer.get("ipBlock"):
                out.extend(_block(peer["ipBlock"]))
                continue
            ns_sel = (
                _selector(peer["namespaceSelector"]) if peer.get("namespaceSelector") is not None else None
            )
            pod_sel = _selector(peer["podSelector"]) if peer.get("podSelector") is not None else None
            if ns_sel is None:
                spaces = {policy_ns}
            else:  # never another tenant's namespace, whatever its labels
                spaces = {
                    name
                    for name, ns in self.namespaces.items()
                    if self.same_tenant(policy_ns, name) and ns_sel.matches(labels(ns))
                }
            out.extend(
                f"{pod.ip}/32"
                for pod in self.pods
                if pod.namespace in spaces and (pod_sel is None or pod_sel.matches(pod.labels))
            )
        return tuple(dict.fromkeys(out))

    @staticmethod
    def ports(ports: list[Obj] | None, named: Mapping[str, tuple[str, int]]) -> tuple[PortRange, ...] | None:
        """None: the rule has ports and none of them applies to this pod (it allows nothing)."""
        if not ports:
            return ()
        out: list[PortRange] = []
        for p in ports:
            proto = str(p.get("protocol") or "TCP")
            port, end = p.get("port"), p.get("endPort")
            if port is None:
                out.append(PortRange(proto, 1, 65535))
            elif isinstance(port, int):
                out.append(PortRange(proto, port, end if isinstance(end, int) and end >= port else port))
            elif str(port) in named and named[str(port)][0] == proto:
                out.append(PortRange(proto, named[str(port)][1], named[str(port)][1]))
        return tuple(dict.fromkeys(out)) or None

    def egress_named(self, peers: tuple[str, ...] | None, ports: list[Obj]) -> list[Rule]:
        """Egress ports by name: resolved against each destination pod that the peers cover."""
        nets = [ipaddress.IPv4Network(c) for c in peers] if peers is not None else None
        rules = []
        for pod in self.pods:
            addr = ipaddress.IPv4Address(pod.ip)
            if nets is not None and not any(addr in n for n in nets):
                continue
            resolved = self.ports(ports, pod.named_ports)
            if resolved:
                rules.append(Rule((f"{pod.ip}/32",), resolved))
        return rules


def resolve(
    policies: Iterable[Obj], pods: Iterable[PolicyPod], namespaces: Mapping[str, Obj]
) -> tuple[PodPolicy, ...]:
    """Every isolated pod of the network with what its policies allow, sorted by address."""
    r = _Resolver(pods, namespaces)
    ingress: dict[str, list[Rule]] = {}
    egress: dict[str, list[Rule]] = {}
    for pol in sorted(
        policies, key=lambda p: (str(metadata(p).get("namespace")), str(metadata(p).get("name")))
    ):
        ns = str(metadata(pol).get("namespace"))
        spec = pol.get("spec") or {}
        types = policy_types(spec)
        chosen = _selector(spec.get("podSelector") or {})
        selected = [p for p in r.pods if p.namespace == ns and chosen.matches(p.labels)]
        if not selected:
            continue
        # Peers and egress rules are the same for every selected pod (ingress ports by name are not).
        sources = [(r.peers(ns, rule.get("from")), rule.get("ports")) for rule in spec.get("ingress") or []]
        outbound: list[Rule] = []
        for rule in spec.get("egress") or []:
            peers = r.peers(ns, rule.get("to"))
            named = [p for p in rule.get("ports") or [] if isinstance(p.get("port"), str)]
            numbered = [p for p in rule.get("ports") or [] if not isinstance(p.get("port"), str)]
            if numbered or not named:
                outbound.append(Rule(peers, r.ports(numbered, {}) or ()))
            if named:
                outbound.extend(r.egress_named(peers, named))
        for pod in selected:
            if "Ingress" in types:
                rules = ingress.setdefault(pod.ip, [])
                for peers, ports in sources:
                    resolved = r.ports(ports, pod.named_ports)
                    if resolved is not None:
                        rules.append(Rule(peers, resolved))
            if "Egress" in types:
                egress.setdefault(pod.ip, []).extend(outbound)
    out = []
    for ip in sorted(set(ingress) | set(egress), key=ipaddress.IPv4Address):
        ing, eg = ingress.get(ip), egress.get(ip)
        out.append(
            PodPolicy(
                ip,
                tuple(dict.fromkeys(ing)) if ing is not None else None,
                tuple(dict.fromkeys(eg)) if eg is not None else None,
            )
        )
    return tuple(out)
