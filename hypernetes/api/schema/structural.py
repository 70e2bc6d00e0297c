"""The schema walk: types, unknown fields, schema-required fields, enums, and the fields and
values Hypernetes does not support (policy.py). Kind-specific rules live in validation.py."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from hypernetes.api.schema import errors as E
from hypernetes.api.schema import formats, policy, schemas
from hypernetes.api.schema.errors import FieldError
from hypernetes.objects import Obj as JSON

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def check(node: JSON, value: Any, path: str, errs: list[FieldError], *, required: bool = True) -> None:
    """Check `value` at `path` against the property schema `node`. `required` is False under
    status, which our own components write and which upstream does not hold to OpenAPI's
    required lists."""
    if value is None:
        return  # JSON null decodes to the zero value: the field is absent
    name, s = schemas.resolve(node)
    if name in schemas.FREE_FORM:
        return
    if name == schemas.QUANTITY:
        try:
            formats.parse_quantity(value)
        except ValueError as e:
            errs.append(E.invalid(path, value, str(e)))
        return
    if name == schemas.INT_OR_STRING:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            errs.append(E.type_invalid(path, value, "integer or string"))
        return
    if name in (schemas.TIME, schemas.MICRO_TIME):
        if not isinstance(value, str):
            errs.append(E.type_invalid(path, value, "string"))
        elif not _is_time(value):
            errs.append(E.invalid(path, value, "must be an RFC 3339 date-time (e.g. 2006-01-02T15:04:05Z)"))
        return
    t = s.get("type")
    if t == "object":
        if not isinstance(value, dict):
            errs.append(E.type_invalid(path, value, "object"))
            return
        _object(name, s, value, path, errs, required)
    elif t == "array":
        if not isinstance(value, list):
            errs.append(E.type_invalid(path, value, "array"))
            return
        item = s.get("items")
        if item is not None:
            for i, v in enumerate(value):
                check(item, v, f"{path}[{i}]", errs, required=required)
    elif t == "string":
        if not isinstance(value, str):
            errs.append(E.type_invalid(path, value, "string"))
        elif s.get("format") == "byte" and not _is_base64(value):
            errs.append(E.invalid(path, "<value omitted>", "must be base64-encoded data"))
    elif t == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            errs.append(E.type_invalid(path, value, "integer"))
            return
        lo, hi = _INT32 if s.get("format") == "int32" else _INT64
        if not lo <= value <= hi:
            errs.append(E.invalid(path, value, f"must be between {lo} and {hi}, inclusive"))
    elif t == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errs.append(E.type_invalid(path, value, "number"))
    elif t == "boolean" and not isinstance(value, bool):
        errs.append(E.type_invalid(path, value, "boolean"))


def _object(
    name: str | None, s: JSON, value: JSON, path: str, errs: list[FieldError], required: bool
) -> None:
    props: JSON | None = s.get("properties")
    if props is None:
        addl = s.get("additionalProperties")
        if isinstance(addl, dict):  # a map: labels, data, resources.limits ...
            for k, v in value.items():
                check(addl, v, f"{path}[{k}]", errs, required=required)
        return
    for k, v in value.items():
        p = join(path, k)
        sub = props.get(k)
        if sub is None:
            errs.append(E.unknown_field(p))
            continue
        if v is None:
            continue
        if name is not None:
            _policy(name, k, v, p, errs)
        check(sub, v, p, errs, required=required and not (path == "" and k == "status"))
    if required:
        for r in s.get("required", ()):
            if value.get(r) is None and r != "metadata":
                errs.append(E.required(join(path, r)))


def _policy(defn: str, field: str, v: Any, path: str, errs: list[FieldError]) -> None:
    # "" is Go's zero value: unset, as upstream treats it (e.g. a toleration's empty operator)
    why = policy.UNSUPPORTED.get((defn, field))
    if why is None and defn == "io.k8s.api.core.v1.Volume":
        why = policy.volume_unsupported(field)
    if why is not None:
        errs.append(E.not_supported(path, field, detail=f"{E.UNSUPPORTED_BY_US}: {why}"))
        return
    allowed = policy.ENUMS.get((defn, field))
    if allowed is not None and isinstance(v, str) and v and v not in allowed:
        errs.append(E.not_supported(path, v, allowed))
        return
    ours = policy.SUPPORTED_VALUES.get((defn, field))
    if ours is not None and isinstance(v, str) and v and v not in ours:
        why = policy.VALUE_REASONS.get((defn, field, v))
        errs.append(
            E.not_supported(
                path,
                v,
                detail=f"{E.UNSUPPORTED_BY_US}; supported values: "
                + ", ".join(f'"{x}"' for x in ours)
                + (f" ({why})" if why else ""),
            )
        )


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _is_time(v: str) -> bool:
    if not _RFC3339.fullmatch(v):
        return False
    try:
        datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_base64(v: str) -> bool:
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def drop_unknown(node: JSON, value: Any) -> None:
    """Remove, in place, the fields the schema does not know (fieldValidation=Ignore/Warn)."""
    name, s = schemas.resolve(node)
    if name in schemas.FREE_FORM or value is None:
        return
    if isinstance(value, dict):
        props = s.get("properties")
        if props is None:
            addl = s.get("additionalProperties")
            if isinstance(addl, dict):
                for v in value.values():
                    drop_unknown(addl, v)
            return
        for k in list(value):
            if k not in props:
                del value[k]
            else:
                drop_unknown(props[k], value[k])
    elif isinstance(value, list) and isinstance(s.get("items"), dict):
        for v in value:
            drop_unknown(s["items"], v)
