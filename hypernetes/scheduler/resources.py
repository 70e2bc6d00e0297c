"""What a pod costs a node: the exact size of its VM, overhead included.

A pod on Hypernetes is a VM, so a node gives it whole vCPUs and its memory limits plus the guest
overhead (`runtime/sizing.py`), not the containers' requests. Scheduling on that size means a
node never promises more than its VMs can really take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypernetes.runtime.interface import ContainerSpec
from hypernetes.runtime.sizing import parse_cpu, parse_memory, vm_size


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


def pod_vm_size(pod: dict[str, Any]) -> Resources:
    """The VM this pod becomes: vCPUs (in millicores) and memory including guest overhead."""
    specs = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        cpu, mem = _limits(c)
        specs.append(ContainerSpec(name=c.get("name", ""), image="", cpu_limit_millis=cpu, memory_limit=mem))
    size = vm_size(specs)
    return Resources(millicpu=size.vcpus * 1000, memory=size.memory, pods=1)


def node_allocatable(node: dict[str, Any]) -> Resources:
    alloc = (node.get("status") or {}).get("allocatable") or {}
    return Resources(
        millicpu=parse_cpu(str(alloc.get("cpu", "0"))) if alloc.get("cpu") not in (None, "0") else 0,
        memory=parse_memory(str(alloc.get("memory", "0"))) if alloc.get("memory") not in (None, "0") else 0,
        pods=int(alloc.get("pods", 110)),
    )
