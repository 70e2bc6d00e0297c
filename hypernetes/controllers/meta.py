"""Object helpers shared by the controllers: label selectors, owner references, times, pod state."""

from __future__ import annotations

from datetime import UTC, datetime

from hypernetes.objects import Obj


def meta(obj: Obj) -> Obj:
    m: Obj = obj.setdefault("metadata", {})
    return m


def uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid", ""))


def name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def namespace(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


# -- label selectors ---------------------------------------------------------------------------

def selector_matches(selector: Obj | None, lbls: dict[str, str]) -> bool:
    """A metav1.LabelSelector; None selects nothing, {} selects everything (as upstream)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if lbls.get(k) != v:
            return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req.get("key", ""), req.get("operator", ""), req.get("values") or []
        if op == "In" and lbls.get(key) not in values:
            return False
        if op == "NotIn" and key in lbls and lbls[key] in values:
            return False
        if op == "Exists" and key not in lbls:
            return False
        if op == "DoesNotExist" and key in lbls:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def selector_string(selector: Obj) -> str:
    """The label selector as a query string (for the API and for Scale.status.selector)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for req in selector.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], ",".join(req.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)


# -- owner references --------------------------------------------------------------------------

def controller_ref(obj: Obj) -> Obj | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_ref(owner: Obj, *, controller: bool = True, block: bool = True) -> Obj:
    ref: Obj = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": name(owner),
                "uid": uid(owner)}
    if controller:
        ref["controller"] = True
    if block:
        ref["blockOwnerDeletion"] = True
    return ref


def controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == uid(owner)


# -- times -------------------------------------------------------------------------------------

def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(t: datetime | None = None) -> str:
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        t = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# -- pods --------------------------------------------------------------------------------------

def pod_condition(pod: Obj, ctype: str) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def pod_ready(pod: Obj) -> bool:
    c = pod_condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def pod_available(pod: Obj, min_ready_seconds: int, at: datetime | None = None) -> bool:
    """Ready for at least min_ready_seconds (upstream's IsPodAvailable)."""
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    c = pod_condition(pod, "Ready") or {}
    since = parse_time(c.get("lastTransitionTime"))
    return since is not None and (since.timestamp() + min_ready_seconds) <= (at or now()).timestamp()


def pod_phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def pod_active(pod: Obj) -> bool:
    """Counts towards a controller's replicas: not finished and not being deleted."""
    return pod_phase(pod) not in ("Succeeded", "Failed") and not deleting(pod)


def restart_count(pod: Obj) -> int:
    return sum(int(cs.get("restartCount") or 0)
               for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def pod_from_template(template: Obj, owner: Obj, *, generate_name: str | None = None,
                      extra_labels: dict[str, str] | None = None,
                      finalizers: list[str] | None = None) -> Obj:
    """A pod for `owner` from its pod template (upstream's GetPodFromTemplate)."""
    tmeta = template.get("metadata") or {}
    m: Obj = {"generateName": generate_name or f"{name(owner)}-", "namespace": namespace(owner),
              "ownerReferences": [owner_ref(owner)]}
    lbls = {**(tmeta.get("labels") or {}), **(extra_labels or {})}
    if lbls:
        m["labels"] = lbls
    if tmeta.get("annotations"):
        m["annotations"] = dict(tmeta["annotations"])
    fins = list(tmeta.get("finalizers") or []) + list(finalizers or [])
    if fins:
        m["finalizers"] = fins
    return {"apiVersion": "v1", "kind": "Pod", "metadata": m, "spec": template.get("spec") or {}}


# -- conditions --------------------------------------------------------------------------------

def get_condition(status: Obj, ctype: str) -> Obj | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def set_condition(status: Obj, cond: Obj) -> None:
    """Replace the condition of the same type; keep lastTransitionTime when status is unchanged."""
    conds = [c for c in status.get("conditions") or [] if c.get("type") != cond["type"]]
    old = get_condition(status, cond["type"])
    if old is not None and old.get("status") == cond.get("status") and old.get("lastTransitionTime"):
        cond = {**cond, "lastTransitionTime": old["lastTransitionTime"]}
    conds.append(cond)
    status["conditions"] = conds


def remove_condition(status: Obj, ctype: str) -> None:
    conds = [c for c in status.get("conditions") or [] if c.get("type") != ctype]
    if conds:
        status["conditions"] = conds
    else:
        status.pop("conditions", None)


def condition(ctype: str, status: str, reason: str, message: str, *,
              update_time: bool = False) -> Obj:
    ts = rfc3339()
    c: Obj = {"type": ctype, "status": status, "lastTransitionTime": ts, "reason": reason,
              "message": message}
    if update_time:
        c["lastUpdateTime"] = ts
    return c
