"""Strategic merge patch, as kube-apiserver applies it (apimachinery strategicpatch), driven by
the `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` of the vendored schemas.

Lists whose strategy is "merge" merge by their merge key (containers by name, ports by
containerPort, ...) or, for scalars, as a union; other lists are replaced. Directives:
`$patch: replace|delete|merge` in maps and list elements, `$retainKeys`,
`$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`; null deletes a key.
"""

from __future__ import annotations

import copy
from typing import Any

from hypernetes.api.schema import schemas
from hypernetes.api.schema.errors import PatchError
from hypernetes.objects import Obj as JSON

_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_RETAIN = "$retainKeys"
_PATCH = "$patch"


def strategic_merge(original: JSON, patch: JSON, definition: str) -> JSON:
    merged = _merge_map(copy.deepcopy(original), copy.deepcopy(patch), {"$ref": definition})
    if merged is None:
        raise PatchError("a strategic merge patch may not delete the whole object")
    return merged


def apply_config(live: JSON, config: JSON, definition: str) -> JSON:
    """Server-side apply without field ownership: the applied configuration merges into the live
    object like a strategic merge patch without directives (lists merge by their merge key).
    Fields left out of the configuration are kept, never removed."""
    return strategic_merge(live, clean(config), definition)


def clean(v: Any) -> Any:
    """`v` without directives and nulls: what a new value from a patch stores."""
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items() if x is not None and not k.startswith("$")}
    if isinstance(v, list):
        return [clean(x) for x in v if not (isinstance(x, dict) and _PATCH in x and len(x) == 1)]
    return v


def _merge_map(original: JSON, patch: JSON, schema: JSON | None) -> JSON | None:
    """Merge `patch` into `original` (modified and returned); None means "delete this map"."""
    directive = patch.pop(_PATCH, None)
    if directive == "replace":
        return clean(patch)  # type: ignore[no-any-return]
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive!r} in map: {patch}")
    retain = patch.pop(_RETAIN, None)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError(f"$retainKeys must be a list, got {retain!r}")
        for k in [k for k in original if k not in retain]:
            del original[k]
    for key in [k for k in patch if k.startswith(_DELETE_PRIMITIVE)]:
        target, values = key[len(_DELETE_PRIMITIVE) :], patch.pop(key)
        if not isinstance(values, list):
            raise PatchError(f"{key} must be a list, got {values!r}")
        if isinstance(original.get(target), list):
            original[target] = [x for x in original[target] if x not in values]
    orders = {k[len(_ORDER) :]: patch.pop(k) for k in [k for k in patch if k.startswith(_ORDER)]}
    before = {name: copy.copy(original.get(name)) for name in orders}
    for k, pv in patch.items():
        if k.startswith("$"):
            raise PatchError(f"unknown patch directive {k!r}")
        field = schemas.prop(schema, k)
        if pv is None:
            original.pop(k, None)
            continue
        ov = original.get(k)
        if isinstance(pv, dict) and "replace" not in schemas.patch_strategies(field):
            merged = _merge_map(ov if isinstance(ov, dict) else {}, pv, field)
            if merged is None:
                original.pop(k, None)
            else:
                original[k] = merged
        elif isinstance(pv, list):
            original[k] = _merge_list(ov if isinstance(ov, list) else [], pv, field, k)
        else:
            original[k] = clean(pv)
    for field_name, order in orders.items():
        _set_order(original, field_name, order, before[field_name], schemas.prop(schema, field_name))
    return original


def _merge_list(original: list[Any], patch: list[Any], field: JSON | None, name: str) -> list[Any]:
    if "merge" not in schemas.patch_strategies(field):
        return clean(patch)  # type: ignore[no-any-return]
    replace = [x for x in patch if isinstance(x, dict) and x.get(_PATCH) == "replace"]
    if replace:
        return [clean(x) for x in patch if not (isinstance(x, dict) and _PATCH in x)]
    key = schemas.merge_key(field)
    if key is None:
        if any(isinstance(x, dict) for x in patch):
            return clean(patch)  # type: ignore[no-any-return]
        out: list[Any] = []
        for x in original + patch:  # union, first occurrence wins (uniqifyScalars)
            if x not in out:
                out.append(x)
        return out
    item = schemas.items(field)
    result = list(original)
    for el in patch:
        if not isinstance(el, dict):
            raise PatchError(f"{name}: list element {el!r} is not an object, but the list merges by {key!r}")
        if key not in el:
            raise PatchError(f"map: {el} does not contain declared merge key: {key}")
        directive = el.get(_PATCH)
        idx = next((i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == el[key]), None)
        if directive == "delete":
            result = [o for o in result if not (isinstance(o, dict) and o.get(key) == el[key])]
            continue
        if directive not in (None, "merge"):
            raise PatchError(f"unknown patch type: {directive!r} in list element of {name}")
        if idx is None:
            merged = _merge_map({}, el, item)
            if merged is not None:
                result.append(merged)
        else:
            merged = _merge_map(result[idx], el, item)
            if merged is None:
                del result[idx]
            else:
                result[idx] = merged
    return result


def _set_order(obj: JSON, name: str, order: Any, before: Any, field: JSON | None) -> None:
    """Apply `$setElementOrder/<name>` as upstream's normalizeElementOrder: the listed items take
    the given order; items only the server has keep their place relative to them."""
    if not isinstance(order, list):
        raise PatchError(f"{_ORDER}{name} must be a list")
    merged = obj.get(name)
    if not isinstance(merged, list):
        return
    key = schemas.merge_key(field)

    def ident(x: Any) -> Any:
        if key is None:
            return _hashable(x)
        if not isinstance(x, dict) or key not in x:
            raise PatchError(f"{_ORDER}{name}: element {x!r} does not contain merge key {key!r}")
        return _hashable(x[key])

    wanted = {ident(o): i for i, o in enumerate(order)}
    server = {ident(o): i for i, o in enumerate(before if isinstance(before, list) else [])}
    patch_items = sorted((x for x in merged if ident(x) in wanted), key=lambda x: wanted[ident(x)])
    server_only = sorted(
        (x for x in merged if ident(x) not in wanted), key=lambda x: server.get(ident(x), -1)
    )
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        else:
            li, ri = server.get(ident(server_only[i])), server.get(ident(patch_items[j]))
            if li is not None and ri is not None and li < ri:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    obj[name] = out


def _hashable(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v
