"""Ingress: HTTP routes by host and path to a namespace's Services (upstream
pkg/apis/networking/validation, ValidateIngress). Each node serves them on an ingress port per
tenant network (hypernetes/network/ingress.py, docs/network.md "Ingress")."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypernetes.api.registry.groups import NETWORKING
from hypernetes.api.registry.kind import Errs, Printer, kind, no_defaults
from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
from hypernetes.objects import Obj as JSON

PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
_INVALID_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")


def _prepare_create(obj: JSON) -> None:
    obj["status"] = {"loadBalancer": {}}  # upstream: a new Ingress has no status yet


def _host(host: Any, path: str, errs: Errs) -> None:
    if not isinstance(host, str) or not host:
        return
    try:
        ipaddress.ip_address(host)
        errs.append(E.invalid(path, host, "must be a DNS name, not an IP address"))
        return
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    errs.extend(E.invalid(path, host, m) for m in formats.dns1123_subdomain(name))


def _backend(backend: JSON, path: str, errs: Errs) -> None:
    svc, resource = backend.get("service"), backend.get("resource")
    if svc is None and resource is None:
        errs.append(E.invalid_raw(path, "at least one backend must be specified"))
        return
    if resource is not None:
        detail = f"{E.UNSUPPORTED_BY_US}: resource backends (use a service)"
        errs.append(E.not_supported(f"{path}.resource", _d(resource).get("kind") or "", detail=detail))
        return
    svc = _d(svc)
    name = svc.get("name")
    if not name:
        errs.append(E.required(f"{path}.service.name"))
    elif isinstance(name, str):
        errs.extend(E.invalid(f"{path}.service.name", name, m) for m in formats.dns1035_label(name))
    port = _d(svc.get("port"))
    pname, pnum = port.get("name"), port.get("number")
    if pname and pnum:
        errs.append(E.invalid(f"{path}.service.port", port, "cannot set both port name & port number"))
    elif pname:
        errs.extend(
            E.invalid(f"{path}.service.port.name", pname, m) for m in formats.iana_svc_name(str(pname))
        )
    elif isinstance(pnum, int) and not isinstance(pnum, bool):
        errs.extend(E.invalid(f"{path}.service.port.number", pnum, m) for m in formats.port_number(pnum))
    else:
        errs.append(E.required(f"{path}.service.port", "port name or number is required"))


def _http_path(p: JSON, path: str, errs: Errs) -> None:
    ptype, value = p.get("pathType"), p.get("path")
    if ptype is None:
        errs.append(E.required(f"{path}.pathType", "pathType must be specified"))
    elif ptype not in PATH_TYPES:
        errs.append(E.not_supported(f"{path}.pathType", ptype, PATH_TYPES))
    if (isinstance(value, str) and value) or ptype in ("Exact", "Prefix"):
        text = value if isinstance(value, str) else ""
        if not text.startswith("/"):
            errs.append(E.invalid(f"{path}.path", text, "must be an absolute path"))
        elif ptype in ("Exact", "Prefix"):
            bad = [s for s in _INVALID_PATH_PARTS if s in text] + [
                s for s in _INVALID_PATH_SUFFIXES if text.endswith(s)
            ]
            if bad:
                errs.append(E.invalid(f"{path}.path", text, f"must not contain '{bad[0]}'"))
    _backend(_d(p.get("backend")), f"{path}.backend", errs)


def _validate(obj: JSON, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    rules = _l(spec.get("rules"))
    if spec.get("defaultBackend") is None and not rules:
        errs.append(E.invalid_raw("spec", "either `defaultBackend` or `rules` must be specified"))
    if spec.get("defaultBackend") is not None:
        _backend(_d(spec["defaultBackend"]), "spec.defaultBackend", errs)
    cls = spec.get("ingressClassName")
    if isinstance(cls, str):
        errs.extend(E.invalid("spec.ingressClassName", cls, m) for m in formats.dns1123_subdomain(cls))
    for i, rule in enumerate(rules):
        rule = _d(rule)
        _host(rule.get("host"), f"spec.rules[{i}].host", errs)
        http = rule.get("http")
        if http is None:
            continue
        paths = _l(_d(http).get("paths"))
        if not paths:
            errs.append(E.required(f"spec.rules[{i}].http.paths"))
        for j, p in enumerate(paths):
            _http_path(_d(p), f"spec.rules[{i}].http.paths[{j}]", errs)
    for i, tls in enumerate(_l(spec.get("tls"))):
        tls = _d(tls)
        for j, h in enumerate(_l(tls.get("hosts"))):
            _host(h, f"spec.tls[{i}].hosts[{j}]", errs)
        secret = tls.get("secretName")
        if isinstance(secret, str) and secret:
            errs.extend(
                E.invalid(f"spec.tls[{i}].secretName", secret, m) for m in formats.dns1123_subdomain(secret)
            )


def addresses(status: JSON) -> str:
    """upstream's loadBalancerStatusStringer: the IPs and host names, comma separated."""
    out = []
    for i in _l(_d(status.get("loadBalancer")).get("ingress")):
        i = _d(i)
        if i.get("ip"):
            out.append(str(i["ip"]))
        elif i.get("hostname"):
            out.append(str(i["hostname"]))
    return ",".join(out)


def _hosts(spec: JSON) -> str:
    hosts = [str(_d(r).get("host")) for r in _l(spec.get("rules")) if _d(r).get("host")]
    if not hosts:
        return "*"
    shown = ",".join(hosts[:3])
    return shown + (f" + {len(hosts) - 3} more..." if len(hosts) > 3 else "")


COLUMNS = (
    NAME,
    Column("Class", "string", "", "ingressClassName is the name of an IngressClass cluster resource."),
    Column("Hosts", "string", "", "Hosts that incoming requests are matched against."),
    Column("Address", "string", "", "Address is a list containing ingress points for the load-balancer"),
    Column("Ports", "string", "", "Ports of TLS configurations that open"),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec = _d(obj.get("spec"))
    return [
        name_of(obj),
        spec.get("ingressClassName") or "<none>",
        _hosts(spec),
        addresses(_d(obj.get("status"))),
        "80, 443" if _l(spec.get("tls")) else "80",
        age_of(obj, ctx),
    ]


KIND = kind(
    NETWORKING,
    "Ingress",
    "ingresses",
    short=("ing",),
    subs=("status",),
    defaults=no_defaults,
    validate=_validate,
    prepare_create=_prepare_create,
    printer=Printer(COLUMNS, _row),
)
