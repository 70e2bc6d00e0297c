"""Node taints and pod tolerations (k8s.io/api/core/v1 taint.go and toleration.go), and the
well-known taints the node lifecycle controller manages (k8s.io/api/core/v1 well_known_taints.go).
"""

from __future__ import annotations

from collections.abc import Iterable

from hypernetes.objects.meta import Obj

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
PID_PRESSURE = "node.kubernetes.io/pid-pressure"
NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"

NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "PreferNoSchedule", "NoExecute"


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Upstream's Toleration.ToleratesTaint: an empty effect or key matches any; operator
    Exists matches any value, Equal (the default) only the same value."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def tolerations_for(taint: Obj, tolerations: Iterable[Obj]) -> list[Obj]:
    """The tolerations that tolerate `taint`."""
    return [t for t in tolerations if isinstance(t, dict) and tolerates(t, taint)]


def node_taints(node: Obj) -> list[Obj]:
    taints = (node.get("spec") or {}).get("taints") or []
    return [t for t in taints if isinstance(t, dict)]


def same_taint(a: Obj, b: Obj) -> bool:
    """Upstream's Taint.MatchTaint: a node holds one taint per key and effect."""
    return bool(a.get("key") == b.get("key") and a.get("effect") == b.get("effect"))
