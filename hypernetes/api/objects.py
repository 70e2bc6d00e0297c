"""Object metadata the server owns: uid, resourceVersion, creationTimestamp, generation, names
from generateName, and the store key layout.

resourceVersion is not stored inside the value: it is the key's mod_revision, set when the
object is read back (as kube-apiserver does with etcd), so a write is one store operation.
"""

from __future__ import annotations

import copy
import json
import secrets
import uuid
from datetime import UTC, datetime

from hypernetes.objects import Obj
from hypernetes.store.interface import KeyValue
from hypernetes.store.keys import key_prefix, object_key

__all__ = ["key_prefix", "object_key"]


# metadata fields that clients cannot set (or change) through create/update
_SERVER_OWNED = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)
# upstream's name suffix alphabet: no vowels (no words), no 0/1/3 (look like letters)
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def generated_name(prefix: str) -> str:
    # upstream truncates the prefix so the whole name fits 63 characters
    return prefix[:58] + "".join(secrets.choice(_ALPHABET) for _ in range(5))


def encode(obj: Obj) -> bytes:
    meta = obj.get("metadata") or {}
    if "resourceVersion" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
    return json.dumps(obj, separators=(",", ":")).encode()


def decode(kv: KeyValue, revision: int | None = None) -> Obj:
    obj: Obj = json.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision or kv.mod_revision)
    return obj


def stamp_create(obj: Obj, *, api_version: str, kind: str, namespace: str | None) -> None:
    """Fill what the server decides on create. `namespace` is None for cluster-scoped kinds."""
    obj["apiVersion"], obj["kind"] = api_version, kind
    meta = obj.setdefault("metadata", {})
    for f in (*_SERVER_OWNED, "resourceVersion"):
        meta.pop(f, None)
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = generated_name(meta["generateName"])
    if namespace is None:
        meta.pop("namespace", None)
    else:
        meta["namespace"] = namespace
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    meta["generation"] = 1
    for empty in ("labels", "annotations", "finalizers", "ownerReferences"):
        if empty in meta and not meta[empty]:
            del meta[empty]  # as upstream: an empty map or list is not stored


def spec_changed(new: Obj, old: Obj) -> bool:
    """Anything but metadata and status: what bumps metadata.generation."""
    keys = (set(new) | set(old)) - {"metadata", "status", "apiVersion", "kind"}
    return any(new.get(k) != old.get(k) for k in keys)


def stamp_update(new: Obj, old: Obj) -> None:
    """Carry server-owned metadata from `old` into `new` (an update cannot change them)."""
    new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
    meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
    for f in (*_SERVER_OWNED, "name", "namespace"):
        if f in old_meta:
            meta[f] = old_meta[f]
        else:
            meta.pop(f, None)
    if spec_changed(new, old):
        meta["generation"] = int(old_meta.get("generation") or 0) + 1
    for empty in ("labels", "annotations", "finalizers", "ownerReferences"):
        if empty in meta and not meta[empty]:
            del meta[empty]


def partial_metadata(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": copy.deepcopy(obj.get("metadata") or {}),
    }
