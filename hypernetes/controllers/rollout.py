"""Deployment arithmetic, as upstream's deployment/util: template hashes, revisions, surge and
unavailability fenceposts, how far to scale new and old ReplicaSets, and the status and
conditions `kubectl rollout status` reads. Pure functions over API objects."""

from __future__ import annotations

import copy
import json
import math
from datetime import timedelta

from hypernetes.controllers import meta as m
from hypernetes.objects import Obj

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
# annotations of a Deployment that are not copied to its ReplicaSets
SKIPPED_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)
NO_DEADLINE = 2**31 - 1

# Progressing condition reasons
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"

_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# -- small accessors ---------------------------------------------------------------------------


def replicas(obj: Obj) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


def status_int(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def revision(obj: Obj) -> int:
    try:
        return int((m.meta(obj).get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def max_revision(rss: list[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def annotation(obj: Obj, key: str) -> str | None:
    value = (m.meta(obj).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def rolling(d: Obj) -> bool:
    strategy: Obj = (d.get("spec") or {}).get("strategy") or {}
    return bool(strategy.get("type", "RollingUpdate") == "RollingUpdate")


def by_creation(rss: list[Obj]) -> list[Obj]:
    return sorted(rss, key=lambda rs: (m.meta(rs).get("creationTimestamp") or "", m.name(rs)))


def active(rss: list[Obj]) -> list[Obj]:
    return [rs for rs in rss if replicas(rs) > 0]


# -- hashing and templates ---------------------------------------------------------------------


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """The pod-template-hash: FNV-32a of the template (and collision count), spelled in
    upstream's consonant-and-digit alphabet, e.g. "5d59d67564"."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += str(collision_count).encode()
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in str(fnv32a(data)))


def _without_hash(template: Obj) -> Obj:
    t = copy.deepcopy(template or {})
    tmeta = t.setdefault("metadata", {})
    lbls = dict(tmeta.get("labels") or {})
    lbls.pop(HASH_LABEL, None)
    tmeta["labels"] = lbls
    for k in [k for k, v in tmeta.items() if not v]:
        del tmeta[k]
    return t


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    return _without_hash(a) == _without_hash(b)


def find_new_rs(d: Obj, rss: list[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template is the deployment's (several can be equal after a
    hash collision; the oldest wins, as upstream)."""
    template = (d.get("spec") or {}).get("template") or {}
    for rs in by_creation(rss):
        if equal_ignore_hash((rs.get("spec") or {}).get("template") or {}, template):
            return rs
    return None


# -- surge and unavailability ------------------------------------------------------------------


def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.endswith("%"):
        return int(text)
    raw = int(text[:-1]) * total / 100
    return math.ceil(raw) if round_up else math.floor(raw)


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as absolute pod counts; both 0 would deadlock, so
    unavailability becomes 1 then (upstream's ResolveFenceposts)."""
    ru = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    want = replicas(d)
    surge = scaled_value(ru.get("maxSurge", "25%"), want, True)
    unavailable = scaled_value(ru.get("maxUnavailable", "25%"), want, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Obj) -> int:
    return fenceposts(d)[0] if rolling(d) else 0


def max_unavailable(d: Obj) -> int:
    if not rolling(d) or replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas(d))


def available(rs: Obj) -> int:
    """Available pods of a ReplicaSet, never more than it is scaled to: pods it is deleting
    may still be in its (older) status."""
    return min(status_int(rs, "availableReplicas"), replicas(rs))


def new_rs_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """How big the new ReplicaSet may be now."""
    if not rolling(d):
        return replicas(d)
    current = sum(replicas(rs) for rs in all_rss)
    max_total = replicas(d) + max_surge(d)
    if current >= max_total:
        return replicas(new_rs)
    up = min(max_total - current, replicas(d) - replicas(new_rs))
    return replicas(new_rs) + max(up, 0)


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    desired = annotation(rs, DESIRED)
    return (
        replicas(rs) == replicas(d)
        and desired == str(replicas(d))
        and status_int(rs, "availableReplicas") == replicas(d)
    )


def set_replicas_annotations(rs: Obj, desired: int, max_replicas: int) -> bool:
    notes: dict[str, str] = m.meta(rs).setdefault("annotations", {})
    changed = notes.get(DESIRED) != str(desired) or notes.get(MAX_REPLICAS) != str(max_replicas)
    notes[DESIRED], notes[MAX_REPLICAS] = str(desired), str(max_replicas)
    return changed


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, exists: bool) -> bool:
    """Copy the deployment's annotations, bump the revision (keeping the old one in the
    revision history: that is a rollback) and, for a new ReplicaSet, its replica counts."""
    notes = m.meta(rs).setdefault("annotations", {})
    changed = False
    for k, v in (m.meta(d).get("annotations") or {}).items():
        if k not in SKIPPED_ANNOTATIONS and notes.get(k) != v:
            notes[k] = v
            changed = True
    old = notes.get(REVISION)
    old_int = revision(rs)
    if old_int < new_revision:
        notes[REVISION] = str(new_revision)
        changed = True
        if old:
            history = notes.get(REVISION_HISTORY)
            notes[REVISION_HISTORY] = f"{history},{old}" if history else old
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


def proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    """Upstream's getProportion: this ReplicaSet's share of a scaling of the deployment."""
    if to_add == 0:
        return 0
    want = replicas(d)
    if want == 0:
        fraction = -replicas(rs)
    else:
        total = want + max_surge(d)
        annotated = int(annotation(rs, MAX_REPLICAS) or status_int(d, "replicas") or 0)
        # never scale up proportionally from nothing
        fraction = round(replicas(rs) * total / annotated) - replicas(rs) if annotated else 0
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


# -- status ------------------------------------------------------------------------------------


def progress_deadline(d: Obj) -> int | None:
    secs = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return None if secs is None or int(secs) == NO_DEADLINE else int(secs)


def set_deploy_condition(status: Obj, cond: Obj) -> None:
    """Upstream's SetDeploymentCondition: the same status and reason changes nothing; the same
    status keeps lastTransitionTime."""
    cur = m.get_condition(status, cond["type"])
    if cur is not None and cur.get("status") == cond["status"] and cur.get("reason") == cond["reason"]:
        return
    if cur is not None and cur.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": cur.get("lastTransitionTime", cond["lastTransitionTime"])}
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != cond["type"]]
    status["conditions"].append(cond)


def deploy_condition(ctype: str, status: str, reason: str, message: str) -> Obj:
    return m.condition(ctype, status, reason, message, update_time=True)


def calculate_status(all_rss: list[Obj], new_rs: Obj | None, d: Obj) -> Obj:
    avail = sum(status_int(rs, "availableReplicas") for rs in all_rss)
    total_spec = sum(replicas(rs) for rs in all_rss)
    old: Obj = d.get("status") or {}
    status: Obj = {
        "observedGeneration": int(m.meta(d).get("generation") or 0),
        "replicas": sum(status_int(rs, "replicas") for rs in all_rss),
        "updatedReplicas": status_int(new_rs, "replicas") if new_rs else 0,
        "readyReplicas": sum(status_int(rs, "readyReplicas") for rs in all_rss),
        "availableReplicas": avail,
        "unavailableReplicas": max(total_spec - avail, 0),
    }
    status = {k: v for k, v in status.items() if v}  # Go's omitempty
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if avail >= replicas(d) - max_unavailable(d):
        set_deploy_condition(
            status,
            deploy_condition(
                "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
            ),
        )
    else:
        set_deploy_condition(
            status,
            deploy_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            ),
        )
    return status


def complete(d: Obj, status: Obj) -> bool:
    want = replicas(d)
    return (
        int(status.get("updatedReplicas") or 0) == want
        and int(status.get("replicas") or 0) == want
        and int(status.get("availableReplicas") or 0) == want
        and int(status.get("observedGeneration") or 0) >= int(m.meta(d).get("generation") or 0)
    )


def progressing(d: Obj, new: Obj) -> bool:
    old: Obj = d.get("status") or {}

    def get(s: Obj, f: str) -> int:
        return int(s.get(f) or 0)

    def outdated(s: Obj) -> int:
        return get(s, "replicas") - get(s, "updatedReplicas")

    return (
        get(new, "updatedReplicas") > get(old, "updatedReplicas")
        or outdated(new) < outdated(old)
        or get(new, "readyReplicas") > get(old, "readyReplicas")
        or get(new, "availableReplicas") > get(old, "availableReplicas")
    )


def seconds_to_deadline(d: Obj, status: Obj) -> float | None:
    """Seconds until the Progressing condition times out; None without a running clock."""
    deadline = progress_deadline(d)
    cond = m.get_condition(status, "Progressing")
    if deadline is None or cond is None or cond.get("reason") in (NEW_RS_AVAILABLE, TIMED_OUT):
        return None
    since = m.parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return None
    return (since + timedelta(seconds=deadline) - m.now()).total_seconds()


def timed_out(d: Obj, status: Obj) -> bool:
    cond = m.get_condition(status, "Progressing")
    if progress_deadline(d) is None or cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    left = seconds_to_deadline(d, status)
    return left is not None and left < 0
