"""The VM a Pod object gets, read from its containers' limits, and its `spec.overhead` (Pod
Overhead, from its RuntimeClass): what the scheduler places by, the node admits by and tenant
quotas count (the scheduler, admission, the node and the tenant controller all read it here, the
lowest room that knows VM sizes). The VM itself (vCPUs, guest RAM) is what the pod asked for; the
overhead goes to the host's side only: the node's books and the VM's cgroup (runtime/cgroups.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from hypernetes.objects import Obj
from hypernetes.objects.quantity import quantity_milli_value, quantity_value
from hypernetes.runtime.interface import ContainerSpec
from hypernetes.runtime.sizing import VMSize, positive_bytes, positive_millicpu, vm_size

# What a pod that asks for no CPU costs a node (the scheduler and the node's admission): CPU is
# time-shared, so not a whole vCPU, but not nothing either.
DEFAULT_POD_MILLICPU = 100
# The host disk a disk-backed emptyDir without sizeLimit may fill (its scratch partition's size),
# unless the pod's ephemeral-storage limit says otherwise.
DEFAULT_EMPTYDIR_SIZE = 1 << 30


def container_limits(container: Obj) -> tuple[int | None, int | None]:
    """A container's CPU (millicores) and memory (bytes) limits; requests stand in when limits are
    unset. What the VM is sized by, on the node as in admission and the scheduler. ValueError for
    a size that is not a positive quantity."""
    res = container.get("resources") or {}
    limits = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    cpu = positive_millicpu(limits["cpu"]) if "cpu" in limits else None
    mem = positive_bytes(limits["memory"]) if "memory" in limits else None
    return cpu, mem


def pod_cpu_and_vm(pod: Obj) -> tuple[int, VMSize]:
    """(the millicores its containers ask for, its VM). ValueError for an impossible size."""
    specs = []
    millicpu = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        cpu, mem = container_limits(c)
        millicpu += cpu or 0
        specs.append(ContainerSpec(name=c.get("name", ""), image="", cpu_limit_millis=cpu, memory_limit=mem))
    return millicpu, vm_size(specs)


def pod_overhead(pod: Obj) -> tuple[int, int]:
    """(millicores, memory bytes) of the pod's `spec.overhead`: what its RuntimeClass says the
    runtime costs beside the containers (QEMU's own threads and memory), copied in by admission
    (auth/runtimeclass.py). (0, 0) without one. ValueError for a bad quantity."""
    overhead = (pod.get("spec") or {}).get("overhead") or {}
    cpu, memory = overhead.get("cpu"), overhead.get("memory")
    # zero is a valid overhead (upstream: >= 0), unlike a VM's size
    out = (
        quantity_milli_value(cpu) if cpu is not None else 0,
        quantity_value(memory) if memory is not None else 0,
    )
    if min(out) < 0:
        raise ValueError(f"invalid overhead {overhead!r}: must be greater than or equal to 0")
    return out


def node_cost(pod: Obj) -> tuple[int, int]:
    """(millicores, memory bytes) the pod takes from a node: its CPU ask (DEFAULT_POD_MILLICPU if
    none) and its VM's memory, each plus the pod's overhead, as upstream's scheduler and kubelet
    add it to the requests. ValueError for an impossible size."""
    millicpu, size = pod_cpu_and_vm(pod)
    cpu_overhead, memory_overhead = pod_overhead(pod)
    return (millicpu or DEFAULT_POD_MILLICPU) + cpu_overhead, size.memory + memory_overhead


def tenant_cost(pod: Obj) -> tuple[int, int, int]:
    """(vCPUs, memory bytes, ephemeral-storage bytes) a pod counts in its tenant's quota: its VM's
    vCPUs, its VM's memory plus the overhead's memory (the host really gives it), its node disk.
    The overhead's CPU is a share of host time for QEMU, not a vCPU the tenant gets: the scheduler
    and namespace quotas (requests.cpu) count it. ValueError for an impossible size."""
    vm = pod_vm(pod)
    return vm.vcpus, vm.memory + pod_overhead(pod)[1], pod_ephemeral_storage(pod)


def _ephemeral(container: Obj, kind: str) -> int:
    value = ((container.get("resources") or {}).get(kind) or {}).get("ephemeral-storage")
    return positive_bytes(value) if value is not None else 0


def emptydir_sizes(pod: Obj) -> dict[str, int]:
    """Each disk-backed emptyDir's size in bytes (its scratch partition on the host): sizeLimit,
    else the pod's ephemeral-storage limit, else DEFAULT_EMPTYDIR_SIZE. ValueError for a bad
    quantity. (medium: Memory lives in the VM's RAM, already counted.)"""
    spec = pod.get("spec") or {}
    limit = sum(_ephemeral(c, "limits") for c in spec.get("containers") or [])
    sizes = {}
    for v in spec.get("volumes") or []:
        empty = (v or {}).get("emptyDir")
        if not isinstance(empty, dict) or empty.get("medium") == "Memory":
            continue
        size = empty.get("sizeLimit")
        sizes[str(v.get("name", ""))] = (
            positive_bytes(size) if size is not None else (limit or DEFAULT_EMPTYDIR_SIZE)
        )
    return sizes


def pod_ephemeral_storage(pod: Obj) -> int:
    """Bytes of a node's disk the pod may take: its scratch disk (every disk emptyDir at its full
    size: the disk is the limit the guest cannot exceed), and at least what its containers request
    or limit. What the scheduler places by, nodes admit by and tenant quotas count. ValueError for
    a bad quantity."""
    containers = (pod.get("spec") or {}).get("containers") or []
    asked = max(
        sum(_ephemeral(c, "requests") for c in containers), sum(_ephemeral(c, "limits") for c in containers)
    )
    return max(sum(emptydir_sizes(pod).values()), asked)


def pod_vm(pod: Obj) -> VMSize:
    """The VM this pod gets: whole vCPUs and memory with the guest overhead (what quotas count)."""
    return pod_cpu_and_vm(pod)[1]


def holds_vm(pod: Obj, now: float | None = None) -> bool:
    """Pods that hold (or will hold) a VM count against quotas; finished ones do not, nor (as
    upstream's QuotaV1Pod) one still terminating past deletionTimestamp + its grace period: its
    node is lost, and charging it would keep its replacement from starting on another node."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    meta = pod.get("metadata") or {}
    stamp, grace = meta.get("deletionTimestamp"), meta.get("deletionGracePeriodSeconds")
    if not isinstance(stamp, str) or not isinstance(grace, int):
        return True
    try:
        deadline = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() + grace
    except ValueError:
        return True
    return (now if now is not None else time.time()) <= deadline


def quota_usage(pods: Iterable[Obj]) -> tuple[int, int, int, int]:
    """(pods, vCPUs, memory bytes, ephemeral-storage bytes) the VMs of `pods` take, as tenant
    quotas count them (`tenant_cost`)."""
    count = vcpus = memory = storage = 0
    for pod in pods:
        if not holds_vm(pod):
            continue
        try:
            cpus, mem, disk = tenant_cost(pod)
        except ValueError:
            continue  # refused at admission; never runs
        count, vcpus, memory, storage = count + 1, vcpus + cpus, memory + mem, storage + disk
    return count, vcpus, memory, storage
