"""Node: a host that runs pod VMs, registered and kept alive by its node agent."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import CORE
from hypernetes.api.registry.kind import Errs, Printer, kind
from hypernetes.api.schema import formats
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
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
from hypernetes.objects.names import NODE_ROLE_LABEL, NODE_ROLE_LABEL_PREFIX


def _defaults(obj: JSON) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and isinstance(status.get("capacity"), dict):
        status.setdefault("allocatable", dict(status["capacity"]))


def _validate(obj: JSON, errs: Errs) -> None:
    for i, t in enumerate(_l(_d(obj.get("spec")).get("taints"))):
        key = _d(t).get("key")
        if isinstance(key, str):
            check_format(f"spec.taints[{i}].key", key, formats.qualified_name(key), errs)


COLUMNS = (
    NAME,
    Column("Status", "string", "", "The status of the node"),
    Column("Roles", "string", "", "The roles of the node"),
    AGE,
    Column("Version", "string", "", "Kubelet Version reported by the node."),
    Column("Internal-IP", "string", "", "List of addresses reachable to the node.", 1),
    Column("External-IP", "string", "", "List of addresses reachable to the node.", 1),
    Column(
        "OS-Image",
        "string",
        "",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        1,
    ),
    Column(
        "Kernel-Version",
        "string",
        "",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        1,
    ),
    Column(
        "Container-Runtime",
        "string",
        "",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        1,
    ),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    spec, status, meta = _d(obj.get("spec")), _d(obj.get("status")), _d(obj.get("metadata"))
    states = []
    for c in _l(status.get("conditions")):
        c = _d(c)
        if c.get("type") == "Ready":
            states = ["Ready" if c.get("status") == "True" else "NotReady"]
    states = states or ["Unknown"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    roles: set[str] = set()
    for k, v in _d(meta.get("labels")).items():
        if k.startswith(NODE_ROLE_LABEL_PREFIX) and k[len(NODE_ROLE_LABEL_PREFIX) :]:
            roles.add(k[len(NODE_ROLE_LABEL_PREFIX) :])
        elif k == NODE_ROLE_LABEL and v:
            roles.add(str(v))
    info = _d(status.get("nodeInfo"))

    def address(kind: str) -> str:
        for a in _l(status.get("addresses")):
            if _d(a).get("type") == kind:
                return str(_d(a).get("address", ""))
        return "<none>"

    return [
        name_of(obj),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        age_of(obj, ctx),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


KIND = kind(
    CORE,
    "Node",
    "nodes",
    namespaced=False,
    short=("no",),
    subs=("status",),
    defaults=_defaults,
    validate=_validate,
    field_selectors={
        "spec.unschedulable": "spec.unschedulable",
    },
    printer=Printer(COLUMNS, _row),
)
