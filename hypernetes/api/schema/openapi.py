"""The /openapi/v3 index and group-version documents, and /openapi/v2, generated from the
vendored schemas. What kubectl needs (reference §1.4, Appendix C): each PATCH operation carries
an object-valued `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter, so
`kubectl apply` leaves validation to the server; component schemas carry the array-valued GVK
and the patch merge keys (for `kubectl explain` and client-side patch computation).

Which kinds, verbs and subresources: the registry (hypernetes/api/registry), imported when a
document is first built, since the registry's entries are made of this package's pieces.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from typing import TYPE_CHECKING, Any

from hypernetes.api.schema import schemas
from hypernetes.objects import Obj as JSON

if TYPE_CHECKING:
    from hypernetes.api.registry.kind import Kind


_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_STATUS = _META + "Status"
_DELETE_OPTIONS = _META + "DeleteOptions"
_WATCH_EVENT = _META + "WatchEvent"
_PATCH = _META + "Patch"
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)


def _q(name: str, kind: str = "string", description: str = "") -> JSON:
    return {"name": name, "in": "query", "description": description, "type": kind, "uniqueItems": True}


_PRETTY = _q("pretty", description="If 'true', then the output is pretty printed.")
_WRITE = [
    _q("dryRun", description="When present, indicates that modifications should not be persisted."),
    _q(
        "fieldManager",
        description="fieldManager is a name associated with the actor or entity that is "
        "making these changes.",
    ),
    _q(
        "fieldValidation",
        description="fieldValidation instructs the server on how to handle objects in the "
        "request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
    ),
]
_FORCE = _q("force", "boolean", 'Force is going to "force" Apply requests.')
_LIST = [
    _q("allowWatchBookmarks", "boolean"),
    _q("continue"),
    _q("fieldSelector"),
    _q("labelSelector"),
    _q("limit", "integer"),
    _q("resourceVersion"),
    _q("resourceVersionMatch"),
    _q("sendInitialEvents", "boolean"),
    _q("timeoutSeconds", "integer"),
    _q("watch", "boolean"),
]
_DELETE = [_q("dryRun"), _q("gracePeriodSeconds", "integer"), _q("propagationPolicy")]


def _path_param(name: str) -> JSON:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "type": "string",
        "uniqueItems": True,
        "description": f"{name} of the resource" if name != "namespace" else "object name and auth scope",
    }


def _prefix(kind: Kind) -> str:
    return f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"


def _gvk(kind: Kind) -> JSON:
    return {"group": kind.group, "version": kind.version, "kind": kind.kind}


def _op(
    kind: Kind,
    verb: str,
    action: str,
    op_id: str,
    *,
    body: str | None = None,
    response: str | None,
    params: list[JSON],
    gvk: JSON | None = None,
    consumes: tuple[str, ...] = ("*/*",),
    produces: tuple[str, ...] = ("application/json", "application/yaml"),
    description: str = "",
) -> JSON:
    """An operation in a neutral form that _v3_op and _v2_op render."""
    return {
        "verb": verb,
        "action": action,
        "operationId": op_id,
        "body": body,
        "response": response,
        "params": [_PRETTY, *params],
        "gvk": gvk or _gvk(kind),
        "consumes": consumes,
        "produces": produces,
        "description": description,
        "tag": _tag(kind),
    }


def _tag(kind: Kind) -> str:
    return f"{kind.openapi_token.lower()}_{kind.version}"


# verb -> (HTTP method, operation id prefix); connect streams are "connect" + method
_VERB_OPS = {
    "get": ("get", "read"),
    "update": ("put", "replace"),
    "patch": ("patch", "patch"),
    "create": ("post", "create"),
}


def _operations(kind: Kind) -> dict[str, tuple[list[str], list[JSON]]]:
    """path -> (path parameters, operations) for one kind: its verbs on the collection and the
    item, and each subresource as registry/subresources.py describes it."""
    from hypernetes.api.registry import SUBRESOURCES

    g = kind.openapi_token + kind.version.capitalize()
    ns = "Namespaced" if kind.namespaced else ""
    base = _prefix(kind) + ("/namespaces/{namespace}" if kind.namespaced else "")
    pparams = ["namespace"] if kind.namespaced else []
    coll, item = f"{base}/{kind.plural}", f"{base}/{kind.plural}/{{name}}"
    defn, lst, name = kind.definition, kind.list_definition, kind.kind
    verbs = set(kind.verbs)
    collection: list[JSON] = []
    if "list" in verbs:
        collection.append(
            _op(
                kind,
                "get",
                "list",
                f"list{g}{ns}{name}",
                response=lst,
                params=_LIST,
                description=f"list or watch objects of kind {name}",
            )
        )
    if "create" in verbs:
        collection.append(
            _op(
                kind,
                "post",
                "post",
                f"create{g}{ns}{name}",
                body=defn,
                response=defn,
                params=_WRITE,
                description=f"create a {name}",
            )
        )
    if "deletecollection" in verbs:
        collection.append(
            _op(
                kind,
                "delete",
                "deletecollection",
                f"delete{g}Collection{ns}{name}",
                body=_DELETE_OPTIONS,
                response=_STATUS,
                params=_DELETE + _LIST,
                description=f"delete collection of {name}",
            )
        )
    paths: dict[str, tuple[list[str], list[JSON]]] = {coll: (pparams, collection)}
    single: list[JSON] = []
    if "get" in verbs:
        single.append(
            _op(
                kind,
                "get",
                "get",
                f"read{g}{ns}{name}",
                response=defn,
                params=[],
                description=f"read the specified {name}",
            )
        )
    if "update" in verbs:
        single.append(
            _op(
                kind,
                "put",
                "put",
                f"replace{g}{ns}{name}",
                body=defn,
                response=defn,
                params=_WRITE,
                description=f"replace the specified {name}",
            )
        )
    if "patch" in verbs:
        single.append(
            _op(
                kind,
                "patch",
                "patch",
                f"patch{g}{ns}{name}",
                body=_PATCH,
                response=defn,
                params=[*_WRITE, _FORCE],
                consumes=_PATCH_TYPES,
                description=f"partially update the specified {name}",
            )
        )
    if "delete" in verbs:
        single.append(
            _op(
                kind,
                "delete",
                "delete",
                f"delete{g}{ns}{name}",
                body=_DELETE_OPTIONS,
                response=_STATUS,
                params=_DELETE,
                description=f"delete a {name}",
            )
        )
    if single:
        paths[item] = ([*pparams, "name"], single)
    if kind.namespaced and "list" in verbs:
        paths[f"{_prefix(kind)}/{kind.plural}"] = (
            [],
            [
                _op(
                    kind,
                    "get",
                    "list",
                    f"list{g}{name}ForAllNamespaces",
                    response=lst,
                    params=_LIST,
                    description=f"list or watch objects of kind {name}",
                )
            ],
        )
    for sub_name in kind.subresources:
        sub = SUBRESOURCES[sub_name]
        gvk = sub.gvk(kind.group, kind.version, name)
        body = sub.definition(defn)
        ops = []
        for verb in sorted(sub.verbs, key=list(_VERB_OPS).index):
            method, prefix = _VERB_OPS[verb]
            suffix = f"{g}{ns}{name}{sub_name.capitalize()}"
            extra = [_q(p, t) for p, t in sub.params]
            if sub.connect:
                ops.append(
                    _op(
                        kind,
                        method,
                        "connect",
                        f"connect{method.capitalize()}{suffix}",
                        response=None,
                        params=extra,
                        gvk=gvk,
                        produces=sub.produces,
                    )
                )
            elif verb == "patch":
                ops.append(
                    _op(
                        kind,
                        method,
                        method,
                        f"{prefix}{suffix}",
                        body=_PATCH,
                        response=body,
                        params=[*_WRITE, _FORCE],
                        gvk=gvk,
                        consumes=_PATCH_TYPES,
                    )
                )
            elif verb == "get":
                ops.append(
                    _op(
                        kind,
                        method,
                        method,
                        f"{prefix}{suffix}",
                        response=body,
                        params=extra,
                        gvk=gvk,
                        produces=sub.produces,
                    )
                )
            else:
                ops.append(
                    _op(
                        kind,
                        method,
                        method,
                        f"{prefix}{suffix}",
                        body=body,
                        response=body,
                        params=_WRITE,
                        gvk=gvk,
                    )
                )
        paths[f"{item}/{sub_name}"] = ([*pparams, "name"], ops)
    return paths


# -- rendering ---------------------------------------------------------------------------------


def _ref_v3(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _ref_v3(v) for k, v in node.items() if k != "$ref"}
        if "$ref" in node:
            ref = {"$ref": "#/components/schemas/" + node["$ref"]}
            if not out:
                return ref
            return {"allOf": [ref], **out}  # OpenAPI 3.0 ignores siblings of $ref; upstream wraps
        return out
    if isinstance(node, list):
        return [_ref_v3(v) for v in node]
    return node


def _ref_v2(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _ref_v2(v) for k, v in node.items()}
        if "$ref" in node:
            out["$ref"] = "#/definitions/" + node["$ref"]
        return out
    if isinstance(node, list):
        return [_ref_v2(v) for v in node]
    return node


def _closure(roots: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    todo = list(roots)

    def refs(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                todo.append(node["$ref"])
            for v in node.values():
                refs(v)
        elif isinstance(node, list):
            for v in node:
                refs(v)

    while todo:
        name = todo.pop()
        if name not in seen:
            seen[name] = None
            refs(schemas.definition(name))
    return sorted(seen)


def _v3_param(p: JSON) -> JSON:
    out = {k: v for k, v in p.items() if k not in ("type", "uniqueItems")}
    out["schema"] = {"type": p["type"], "uniqueItems": True}
    return out


def _v3_op(o: JSON) -> JSON:
    op: JSON = {
        "tags": [o["tag"]],
        "description": o["description"],
        "operationId": o["operationId"],
        "parameters": [_v3_param(p) for p in o["params"]],
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": o["action"],
        "x-kubernetes-group-version-kind": o["gvk"],
    }
    if o["response"]:
        ref = {"$ref": "#/components/schemas/" + o["response"]}
        op["responses"]["200"]["content"] = {t: {"schema": ref} for t in o["produces"]}
        if o["verb"] == "post":
            op["responses"]["201"] = {
                "description": "Created",
                "content": {t: {"schema": ref} for t in o["produces"]},
            }
    else:
        op["responses"]["200"]["content"] = {t: {"schema": {"type": "string"}} for t in o["produces"]}
    if o["body"]:
        ref = {"$ref": "#/components/schemas/" + o["body"]}
        types = o["consumes"] if o["consumes"] != ("*/*",) else ("*/*",)
        op["requestBody"] = {
            "content": {t: {"schema": ref} for t in types},
            "required": o["verb"] != "delete",
        }
    return op


def _v2_op(o: JSON) -> JSON:
    params = list(o["params"])
    if o["body"]:
        params.append(
            {
                "name": "body",
                "in": "body",
                "required": o["verb"] != "delete",
                "schema": {"$ref": "#/definitions/" + o["body"]},
            }
        )
    resp: JSON = {"description": "OK"}
    resp["schema"] = {"$ref": "#/definitions/" + o["response"]} if o["response"] else {"type": "string"}
    op: JSON = {
        "tags": [o["tag"]],
        "description": o["description"],
        "operationId": o["operationId"],
        "consumes": list(o["consumes"]),
        "produces": list(o["produces"]),
        "schemes": ["https"],
        "parameters": params,
        "responses": {"200": resp, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": o["action"],
        "x-kubernetes-group-version-kind": o["gvk"],
    }
    return op


def _gv_kinds(gv: str) -> list[Kind]:
    from hypernetes.api.registry import KINDS

    return [k for k in KINDS if k.api_version == gv]


def _gv_path(gv: str) -> str:
    """ "v1" -> "api/v1", "apps/v1" -> "apis/apps/v1": the keys of the /openapi/v3 index."""
    return f"apis/{gv}" if "/" in gv else f"api/{gv}"


def _roots(kinds: list[Kind], ops: list[JSON]) -> list[str]:
    roots = {_STATUS, _DELETE_OPTIONS, _WATCH_EVENT, _PATCH}
    for o in ops:
        roots.update(x for x in (o["body"], o["response"]) if x)
    return sorted(roots)


def _info() -> JSON:
    return {"title": "Kubernetes", "version": schemas.upstream_version() + "+hypernetes"}


@functools.cache
def _v3_doc(path: str) -> str:
    gv = path.removeprefix("apis/").removeprefix("api/")
    kinds = _gv_kinds(gv)
    paths: JSON = {}
    all_ops: list[JSON] = []
    for kind in kinds:
        for p, (pparams, ops) in _operations(kind).items():
            entry: JSON = {"parameters": [_v3_param(_path_param(n)) for n in pparams]} if pparams else {}
            for o in ops:
                entry[o["verb"]] = _v3_op(o)
                all_ops.append(o)
            paths[p] = entry
    components = (
        {n: _ref_v3(schemas.definition(n)) for n in _closure(_roots(kinds, all_ops))} if kinds else {}
    )
    doc = {
        "openapi": "3.0.0",
        "info": _info(),
        "paths": paths,
        "components": {
            "schemas": components,
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
    return json.dumps(doc, separators=(",", ":"))


def v3_paths() -> list[str]:
    """The group-version keys of the /openapi/v3 index ("api", "api/v1", "apis", "apis/apps/v1", ...)."""
    from hypernetes.api.registry import group_versions

    return ["api", "apis", *(_gv_path(gv) for gv in group_versions())]


def openapi_v3_index() -> JSON:
    """GET /openapi/v3: each document's URL carries a hash of its content, which kubectl caches by."""
    return {
        "paths": {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash={openapi_v3_hash(p)}"} for p in v3_paths()}
    }


@functools.cache
def openapi_v3_hash(path: str) -> str:
    """The hash in a document's index URL (upstream: SHA-512, upper-case hex)."""
    return hashlib.sha512(_v3_doc(path).encode()).hexdigest()[:128].upper()


def openapi_v3(target: Kind | str) -> JSON:
    """GET /openapi/v3/<path>: the document of a group-version ("api/v1", "apis/apps/v1", or a
    Kind, meaning its group-version). "api" and "apis" have no kinds (empty paths). KeyError for
    a path that is not in the index."""
    path = (
        _gv_path(target.api_version)
        if not isinstance(target, str)
        else target.strip("/").removeprefix("openapi/v3/")
    )
    if path not in v3_paths():
        raise KeyError(path)
    doc: JSON = json.loads(_v3_doc(path))
    return doc


def openapi_v3_bytes(path: str) -> bytes:
    """The same document, serialized once (cached): the server can send it as is."""
    if path not in v3_paths():
        raise KeyError(path)
    return _v3_doc(path).encode()


@functools.cache
def _v2_doc() -> str:
    from hypernetes.api.registry import KINDS

    paths: JSON = {}
    all_ops: list[JSON] = []
    for kind in KINDS:
        for p, (pparams, ops) in _operations(kind).items():
            entry: JSON = {"parameters": [_path_param(n) for n in pparams]} if pparams else {}
            for o in ops:
                entry[o["verb"]] = _v2_op(o)
                all_ops.append(o)
            paths[p] = entry
    defs = {n: _ref_v2(schemas.definition(n)) for n in _closure(_roots(list(KINDS), all_ops))}
    doc = {
        "swagger": "2.0",
        "info": _info(),
        "paths": paths,
        "definitions": defs,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }
    return json.dumps(doc, separators=(",", ":"))


def openapi_v2() -> JSON:
    """GET /openapi/v2 as JSON (kubectl asks for protobuf first; JSON is what we can give)."""
    doc: JSON = json.loads(_v2_doc())
    return doc


def openapi_v2_bytes() -> bytes:
    return _v2_doc().encode()


def component(name: str) -> JSON:
    """One definition as it appears in the v3 documents."""
    out: JSON = _ref_v3(copy.deepcopy(schemas.definition(name)))
    return out
