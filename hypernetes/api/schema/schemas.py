"""The vendored upstream schemas (data/k8s-v1.32.json, made by tools/vendor_schemas.py) and
lookups on them: definitions by name, a property's schema, its patch strategy and merge key.
Kinds upstream does not define bring their definitions in their registry entry."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from hypernetes.objects import Obj as JSON

DATA = Path(__file__).parent / "data" / "k8s-v1.32.json"

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
MICRO_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# free-form JSON inside typed objects
FREE_FORM = frozenset(
    {"io.k8s.apimachinery.pkg.runtime.RawExtension", "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"}
)


@functools.cache
def _document() -> JSON:
    from hypernetes.api.registry import KINDS  # its entries are made of this package: import late

    doc: JSON = json.loads(DATA.read_text())
    for kind in KINDS:
        doc["definitions"].update(kind.definitions)  # our own kinds, beside upstream's
    return doc


def definitions() -> dict[str, JSON]:
    defs: dict[str, JSON] = _document()["definitions"]
    return defs


def upstream_version() -> str:
    return str(_document()["version"])


def definition(name: str) -> JSON:
    return definitions()[name]


def resolve(node: JSON) -> tuple[str | None, JSON]:
    """(definition name or None, the schema that describes the value) for a property schema."""
    ref = node.get("$ref")
    if ref is None:
        return None, node
    return ref, definitions()[ref]


def prop(node: JSON | None, name: str) -> JSON | None:
    """The property schema of `name` in the object schema `node` (which may be a $ref); None if
    unknown. The result keeps the property-level extensions (patch strategy, merge key)."""
    if node is None:
        return None
    _, s = resolve(node)
    props = s.get("properties")
    if props is not None:
        p: JSON | None = props.get(name)
        return p
    addl = s.get("additionalProperties")
    return addl if isinstance(addl, dict) else None


def items(node: JSON | None) -> JSON | None:
    if node is None:
        return None
    _, s = resolve(node)
    it: JSON | None = s.get("items")
    return it


def patch_strategies(node: JSON | None) -> set[str]:
    """{"merge"}, {"retainKeys"}, {"merge", "retainKeys"}, {"replace"} or empty."""
    if node is None:
        return set()
    return {s for s in str(node.get("x-kubernetes-patch-strategy", "")).split(",") if s}


def merge_key(node: JSON | None) -> str | None:
    return None if node is None else node.get("x-kubernetes-patch-merge-key")


def kind_of(node: JSON | None) -> str | None:
    """ "object", "array", a scalar type, or None for free-form / unknown."""
    if node is None:
        return None
    name, s = resolve(node)
    if name in FREE_FORM:
        return None
    t: str | None = s.get("type")
    return t
