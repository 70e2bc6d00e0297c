"""Table rendering (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) for get, list and watch.

The schema package knows each kind's columns; this adds what upstream's Table handler does
generically: `rows[].object` per `includeObject` (None | Metadata, the default | Object).
kubectl needs the metadata in each row for `-A`'s NAMESPACE column and `--show-labels`.
"""

from __future__ import annotations

import copy

from hypernetes.api import objects, schema
from hypernetes.api.status import bad_request
from hypernetes.objects import Obj


def render_table(kind: schema.Kind, objs: list[Obj], include_object: str | None) -> Obj:
    include = include_object or "Metadata"
    if include not in ("None", "Metadata", "Object"):
        raise bad_request(
            f'includeObject: unsupported value "{include}" (supported: "None", "Metadata", "Object")'
        )
    table = schema.table(kind, objs, True)
    table["kind"], table["apiVersion"] = "Table", "meta.k8s.io/v1"
    table.setdefault("metadata", {})
    rows = table.setdefault("rows", [])
    for row, obj in zip(rows, objs, strict=False):
        if include == "None":
            row.pop("object", None)
        elif include == "Metadata":
            row["object"] = objects.partial_metadata(obj)
        else:
            row["object"] = copy.deepcopy(obj)
    return table
