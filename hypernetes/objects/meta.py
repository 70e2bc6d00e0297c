"""The object type and its metadata accessors.

Objects travel as their Kubernetes JSON wire form (`Obj`, a decoded JSON object): the API server
stores and serves them so, and every other room reads them through the API. Accessors are lenient
on purpose: they read objects a client sent (not yet validated) and never raise on a missing or
null `metadata`.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def meta(obj: Obj) -> Obj:
    """The object's `metadata`, created if absent (for writers)."""
    m: Obj = obj.setdefault("metadata", {})
    return m


def metadata(obj: Obj) -> Obj:
    """The object's metadata, {} when absent or not an object (for readers: objects may come from
    anywhere)."""
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def name(obj: Obj) -> str:
    return str(metadata(obj).get("name") or "")


def namespace(obj: Obj) -> str:
    return str(metadata(obj).get("namespace") or "")


def uid(obj: Obj) -> str:
    return str(metadata(obj).get("uid") or "")


def labels(obj: Obj) -> dict[str, str]:
    """A copy of the object's labels ({} if none)."""
    return dict(metadata(obj).get("labels") or {})


def annotations_of(obj: Obj) -> dict[str, str]:
    """A copy of the object's annotations ({} if none). (Not `annotations`: that name is
    `from __future__ import annotations`'s in most modules.)"""
    return dict(metadata(obj).get("annotations") or {})


def finalizers(obj: Obj) -> list[str]:
    return list(metadata(obj).get("finalizers") or [])


def deleting(obj: Obj) -> bool:
    """Has a deletionTimestamp: being deleted, waiting for its finalizers."""
    return bool(metadata(obj).get("deletionTimestamp"))


# -- owner references --------------------------------------------------------------------------


def owner_refs(obj: Obj) -> list[Obj]:
    return [dict(r) for r in metadata(obj).get("ownerReferences") or [] if isinstance(r, dict)]


def controller_ref(obj: Obj) -> Obj | None:
    """The owner reference with `controller: true` (upstream's metav1.GetControllerOf)."""
    for ref in owner_refs(obj):
        if ref.get("controller"):
            return ref
    return None


def owner_ref(owner: Obj, *, controller: bool = True, block: bool = True) -> Obj:
    """A reference to `owner` (upstream's metav1.NewControllerRef when both flags are set)."""
    ref: Obj = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name(owner),
        "uid": uid(owner),
    }
    if controller:
        ref["controller"] = True
    if block:
        ref["blockOwnerDeletion"] = True
    return ref


def controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == uid(owner)


# -- status conditions -------------------------------------------------------------------------


def get_condition(status: Obj, ctype: str) -> Obj | None:
    """A copy of the condition of type `ctype` in a `status` (None if absent)."""
    conditions = status.get("conditions")
    for c in conditions if isinstance(conditions, list) else []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return dict(c)
    return None


def condition_true(status: Obj, ctype: str) -> bool:
    """`status.conditions[type=ctype].status` is "True"."""
    c = get_condition(status, ctype)
    return c is not None and c.get("status") == "True"
