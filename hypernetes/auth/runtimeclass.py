"""RuntimeClass admission (upstream plugin/pkg/admission/runtimeclass), on a pod's creation only:

- a pod that names a class that does not exist is refused: `pod rejected: RuntimeClass "x" not
  found`;
- the class's `overhead.podFixed` becomes the pod's `spec.overhead`; a pod that already sets a
  different one is refused (`pod rejected: Pod's Overhead doesn't match RuntimeClass's defined
  Overhead`), and so is a pod that sets one when its class has none or it names no class (`pod
  rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead`);
- the class's `scheduling.nodeSelector` is merged into the pod's (a key the pod sets to another
  value is a conflict) and its tolerations merged with the pod's as upstream's MergeTolerations
  (a toleration another one covers is dropped).

Quantities compare by value, as apiequality.Semantic does (`250m` is `0.25`). Pods without
runtimeClassName are left as they are: no overhead, as upstream (docs/runtime.md, "Pod Overhead").
"""

from __future__ import annotations

import json
from typing import Any

from hypernetes.objects import Obj
from hypernetes.objects.quantity import QuantityError, parse_quantity
from hypernetes.store.interface import Store
from hypernetes.store.keys import object_key


class RuntimeClassDenied(Exception):
    """A pod the RuntimeClass plugin refuses; str(e) is upstream's message."""


async def fetch_class(store: Store, name: str) -> Obj | None:
    kv = await store.get(object_key("node.k8s.io", "runtimeclasses", None, name))
    return json.loads(kv.value) if kv is not None else None


def _same(a: Any, b: Any) -> bool:
    """Two resource lists equal as apiequality.Semantic compares them: same keys, equal values."""
    if not isinstance(a, dict) or not isinstance(b, dict) or a.keys() != b.keys():
        return False
    try:
        return all(parse_quantity(a[k]) == parse_quantity(b[k]) for k in a)
    except (QuantityError, ValueError):
        return False


async def admit_pod(store: Store, pod: Obj) -> None:
    """Mutate a new pod from its RuntimeClass, or raise RuntimeClassDenied."""
    spec = pod.setdefault("spec", {})
    name = spec.get("runtimeClassName")
    rc = await fetch_class(store, str(name)) if isinstance(name, str) and name else None
    if name and rc is None:
        raise RuntimeClassDenied(f'pod rejected: RuntimeClass "{name}" not found')
    fixed = ((rc or {}).get("overhead") or {}).get("podFixed")
    if fixed is not None:
        if spec.get("overhead") and not _same(fixed, spec["overhead"]):
            raise RuntimeClassDenied(
                "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
            )
        spec["overhead"] = dict(fixed)
    elif spec.get("overhead") is not None:
        raise RuntimeClassDenied(
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
        )
    scheduling = (rc or {}).get("scheduling")
    if isinstance(scheduling, dict):
        _set_scheduling(spec, scheduling)


def _set_scheduling(spec: Obj, scheduling: Obj) -> None:
    wanted = scheduling.get("nodeSelector") or {}
    selector = spec.get("nodeSelector")
    if selector is None:
        selector = dict(wanted) if wanted else None
    else:
        for key, value in wanted.items():
            if key in selector and selector[key] != value:
                raise RuntimeClassDenied(
                    f"conflict: runtimeClass.scheduling.nodeSelector[{key}] = {value}; "
                    f"pod.spec.nodeSelector[{key}] = {selector[key]}"
                )
            selector[key] = value
    if selector is not None:
        spec["nodeSelector"] = selector
    merged = merge_tolerations(list(spec.get("tolerations") or []), list(scheduling.get("tolerations") or []))
    if merged:
        spec["tolerations"] = merged


def merge_tolerations(first: list[Obj], second: list[Obj]) -> list[Obj]:
    """upstream's pkg/util/tolerations.MergeTolerations: both lists, without a toleration that
    another (kept, or later and different) one tolerates a superset of; of equals, the first."""
    every = first + second
    merged: list[Obj] = []
    for i, t in enumerate(every):
        if any(_superset(kept, t) for kept in merged):
            continue
        if any(t != later and _superset(later, t) for later in every[i + 1 :]):
            continue
        merged.append(t)
    return merged


def _superset(ss: Obj, t: Obj) -> bool:
    """Whether `ss` tolerates everything `t` does (upstream's isSuperset)."""
    if ss == t:
        return True
    if t.get("key", "") != ss.get("key", "") and (ss.get("key", "") != "" or ss.get("operator") != "Exists"):
        return False
    if t.get("effect", "") != ss.get("effect", "") and ss.get("effect", ""):
        return False
    if ss.get("effect") == "NoExecute" and ss.get("tolerationSeconds") is not None:
        seconds = t.get("tolerationSeconds")
        if seconds is None or seconds > ss["tolerationSeconds"]:
            return False
    op: Any = ss.get("operator", "")
    if op in ("Equal", ""):
        same_value: bool = t.get("value", "") == ss.get("value", "")
        return t.get("operator", "") in ("Equal", "") and same_value
    return bool(op == "Exists")
