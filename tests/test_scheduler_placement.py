"""Placement logic on API objects: filters with upstream's reasons, VM-size accounting, scores."""

from __future__ import annotations

from typing import Any

from hypernetes.runtime.sizing import GUEST_OVERHEAD, MiB
from hypernetes.scheduler.placement import (
    SPREADING,
    UNBOUND_CLAIMS,
    VOLUME_CONFLICT,
    choose,
    feasible,
    node_infos,
    unschedulable_message,
    volume_filter,
    volume_terms,
)
from hypernetes.scheduler.resources import pod_vm_size


def node(
    name: str,
    cpu: str = "4",
    memory: str = "8Gi",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or []},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(
    cpu: str | None = None, memory: str | None = None, node_name: str | None = None, **spec: Any
) -> dict[str, Any]:
    limits = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    p: dict[str, Any] = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": limits}}], **spec},
    }
    if node_name:
        p["spec"]["nodeName"] = node_name
        p["status"] = {"phase": "Running"}
    return p


def test_vm_size_counts_cpu_asked_and_memory_with_overhead() -> None:
    size = pod_vm_size(pod(cpu="1500m", memory="256Mi"))
    assert size.millicpu == 1500
    assert size.memory == 256 * MiB + GUEST_OVERHEAD
    assert pod_vm_size(pod()).millicpu == 100


def test_insufficient_memory_counts_bound_vms_with_overhead() -> None:
    # 1Gi node; three 256Mi pods already bound cost 3 * (256 + 32) = 864Mi; 256+32 more does not fit.
    nodes = [node("n1", memory="1Gi")]
    bound = [pod(memory="256Mi", node_name="n1") for _ in range(3)]
    fits, reasons = feasible(pod(memory="256Mi"), node_infos(nodes, bound))
    assert not fits and reasons == {"Insufficient memory": 1}
    fits, _ = feasible(pod(memory="96Mi"), node_infos(nodes, bound))
    assert [f.name for f in fits] == ["n1"]


def test_reasons_and_message() -> None:
    nodes = [
        node("a", labels={"disk": "hdd"}),
        node("b", cpu="1", labels={"disk": "ssd"}),
        node(
            "c", labels={"disk": "ssd"}, taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
        ),
        node("d", labels={"disk": "ssd"}, ready=False),
    ]
    p = pod(cpu="2", nodeSelector={"disk": "ssd"})
    fits, reasons = feasible(p, node_infos(nodes, []))
    assert not fits
    assert unschedulable_message(4, reasons).startswith(
        "0/4 nodes are available: 1 Insufficient cpu, "
        "1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were not ready. "
        "preemption: 0/4 nodes are available: 4 Preemption is not helpful"
    )


def test_tolerations_affinity_and_node_name() -> None:
    tainted = node("t", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    tol = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert feasible(pod(tolerations=tol), node_infos([tainted], []))[0]
    assert feasible(pod(tolerations=[{"operator": "Exists"}]), node_infos([tainted], []))[0]
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}
                ]
            }
        }
    }
    infos = node_infos([node("x", labels={"zone": "z1"}), node("y", labels={"zone": "z2"})], [])
    assert [f.name for f in feasible(pod(affinity=affinity), infos)[0]] == ["x"]
    named = pod()
    named["spec"]["nodeName"] = "y"
    assert [f.name for f in feasible(named, infos)[0]] == ["y"]


def test_binpacking_by_default_spreading_as_option() -> None:
    nodes = [node("empty"), node("busy")]
    infos = node_infos(nodes, [pod(cpu="2", memory="2Gi", node_name="busy")])
    assert choose(pod(cpu="1"), infos).name == "busy"
    assert choose(pod(cpu="1"), infos, SPREADING).name == "empty"


def test_volume_topology_places_pods_where_their_volumes_are() -> None:
    """A local PV's nodeAffinity pins every pod using it; an unbound claim places the pod nowhere."""
    user = pod(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}])
    user["metadata"]["namespace"] = "ns"
    claims = {"ns/data": {"spec": {"volumeName": "pv-1"}, "status": {"phase": "Bound"}}}
    pv = {
        "metadata": {"name": "pv-1"},
        "spec": {
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}
                            ]
                        }
                    ]
                }
            }
        },
    }
    terms = volume_terms(user, claims, {"pv-1": pv})
    assert isinstance(terms, list) and len(terms) == 1
    nodes = [node(n, labels={"kubernetes.io/hostname": n}) for n in ("a", "b", "c")]
    fits, reasons = feasible(user, node_infos(nodes, []), (volume_filter(terms),))
    assert [f.name for f in fits] == ["b"] and reasons == {VOLUME_CONFLICT: 2}
    assert volume_terms(user, {"ns/data": {"spec": {}, "status": {"phase": "Pending"}}}, {}) == UNBOUND_CLAIMS
    assert "not found" in str(volume_terms(user, {}, {}))
    assert volume_terms(pod(), {}, {}) == []  # no claims, no constraint


def test_scheduler_caches_find_volumes_by_name() -> None:
    """The loop's caches key cluster-scoped objects by bare name, as volume_terms looks PVs up."""
    from hypernetes.scheduler.loop import _key

    pv = {"metadata": {"name": "pv-1"}, "spec": {}}
    claim = {
        "metadata": {"name": "data", "namespace": "ns"},
        "spec": {"volumeName": "pv-1"},
        "status": {"phase": "Bound"},
    }
    user = pod(volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}])
    user["metadata"]["namespace"] = "ns"
    assert volume_terms(user, {_key(claim): claim}, {_key(pv): pv}) == []


def test_ephemeral_storage_counts_scratch_disks_and_asks() -> None:
    from hypernetes.runtime.podsize import DEFAULT_EMPTYDIR_SIZE, emptydir_sizes, pod_ephemeral_storage

    Gi = 1 << 30
    p = pod(
        volumes=[
            {"name": "big", "emptyDir": {"sizeLimit": "500Gi"}},
            {"name": "plain", "emptyDir": {}},
            {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
        ]
    )
    assert emptydir_sizes(p) == {"big": 500 * Gi, "plain": DEFAULT_EMPTYDIR_SIZE}
    assert pod_ephemeral_storage(p) == 500 * Gi + DEFAULT_EMPTYDIR_SIZE
    # an emptyDir without sizeLimit is bounded by the pod's ephemeral-storage limit, as upstream
    limited = pod(volumes=[{"name": "plain", "emptyDir": {}}])
    limited["spec"]["containers"][0]["resources"] = {
        "requests": {"ephemeral-storage": "1Gi"},
        "limits": {"ephemeral-storage": "3Gi"},
    }
    assert emptydir_sizes(limited) == {"plain": 3 * Gi}
    assert pod_ephemeral_storage(limited) == 3 * Gi
    # 500Gi of scratch on a node with 77Gi of allocatable disk does not fit (issue 12)
    n = node("n1")
    n["status"]["allocatable"]["ephemeral-storage"] = "77Gi"
    fits, reasons = feasible(p, node_infos([n], []))
    assert not fits and reasons == {"Insufficient ephemeral-storage": 1}
    # bound pods' scratch disks count
    small = pod(volumes=[{"name": "s", "emptyDir": {"sizeLimit": "40Gi"}}])
    bound = [{**small, "spec": {**small["spec"], "nodeName": "n1"}, "status": {"phase": "Running"}}]
    assert feasible(small, node_infos([n], []))[0]
    assert not feasible(small, node_infos([n], bound))[0]
    # a node that publishes no ephemeral-storage is not limited by it
    assert feasible(p, node_infos([node("n2")], []))[0]
