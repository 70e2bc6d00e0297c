"""What a pod costs a node: the exact memory of its VM (overhead included) and its CPU.

Memory cannot be overcommitted safely (a VM's RAM is really taken), so a pod costs exactly its
VM's memory: the containers' memory limits plus the guest overhead (`runtime/sizing.py`). CPU is
time-shared: a VM's vCPUs are host threads, so a pod costs the CPU its containers ask for (limits,
or requests when no limit is set) and podsize.DEFAULT_POD_MILLICPU when they ask for none, not
whole vCPUs; otherwise a 2-core node would hold two pods. Both include the pod's `spec.overhead`
(Pod Overhead: what its RuntimeClass says QEMU costs beside the containers), as upstream's
scheduler adds it to the requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypernetes.objects.quantity import quantity_milli_value, quantity_value
from hypernetes.runtime.podsize import node_cost, pod_ephemeral_storage


@dataclass(frozen=True)
class Resources:
    millicpu: int = 0
    memory: int = 0
    pods: int = 0
    storage: int = 0  # ephemeral-storage: bytes of the node's disk (scratch disks)

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.millicpu + other.millicpu,
            self.memory + other.memory,
            self.pods + other.pods,
            self.storage + other.storage,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.millicpu - other.millicpu,
            self.memory - other.memory,
            self.pods - other.pods,
            self.storage - other.storage,
        )


def pod_vm_size(pod: dict[str, Any]) -> Resources:
    """What this pod's VM takes from a node: its CPU ask and its memory including guest overhead
    (the node agent admits by the same `node_cost`)."""
    millicpu, memory = node_cost(pod)
    return Resources(millicpu=millicpu, memory=memory, pods=1, storage=pod_ephemeral_storage(pod))


def node_allocatable(node: dict[str, Any]) -> Resources:
    alloc = (node.get("status") or {}).get("allocatable") or {}
    return Resources(
        millicpu=quantity_milli_value(alloc.get("cpu", "0")),
        memory=quantity_value(alloc.get("memory", "0")),
        pods=int(alloc.get("pods", 110)),
        # a node that does not say how much disk it has is not limited by it (upstream, too)
        storage=quantity_value(alloc["ephemeral-storage"]) if "ephemeral-storage" in alloc else 1 << 62,
    )
