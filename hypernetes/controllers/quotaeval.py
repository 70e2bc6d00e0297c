"""What one object uses under a namespace's ResourceQuota (upstream pkg/quota/v1/evaluator/core:
the pod, service and persistent volume claim evaluators and the object-count one), read by the
ResourceQuota admission (auth/namespacequota.py) and the controller that keeps status.used
(controllers/resourcequota.py), so both count alike.

Keys: `pods`, `requests.cpu` (also `cpu`), `requests.memory` (`memory`), `limits.cpu`,
`limits.memory`, `requests.ephemeral-storage` (`ephemeral-storage`), `limits.ephemeral-storage`,
`services`, `services.nodeports`, `services.loadbalancers`, `secrets`, `configmaps`,
`persistentvolumeclaims`, `replicationcontrollers`, `resourcequotas`, `requests.storage`,
`<class>.storageclass.storage.k8s.io/requests.storage` and `.../persistentvolumeclaims`, and
`count/<resource>[.<group>]` for any kind. A pod that has finished uses nothing. Scopes (pods
only): Terminating, NotTerminating, BestEffort, NotBestEffort."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypernetes.objects import Obj
from hypernetes.objects.pod import qos_class
from hypernetes.objects.quantity import Format, Quantity, QuantityError

Usage = dict[str, Quantity]

COMPUTE = ("cpu", "memory", "ephemeral-storage")
# the keys that require every container to state the resource (podEvaluator.Constraints)
REQUIRES_EXPLICIT = ("cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory")
SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort")
STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
# legacy object-count keys and the (group, plural) they count
LEGACY_COUNTS = {
    "services": ("", "services"),
    "secrets": ("", "secrets"),
    "configmaps": ("", "configmaps"),
    "persistentvolumeclaims": ("", "persistentvolumeclaims"),
    "replicationcontrollers": ("", "replicationcontrollers"),
    "resourcequotas": ("", "resourcequotas"),
    "pods": ("", "pods"),
}
ONE = Quantity(1)


def count_key(group: str, plural: str) -> str:
    return f"count/{plural}" + (f".{group}" if group else "")


def parse(value: Any) -> Quantity:
    try:
        return Quantity.from_json(value)
    except QuantityError:
        return Quantity(0)


def add(a: Quantity | None, b: Quantity) -> Quantity:
    if a is None:
        return Quantity(b.amount, b.format)
    return Quantity(a.amount + b.amount, a.format)


def pod_terminal(pod: Obj) -> bool:
    return ((pod.get("status") or {}).get("phase") or "") in ("Succeeded", "Failed")


def matches_scopes(scopes: list[str], kind: str, obj: Obj) -> bool:
    """Whether an object falls under a quota's scopes (scopes restrict quotas to pods)."""
    if not scopes:
        return True
    if kind != "Pod":
        return False
    spec = obj.get("spec") or {}
    terminating = spec.get("activeDeadlineSeconds") is not None
    best_effort = qos_class(spec) == "BestEffort"
    for scope in scopes:
        ok = {
            "Terminating": terminating,
            "NotTerminating": not terminating,
            "BestEffort": best_effort,
            "NotBestEffort": not best_effort,
        }.get(scope, False)
        if not ok:
            return False
    return True


def pod_resources(spec: Obj, which: str, *, overhead: bool = True) -> dict[str, Quantity]:
    """upstream's PodRequests/PodLimits: the sum over containers, at least the largest init
    container's (restartable sidecars add up), plus the pod's overhead (quota counts it;
    LimitRanger does not: `overhead=False`, as its podRequests/podLimits leave it out)."""
    total: dict[str, Quantity] = {}
    for c in spec.get("containers") or []:
        for name, v in (((c or {}).get("resources") or {}).get(which) or {}).items():
            total[name] = add(total.get(name), parse(v))
    sidecars: dict[str, Quantity] = {}
    for c in spec.get("initContainers") or []:
        res = ((c or {}).get("resources") or {}).get(which) or {}
        if (c or {}).get("restartPolicy") == "Always":
            for name, v in res.items():
                sidecars[name] = add(sidecars.get(name), parse(v))
                total[name] = add(total.get(name), parse(v))
            continue
        for name, v in res.items():
            need = add(sidecars.get(name), parse(v))
            if name not in total or need > total[name]:
                total[name] = need
    for name, v in (spec.get("overhead") or {}).items() if overhead else ():
        total[name] = add(total.get(name), parse(v))
    return total


def usage(kind: str, group: str, plural: str, obj: Obj) -> Usage:
    """Every quota key this object counts under, with its amount."""
    out: Usage = {count_key(group, plural): ONE}
    if kind == "Pod":
        if pod_terminal(obj):
            return {}
        out["pods"] = ONE
        spec = obj.get("spec") or {}
        for which in ("requests", "limits"):
            for name, q in pod_resources(spec, which).items():
                out[f"{which}.{name}"] = q
                if which == "requests" and name in COMPUTE:
                    out[name] = q
        return out
    if kind == "Service":
        out["services"] = ONE
        spec = obj.get("spec") or {}
        stype = spec.get("type") or "ClusterIP"
        ports = len(spec.get("ports") or [])
        if stype == "LoadBalancer":
            out["services.loadbalancers"] = ONE
        if stype in ("NodePort", "LoadBalancer"):
            out["services.nodeports"] = Quantity(ports)
        return out
    if kind == "PersistentVolumeClaim":
        out["persistentvolumeclaims"] = ONE
        spec = obj.get("spec") or {}
        storage = parse(((spec.get("resources") or {}).get("requests") or {}).get("storage", "0"))
        out["requests.storage"] = storage
        cls = ((obj.get("metadata") or {}).get("annotations") or {}).get(
            "volume.beta.kubernetes.io/storage-class", spec.get("storageClassName")
        )
        if cls:
            out[f"{cls}{STORAGE_CLASS_SUFFIX}requests.storage"] = storage
            out[f"{cls}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"] = ONE
        return out
    legacy = {v: k for k, v in LEGACY_COUNTS.items()}.get((group, plural))
    if legacy is not None:
        out[legacy] = ONE
    return out


def total(kind: str, group: str, plural: str, objs: list[Obj], scopes: list[str]) -> Usage:
    out: Usage = {}
    for obj in objs:
        if matches_scopes(scopes, kind, obj):
            for k, q in usage(kind, group, plural, obj).items():
                out[k] = add(out.get(k), q)
    return out


def missing_requests(keys: set[str], pod: Obj) -> str | None:
    """upstream's podEvaluator.Constraints: a quota on cpu or memory needs every container to
    state it. The message after "must specify ", or None."""
    required = keys & set(REQUIRES_EXPLICIT)
    missing: dict[str, list[str]] = {}
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        res = (c or {}).get("resources") or {}
        for key in required:
            which, _, name = key.rpartition(".")
            stated = res.get(which or "requests") or {}
            if name not in stated:
                missing.setdefault(key, []).append(str((c or {}).get("name", "")))
    if not missing:
        return None
    return "; ".join(f"{k} for: {','.join(sorted(set(v)))}" for k, v in sorted(missing.items()))


def show(q: Quantity) -> str:
    """resource.Quantity.String() of a computed amount."""
    if q.format is Format.BINARY_SI and q.amount != q.amount.to_integral_value():
        return Quantity(q.amount, Format.DECIMAL_SI).canonical()
    return q.canonical()


def zero() -> Quantity:
    return Quantity(Decimal(0))
