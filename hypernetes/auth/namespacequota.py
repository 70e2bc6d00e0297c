"""ResourceQuota admission (upstream plugin/pkg/admission/resourcequota), inside one namespace:
a write that would take a quota's `spec.hard` past its limit is refused with upstream's 403
("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"), and a pod in a
namespace whose quota tracks cpu or memory must state them ("failed quota: q: must specify
limits.cpu for: c"). It only restricts: the tenant's quota (admission.py) still applies after it.

What is used is counted from the store at admission, under the tenant's lock (the server holds it
from admission to commit for every counted create), with the same evaluators the ResourceQuota
controller fills status.used with (controllers/quotaeval.py). Counted: creates, and updates that
can take more (a claim growing, a service gaining node ports)."""

from __future__ import annotations

import json

from hypernetes.controllers.quotaeval import (
    Usage,
    add,
    matches_scopes,
    missing_requests,
    parse,
    show,
    total,
    usage,
)
from hypernetes.controllers.tenant import COUNTED_BY_KIND
from hypernetes.objects import Obj
from hypernetes.objects.quantity import Quantity
from hypernetes.store.interface import Store
from hypernetes.store.keys import key_prefix


class QuotaDenied(Exception):
    """A write a ResourceQuota refuses; str(e) is upstream's message."""


def _pretty(usage: Usage) -> str:
    return ",".join(f"{k}={show(v)}" for k, v in sorted(usage.items()))


async def _objects(store: Store, group: str, plural: str, namespace: str) -> list[Obj]:
    res = await store.list(key_prefix(group, plural, namespace))
    return [json.loads(kv.value) for kv in res.items]


def _resource(kind: str) -> tuple[str, str] | None:
    """(group, plural) of a namespaced kind quotas can count: pods, claims and every kind a
    tenant's object count covers (controllers/tenant.py)."""
    if kind == "Pod":
        return "", "pods"
    if kind == "PersistentVolumeClaim":
        return "", "persistentvolumeclaims"
    c = COUNTED_BY_KIND.get(kind)
    return (c.group, c.plural) if c is not None and c.namespaced else None


async def admit_quota(store: Store, kind: str, namespace: str, obj: Obj, old: Obj | None) -> None:
    where = _resource(kind)
    if where is None:
        return
    group, plural = where
    quotas = await _objects(store, "", "resourcequotas", namespace)
    if not quotas:
        return
    if kind == "Pod" and old is None:
        obj = {**obj, "status": {}}  # a created status is dropped: a new pod is never finished
    name = (obj.get("metadata") or {}).get("name")
    new_use = usage(kind, group, plural, obj)
    old_use = usage(kind, group, plural, old) if old is not None else {}
    # what this write adds, per key (an update: only growth)
    delta: Usage = {}
    for k, q in new_use.items():
        grown = Quantity(q.amount - (old_use[k].amount if k in old_use else 0), q.format)
        if grown.amount > 0:
            delta[k] = grown
    if not delta:
        return
    current: list[Obj] | None = None
    for quota in sorted(quotas, key=lambda q: str(q["metadata"]["name"])):
        qname = quota["metadata"]["name"]
        spec = quota.get("spec") or {}
        hard = {k: parse(v) for k, v in (spec.get("hard") or {}).items()}
        scopes = [str(s) for s in spec.get("scopes") or []]
        if not matches_scopes(scopes, kind, obj):
            continue
        if kind == "Pod" and old is None:
            missing = missing_requests(set(hard), obj)
            if missing is not None:
                raise QuotaDenied(f"failed quota: {qname}: must specify {missing}")
        asked = {k: q for k, q in delta.items() if k in hard}
        if not asked:
            continue
        if current is None:
            current = [
                o
                for o in await _objects(store, group, plural, namespace)
                if (o.get("metadata") or {}).get("name") != name
            ]
        used_all = total(kind, group, plural, current, scopes)
        if old is not None:  # the object as it was counts as used; `asked` is its growth
            for k, q in old_use.items():
                used_all[k] = add(used_all.get(k), q)
        used = {k: used_all.get(k, Quantity(0)) for k in asked}
        exceeded = [k for k in asked if used[k].amount + asked[k].amount > hard[k].amount]
        if exceeded:
            raise QuotaDenied(
                f"exceeded quota: {qname}, requested: {_pretty({k: asked[k] for k in exceeded})}, "
                f"used: {_pretty({k: used[k] for k in exceeded})}, "
                f"limited: {_pretty({k: hard[k] for k in exceeded})}"
            )
