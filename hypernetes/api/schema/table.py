"""table(kind, objs): the meta.k8s.io/v1 Table kube-apiserver returns to `kubectl get`, with the
columns of upstream's printers (pkg/printers/internalversion/printers.go): the kind's registry
entry's `printer`, or upstream's default table (Name, Created At) for a kind without one.

kubectl asks for the same Table with or without `-o wide` and hides priority-1 columns itself,
so the server should pass wide=True (as kube-apiserver does); wide=False leaves them out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hypernetes.api.schema.printers import Column, Context
from hypernetes.objects import Obj as JSON

if TYPE_CHECKING:
    from hypernetes.api.registry.kind import Kind


_DEFAULT_COLUMNS = (
    Column("Name", "string", "name", "Name must be unique within a namespace."),
    Column(
        "Created At",
        "date",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
)


def _default_row(obj: JSON, ctx: Context) -> list[Any]:
    meta = _dict(obj.get("metadata"))
    return [meta.get("name", ""), meta.get("creationTimestamp", "")]


def table(kind: Kind, objs: list[JSON], wide: bool = True, *, now: datetime | None = None) -> JSON:
    """A Table of `objs`; `metadata` (resourceVersion, continue) is the server's to fill."""
    printer = kind.printer
    columns, row_fn = (printer.columns, printer.row) if printer else (_DEFAULT_COLUMNS, _default_row)
    conditions = printer.conditions if printer else None
    ctx = Context(now or datetime.now(UTC))
    keep = [i for i, c in enumerate(columns) if wide or c.priority == 0]
    rows = []
    for obj in objs:
        cells = row_fn(obj, ctx)
        row: JSON = {"cells": [cells[i] for i in keep], "object": partial_metadata(obj)}
        if conditions is not None and (conds := conditions(obj)):
            row["conditions"] = conds
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [columns[i].definition() for i in keep],
        "rows": rows,
    }


def partial_metadata(obj: JSON) -> JSON:
    """The row's `object`: kubectl reads namespace, labels and names for -A, -L, -o name from it."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": _dict(obj.get("metadata")),
    }


def _dict(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}
