"""Whether this node takes a pod bound to it, whoever bound it: the kubelet's resource admission
(`lifecycle/predicate.go`). The scheduler already placed most pods by the same sums, but a pod
bound without it (spec.nodeName set by its creator) must fit too: a VM's memory is really taken,
so a node that started every pod bound to it would start a 40 GiB VM on a 24 GiB host.

A pod costs what the scheduler counts (`podsize.node_cost`): its CPU ask and its VM's memory,
each plus the pod's `spec.overhead` (Pod Overhead, from its RuntimeClass).
Used is the sum over the pods this node runs and has not finished; capacity the Node's
allocatable. Disk counts too: a pod's scratch disk at full size (`podsize.pod_ephemeral_storage`)
against allocatable ephemeral-storage. A rejected pod is Failed with the kubelet's reason
(`OutOfcpu`, `OutOfmemory`, `OutOfpods`, `OutOfephemeral-storage`) and message, and never gets a VM.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hypernetes.objects import Obj
from hypernetes.objects.quantity import quantity_milli_value, quantity_value
from hypernetes.runtime.podsize import node_cost, pod_ephemeral_storage


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str

    def status(self) -> Obj:
        """The pod status the kubelet writes for a pod it rejects."""
        return {"phase": "Failed", "reason": self.reason, "message": f"Pod was rejected: {self.message}"}


def capacity(allocatable: Obj) -> tuple[int, int, int]:
    """(millicores, memory bytes, pods) of a Node's status.allocatable."""
    return (
        quantity_milli_value(allocatable.get("cpu", "0")),
        quantity_value(allocatable.get("memory", "0")),
        int(allocatable.get("pods", 110)),
    )


def admit(pod: Obj, running: Iterable[Obj], allocatable: Obj) -> Rejection | None:
    """None if `pod` fits next to the `running` pods (admitted, not finished); else why not, for
    the first resource that does not fit in the kubelet's order (pods, cpu, memory, storage)."""
    try:
        cpu, memory, disk = _cost(pod)
    except ValueError as e:
        return Rejection("UnexpectedAdmissionError", f"cannot size the pod's VM: {e}")
    costs = [_cost_or_zero(other) for other in running]
    used_cpu, used_memory, used_disk = (sum(c[i] for c in costs) for i in range(3))
    cap_cpu, cap_memory, cap_pods = capacity(allocatable)
    disk_text = allocatable.get("ephemeral-storage")
    cap_disk = quantity_value(disk_text) if disk_text is not None else None  # unpublished: unlimited
    for name, requested, used, cap in (
        ("pods", 1, len(costs), cap_pods),
        ("cpu", cpu, used_cpu, cap_cpu),
        ("memory", memory, used_memory, cap_memory),
        ("ephemeral-storage", disk, used_disk, cap_disk),
    ):
        if cap is not None and used + requested > cap:
            return Rejection(
                f"OutOf{name}",
                f"Node didn't have enough resource: {name}, "
                f"requested: {requested}, used: {used}, capacity: {cap}",
            )
    return None


def _cost(pod: Obj) -> tuple[int, int, int]:
    cpu, memory = node_cost(pod)
    return cpu, memory, pod_ephemeral_storage(pod)


def _cost_or_zero(pod: Obj) -> tuple[int, int, int]:
    try:
        return _cost(pod)
    except ValueError:
        return 0, 0, 0  # never admitted, so never running
