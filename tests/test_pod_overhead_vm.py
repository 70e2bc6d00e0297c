"""Pod Overhead on a real pod VM: a Pod object whose spec.overhead its RuntimeClass set (admission,
tests/test_runtimeclass.py) goes through the node's conversion (node/podspec.py) to the runtime,
and the VM's cgroup gets the containers' limits plus the overhead for CPU quota, weight and
memory, while the guest keeps exactly the vCPUs and RAM the pod asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypernetes.node.podspec import pod_spec
from hypernetes.runtime import cgroups as cg
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.interface import ContainerSpec
from hypernetes.runtime.qemu import running_qemu
from hypernetes.runtime.sizing import MiB, VMSize, vm_size
from tests.support.vmcgroups import cgroups_of, needs_root, read_limits

OVERHEAD = {"cpu": "250m", "memory": "64Mi"}


def pod_object(image: str, overhead: dict[str, str] | None = OVERHEAD) -> dict[str, object]:
    spec: dict[str, object] = {
        "containers": [
            {
                "name": "main",
                "image": image,
                "command": ["sleep", "600"],
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
            }
        ]
    }
    if overhead is not None:
        spec["overhead"] = overhead
    return {"metadata": {"name": "ovh", "namespace": "default", "uid": "ovh1"}, "spec": spec}


def test_limits_add_the_overhead_to_cpu_and_memory() -> None:
    c = ContainerSpec(name="a", image="x", cpu_limit_millis=100, memory_limit=64 * MiB)
    size = vm_size([c])
    without = cg.pod_limits([c], size)
    assert (without.cpu_quota_us, without.cpu_shares) == (10_000, 102)
    assert without.memory_max == size.memory + cg.QEMU_OVERHEAD  # today's headroom, no overhead
    with_ = cg.pod_limits([c], size, 250, 64 * MiB)
    assert (with_.cpu_quota_us, with_.cpu_shares) == (35_000, 358)
    assert with_.memory_max == size.memory + 64 * MiB
    # no CPU limit: the VM's whole vCPUs, plus the VMM's share
    free = cg.pod_limits([ContainerSpec(name="a", image="x")], VMSize(1, 160 * MiB), 250, 0)
    assert free.cpu_quota_us == 125_000 and free.memory_max == 160 * MiB + cg.QEMU_OVERHEAD


def test_node_conversion_carries_the_overhead() -> None:
    spec = pod_spec(pod_object("busybox"), lambda *_: None)
    assert (spec.overhead_millicpu, spec.overhead_memory) == (250, 64 * MiB)
    bare = pod_spec(pod_object("busybox", None), lambda *_: None)
    assert (bare.overhead_millicpu, bare.overhead_memory) == (0, 0)


@pytest.mark.slow
@needs_root
async def test_vm_cgroup_holds_limits_plus_overhead(hypervm: HyperVM, busybox_ref: str) -> None:
    spec = pod_spec(pod_object(busybox_ref), lambda *_: None)
    await hypervm.create_sandbox(spec)
    await hypervm.start_container(spec.id, "main")
    sandbox_dir = hypervm.root / spec.id
    groups = cgroups_of(hypervm)
    name = cg.cgroup_name(spec.id, sandbox_dir)
    size = vm_size(spec.containers)
    limits = read_limits(groups, name)
    assert limits["quota"] == cg.quota_us(100 + 250) and limits["period"] == cg.PERIOD_US
    shares = cg.shares(100 + 250)
    assert limits["weight"] == (
        shares if groups.layout.version == 1 else cg.Limits(shares, None, 0, 0).cpu_weight
    )
    assert limits["memory"] == size.memory + 64 * MiB
    # QEMU itself is in that cgroup, and the guest got what the pod asked: 1 vCPU, 64 + 32 MiB
    pid = running_qemu(sandbox_dir)
    assert pid is not None
    procs = (groups.controller_dir("memory", name) / "cgroup.procs").read_text().split()
    assert str(pid) in procs
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    memory_arg = argv[argv.index(b"-m") + 1].decode()
    assert memory_arg.split(",")[0].rstrip("M") == str(size.memory_mib), argv
    assert size == VMSize(1, 96 * MiB)
    await hypervm.remove_sandbox(spec.id)
