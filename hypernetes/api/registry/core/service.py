"""Service: a stable address (ClusterIP, node ports) for a set of pods (upstream
pkg/registry/core/service)."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.core.serviceips import allocate_cluster_ip
from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.access import dicts as _dicts
from hypernetes.api.schema.defaults import child, set_default
from hypernetes.api.schema.podspec import validate_labels
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    format_labels,
    name_of,
)
from hypernetes.api.schema.validation import (
    NODE_PORT_TYPES,
    check_format,
)
from hypernetes.network.objects import NODE_PORTS
from hypernetes.objects import Obj as JSON


def _defaults(obj: JSON) -> None:
    spec = child(obj, "spec")
    stype = set_default(spec, "type", "ClusterIP")
    set_default(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        cfg = child(child(spec, "sessionAffinityConfig"), "clientIP")
        cfg.setdefault("timeoutSeconds", 10800)
    for p in _dicts(spec.get("ports")):
        set_default(p, "protocol", "TCP")
        if p.get("targetPort") in (None, 0, "") and "port" in p:
            p["targetPort"] = p["port"]
    if stype in ("NodePort", "LoadBalancer"):
        set_default(spec, "externalTrafficPolicy", "Cluster")
    if stype != "ExternalName":
        set_default(spec, "internalTrafficPolicy", "Cluster")
    if stype == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    child(child(obj, "status"), "loadBalancer")


def _prepare_create(obj: JSON) -> None:
    # upstream's PrepareForCreate: a new service has no status yet, which Go serializes as
    # {"loadBalancer": {}} (the struct is not omitempty)
    obj["status"] = {"loadBalancer": {}}


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    stype = spec.get("type") or "ClusterIP"
    ports = _l(spec.get("ports"))
    headless = spec.get("clusterIP") == "None"
    if stype == "ExternalName":
        en = spec.get("externalName")
        if not en:
            errs.append(E.required("spec.externalName"))
        else:
            check_format("spec.externalName", en, formats.dns1123_subdomain(en.rstrip(".")), errs)
    elif not ports and not headless:
        errs.append(E.required("spec.ports"))
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    node_ports: set[tuple[Any, Any]] = set()
    for i, p in enumerate(ports):
        p = _d(p)
        path = f"spec.ports[{i}]"
        name = p.get("name")
        if len(ports) > 1 and not name:
            errs.append(E.required(f"{path}.name"))
        elif isinstance(name, str) and name:
            if name in names:
                errs.append(E.duplicate(f"{path}.name", name))
            names.add(name)
            check_format(f"{path}.name", name, formats.dns1123_label(name), errs)
        port = p.get("port")
        if isinstance(port, int):
            check_format(f"{path}.port", port, formats.port_number(port), errs)
            key = (port, p.get("protocol") or "TCP")
            if key in seen:
                errs.append(E.duplicate(path, {"port": port, "protocol": key[1]}))
            seen.add(key)
        tp = p.get("targetPort")
        if isinstance(tp, int) and tp != 0:
            check_format(f"{path}.targetPort", tp, formats.port_number(tp), errs)
        elif isinstance(tp, str):
            check_format(f"{path}.targetPort", tp, formats.iana_svc_name(tp), errs)
        node_port = p.get("nodePort")
        if node_port and stype not in NODE_PORT_TYPES:
            errs.append(E.forbidden(f"{path}.nodePort", f"may not be used when `type` is '{stype}'"))
        elif isinstance(node_port, int) and node_port:
            # upstream's node port allocator refuses a port outside the range with this message
            if node_port not in NODE_PORTS:
                errs.append(
                    E.invalid(
                        f"{path}.nodePort",
                        node_port,
                        "provided port is not in the valid "
                        f"range. The range of valid ports is {NODE_PORTS[0]}-{NODE_PORTS[-1]}",
                    )
                )
            key = (node_port, p.get("protocol") or "TCP")
            if key in node_ports:
                errs.append(E.duplicate(f"{path}.nodePort", node_port))
            node_ports.add(key)
    if spec.get("externalTrafficPolicy") and stype not in NODE_PORT_TYPES:
        errs.append(
            E.invalid(
                "spec.externalTrafficPolicy",
                spec["externalTrafficPolicy"],
                "may only be set for externally-accessible services",
            )
        )
    validate_labels(_d(spec.get("selector")), "spec.selector", errs)
    for i, ip in enumerate(_l(spec.get("clusterIPs"))):
        if isinstance(ip, str) and ip and ip != "None":
            check_format(f"spec.clusterIPs[{i}]", ip, formats.ip_address(ip), errs)
    cip = spec.get("clusterIP")
    if isinstance(cip, str) and cip and cip != "None":
        check_format("spec.clusterIP", cip, formats.ip_address(cip), errs)


def _drop_type_dependent(new: JSON, old: JSON) -> None:
    """Upstream's dropTypeDependentFields: a type change wipes what the old type allocated or
    defaulted and the new type does not use, if the caller left it unchanged (so `kubectl patch
    -p '{"spec":{"type":"ClusterIP"}}'` on a NodePort service works, and its ports go back)."""
    nspec, ospec = _d(new.get("spec")), _d(old.get("spec"))
    otype, ntype = ospec.get("type") or "ClusterIP", nspec.get("type") or "ClusterIP"
    if otype == ntype:
        return

    def node_ports(spec: JSON) -> set[Any]:
        return {_d(p).get("nodePort") for p in _l(spec.get("ports")) if _d(p).get("nodePort")}

    if otype != "ExternalName" and ntype == "ExternalName":
        if all(nspec.get(f) == ospec.get(f) for f in ("clusterIP", "clusterIPs")):
            nspec.pop("clusterIP", None)
            nspec.pop("clusterIPs", None)
        for f in ("ipFamilies", "ipFamilyPolicy"):
            if nspec.get(f) == ospec.get(f):
                nspec.pop(f, None)
    if otype in NODE_PORT_TYPES and ntype not in NODE_PORT_TYPES:
        if node_ports(nspec) == node_ports(ospec):
            for p in _l(nspec.get("ports")):
                if isinstance(p, dict):
                    p.pop("nodePort", None)
        if nspec.get("externalTrafficPolicy") == ospec.get("externalTrafficPolicy"):
            nspec.pop("externalTrafficPolicy", None)
    if (
        otype == "LoadBalancer"
        and ntype != "LoadBalancer"
        and nspec.get("allocateLoadBalancerNodePorts") == ospec.get("allocateLoadBalancerNodePorts")
    ):
        nspec.pop("allocateLoadBalancerNodePorts", None)


def _validate_update(new: JSON, old: JSON, sub: str | None, errs: Errs) -> None:
    if sub == "status":
        return
    ocip, ncip = _d(old.get("spec")).get("clusterIP"), _d(new.get("spec")).get("clusterIP")
    if ocip and ncip is not None and ncip != ocip and _d(new.get("spec")).get("type") != "ExternalName":
        errs.append(E.immutable("spec.clusterIP"))


COLUMNS = (
    NAME,
    Column("Type", "string", "", "type determines how the Service is exposed."),
    Column("Cluster-IP", "string", "", "clusterIP is the IP address of the service."),
    Column(
        "External-IP",
        "string",
        "",
        "externalIPs is a list of IP addresses for which nodes in the "
        "cluster will also accept traffic for this service.",
    ),
    Column("Port(s)", "string", "", "The list of ports that are exposed by this service."),
    AGE,
    Column(
        "Selector",
        "string",
        "",
        "Route service traffic to pods with label keys and values matching this selector.",
        1,
    ),
)


def _external_ip(spec: JSON, status: JSON) -> str:
    stype = spec.get("type") or "ClusterIP"
    external = [str(x) for x in _l(spec.get("externalIPs"))]
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if stype == "LoadBalancer":
        ingress = [_d(i) for i in _l(_d(status.get("loadBalancer")).get("ingress"))]
        lb = [str(i.get("ip") or i.get("hostname")) for i in ingress if i.get("ip") or i.get("hostname")]
        if lb or external:
            return ",".join(lb + external)
        return "<pending>"
    if stype == "ExternalName":
        return str(spec.get("externalName", ""))
    return "<unknown>"


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    ips = _l(spec.get("clusterIPs"))
    cluster_ip = str(ips[0]) if ips else spec.get("clusterIP") or "<none>"
    ports = []
    for p in _l(spec.get("ports")):
        p = _d(p)
        proto = p.get("protocol") or "TCP"
        ports.append(
            f"{p.get('port')}:{p['nodePort']}/{proto}" if p.get("nodePort") else f"{p.get('port')}/{proto}"
        )
    selector = _d(spec.get("selector"))
    return [
        name_of(obj),
        spec.get("type") or "ClusterIP",
        cluster_ip,
        _external_ip(spec, _d(obj.get("status"))),
        ",".join(ports) or "<none>",
        age_of(obj, ctx),
        format_labels(selector),
    ]


KIND = kind(
    CORE,
    "Service",
    "services",
    short=("svc",),
    cats=("all",),
    subs=("status",),
    defaults=_defaults,
    validate=_validate,
    validate_update=_validate_update,
    prepare_create=_prepare_create,
    prepare_update=_drop_type_dependent,
    begin_create=allocate_cluster_ip,
    name_format=formats.dns1035_label,
    printer=Printer(COLUMNS, _row),
)
