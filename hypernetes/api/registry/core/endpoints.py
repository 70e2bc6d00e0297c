"""Endpoints: the addresses behind a Service, written by the endpoints controller."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.access import dicts as _dicts
from hypernetes.api.schema.defaults import set_default
from hypernetes.api.schema.printers import (
    AGE,
    NAME,
    Column,
    Context,
    age_of,
    name_of,
)
from hypernetes.api.schema.validation import (
    check_format,
)
from hypernetes.objects import Obj as JSON


def _defaults(obj: JSON) -> None:
    for ss in _dicts(obj.get("subsets")):
        for p in _dicts(ss.get("ports")):
            set_default(p, "protocol", "TCP")


def _validate(obj: JSON, errs: Errs) -> None:
    for i, ss in enumerate(_l(obj.get("subsets"))):
        ss = _d(ss)
        for field in ("addresses", "notReadyAddresses"):
            for j, a in enumerate(_l(ss.get(field))):
                ip = _d(a).get("ip")
                if isinstance(ip, str):
                    check_format(f"subsets[{i}].{field}[{j}].ip", ip, formats.ip_address(ip), errs)
        for j, p in enumerate(_l(ss.get("ports"))):
            port = _d(p).get("port")
            if isinstance(port, int):
                check_format(f"subsets[{i}].ports[{j}].port", port, formats.port_number(port), errs)
            name = _d(p).get("name")
            if isinstance(name, str) and name:
                check_format(f"subsets[{i}].ports[{j}].name", name, formats.dns1123_label(name), errs)


COLUMNS = (
    NAME,
    Column("Endpoints", "string", "", "Endpoints is the list of endpoints in the service."),
    AGE,
)


def _host_port(ip: str, port: Any) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_endpoints(obj: JSON) -> str:
    subsets = [_d(s) for s in _l(obj.get("subsets"))]
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count, more = 0, False
    for ss in subsets:
        addrs = [str(_d(a).get("ip", "")) for a in _l(ss.get("addresses"))]
        ports: list[JSON | None] = [_d(p) for p in _l(ss.get("ports"))]
        for port in ports or [None]:  # headless services may have no ports
            count += len(addrs)
            for ip in addrs:
                if len(shown) == 3:
                    more = True
                    break
                shown.append(ip if port is None else _host_port(ip, port.get("port")))
    text = ",".join(shown)
    return f"{text} + {count - 3} more..." if more else text


def _row(obj: JSON, ctx: Context) -> list[Any]:
    return [name_of(obj), format_endpoints(obj), age_of(obj, ctx)]


KIND = kind(
    CORE,
    "Endpoints",
    "endpoints",
    short=("ep",),
    defaults=_defaults,
    validate=_validate,
    printer=Printer(COLUMNS, _row),
)
