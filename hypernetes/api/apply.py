"""managedFields and server-side apply (`kubectl apply --server-side`).

A simplified structured-merge-diff: each manager owns a set of field paths (leaves, plus one
entry per keyed list item), serialised in the FieldsV1 form kubectl shows
(`{"f:spec":{"f:containers":{"k:{\\"name\\":\\"web\\"}":{".":{},"f:image":{}}}}}`).
- An Update (create, PUT, patch) gives its manager the fields it changed and takes them from
  everyone else.
- An Apply owns exactly the fields in the applied configuration. Applying a field another
  manager owns with a different value is a 409 conflict unless force=true (which takes it);
  fields the manager applied before and no longer applies are removed unless someone else
  owns them. The merge itself is the strategic merge of the schema package.
Lists of maps are keyed by the first of a few well-known key fields present in every item;
other lists are atomic. It is not byte-identical to upstream, but owners, conflicts and
removals behave the same for the usual manifests.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hypernetes.api import bodies, objects, schema
from hypernetes.api.status import ApiError, bad_request, not_found
from hypernetes.objects import Obj

if TYPE_CHECKING:
    from hypernetes.api.crud import Resources
    from hypernetes.api.routing import Target

Path = tuple[str, ...]

_LIST_KEYS = (
    ("containerPort", "protocol"),
    ("port", "protocol"),
    ("name",),
    ("mountPath",),
    ("devicePath",),
    ("ip",),
    ("type",),
    ("key",),
    ("topologyKey",),
)
_META_TRACKED = ("labels", "annotations", "finalizers", "ownerReferences")


def _list_key(items: list[Any]) -> tuple[str, ...] | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for keys in _LIST_KEYS:
        if all(keys[0] in i for i in items):
            return tuple(k for k in keys if all(k in i for i in items)) or None
    return None


def _item_token(item: Obj, keys: tuple[str, ...]) -> str:
    return "k:" + json.dumps({k: item[k] for k in keys}, separators=(",", ":"), sort_keys=True)


def _walk(value: Any, prefix: Path, out: set[Path]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _walk(v, (*prefix, "f:" + k), out)
        return
    if isinstance(value, list) and (keys := _list_key(value)):
        for item in value:
            p = (*prefix, _item_token(item, keys))
            out.add((*p, "."))
            for k, v in item.items():
                _walk(v, (*p, "f:" + k), out)
        return
    out.add(prefix)


def field_set(obj: Obj, subresource: str = "") -> set[Path]:
    """The paths a manager owns for having set `obj` (status only, for the status subresource)."""
    out: set[Path] = set()
    for top, value in obj.items():
        if top in ("apiVersion", "kind"):
            continue
        if top == "metadata":
            for k in _META_TRACKED:
                if k in (value or {}):
                    _walk(value[k], ("f:metadata", "f:" + k), out)
        elif (top == "status") == (subresource == "status"):
            _walk(value, ("f:" + top,), out)
    return out


def value_at(obj: Any, path: Path) -> Any:
    cur = obj
    for tok in path:
        if tok == ".":
            return True
        if tok.startswith("f:"):
            if not isinstance(cur, dict) or tok[2:] not in cur:
                return _MISSING
            cur = cur[tok[2:]]
        else:
            want = json.loads(tok[2:])
            if not isinstance(cur, list):
                return _MISSING
            cur = next(
                (i for i in cur if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())),
                _MISSING,
            )
            if cur is _MISSING:
                return cur
    return cur


_MISSING = object()


def _remove(obj: Obj, path: Path) -> None:
    if path and path[-1] == ".":
        path = path[:-1]
    parent: Any = obj
    for tok in path[:-1]:
        parent = value_at(parent, (tok,))
        if parent is _MISSING:
            return
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [
            i for i in parent if not (isinstance(i, dict) and all(i.get(k) == v for k, v in want.items()))
        ]


def to_fields_v1(paths: set[Path]) -> Obj:
    root: Obj = {}
    for p in sorted(paths):
        cur = root
        for tok in p:
            cur = cur.setdefault(tok, {})
    return root


def from_fields_v1(tree: Obj, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for tok, sub in tree.items():
        p = (*prefix, tok)
        if sub:
            out |= from_fields_v1(sub, p)
        else:
            out.add(p)
    return out


def human(path: Path) -> str:
    """`.spec.containers[name="web"].image`, as upstream's conflict messages."""
    s = ""
    for tok in path:
        if tok == ".":
            continue
        if tok.startswith("f:"):
            s += "." + tok[2:]
        else:
            kv = json.loads(tok[2:])
            s += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in kv.items()) + "]"
    return s


def _entries(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def _set_entries(obj: Obj, entries: list[Obj]) -> None:
    entries = [e for e in entries if e.get("fieldsV1")]
    meta = obj.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)


def _entry(manager: str, operation: str, api_version: str, paths: set[Path], subresource: str) -> Obj:
    e: Obj = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": objects.now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if subresource:
        e["subresource"] = subresource
    return e


def _same(e: Obj, manager: str, operation: str, subresource: str) -> bool:
    return bool(
        e.get("manager") == manager
        and e.get("operation") == operation
        and e.get("subresource", "") == subresource
    )


def record_update(new: Obj, old: Obj | None, manager: str, api_version: str, subresource: str = "") -> None:
    """managedFields after a non-apply write of `new` (over `old`) by `manager`."""
    new_fields = field_set(new, subresource)
    changed = new_fields if old is None else {p for p in new_fields if value_at(new, p) != value_at(old, p)}
    gone = field_set(old, subresource) - new_fields if old is not None else set()
    entries = _entries(old if old is not None else new)
    if not changed and not gone:
        _set_entries(new, entries)
        return
    out, mine = [], set(changed)
    for e in entries:
        paths = from_fields_v1(e.get("fieldsV1") or {})
        if _same(e, manager, "Update", subresource):
            mine |= paths - gone
            continue
        paths -= changed | gone
        if paths:
            out.append({**e, "fieldsV1": to_fields_v1(paths)})
    if mine:
        out.append(_entry(manager, "Update", api_version, mine, subresource))
    _set_entries(new, out)


async def _parse_applied(raw: bytes) -> Obj:
    try:  # kubectl sends JSON; YAML is bounded like every body (hypernetes.api.bodies)
        obj = await bodies.off_loop(bodies.yaml_or_json, raw)
    except bodies.BodyError as e:
        raise bad_request(f"error decoding YAML: {e}") from None
    if not isinstance(obj, dict):
        raise bad_request("apply patch: the body must be an object")
    return obj


async def server_side_apply(
    res: Resources, request: web.Request, t: Target, raw: bytes, manager: str, *, force: bool
) -> web.StreamResponse:
    applied = await _parse_applied(raw)
    res._check_type(t, applied)
    if not applied.get("apiVersion") or not applied.get("kind"):
        raise bad_request("apply patch: apiVersion and kind are required")
    name = (applied.get("metadata") or {}).get("name")
    if name and name != t.name:
        raise bad_request(f"the name of the object ({name}) does not match the name on the URL ({t.name})")
    applied.setdefault("metadata", {})["name"] = t.name
    sub = t.sub or ""
    fields = field_set(applied, sub)
    for _ in range(5):
        kv = await res.store.get(res.key(t))
        if kv is not None:
            break
        if sub:
            raise not_found(t.resource, t.name or "", t.group)
        obj = copy.deepcopy(applied)
        obj.get("metadata", {}).pop("managedFields", None)
        obj = await res.prepare_create(t, obj, manager)
        _set_entries(obj, [_entry(manager, "Apply", t.kind.api_version, fields, "")])
        try:
            return await res.commit_create(request, t, obj)
        except ApiError as e:
            if e.code != 409:
                raise  # AlreadyExists: someone created it meanwhile; apply over it

    async def mutate(cur: Obj) -> Obj:
        entries = _entries(cur)
        conflicts: list[tuple[str, Path]] = []
        others: set[Path] = set()
        for e in entries:
            paths = from_fields_v1(e.get("fieldsV1") or {})
            if _same(e, manager, "Apply", sub):
                continue
            others |= paths
            for p in paths & fields:
                if p[-1] != "." and value_at(cur, p) != value_at(applied, p):
                    conflicts.append((e["manager"], p))
        if conflicts and not force:
            raise _conflict_error(conflicts, t.kind.api_version)
        taken = {p for _, p in conflicts}
        mine_before: set[Path] = set()
        mine_entry: Obj | None = None
        out: list[Obj] = []
        at = -1  # where this manager's entry goes: its old place, so a no-op apply changes nothing
        for e in entries:
            paths = from_fields_v1(e.get("fieldsV1") or {})
            if _same(e, manager, "Apply", sub):
                mine_before, mine_entry, at = paths, e, len(out)
                continue
            paths -= taken
            if paths:
                out.append(
                    e
                    if paths == from_fields_v1(e.get("fieldsV1") or {})
                    else {**e, "fieldsV1": to_fields_v1(paths)}
                )
        patch = {k: v for k, v in applied.items() if k != "metadata"}
        patch["metadata"] = {k: v for k, v in applied["metadata"].items() if k in _META_TRACKED}
        new = schema.apply_patch(
            t.kind, copy.deepcopy(cur), json.dumps(patch).encode(), "application/strategic-merge-patch+json"
        )
        others -= taken
        for p in sorted(mine_before - fields - others, key=len, reverse=True):
            _remove(new, p)
        mine = (
            mine_entry
            if mine_entry is not None and mine_before == fields
            else _entry(manager, "Apply", t.kind.api_version, fields, sub)
        )
        out.insert(at if at >= 0 else len(out), mine)
        _set_entries(new, out)
        return new

    return await res.update_with(request, t, mutate, manager, conditional=False, operation="Apply")


def _conflict_error(conflicts: list[tuple[str, Path]], api_version: str) -> ApiError:
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{m}" using {api_version}',
            "field": human(p),
        }
        for m, p in conflicts
    ]
    lines = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
    n = len(conflicts)
    if n == 1:
        msg = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
    else:
        msg = f"Apply failed with {n} conflicts: {lines}"
    return ApiError(409, "Conflict", msg, {"causes": causes})
