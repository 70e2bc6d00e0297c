"""VM size from a pod: exactly what its containers ask for, plus a documented guest overhead.

vCPUs  = ceil(sum of the containers' CPU limits), at least 1; DEFAULT_VCPUS if none is set.
memory = sum of the containers' memory limits + GUEST_OVERHEAD; a container without a limit
         counts DEFAULT_CONTAINER_MEMORY. Rounded up to whole MiB.

GUEST_OVERHEAD covers the guest kernel (~10 MiB with our minimal config), the agent, page tables,
and the tmpfs that holds each container's writable layer metadata; it is charged to the VM, not
taken from the containers, so a container with a 128Mi limit really gets 128Mi.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

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


_SUFFIXES = {
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
    "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "": 1,
}


def parse_memory(text: str) -> int:
    """Kubernetes/Docker-style sizes: 128Mi, 1G, 512m (docker: MiB), 1073741824."""
    t = text.strip()
    docker = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    if t and t[-1] in docker and t[:-1].isdigit():
        return int(t[:-1]) * docker[t[-1]]
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and t.endswith(suffix):
            number = t[: -len(suffix)]
            break
    else:
        suffix, number = "", t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"invalid memory size {text!r}") from None
    if value <= 0:
        raise ValueError(f"invalid memory size {text!r}")
    return math.ceil(value * _SUFFIXES[suffix])


def parse_cpu(text: str) -> int:
    """Kubernetes CPU quantities in millicores: "2", "0.5", "500m"."""
    t = text.strip()
    try:
        millis = int(t[:-1]) if t.endswith("m") else math.ceil(float(t) * 1000)
    except ValueError:
        raise ValueError(f"invalid CPU quantity {text!r}") from None
    if millis <= 0:
        raise ValueError(f"invalid CPU quantity {text!r}")
    return millis
