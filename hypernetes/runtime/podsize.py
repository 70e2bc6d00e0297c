"""The VM a Pod object gets, read from its containers' limits: what the scheduler places by and
what tenant quotas count (the scheduler, admission and the tenant controller all read it here, the
lowest room that knows VM sizes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypernetes.runtime.interface import ContainerSpec
from hypernetes.runtime.sizing import VMSize, parse_cpu, parse_memory, vm_size

Obj = dict[str, Any]
# What a pod that asks for no CPU costs a node (the scheduler and the node's admission): CPU is
# time-shared, so not a whole vCPU, but not nothing either.
DEFAULT_POD_MILLICPU = 100


def container_limits(container: Obj) -> tuple[int | None, int | None]:
    """A container's CPU (millicores) and memory limits; requests stand in when limits are unset."""
    res = container.get("resources") or {}
    limits = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    cpu = parse_cpu(str(limits["cpu"])) if "cpu" in limits else None
    mem = parse_memory(str(limits["memory"])) if "memory" in limits else None
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


def node_cost(pod: Obj) -> tuple[int, int]:
    """(millicores, memory bytes) the pod takes from a node: its CPU ask (DEFAULT_POD_MILLICPU if
    none) and its VM's memory. ValueError for an impossible size."""
    millicpu, size = pod_cpu_and_vm(pod)
    return millicpu or DEFAULT_POD_MILLICPU, size.memory


def pod_vm(pod: Obj) -> VMSize:
    """The VM this pod gets: whole vCPUs and memory with the guest overhead (what quotas count)."""
    return pod_cpu_and_vm(pod)[1]


def holds_vm(pod: Obj) -> bool:
    """Pods that hold (or will hold) a VM count against quotas; finished ones do not."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def quota_usage(pods: Iterable[Obj]) -> tuple[int, int, int]:
    """(pods, vCPUs, memory bytes) the VMs of `pods` take, as tenant quotas count them."""
    count = vcpus = memory = 0
    for pod in pods:
        if not holds_vm(pod):
            continue
        try:
            vm = pod_vm(pod)
        except ValueError:
            continue  # refused at admission; never runs
        count, vcpus, memory = count + 1, vcpus + vm.vcpus, memory + vm.memory
    return count, vcpus, memory
