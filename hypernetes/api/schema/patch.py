"""apply_patch: the three PATCH media types kubectl and the clients send, on plain JSON values.

- application/merge-patch+json: RFC 7386 JSON merge patch
- application/json-patch+json: RFC 6902 JSON patch (add, remove, replace, move, copy, test)
- application/strategic-merge-patch+json: Kubernetes strategic merge patch (smp.py)
- application/apply-patch+yaml: server-side apply without field ownership (smp.apply_config)
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from hypernetes.api import bodies
from hypernetes.api.schema import smp
from hypernetes.api.schema.errors import PatchError
from hypernetes.objects import Obj as JSON

if TYPE_CHECKING:
    from hypernetes.api.registry.kind import Kind


MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE, STRATEGIC, APPLY)


def apply_patch(kind: Kind, obj: JSON, patch: bytes, content_type: str) -> JSON:
    """The patched copy of `obj` (which is not changed). Raises PatchError."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in PATCH_TYPES:
        raise PatchError(f"unsupported patch type {ctype!r}; supported: {', '.join(PATCH_TYPES)}")
    try:
        # bounded decoding (depth, YAML aliases): a patch body is a request body like any other
        doc = bodies.json_value(patch) if ctype != APPLY else bodies.yaml_or_json(patch)
    except (ValueError, UnicodeDecodeError) as e:
        raise PatchError(f"invalid JSON in patch: {e}") from None
    if ctype == JSON_PATCH:
        result = json_patch(obj, doc)
    elif ctype == MERGE:
        if not isinstance(doc, dict):
            raise PatchError("a merge patch must be a JSON object")
        result = merge_patch(obj, doc)
    elif ctype == STRATEGIC:
        if not isinstance(doc, dict):
            raise PatchError("a strategic merge patch must be a JSON object")
        result = smp.strategic_merge(obj, doc, kind.definition)
    else:
        if not isinstance(doc, dict):
            raise PatchError("an apply patch must be an object")
        result = smp.apply_config(obj, doc, kind.definition)
    if not isinstance(result, dict):
        raise PatchError("the patched object is not a JSON object")
    return result


# -- RFC 7386 ----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def merge_diff(source: Any, target: Any) -> Any:
    """A merge patch that turns `source` into `target` (for tests and tools)."""
    if not isinstance(source, dict) or not isinstance(target, dict):
        return copy.deepcopy(target)
    out: JSON = {}
    for k in source:
        if k not in target:
            out[k] = None
    for k, v in target.items():
        if k not in source:
            out[k] = copy.deepcopy(v)
        elif not json_equal(source[k], v):
            out[k] = (
                merge_diff(source[k], v)
                if isinstance(v, dict) and isinstance(source[k], dict)
                else copy.deepcopy(v)
            )
    return out


# -- RFC 6902 ----------------------------------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"invalid JSON pointer {path!r}: must be a string")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, insert: bool) -> int:
    if token == "-" and insert:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r} in {path!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not insert):
        raise PatchError(f"array index {i} out of bounds in {path!r}")
    return i


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(f"path {path!r} does not exist: missing {t!r}")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, path, insert=False)]
        else:
            raise PatchError(f"path {path!r} does not exist: {t!r} is inside a scalar")
    return cur


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, insert=False)]
    raise PatchError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, insert=True), value)
    else:
        raise PatchError(f"cannot add at {path!r}: parent is not an object or array")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"cannot remove {path!r}: it does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, path, insert=False)]
    else:
        raise PatchError(f"cannot remove {path!r}: it does not exist")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902. The whole patch applies or none of it does (we work on a copy)."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be an array of operations")
    doc = copy.deepcopy(target)
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f'operation {n}: must be an object with "op" and "path"')
        name, path = op["op"], op["path"]
        if name in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f'operation {n} ({name}): missing "value"')
        if name in ("move", "copy") and "from" not in op:
            raise PatchError(f'operation {n} ({name}): missing "from"')
        if name == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif name == "remove":
            doc = _remove(doc, path)
        elif name == "replace":
            _get(doc, path)  # must exist
            if _pointer(path):
                doc = _add(_remove(doc, path), path, copy.deepcopy(op["value"]))
            else:
                doc = copy.deepcopy(op["value"])
        elif name == "move":
            src = op["from"]
            if path != src and path.startswith(src + "/"):
                raise PatchError(f"operation {n} (move): cannot move {src!r} into its own child {path!r}")
            value = _get(doc, src)
            doc = _add(_remove(doc, src), path, value)
        elif name == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif name == "test":
            if not json_equal(_get(doc, path), op["value"]):
                raise PatchError(f"test operation failed: value at {path!r} is not {json.dumps(op['value'])}")
        else:
            raise PatchError(f"operation {n}: unknown op {name!r}")
    return doc
