"""The OpenAPI v2 (Swagger 2.0) document in gnostic's protobuf form (`openapi_v2.Document`), which
kubectl 1.27 and 1.28 download for `apply`/`create -f` validation and patch computation
(`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`); newer kubectl reads
/openapi/v3. A hand-written encoder of the JSON document: field numbers from gnostic's
openapiv2/OpenAPIv2.proto. Security sections are left out (clients do not use them).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from hypernetes.objects import Obj

# clients ask for "...spec.v2@v1.0+protobuf", but Go's mime parser rejects the "@" in a reply
MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len(num: int, data: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _str(num: int, v: str) -> bytes:
    return _len(num, v.encode()) if v else b""


def _bool(num: int, v: Any) -> bytes:
    return _varint(num << 3) + b"\x01" if v else b""


def _int(num: int, v: Any) -> bytes:
    return _varint(num << 3) + _varint(int(v)) if v else b""


def _double(num: int, v: Any) -> bytes:
    return _varint(num << 3 | 1) + struct.pack("<d", float(v))


def _any(num: int, v: Any) -> bytes:
    """An `Any` carrying the value as YAML (JSON is YAML), as gnostic does for unknown types."""
    return _len(num, _str(2, json.dumps(v)))


def _vendor(num: int, obj: Obj) -> bytes:
    return b"".join(_len(num, _str(1, k) + _any(2, v)) for k, v in obj.items() if k.startswith("x-"))


# per message: JSON key -> (field number, encoder)
Enc = Callable[[int, Any], bytes]
_SCALARS: dict[str, Enc] = {"str": _str, "bool": _bool, "int": _int, "double": _double, "any": _any}


def _fields(obj: Obj, spec: dict[str, tuple[int, str]]) -> bytes:
    out = bytearray()
    for key, (num, typ) in spec.items():
        if key not in obj:
            continue
        v = obj[key]
        if typ == "[str]":
            out += b"".join(_len(num, str(s).encode()) for s in v)
        elif typ == "[any]":
            out += b"".join(_any(num, x) for x in v)
        else:
            out += _SCALARS[typ](num, v)
    return bytes(out)


_SCHEMA_FIELDS = {
    "$ref": (1, "str"),
    "format": (2, "str"),
    "title": (3, "str"),
    "description": (4, "str"),
    "default": (5, "any"),
    "multipleOf": (6, "double"),
    "maximum": (7, "double"),
    "exclusiveMaximum": (8, "bool"),
    "minimum": (9, "double"),
    "exclusiveMinimum": (10, "bool"),
    "maxLength": (11, "int"),
    "minLength": (12, "int"),
    "pattern": (13, "str"),
    "maxItems": (14, "int"),
    "minItems": (15, "int"),
    "uniqueItems": (16, "bool"),
    "maxProperties": (17, "int"),
    "minProperties": (18, "int"),
    "required": (19, "[str]"),
    "enum": (20, "[any]"),
    "discriminator": (26, "str"),
    "readOnly": (27, "bool"),
    "example": (30, "any"),
}


def schema(s: Obj) -> bytes:
    out = bytearray(_fields(s, _SCHEMA_FIELDS))
    ap = s.get("additionalProperties")
    if isinstance(ap, dict):
        out += _len(21, _len(1, schema(ap)))
    elif isinstance(ap, bool):
        out += _len(21, _varint(2 << 3) + (b"\x01" if ap else b"\x00"))
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        out += _len(22, b"".join(_len(1, t.encode()) for t in types))
    if "items" in s:
        items = s["items"] if isinstance(s["items"], list) else [s["items"]]
        out += _len(23, b"".join(_len(1, schema(i)) for i in items))
    out += b"".join(_len(24, schema(a)) for a in s.get("allOf") or [])
    if "properties" in s:
        props = s["properties"].items()
        out += _len(25, b"".join(_len(1, _str(1, k) + _len(2, schema(v))) for k, v in props))
    out += _vendor(31, s)
    return bytes(out)


_QUERY = {
    "required": (1, "bool"),
    "in": (2, "str"),
    "description": (3, "str"),
    "name": (4, "str"),
    "allowEmptyValue": (5, "bool"),
    "type": (6, "str"),
    "format": (7, "str"),
    "collectionFormat": (9, "str"),
    "default": (10, "any"),
    "uniqueItems": (20, "bool"),
    "enum": (21, "[any]"),
}
_PATH = {
    "required": (1, "bool"),
    "in": (2, "str"),
    "description": (3, "str"),
    "name": (4, "str"),
    "type": (5, "str"),
    "format": (6, "str"),
    "collectionFormat": (8, "str"),
    "default": (9, "any"),
    "uniqueItems": (19, "bool"),
    "enum": (20, "[any]"),
}
_NON_BODY = {
    "header": (1, _PATH, 22),
    "formData": (2, _QUERY, 23),
    "query": (3, _QUERY, 23),
    "path": (4, _PATH, 22),
}


def parameter(p: Obj) -> bytes:
    """A ParametersItem: a reference, a body parameter or a non-body one."""
    if "$ref" in p:
        return _len(2, _str(1, p["$ref"]) + _str(2, p.get("description", "")))
    if p.get("in") == "body":
        body = _fields(
            p, {"description": (1, "str"), "name": (2, "str"), "in": (3, "str"), "required": (4, "bool")}
        )
        if "schema" in p:
            body += _len(5, schema(p["schema"]))
        return _len(1, _len(1, body + _vendor(6, p)))
    num, spec, vendor = _NON_BODY.get(p.get("in", "query"), _NON_BODY["query"])
    return _len(1, _len(2, _len(num, _fields(p, spec) + _vendor(vendor, p))))


def _responses(rs: Obj) -> bytes:
    out = bytearray()
    for code, r in rs.items():
        if code.startswith("x-"):
            continue
        if "$ref" in r:
            value = _len(2, _str(1, r["$ref"]))
        else:
            resp = _str(1, r.get("description", ""))
            if "schema" in r:
                resp += _len(2, _len(1, schema(r["schema"])))
            value = _len(1, resp + _vendor(5, r))
        out += _len(1, _str(1, code) + _len(2, value))
    return bytes(out + _vendor(2, rs))


def operation(op: Obj) -> bytes:
    out = bytearray(
        _fields(
            op,
            {
                "tags": (1, "[str]"),
                "summary": (2, "str"),
                "description": (3, "str"),
                "operationId": (5, "str"),
                "produces": (6, "[str]"),
                "consumes": (7, "[str]"),
                "schemes": (10, "[str]"),
                "deprecated": (11, "bool"),
            },
        )
    )
    out += b"".join(_len(8, parameter(p)) for p in op.get("parameters") or [])
    if "responses" in op:
        out += _len(9, _responses(op["responses"]))
    return bytes(out + _vendor(13, op))


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def path_item(item: Obj) -> bytes:
    out = bytearray(_str(1, item.get("$ref", "")))
    for method, num in _METHODS.items():
        if method in item:
            out += _len(num, operation(item[method]))
    out += b"".join(_len(9, parameter(p)) for p in item.get("parameters") or [])
    return bytes(out + _vendor(10, item))


def document(doc: Obj) -> bytes:
    info = doc.get("info") or {}
    out = bytearray(_str(1, doc.get("swagger", "2.0")))
    out += _len(2, _fields(info, {"title": (1, "str"), "version": (2, "str"), "description": (3, "str")}))
    out += _fields(
        doc,
        {
            "host": (3, "str"),
            "basePath": (4, "str"),
            "schemes": (5, "[str]"),
            "consumes": (6, "[str]"),
            "produces": (7, "[str]"),
        },
    )
    paths = doc.get("paths") or {}
    named = (_len(2, _str(1, p) + _len(2, path_item(item))) for p, item in paths.items() if p.startswith("/"))
    out += _len(8, _vendor(1, paths) + b"".join(named))
    defs = doc.get("definitions") or {}
    out += _len(9, b"".join(_len(1, _str(1, name) + _len(2, schema(s))) for name, s in defs.items()))
    return bytes(out + _vendor(16, doc))
