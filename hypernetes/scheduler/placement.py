"""Choosing a node for a pod: filters that say why a node cannot take it, scores among the rest.

Pure functions over API objects (dicts), so they are tested without a cluster. Messages follow
upstream's FailedScheduling wording, e.g.
`0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector.`
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from hypernetes.objects import Obj
from hypernetes.objects.meta import condition_true
from hypernetes.objects.selectors import node_selector_term_matches
from hypernetes.objects.taints import NO_EXECUTE, NO_SCHEDULE, UNSCHEDULABLE, node_taints, tolerations_for
from hypernetes.scheduler.resources import Resources, node_allocatable, pod_vm_size

BIN_PACKING = "binpack"  # MostAllocated: fill nodes up, keep whole nodes free for big VMs
SPREADING = "spread"  # LeastAllocated: balance load across nodes


@dataclass(frozen=True)
class NodeInfo:
    node: Obj
    used: Resources  # sum of the VM sizes of pods bound to the node and not finished

    @property
    def name(self) -> str:
        return str(self.node["metadata"]["name"])


def node_infos(nodes: Iterable[Obj], pods: Iterable[Obj]) -> list[NodeInfo]:
    used: dict[str, Resources] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if node and phase not in ("Succeeded", "Failed"):
            used[node] = used.get(node, Resources()) + pod_vm_size(pod)
    return [NodeInfo(n, used.get(n["metadata"]["name"], Resources())) for n in nodes]


# --- filters: return None if the node fits, else the reason (upstream's wording) ---------------


def _fits_resources(pod: Obj, info: NodeInfo) -> str | None:
    """Every resource that does not fit, as upstream's NodeResourcesFit lists them."""
    need = pod_vm_size(pod)
    free = node_allocatable(info.node) - info.used
    short = [
        reason
        for lacking, reason in (
            (need.pods > free.pods, "Too many pods"),
            (need.millicpu > free.millicpu, "Insufficient cpu"),
            (need.memory > free.memory, "Insufficient memory"),
            (need.storage > free.storage, "Insufficient ephemeral-storage"),
        )
        if lacking
    ]
    return "\n".join(short) or None


def _node_ready(pod: Obj, info: NodeInfo) -> str | None:
    return None if condition_true(info.node.get("status") or {}, "Ready") else "node(s) were not ready"


def _node_name(pod: Obj, info: NodeInfo) -> str | None:
    wanted = (pod.get("spec") or {}).get("nodeName")
    return None if not wanted or wanted == info.name else "node(s) didn't match the requested node name"


def _selector_and_affinity(pod: Obj, info: NodeInfo) -> str | None:
    spec = pod.get("spec") or {}
    labels = info.node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return "node(s) didn't match Pod's node affinity/selector"
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(node_selector_term_matches(t, info.node) for t in terms):
        return "node(s) didn't match Pod's node affinity/selector"
    return None


def _unschedulable(pod: Obj, info: NodeInfo) -> str | None:
    """Upstream's NodeUnschedulable: a cordoned node (spec.unschedulable) takes only pods that
    tolerate node.kubernetes.io/unschedulable:NoSchedule, whether or not the node lifecycle
    controller has put that taint on it yet."""
    if not (info.node.get("spec") or {}).get("unschedulable"):
        return None
    taint = {"key": UNSCHEDULABLE, "effect": NO_SCHEDULE}
    if tolerations_for(taint, (pod.get("spec") or {}).get("tolerations") or []):
        return None
    return "node(s) were unschedulable"


def _taints(pod: Obj, info: NodeInfo) -> str | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in node_taints(info.node):
        if taint.get("effect") in (NO_SCHEDULE, NO_EXECUTE) and not tolerations_for(taint, tolerations):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    return None


Filter = Callable[[Obj, NodeInfo], str | None]  # None if the node fits, else why not
FILTERS: tuple[Filter, ...] = (
    _unschedulable,
    _node_name,
    _node_ready,
    _taints,
    _selector_and_affinity,
    _fits_resources,
)


UNBOUND_CLAIMS = "pod has unbound immediate PersistentVolumeClaims"
VOLUME_CONFLICT = "node(s) had volume node affinity conflict"


def volume_terms(pod: Obj, claims: Mapping[str, Obj], volumes: Mapping[str, Obj]) -> list[list[Obj]] | str:
    """The node selector terms of every persistent volume the pod uses (each PV's terms are ORed,
    the PVs ANDed), or why the pod cannot be placed yet. `claims` by "ns/name", `volumes` by name."""
    ns = pod["metadata"].get("namespace", "default")
    terms: list[list[Obj]] = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        ref = v.get("persistentVolumeClaim") if isinstance(v, dict) else None
        if not isinstance(ref, dict):
            continue
        claim = claims.get(f"{ns}/{ref.get('claimName')}")
        if claim is None:
            return f'persistentvolumeclaim "{ref.get("claimName")}" not found'
        pv = volumes.get(str((claim.get("spec") or {}).get("volumeName") or ""))
        if pv is None or (claim.get("status") or {}).get("phase") != "Bound":
            return UNBOUND_CLAIMS
        required = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}
        if required.get("nodeSelectorTerms"):
            terms.append(list(required["nodeSelectorTerms"]))
    return terms


def volume_filter(terms: list[list[Obj]]) -> Filter:
    """A filter for the nodes every one of the pod's volumes can be attached on."""

    def check(pod: Obj, info: NodeInfo) -> str | None:
        ok = all(any(node_selector_term_matches(t, info.node) for t in pv_terms) for pv_terms in terms)
        return None if ok else VOLUME_CONFLICT

    return check


def feasible(
    pod: Obj, infos: Iterable[NodeInfo], extra: Iterable[Filter] = ()
) -> tuple[list[NodeInfo], Counter[str]]:
    fits, reasons = [], Counter[str]()
    checks = (*FILTERS, *extra)
    for info in infos:
        for check in checks:
            reason = check(pod, info)
            if reason is not None:
                reasons.update(reason.split("\n"))
                break
        else:
            fits.append(info)
    return fits, reasons


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    parts = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: kv[0]))
    return (
        f"0/{total} nodes are available: {parts}. preemption: 0/{total} nodes are available: "
        f"{total} Preemption is not helpful for scheduling."
    )


# --- scores ---------------------------------------------------------------------------------------


def _utilisation(pod: Obj, info: NodeInfo) -> float:
    """Fraction of the node's CPU and memory in use after placing the pod (0..1, averaged)."""
    alloc = node_allocatable(info.node)
    after = info.used + pod_vm_size(pod)
    cpu = after.millicpu / alloc.millicpu if alloc.millicpu else 1.0
    mem = after.memory / alloc.memory if alloc.memory else 1.0
    return (cpu + mem) / 2


def _preferred_affinity(pod: Obj, info: NodeInfo) -> int:
    preferred = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []
    return sum(
        int(p.get("weight", 0))
        for p in preferred
        if node_selector_term_matches(p.get("preference") or {}, info.node)
    )


def choose(pod: Obj, fits: list[NodeInfo], strategy: str = BIN_PACKING) -> NodeInfo:
    """The best node: preferred affinity first, then packing or spreading, then name for ties."""
    sign = 1.0 if strategy == BIN_PACKING else -1.0
    return max(fits, key=lambda i: (_preferred_affinity(pod, i), sign * _utilisation(pod, i), i.name))
