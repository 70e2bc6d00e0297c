"""LimitRange admission (upstream plugin/pkg/admission/limitranger): in a namespace with
LimitRanges, a new pod's containers get the `default` limits and `defaultRequest` requests they
do not state (noted in the `kubernetes.io/limit-ranger` annotation), then every pod and
container, and every claim (on create and resize), is held to `min`, `max` and
`maxLimitRequestRatio`. A refusal is upstream's 403 with its messages ("maximum cpu usage per
Container is 1, but limit is 2"), several joined as "[a, b]".

Pod updates are not checked (containers' resources cannot change), as upstream."""

from __future__ import annotations

import json
from typing import Any

from hypernetes.controllers.quotaeval import parse, pod_resources
from hypernetes.objects import Obj
from hypernetes.objects.pod import qos_class
from hypernetes.objects.quantity import Quantity
from hypernetes.store.interface import Store
from hypernetes.store.keys import key_prefix

ANNOTATION = "kubernetes.io/limit-ranger"
MAX_MILLI = (2**63 - 1) // 1000  # resource.MaxMilliValue


class LimitRangeDenied(Exception):
    """A write LimitRanges refuse; str(e) is upstream's message."""


class InvalidDefault(Exception):
    """A default that makes a container's request exceed its limit: (field, message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _values(req: Quantity | None, lim: Quantity | None, enforced: Quantity) -> tuple[int, int, int]:
    """upstream's requestLimitEnforcedValues: milli units unless a value is too big for them."""
    qs = [q for q in (req, lim, enforced) if q is not None]
    milli = all(q.value() <= MAX_MILLI for q in qs)

    def v(q: Quantity | None) -> int:
        return 0 if q is None else (q.milli_value() if milli else q.value())

    return v(req), v(lim), v(enforced)


def _lists(res: Any) -> tuple[dict[str, Quantity], dict[str, Quantity]]:
    res = res if isinstance(res, dict) else {}
    req = {k: parse(v) for k, v in (res.get("requests") or {}).items()}
    lim = {k: parse(v) for k, v in (res.get("limits") or {}).items()}
    return req, lim


def _min(
    kind: str, name: str, enforced: Quantity, req: dict[str, Quantity], lim: dict[str, Quantity]
) -> str | None:
    r, li = req.get(name), lim.get(name)
    rv, lv, ev = _values(r, li, enforced)
    if r is None:
        return f"minimum {name} usage per {kind} is {enforced}.  No request is specified"
    if rv < ev:
        return f"minimum {name} usage per {kind} is {enforced}, but request is {r}"
    if li is not None and lv < ev:
        return f"minimum {name} usage per {kind} is {enforced}, but limit is {li}"
    return None


def _max(
    kind: str, name: str, enforced: Quantity, req: dict[str, Quantity], lim: dict[str, Quantity]
) -> str | None:
    r, li = req.get(name), lim.get(name)
    rv, lv, ev = _values(r, li, enforced)
    if li is None:
        return f"maximum {name} usage per {kind} is {enforced}.  No limit is specified"
    if lv > ev:
        return f"maximum {name} usage per {kind} is {enforced}, but limit is {li}"
    if r is not None and rv > ev:
        return f"maximum {name} usage per {kind} is {enforced}, but request is {r}"
    return None


def _max_request(kind: str, name: str, enforced: Quantity, req: dict[str, Quantity]) -> str | None:
    r = req.get(name)
    if r is None:
        return f"maximum {name} usage per {kind} is {enforced}.  No request is specified"
    rv, _, ev = _values(r, None, enforced)
    if rv > ev:
        return f"maximum {name} usage per {kind} is {enforced}, but request is {r}"
    return None


def _ratio(
    kind: str, name: str, enforced: Quantity, req: dict[str, Quantity], lim: dict[str, Quantity]
) -> str | None:
    r, li = req.get(name), lim.get(name)
    rv, lv, _ = _values(r, li, enforced)
    if r is None or rv == 0:
        return (
            f"{name} max limit to request ratio per {kind} is {enforced}, but no request is specified "
            "or request is 0"
        )
    if li is None or lv == 0:
        return (
            f"{name} max limit to request ratio per {kind} is {enforced}, but no limit is specified "
            "or limit is 0"
        )
    observed = lv / rv
    shown, allowed = observed, float(enforced.value())
    if enforced.value() <= MAX_MILLI:
        observed, allowed = observed * 1000, float(enforced.milli_value())
    if observed > allowed:
        return f"{name} max limit to request ratio per {kind} is {enforced}, but provided ratio is {shown:f}"
    return None


def _check(item: Obj, kind: str, req: dict[str, Quantity], lim: dict[str, Quantity], errs: list[str]) -> None:
    for name, v in (item.get("min") or {}).items():
        errs.append(_min(kind, name, parse(v), req, lim) or "")
    for name, v in (item.get("max") or {}).items():
        errs.append(_max(kind, name, parse(v), req, lim) or "")
    for name, v in (item.get("maxLimitRequestRatio") or {}).items():
        errs.append(_ratio(kind, name, parse(v), req, lim) or "")


def _containers(spec: Obj) -> list[tuple[str, Obj]]:
    out: list[tuple[str, Obj]] = []
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            if isinstance(c, dict):
                out.append((f"spec.{group}[{i}]", c))
    return out


def _defaults(pod: Obj, items: list[Obj]) -> None:
    """mergeContainerResources for every container: the first LimitRange's defaults win."""
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    for item in items:
        if item.get("type") == "Container":
            for k, v in (item.get("default") or {}).items():
                limits.setdefault(k, v)
            for k, v in (item.get("defaultRequest") or {}).items():
                requests.setdefault(k, v)
    if not limits and not requests:
        return
    notes: list[str] = []
    spec = pod.get("spec") or {}
    # containers first, then init containers, as upstream's mergePodResourceRequirements
    ordered = [(p, c) for p, c in _containers(spec) if p.startswith("spec.containers")]
    ordered += [(p, c) for p, c in _containers(spec) if p.startswith("spec.initContainers")]
    for path, c in ordered:
        res = c.setdefault("resources", {})
        set_lim = [k for k in sorted(limits) if k not in (res.get("limits") or {})]
        set_req = [k for k in sorted(requests) if k not in (res.get("requests") or {})]
        if set_lim:
            res["limits"] = {**(res.get("limits") or {}), **{k: limits[k] for k in set_lim}}
        if set_req:
            res["requests"] = {**(res.get("requests") or {}), **{k: requests[k] for k in set_req}}
        who = ("init container " if path.startswith("spec.initContainers") else "container ") + str(
            c.get("name", "")
        )
        if set_req:
            notes.append(f"{', '.join(set_req)} request for {who}")
        if set_lim:
            notes.append(f"{', '.join(set_lim)} limit for {who}")
        # a default may put a request above a stated limit: the pod validation upstream reruns
        req, lim = _lists(res)
        for k, q in req.items():
            if k in lim and q > lim[k]:
                raise InvalidDefault(
                    f"{path}.resources.requests",
                    f'Invalid value: "{q}": must be less than or equal to {k} limit of {lim[k]}',
                )
    if notes:
        notes_text = "LimitRanger plugin set: " + "; ".join(notes)
        pod.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION] = notes_text
        if isinstance(pod.get("status"), dict) and "qosClass" in pod["status"]:
            pod["status"]["qosClass"] = qos_class(pod.get("spec") or {})  # the defaults may change it


async def limit_items(store: Store, namespace: str) -> list[Obj]:
    res = await store.list(key_prefix("", "limitranges", namespace))
    items: list[Obj] = []
    for kv in sorted(res.items, key=lambda kv: kv.key):
        items.extend(
            i for i in ((json.loads(kv.value).get("spec") or {}).get("limits") or []) if isinstance(i, dict)
        )
    return items


async def admit_limits(store: Store, kind: str, namespace: str, obj: Obj, old: Obj | None) -> None:
    """Default and check a pod (create) or claim (create, update) in `namespace`; raises
    LimitRangeDenied or InvalidDefault."""
    if kind == "Pod" and old is None:
        items = await limit_items(store, namespace)
        if not items:
            return
        _defaults(obj, items)
        errs: list[str] = []
        spec = obj.get("spec") or {}
        for item in items:
            if item.get("type") == "Container":
                for _, c in _containers(spec):
                    req, lim = _lists(c.get("resources"))
                    _check(item, "Container", req, lim, errs)
            elif item.get("type") == "Pod":
                _check(
                    item,
                    "Pod",
                    pod_resources(spec, "requests", overhead=False),  # upstream: not the overhead's
                    pod_resources(spec, "limits", overhead=False),
                    errs,
                )
        _raise(errs)
    elif kind == "PersistentVolumeClaim":
        items = await limit_items(store, namespace)
        errs = []
        req, _ = _lists((obj.get("spec") or {}).get("resources"))
        for item in items:
            if item.get("type") != "PersistentVolumeClaim":
                continue
            for name, v in (item.get("min") or {}).items():
                errs.append(_min("PersistentVolumeClaim", name, parse(v), req, {}) or "")
            for name, v in (item.get("max") or {}).items():
                errs.append(_max_request("PersistentVolumeClaim", name, parse(v), req) or "")
        _raise(errs)


def _raise(errs: list[str]) -> None:
    """utilerrors.NewAggregate's message: each distinct message once, bracketed when several."""
    errs = list(dict.fromkeys(e for e in errs if e))
    if len(errs) == 1:
        raise LimitRangeDenied(errs[0])
    if errs:
        raise LimitRangeDenied("[" + ", ".join(errs) + "]")
