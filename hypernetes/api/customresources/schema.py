"""A CRD version's openAPIV3Schema applied to custom objects, as apiextensions-apiserver does:
`prune` (drop what the schema does not declare), `default` (fill `default`s), `validate` (types,
nullable, required, enum, bounds, lengths, pattern, items, additionalProperties) with upstream's
field paths and messages; and `structural_errors`, the rules a CRD's schema must follow to be
accepted (a *structural* schema: every node typed, no $ref, defaults that validate).

Supported extensions: x-kubernetes-preserve-unknown-fields, x-kubernetes-int-or-string,
x-kubernetes-embedded-resource (apiVersion, kind and metadata kept and required)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from hypernetes.api.schema import errors as E
from hypernetes.api.schema.errors import FieldError
from hypernetes.objects import Obj as JSON

Errs = list[FieldError]

TYPES = ("object", "array", "string", "integer", "number", "boolean")
PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"
EMBEDDED = "x-kubernetes-embedded-resource"
_TYPE_META = ("apiVersion", "kind", "metadata")
# JSON Schema keywords a structural schema may not use (upstream: forbidden or unsupported)
_FORBIDDEN = ("$ref", "$schema", "id", "definitions", "dependencies", "additionalItems", "patternProperties")
_KNOWN = frozenset(
    (
        "type",
        "format",
        "title",
        "description",
        "default",
        "example",
        "nullable",
        "enum",
        "maximum",
        "minimum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "maxProperties",
        "minProperties",
        "required",
        "items",
        "properties",
        "additionalProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "externalDocs",
        PRESERVE,
        INT_OR_STRING,
        EMBEDDED,
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
        *_FORBIDDEN,
    )
)


def _d(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# -- pruning and defaulting --------------------------------------------------------------------


def prune(node: JSON, value: Any, *, root: bool = False) -> None:
    """Drop, in place, the fields of `value` that `node` does not declare (unless it preserves
    unknown fields). apiVersion, kind and metadata stay at the root and in embedded resources."""
    if isinstance(value, dict):
        keep_meta = root or node.get(EMBEDDED) is True
        props = node.get("properties")
        addl = node.get("additionalProperties")
        for k in list(value):
            if keep_meta and k in _TYPE_META:
                continue
            if isinstance(props, dict) and k in props:
                prune(_d(props[k]), value[k])
            elif isinstance(addl, dict):
                prune(addl, value[k])
            elif node.get(PRESERVE) is not True and addl is not True:
                del value[k]
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for v in value:
            prune(node["items"], v)


def unknown(node: JSON, value: Any, path: str, out: list[str], *, root: bool = False) -> None:
    """The paths of the fields `prune` would drop, in `.spec.x` form as upstream's strict
    decoding error names them."""
    if isinstance(value, dict):
        keep_meta = root or node.get(EMBEDDED) is True
        props = node.get("properties")
        addl = node.get("additionalProperties")
        for k, v in value.items():
            p = f"{path}.{k}"
            if keep_meta and k in _TYPE_META:
                continue
            if isinstance(props, dict) and k in props:
                unknown(_d(props[k]), v, p, out)
            elif isinstance(addl, dict):
                unknown(addl, v, p, out)
            elif node.get(PRESERVE) is not True and addl is not True:
                out.append(p)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, v in enumerate(value):
            unknown(node["items"], v, f"{path}[{i}]", out)


def default(node: JSON, value: Any) -> None:
    """Fill missing fields that declare a `default`, in place, top-down: a default applies only
    where its parent object exists (or was itself defaulted)."""
    if isinstance(value, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            for k, sub in props.items():
                if isinstance(sub, dict) and "default" in sub and k not in value:
                    value[k] = copy.deepcopy(sub["default"])
            for k, v in value.items():
                if isinstance(props.get(k), dict):
                    default(props[k], v)
        elif isinstance(node.get("additionalProperties"), dict):
            for v in value.values():
                default(node["additionalProperties"], v)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for v in value:
            default(node["items"], v)


# -- validation of custom objects --------------------------------------------------------------


def _type_ok(t: str, value: Any) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _num(v: Any) -> str:
    return json.dumps(int(v) if isinstance(v, float) and v.is_integer() else v)


def validate(node: JSON, value: Any, path: str, errs: Errs, *, root: bool = False) -> None:
    """Check `value` at `path` against the schema `node`, as kube-openapi's validator reports."""
    where = path or "body"
    if value is None:
        if node.get("nullable") is not True:
            want = node.get("type") or "object"
            errs.append(
                FieldError(
                    E.TYPE_INVALID,
                    path,
                    f'Invalid value: "null": {where} in body must be of type {want}: "null"',
                )
            )
        return
    if node.get(INT_OR_STRING) is True and (isinstance(value, bool) or not isinstance(value, (int, str))):
        errs.append(E.type_invalid(path, value, "integer or string"))
        return
    t = node.get("type")
    if isinstance(t, str) and t and not _type_ok(t, value):
        errs.append(E.type_invalid(path, value, t))
        return
    enum = node.get("enum")
    if isinstance(enum, list) and value not in enum:
        errs.append(
            E.not_supported(path, value, [json.dumps(v) if not isinstance(v, str) else v for v in enum])
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _bounds(node, value, path, where, errs)
    if isinstance(value, str):
        _string(node, value, path, where, errs)
    if isinstance(value, list):
        _array(node, value, path, where, errs)
    if isinstance(value, dict):
        _object(node, value, path, where, errs, root)


def _bounds(node: JSON, value: float, path: str, where: str, errs: Errs) -> None:
    hi, lo = node.get("maximum"), node.get("minimum")
    if isinstance(hi, (int, float)):
        if node.get("exclusiveMaximum") is True and value >= hi:
            errs.append(E.invalid(path, value, f"{where} in body should be less than {_num(hi)}"))
        elif value > hi:
            errs.append(E.invalid(path, value, f"{where} in body should be less than or equal to {_num(hi)}"))
    if isinstance(lo, (int, float)):
        if node.get("exclusiveMinimum") is True and value <= lo:
            errs.append(E.invalid(path, value, f"{where} in body should be greater than {_num(lo)}"))
        elif value < lo:
            errs.append(
                E.invalid(path, value, f"{where} in body should be greater than or equal to {_num(lo)}")
            )
    m = node.get("multipleOf")
    if isinstance(m, (int, float)) and m > 0 and (value / m) != int(value / m):
        errs.append(E.invalid(path, value, f"{where} in body should be a multiple of {_num(m)}"))


def _string(node: JSON, value: str, path: str, where: str, errs: Errs) -> None:
    n = len(value)
    if isinstance(node.get("maxLength"), int) and n > node["maxLength"]:
        errs.append(E.too_long(path, node["maxLength"]))
    if isinstance(node.get("minLength"), int) and n < node["minLength"]:
        errs.append(
            E.invalid(path, value, f"{where} in body should be at least {node['minLength']} chars long")
        )
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        try:
            ok = re.search(pattern, value) is not None
        except re.error:
            ok = True  # the CRD's check reported it
        if not ok:
            errs.append(E.invalid(path, value, f"{where} in body should match '{pattern}'"))


def _array(node: JSON, value: list[Any], path: str, where: str, errs: Errs) -> None:
    mx, mn = node.get("maxItems"), node.get("minItems")
    if isinstance(mx, int) and len(value) > mx:
        errs.append(FieldError(E.TOO_MANY, path, f"Too many: {len(value)}: must have at most {mx} items"))
    if isinstance(mn, int) and len(value) < mn:
        errs.append(E.invalid(path, value, f"{where} in body should have at least {mn} items"))
    if node.get("x-kubernetes-list-type") == "set":
        seen: list[Any] = []
        for i, v in enumerate(value):
            if v in seen:
                errs.append(E.duplicate(f"{path}[{i}]", v))
            seen.append(v)
    items = node.get("items")
    if isinstance(items, dict):
        for i, v in enumerate(value):
            validate(items, v, f"{path}[{i}]", errs)


def _object(node: JSON, value: JSON, path: str, where: str, errs: Errs, root: bool) -> None:
    mx, mn = node.get("maxProperties"), node.get("minProperties")
    if isinstance(mx, int) and len(value) > mx:
        errs.append(FieldError(E.TOO_MANY, path, f"Too many: {len(value)}: must have at most {mx} items"))
    if isinstance(mn, int) and len(value) < mn:
        errs.append(E.invalid(path, value, f"{where} in body should have at least {mn} properties"))
    props = _d(node.get("properties"))
    addl = node.get("additionalProperties")
    for k, v in value.items():
        if (root or node.get(EMBEDDED) is True) and k in _TYPE_META:
            continue
        p = _join(path, k)
        if k in props:
            validate(_d(props[k]), v, p, errs)
        elif isinstance(addl, dict):
            validate(addl, v, p, errs)
    for r in node.get("required") or ():
        if isinstance(r, str) and value.get(r) is None:
            errs.append(E.required(_join(path, r)))
    if node.get(EMBEDDED) is True and not root:
        for k in ("apiVersion", "kind"):
            if not value.get(k):
                errs.append(E.required(_join(path, k)))


# -- the CRD's schema must be structural ---------------------------------------------------------


def structural_errors(node: Any, path: str, errs: Errs, *, level: int = 0) -> None:
    """Upstream's structural schema rules for the schema at `path` (a CRD version's
    schema.openAPIV3Schema): every node with fields has a type, no forbidden keywords, maps are
    either properties or additionalProperties, arrays have items, defaults validate."""
    if not isinstance(node, dict):
        errs.append(E.type_invalid(path, node, "object"))
        return
    for k in node:
        if k not in _KNOWN:
            errs.append(E.unknown_field(_join(path, k)))
    if "x-kubernetes-validations" in node:
        errs.append(
            E.not_supported(
                _join(path, "x-kubernetes-validations"),
                "CEL rules",
                detail=f"{E.UNSUPPORTED_BY_US}: validation rules (CEL) are not evaluated",
            )
        )
    for k in _FORBIDDEN:
        if k in node:
            errs.append(E.forbidden(_join(path, k), f"{k} is forbidden in a structural schema"))
    t = node.get("type")
    int_or_string = node.get(INT_OR_STRING) is True
    if t is not None and t not in TYPES:
        errs.append(E.not_supported(_join(path, "type"), t, TYPES))
    if int_or_string and t:
        errs.append(E.forbidden(_join(path, "type"), "must be empty if x-kubernetes-int-or-string is true"))
    if not t and not int_or_string and node.get(PRESERVE) is not True:
        errs.append(E.required(_join(path, "type"), "must not be empty for specified object fields"))
    if level == 0 and t != "object":
        errs.append(E.invalid(_join(path, "type"), t or "", "must be object at the root"))
    if node.get(EMBEDDED) is True and t != "object":
        errs.append(
            E.invalid(
                _join(path, "type"), t or "", "must be object if x-kubernetes-embedded-resource is true"
            )
        )
    if node.get("uniqueItems") is True:
        errs.append(
            E.forbidden(
                _join(path, "uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            )
        )
    props, addl = node.get("properties"), node.get("additionalProperties")
    if props is not None and addl not in (None, False):
        errs.append(
            E.forbidden(
                _join(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            )
        )
    if props is not None:
        if not isinstance(props, dict):
            errs.append(E.type_invalid(_join(path, "properties"), props, "object"))
        else:
            for k, sub in props.items():
                if level == 0 and k == "metadata":
                    _root_metadata(sub, f"{path}.properties[metadata]", errs)
                    continue
                structural_errors(sub, f"{path}.properties[{k}]", errs, level=level + 1)
    if isinstance(addl, dict):
        structural_errors(addl, _join(path, "additionalProperties"), errs, level=level + 1)
    if t == "array":
        items = node.get("items")
        if not isinstance(items, dict):
            errs.append(E.required(_join(path, "items"), "must be specified"))
        else:
            structural_errors(items, _join(path, "items"), errs, level=level + 1)
    for k in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(node.get(k) or ()):
            if isinstance(sub, dict) and ("type" in sub or "default" in sub or "nullable" in sub):
                errs.append(
                    E.forbidden(f"{path}.{k}[{i}]", "type, default and nullable must not be set inside " + k)
                )
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as e:
            errs.append(
                E.invalid(_join(path, "pattern"), pattern, f"must be a valid regular expression: {e}")
            )
    if "default" in node:
        _check_default(node, path, errs, level)


def _root_metadata(sub: Any, path: str, errs: Errs) -> None:
    """Only metadata.name and metadata.generateName may be restricted, as strings."""
    if not isinstance(sub, dict):
        errs.append(E.type_invalid(path, sub, "object"))
        return
    if sub.get("type") not in (None, "object"):
        errs.append(E.invalid(f"{path}.type", sub.get("type"), "must be object"))
    for k in _d(sub.get("properties")):
        if k not in ("name", "generateName"):
            errs.append(
                E.forbidden(
                    f"{path}.properties", "must not specify anything other than name and generateName"
                )
            )
            break
    for k in ("additionalProperties", "default"):
        if k in sub:
            errs.append(E.forbidden(f"{path}.{k}", f"{k} is forbidden in metadata"))


def _check_default(node: JSON, path: str, errs: Errs, level: int) -> None:
    if level == 0:
        errs.append(E.forbidden(_join(path, "default"), "must not be set at the root"))
        return
    value = copy.deepcopy(node["default"])
    pruned = copy.deepcopy(value)
    prune(node, pruned)
    if pruned != value:
        errs.append(E.invalid(_join(path, "default"), value, "must not have unknown fields"))
        return
    default(node, value)
    found: Errs = []
    validate(node, value, _join(path, "default"), found)
    errs.extend(found)
