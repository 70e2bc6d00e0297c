"""VM size from a pod: exactly what its containers ask for, plus a documented guest overhead.

vCPUs  = ceil(sum of the containers' CPU limits), at least 1; DEFAULT_VCPUS if none is set.
memory = sum of the containers' memory limits + GUEST_OVERHEAD; a container without a limit
         counts DEFAULT_CONTAINER_MEMORY. Rounded up to whole MiB, so the smallest VM has
         GUEST_OVERHEAD + 1 MiB.

Limits are Kubernetes quantities read as upstream reads them (hypernetes.objects.quantity, whole
bytes and millicores rounded up); admission, quotas, the scheduler and the node all size a pod's
VM through `runtime.podsize`, which reads them here.

GUEST_OVERHEAD covers the guest kernel (~10 MiB with our minimal config), the agent, page tables,
and the tmpfs that holds each container's writable layer metadata; it is charged to the VM, not
taken from the containers, so a container with a 128Mi limit really gets 128Mi.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from hypernetes.objects.quantity import quantity_milli_value, quantity_value
from hypernetes.runtime.interface import ContainerSpec

MiB = 1024 * 1024
GUEST_OVERHEAD = 32 * MiB
DEFAULT_CONTAINER_MEMORY = 128 * MiB
DEFAULT_VCPUS = 1
MAX_VCPUS = 64


@dataclass(frozen=True)
class VMSize:
    vcpus: int
    memory: int  # bytes, a whole number of MiB

    @property
    def memory_mib(self) -> int:
        return self.memory // MiB


def vm_size(containers: Iterable[ContainerSpec]) -> VMSize:
    cpu_millis = 0
    memory = 0
    for c in containers:
        cpu_millis += c.cpu_limit_millis or 0
        memory += c.memory_limit if c.memory_limit else DEFAULT_CONTAINER_MEMORY
    vcpus = math.ceil(cpu_millis / 1000) if cpu_millis else DEFAULT_VCPUS
    if vcpus > MAX_VCPUS:
        raise ValueError(f"pod asks for {vcpus} vCPUs; a VM has at most {MAX_VCPUS}")
    total = memory + GUEST_OVERHEAD
    return VMSize(vcpus=max(1, vcpus), memory=math.ceil(total / MiB) * MiB)


def positive_bytes(value: object) -> int:
    """A size the pod asks for (a memory or storage limit, an emptyDir's sizeLimit): a Kubernetes
    quantity in whole bytes, rounded up as upstream's Value() (`512m` is 0.512 bytes: 1 byte;
    `1k` is 1000). ValueError if it is not a quantity or not positive: no VM or disk has no size."""
    amount = quantity_value(value)
    if amount <= 0:
        raise ValueError(f"invalid size {value!r}: must be greater than zero")
    return amount


def positive_millicpu(value: object) -> int:
    """A CPU limit or request in millicores, rounded up as upstream's MilliValue() ("2", "0.5",
    "500m"). ValueError if it is not a quantity or not positive."""
    millis = quantity_milli_value(value)
    if millis <= 0:
        raise ValueError(f"invalid CPU quantity {value!r}: must be greater than zero")
    return millis
