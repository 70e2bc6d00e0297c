"""The OpenAPI of custom resources, as apiextensions-apiserver publishes it: one /openapi/v3
document per custom group-version (what `kubectl explain` and `kubectl apply` read), and the
custom paths and definitions merged into /openapi/v2. Each CRD version's schema becomes the
component `<reversed group>.<version>.<Kind>` with apiVersion, kind and metadata added and its
GVK marked; the operations are the built-in kinds' (schema/openapi.py), so they read alike.
Documents are rebuilt when the server's CRDs change (CustomKinds.generation)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any

from hypernetes.api.customresources.kinds import CustomKinds, Served
from hypernetes.api.schema import openapi as base
from hypernetes.api.schema import schemas
from hypernetes.objects import Obj as JSON

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
STRATEGIC = "application/strategic-merge-patch+json"
_TYPE_META = {
    "apiVersion": {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object. "
        "Servers should convert recognized schemas to the latest internal value, and may reject "
        "unrecognized values.",
    },
    "kind": {
        "type": "string",
        "description": "Kind is a string value representing the REST resource this object represents.",
    },
}


def _gvk(s: Served, kind: str) -> list[JSON]:
    return [{"group": s.kind.group, "kind": kind, "version": s.kind.version}]


def definitions(s: Served) -> dict[str, JSON]:
    """The kind's and its list's definitions ($ref by name, as the vendored ones)."""
    root = copy.deepcopy(s.schema)
    props = {
        **_TYPE_META,
        "metadata": {"$ref": _META + "ObjectMeta", "description": "Standard object's metadata."},
        **{
            k: v
            for k, v in (root.pop("properties", None) or {}).items()
            if k not in ("apiVersion", "kind", "metadata")
        },
    }
    kind_def: JSON = {"type": "object", **root, "properties": props}
    kind_def["x-kubernetes-group-version-kind"] = _gvk(s, s.kind.kind)
    list_def: JSON = {
        "type": "object",
        "description": f"{s.kind.kind}List is a list of {s.kind.kind}",
        "required": ["items"],
        "properties": {
            **_TYPE_META,
            "items": {
                "type": "array",
                "description": f"List of {s.kind.plural}. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
                "items": {"$ref": s.definition},
            },
            "metadata": {"$ref": _META + "ListMeta", "description": "Standard list metadata."},
        },
        "x-kubernetes-group-version-kind": _gvk(s, s.kind.kind + "List"),
    }
    return {s.definition: kind_def, s.definition + "List": list_def}


def _operations(s: Served) -> dict[str, tuple[list[str], list[JSON]]]:
    """The built-in kinds' operations, but a patch of the object or its status does not take
    strategic merge patches (custom kinds have no patch strategies): kubectl reads that here and
    sends a merge patch instead."""
    paths = base._operations(dataclasses.replace(s.kind, definition=s.definition))
    for p, (_, ops) in paths.items():
        for o in ops:
            if o["verb"] == "patch" and not p.endswith("/scale"):
                o["consumes"] = tuple(t for t in o["consumes"] if t != STRATEGIC)
    return paths


def _ours_and_theirs(served: list[Served], ops: list[JSON]) -> tuple[dict[str, JSON], list[str]]:
    ours: dict[str, JSON] = {}
    for s in served:
        ours.update(definitions(s))
    roots = [r for r in base._roots([], ops) if r not in ours]
    roots.extend(_META + n for n in ("ObjectMeta", "ListMeta"))
    return ours, base._closure(roots)


def _v3_doc(served: list[Served]) -> bytes:
    paths: JSON = {}
    all_ops: list[JSON] = []
    for s in served:
        for p, (pparams, ops) in _operations(s).items():
            entry: JSON = (
                {"parameters": [base._v3_param(base._path_param(n)) for n in pparams]} if pparams else {}
            )
            for o in ops:
                entry[o["verb"]] = base._v3_op(o)
                all_ops.append(o)
            paths[p] = entry
    ours, theirs = _ours_and_theirs(served, all_ops)
    components = {n: base._ref_v3(schemas.definition(n)) for n in theirs}
    components.update({n: base._ref_v3(d) for n, d in ours.items()})
    doc = {
        "openapi": "3.0.0",
        "info": base._info(),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "name": "authorization",
                    "in": "header",
                    "description": "Bearer Token authentication",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class CustomOpenAPI:
    """The custom group-versions' documents of one server, rebuilt when its CRDs change."""

    def __init__(self, kinds: CustomKinds) -> None:
        self.kinds = kinds
        self._generation = -1
        self._docs: dict[str, bytes] = {}
        self._hashes: dict[str, str] = {}

    def _refresh(self) -> None:
        if self._generation == self.kinds.generation:
            return
        by_gv: dict[str, list[Served]] = {}
        for s in self.kinds.served:
            by_gv.setdefault(f"apis/{s.kind.api_version}", []).append(s)
        self._docs = {path: _v3_doc(served) for path, served in by_gv.items()}
        self._hashes = {p: hashlib.sha512(d).hexdigest().upper() for p, d in self._docs.items()}
        self._generation = self.kinds.generation

    def index_paths(self) -> dict[str, JSON]:
        self._refresh()
        return {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"} for p, h in self._hashes.items()}

    def v3(self, path: str) -> tuple[bytes, str] | None:
        self._refresh()
        doc = self._docs.get(path)
        return (doc, self._hashes[path]) if doc is not None else None

    def v2(self, doc: JSON) -> JSON:
        """/openapi/v2 with the custom kinds' paths and definitions added."""
        served = list(self.kinds.served)
        if not served:
            return doc
        doc = dict(doc)
        paths, defs = dict(doc["paths"]), dict(doc["definitions"])
        all_ops: list[JSON] = []
        for s in served:
            for p, (pparams, ops) in _operations(s).items():
                entry: JSON = {"parameters": [base._path_param(n) for n in pparams]} if pparams else {}
                for o in ops:
                    entry[o["verb"]] = base._v2_op(o)
                    all_ops.append(o)
                paths[p] = entry
        ours, theirs = _ours_and_theirs(served, all_ops)
        for n in theirs:
            defs.setdefault(n, base._ref_v2(schemas.definition(n)))
        defs.update({n: _v2_schema(base._ref_v2(d)) for n, d in ours.items()})
        doc["paths"], doc["definitions"] = paths, defs
        return doc


def _v2_schema(node: Any) -> Any:
    """OpenAPI v2 has no `nullable`, and no oneOf/anyOf/not: dropped, as upstream drops them."""
    if isinstance(node, dict):
        return {k: _v2_schema(v) for k, v in node.items() if k not in ("nullable", "oneOf", "anyOf", "not")}
    if isinstance(node, list):
        return [_v2_schema(v) for v in node]
    return node
