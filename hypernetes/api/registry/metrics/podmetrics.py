"""PodMetrics: a pod's CPU and memory use (`kubectl top pods`), read-only, from memory."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import METRICS
from hypernetes.api.registry.kind import Printer, kind, no_defaults, schema_only
from hypernetes.api.registry.metrics.openapi import DEFINITIONS
from hypernetes.api.schema.printers import NAME, Column, Context, name_of
from hypernetes.objects import Obj as JSON
from hypernetes.objects.quantity import quantity_milli_value, quantity_value

# metrics-server's columns (pkg/api/pod.go)
COLUMNS = (
    NAME,
    Column("CPU", "string", "", "The pod's CPU use, in cores (millicores: m)."),
    Column("Memory", "string", "", "The pod's memory working set."),
    Column("Window", "string", "", "The window the CPU use was measured over."),
)


def total(containers: Any, resource: str) -> int:
    """The containers' summed usage: millicores for cpu, bytes for memory."""
    read = quantity_milli_value if resource == "cpu" else quantity_value
    out = 0
    for c in containers if isinstance(containers, list) else []:
        value = ((c or {}).get("usage") or {}).get(resource) if isinstance(c, dict) else None
        if value is not None:
            out += read(value)
    return out


def _row(obj: JSON, ctx: Context) -> list[Any]:
    containers = obj.get("containers")
    return [
        name_of(obj),
        f"{total(containers, 'cpu')}m",
        f"{total(containers, 'memory') // 1024}Ki",
        str(obj.get("window") or ""),
    ]


KIND = kind(
    METRICS,
    "PodMetrics",
    "pods",
    version="v1beta1",
    verbs=("get", "list"),
    defaults=no_defaults,
    validate=schema_only,
    printer=Printer(COLUMNS, _row),
    definitions=DEFINITIONS,
)
