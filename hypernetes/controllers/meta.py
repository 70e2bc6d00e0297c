"""Object helpers shared by the controllers: times, pod state, conditions; the object model's
accessors and selector matching (hypernetes.objects) re-exported."""

from __future__ import annotations

from datetime import UTC, datetime

from hypernetes.objects import Obj

# the object model's accessors and selector matching, re-exported for the controllers' `m.` calls
from hypernetes.objects.meta import controlled_by as controlled_by
from hypernetes.objects.meta import controller_ref as controller_ref
from hypernetes.objects.meta import deleting as deleting
from hypernetes.objects.meta import get_condition as get_condition
from hypernetes.objects.meta import labels as labels
from hypernetes.objects.meta import meta as meta
from hypernetes.objects.meta import name as name
from hypernetes.objects.meta import namespace as namespace
from hypernetes.objects.meta import owner_ref as owner_ref
from hypernetes.objects.meta import uid as uid
from hypernetes.objects.selectors import selector_matches as selector_matches

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
    return get_condition(pod.get("status") or {}, ctype)


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
    return sum(
        int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or []
    )


def pod_from_template(
    template: Obj,
    owner: Obj,
    *,
    generate_name: str | None = None,
    extra_labels: dict[str, str] | None = None,
    finalizers: list[str] | None = None,
) -> Obj:
    """A pod for `owner` from its pod template (upstream's GetPodFromTemplate)."""
    tmeta = template.get("metadata") or {}
    m: Obj = {
        "generateName": generate_name or f"{name(owner)}-",
        "namespace": namespace(owner),
        "ownerReferences": [owner_ref(owner)],
    }
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


def condition(ctype: str, status: str, reason: str, message: str, *, update_time: bool = False) -> Obj:
    ts = rfc3339()
    c: Obj = {"type": ctype, "status": status, "lastTransitionTime": ts, "reason": reason, "message": message}
    if update_time:
        c["lastUpdateTime"] = ts
    return c
