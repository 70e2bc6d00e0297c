"""What a pod costs a node: the exact memory of its VM (overhead included) and its CPU.

Memory cannot be overcommitted safely (a VM's RAM is really taken), so a pod costs exactly its
VM's memory: the containers' memory limits plus the guest overhead (`runtime/sizing.py`). CPU is
time-shared: a VM's vCPUs are host threads, so a pod costs the CPU its containers ask for (limits,
or requests when no limit is set) and DEFAULT_POD_MILLICPU when they ask for none, not
whole vCPUs; otherwise a 2-core node would hold two pods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hypernetes.runtime.interface import ContainerSpec
from hypernetes.runtime.sizing import VMSize, parse_cpu, parse_memory, vm_size


@dataclass(frozen=True)
class Resources:
    millicpu: int = 0
    memory: int = 0
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.millicpu + other.millicpu, self.memory + other.memory, self.pods + other.pods)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.millicpu - other.millicpu, self.memory - other.memory, self.pods - other.pods)


def _limits(container: dict[str, Any]) -> tuple[int | None, int | None]:
    """A container's CPU (millicores) and memory limits; requests stand in when limits are unset."""
    res = container.get("resources") or {}
    limits = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    cpu = parse_cpu(str(limits["cpu"])) if "cpu" in limits else None
    mem = parse_memory(str(limits["memory"])) if "memory" in limits else None
    return cpu, mem


DEFAULT_POD_MILLICPU = 100


def _vm(pod: dict[str, Any]) -> tuple[int, VMSize]:
    specs = []
    millicpu = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        cpu, mem = _limits(c)
        millicpu += cpu or 0
        specs.append(ContainerSpec(name=c.get("name", ""), image="", cpu_limit_millis=cpu, memory_limit=mem))
    return millicpu, vm_size(specs)


def pod_vm(pod: dict[str, Any]) -> VMSize:
    """The VM this pod gets: whole vCPUs and memory with the guest overhead (what quotas count).
    ValueError for an impossible size."""
    return _vm(pod)[1]


def pod_vm_size(pod: dict[str, Any]) -> Resources:
    """What this pod's VM takes from a node: its CPU ask and its memory including guest overhead."""
    millicpu, size = _vm(pod)
    return Resources(millicpu=millicpu or DEFAULT_POD_MILLICPU, memory=size.memory, pods=1)


def holds_vm(pod: dict[str, Any]) -> bool:
    """Pods that hold (or will hold) a VM count against quotas; finished ones do not."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def quota_usage(pods: Iterable[dict[str, Any]]) -> tuple[int, int, int]:
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


def node_allocatable(node: dict[str, Any]) -> Resources:
    alloc = (node.get("status") or {}).get("allocatable") or {}
    return Resources(
        millicpu=parse_cpu(str(alloc.get("cpu", "0"))) if alloc.get("cpu") not in (None, "0") else 0,
        memory=parse_memory(str(alloc.get("memory", "0"))) if alloc.get("memory") not in (None, "0") else 0,
        pods=int(alloc.get("pods", 110)),
    )
