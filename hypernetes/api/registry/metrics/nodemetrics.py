"""NodeMetrics: a node's CPU and memory use (`kubectl top nodes`), read-only, from memory."""

from __future__ import annotations

from typing import Any

from hypernetes.api.registry.groups import METRICS
from hypernetes.api.registry.kind import Printer, kind, no_defaults, schema_only
from hypernetes.api.registry.metrics.openapi import DEFINITIONS
from hypernetes.api.schema.access import as_dict as _d
from hypernetes.api.schema.printers import NAME, Column, Context, name_of
from hypernetes.objects import Obj as JSON
from hypernetes.objects.quantity import quantity_milli_value, quantity_value

COLUMNS = (
    NAME,
    Column("CPU", "string", "", "The node's CPU use, in cores (millicores: m)."),
    Column("Memory", "string", "", "The node's memory working set."),
    Column("Window", "string", "", "The window the CPU use was measured over."),
)


def _row(obj: JSON, ctx: Context) -> list[Any]:
    usage = _d(obj.get("usage"))
    cpu, memory = usage.get("cpu"), usage.get("memory")
    return [
        name_of(obj),
        f"{quantity_milli_value(cpu)}m" if cpu is not None else "",
        f"{quantity_value(memory) // 1024}Ki" if memory is not None else "",
        str(obj.get("window") or ""),
    ]


KIND = kind(
    METRICS,
    "NodeMetrics",
    "nodes",
    namespaced=False,
    version="v1beta1",
    verbs=("get", "list"),
    defaults=no_defaults,
    validate=schema_only,
    printer=Printer(COLUMNS, _row),
    definitions=DEFINITIONS,
)
