"""NetworkPolicy: which traffic may reach and leave a tenant's pods (upstream
pkg/apis/networking/validation, ValidateNetworkPolicy). The routers enforce it
(hypernetes/network/policy.py, docs/network.md "NetworkPolicy")."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypernetes.api.registry.groups import NETWORKING
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
from hypernetes.api.schema.validation import label_selector
from hypernetes.objects import Obj as JSON
from hypernetes.objects.selectors import format_label_selector

PROTOCOLS = ("SCTP", "TCP", "UDP")
POLICY_TYPES = ("Ingress", "Egress")


def _defaults(obj: JSON) -> None:
    """upstream's SetDefaults_NetworkPolicySpec and SetDefaults_NetworkPolicyPort."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    for direction in ("ingress", "egress"):
        for rule in _l(spec.get(direction)):
            for port in _l(_d(rule).get("ports")):
                if isinstance(port, dict) and not port.get("protocol"):
                    port["protocol"] = "TCP"
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _port(port: JSON, path: str, errs: Errs) -> None:
    proto = port.get("protocol")
    if proto is not None and proto not in PROTOCOLS:
        errs.append(E.not_supported(f"{path}.protocol", proto, PROTOCOLS))
    value, end = port.get("port"), port.get("endPort")
    if isinstance(value, int) and not isinstance(value, bool):
        errs.extend(E.invalid(f"{path}.port", value, m) for m in formats.port_number(value))
    elif isinstance(value, str):
        errs.extend(E.invalid(f"{path}.port", value, m) for m in formats.iana_svc_name(value))
    if end is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        errs.append(E.forbidden(f"{path}.endPort", "may not be specified when `port` is non-numeric"))
    elif isinstance(end, int):
        if end < value:
            errs.append(E.invalid(f"{path}.endPort", end, "must be greater than or equal to `port`"))
        errs.extend(E.invalid(f"{path}.endPort", end, m) for m in formats.port_number(end))


def _ip_block(block: JSON, path: str, errs: Errs) -> None:
    cidr = block.get("cidr")
    if not cidr:
        errs.append(E.required(f"{path}.cidr"))
        return
    try:
        net = ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        errs.append(
            E.invalid(f"{path}.cidr", cidr, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
        )
        return
    if net.version == 6:
        # tenant networks are IPv4: an IPv6 block would silently match nothing
        errs.append(
            E.not_supported(
                f"{path}.cidr", cidr, detail=f"{E.UNSUPPORTED_BY_US}: IPv6 (tenant networks are IPv4)"
            )
        )
        return
    for i, ex in enumerate(_l(block.get("except"))):
        p = f"{path}.except[{i}]"
        try:
            cut = ipaddress.ip_network(str(ex), strict=False)
        except ValueError:
            errs.append(E.invalid(p, ex, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"))
            continue
        if cut.version != net.version or not cut.subnet_of(net) or cut.prefixlen <= net.prefixlen:
            errs.append(E.invalid(p, ex, "must be a strict subset of `cidr`"))


def _peer(peer: JSON, path: str, errs: Errs) -> None:
    given = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not given:
        errs.append(E.required(path, "must specify a peer"))
    elif "ipBlock" in given and len(given) > 1:
        errs.append(E.forbidden(path, "may not specify more than 1 peer"))
    for sel in ("podSelector", "namespaceSelector"):
        if peer.get(sel) is not None:
            label_selector(peer[sel], f"{path}.{sel}", errs, required=False)
    if peer.get("ipBlock") is not None:
        _ip_block(_d(peer["ipBlock"]), f"{path}.ipBlock", errs)


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    label_selector(spec.get("podSelector") or {}, "spec.podSelector", errs, required=False)
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(_l(spec.get(direction))):
            rule = _d(rule)
            for j, port in enumerate(_l(rule.get("ports"))):
                _port(_d(port), f"spec.{direction}[{i}].ports[{j}]", errs)
            for j, peer in enumerate(_l(rule.get(peers))):
                _peer(_d(peer), f"spec.{direction}[{i}].{peers}[{j}]", errs)
    types = _l(spec.get("policyTypes"))
    for i, t in enumerate(types):
        if t not in POLICY_TYPES:
            errs.append(E.not_supported(f"spec.policyTypes[{i}]", t, POLICY_TYPES))
    if len(types) > 2:
        errs.append(E.invalid("spec.policyTypes", types, "may not specify more than two policyTypes"))


COLUMNS = (
    NAME,
    Column("Pod-Selector", "string", "", "Selects the pods to which this NetworkPolicy object applies."),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [
        name_of(obj),
        format_label_selector(_d(obj.get("spec")).get("podSelector") or {}),
        age_of(obj, ctx),
    ]


KIND = kind(
    NETWORKING,
    "NetworkPolicy",
    "networkpolicies",
    short=("netpol",),
    defaults=_defaults,
    validate=_validate,
    printer=Printer(COLUMNS, _row),
)
