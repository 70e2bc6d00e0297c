"""A CRD version's additionalPrinterColumns as a Table printer, as apiextensions-apiserver's
tableconvertor fills them: Name first, then each column's simple JSON path (`.spec.replicas`,
`.status.conditions[0].type`, `.metadata.labels['app.kubernetes.io/name']`) evaluated on the
object; a missing value is an empty cell, a date becomes an age (or "<invalid>"), a string column
prints other values as Go's fmt does (the tableconvertor's JSONPath printer). Without columns: Name
and Age. A column without a description is described by its path, as upstream."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from hypernetes.api.registry.kind import Printer
from hypernetes.api.schema.printers import AGE, NAME, Column, Context, name_of, parse_time, since
from hypernetes.objects import Obj as JSON

_TOKEN = re.compile(r"""\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]""")
DEFAULT_COLUMNS = [
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": AGE.description,
    },
]


class PathError(ValueError):
    pass


def parse_path(path: str) -> list[str | int]:
    """`.a.b[0]['c.d']` -> ["a", "b", 0, "c.d"]; PathError if it is not a simple path."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    out: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PathError(f"unsupported JSON path {path!r} at {text[pos:]!r}")
        name, index, q1, q2 = m.groups()
        out.append(int(index) if index is not None else (name or q1 or q2 or ""))
        pos = m.end()
    if not out:
        raise PathError(f"empty JSON path {path!r}")
    return out


def lookup(obj: Any, path: list[str | int]) -> tuple[bool, Any]:
    """(found, value) at `path` in `obj`."""
    cur = obj
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, list) or step >= len(cur):
                return False, None
            cur = cur[step]
        else:
            if not isinstance(cur, dict) or step not in cur:
                return False, None
            cur = cur[step]
    return True, cur


def go_text(value: Any) -> str:
    """fmt.Fprint of a decoded JSON value: what the JSONPath printer writes for a string column."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, float):
        # %v: the shortest digits (repr's), in exponent form only outside [1e-4, 1e21)
        text = repr(value)
        if "e" in text and -4 <= int(text.partition("e")[2]) < 21:
            text = format(Decimal(text), "f")
        return text.removesuffix(".0")
    if isinstance(value, list):
        return "[" + " ".join(go_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_text(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _cell(ctype: str, value: Any, ctx: Context) -> Any:
    if ctype == "date":  # metatable.ConvertToHumanReadableDateType
        if not isinstance(value, str):
            return None
        if value and parse_time(value) is None:
            return "<invalid>"
        return since(value, ctx)
    if ctype == "integer":
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if ctype == "number":
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if ctype == "boolean":
        return value if isinstance(value, bool) else None
    return go_text(value)


def printer(columns: list[JSON] | None) -> Printer:
    cols = [c for c in (columns or DEFAULT_COLUMNS) if isinstance(c, dict)]
    parsed: list[tuple[str, list[str | int] | None]] = []
    defs = [NAME]
    for c in cols:
        ctype = str(c.get("type") or "string")
        try:
            path: list[str | int] | None = parse_path(str(c.get("jsonPath") or ""))
        except PathError:
            path = None  # the CRD's validation reports it; the column stays empty
        parsed.append((ctype, path))
        defs.append(
            Column(
                str(c.get("name") or ""),
                ctype,
                str(c.get("format") or ""),
                str(
                    c.get("description")
                    or f"Custom resource definition column (in JSONPath format): {c.get('jsonPath')}"
                ),
                int(c.get("priority") or 0),
            )
        )

    def row(obj: JSON, ctx: Context) -> list[Any]:
        cells: list[Any] = [name_of(obj)]
        for ctype, path in parsed:
            found, value = lookup(obj, path) if path is not None else (False, None)
            cells.append(_cell(ctype, value, ctx) if found and value is not None else None)
        return cells

    return Printer(tuple(defs), row)
