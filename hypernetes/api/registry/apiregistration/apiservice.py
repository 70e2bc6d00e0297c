"""APIService: one per group/version the server serves itself ("local": `spec.service` null,
always Available), made when a server starts (registry/startup.py) and read-only through the API,
as kube-aggregator's automanaged ones. Clients that check them before using a group (the metrics
and custom-resource clients) find them. There is no aggregation: nothing else may be registered."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import APIREGISTRATION
from hypernetes.api.registry.kind import Printer, kind, schema_only
from hypernetes.api.registry.rbac.policy import path_segment_name
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.access import as_list as _l
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, age_of, name_of
from hypernetes.objects import Obj as JSON

AUTOMANAGED = "kube-aggregator.kubernetes.io/automanaged"
# kube-apiserver's priorities of the groups it serves (apiVersionPriorities); others: its default
PRIORITIES = {
    "": (18000, 1),
    "apiregistration.k8s.io": (17900, 15),
    "apps": (17800, 15),
    "events.k8s.io": (17750, 15),
    "authentication.k8s.io": (17700, 15),
    "authorization.k8s.io": (17600, 15),
    "autoscaling": (17500, 15),
    "batch": (17400, 15),
    "certificates.k8s.io": (17300, 15),
    "networking.k8s.io": (17200, 15),
    "policy": (17100, 15),
    "rbac.authorization.k8s.io": (17000, 15),
    "storage.k8s.io": (16800, 15),
    "apiextensions.k8s.io": (16700, 15),
    "coordination.k8s.io": (16500, 15),
    "discovery.k8s.io": (16200, 15),
}
VERSION_PRIORITIES = {"v2": 30, "v1": 15, "v1beta1": 9}
DEFAULT_PRIORITY = 1000


def local(group_version: str, now: str) -> JSON:
    """The APIService of a group/version this server serves (`v1`, `apps/v1`)."""
    group, _, version = group_version.rpartition("/")
    prio_group, prio_version = PRIORITIES.get(group, (DEFAULT_PRIORITY, 15))
    if group in PRIORITIES and version != "v1":
        prio_version = VERSION_PRIORITIES.get(version, prio_version)
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{version}.{group}", "labels": {AUTOMANAGED: "onstart"}},
        "spec": {
            "group": group,
            "version": version,
            "groupPriorityMinimum": prio_group,
            "versionPriority": prio_version,
            "service": None,
        },
        "status": {
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "Local",
                    "message": "Local APIServices are always available",
                }
            ]
        },
    }


def _defaults(obj: JSON) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("service", None)  # as kube-aggregator serves a local one: `service: null`


COLUMNS = (
    NAME,
    Column("Service", "string", "", "The reference to the service that hosts this API endpoint."),
    Column("Available", "string", "", "Whether this service is available."),
    AGE,
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    svc = _d(_d(obj.get("spec")).get("service"))
    service = f"{svc.get('namespace') or ''}/{svc.get('name') or ''}" if svc else "Local"
    available = "Unknown"
    for c in _l(_d(obj.get("status")).get("conditions")):
        c = _d(c)
        if c.get("type") == "Available":
            status = str(c.get("status") or "")
            available = status if status == "True" else f"{status} ({c.get('reason') or ''})"
    return [name_of(obj), service, available, age_of(obj, ctx)]


KIND = kind(
    APIREGISTRATION,
    "APIService",
    "apiservices",
    namespaced=False,
    verbs=("get", "list", "watch"),
    subs=(),
    defaults=_defaults,
    validate=schema_only,
    name_format=path_segment_name,  # `v1.` (the core group) included, as upstream
    printer=Printer(COLUMNS, _row),
)
