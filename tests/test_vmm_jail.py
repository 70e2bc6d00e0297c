"""The VMM jail and the per-VM cgroup, on real VMs (TCG here): each pod's QEMU runs as its own
uid with no capabilities, in a chroot holding only its files and namespaces of its own, inside a
cgroup whose limits come from the pod; both go away with the sandbox and survive adoption."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import pytest

from hypernetes.runtime import cgroups as cg
from hypernetes.runtime.confine import Confiner
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.interface import ContainerSpec, ExecSpec
from hypernetes.runtime.jail import JailError, UidPool, uid_range
from hypernetes.runtime.qemu import QemuVM, VMConfig, running_qemu
from hypernetes.runtime.sizing import MiB, VMSize, vm_size
from tests.support.guests import qemu_processes_under
from tests.support.pods import collect, pod
from tests.support.vmcgroups import cgroups_of, needs_root, read_limits

SPIN = ("sh", "-c", "while :; do :; done")


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


def cpu_stat(groups: cg.Cgroups, name: str) -> tuple[int, float]:
    """(nr_throttled, CPU seconds used) of the VM's cgroup."""
    d = groups.controller_dir("cpu", name)
    stat = dict(ln.split() for ln in (d / "cpu.stat").read_text().splitlines())
    if groups.layout.version == 2:
        return int(stat["nr_throttled"]), int(stat["usage_usec"]) / 1e6
    usage = groups.controller_dir("cpuacct", name) / "cpuacct.usage"
    return int(stat["nr_throttled"]), int(usage.read_text()) / 1e9


# -- no VM: the mapping from a pod to limits, the uid pool, the hierarchy ------------------------


def test_pod_limits_follow_requests_limits_and_vm_size() -> None:
    half = ContainerSpec(name="a", image="x", cpu_limit_millis=500, memory_limit=64 * MiB)
    lim = cg.pod_limits([half], vm_size([half]))
    # the kubelet's mapping: shares = request * 1024 / 1000 (the request defaults to the limit)
    assert (lim.cpu_shares, lim.cpu_quota_us) == (512, 50_000)
    assert lim.memory_max == (64 + 32) * MiB + cg.QEMU_OVERHEAD and lim.pids_max == cg.PIDS_BASE + 1
    asks = ContainerSpec(name="a", image="x", cpu_limit_millis=1500, cpu_request_millis=250)
    lim = cg.pod_limits([asks], vm_size([asks]))
    assert (lim.cpu_shares, lim.cpu_quota_us) == (256, 150_000)
    # a container without a CPU limit: the quota is the VM's whole vCPUs, the weight the minimum
    free = [ContainerSpec(name="a", image="x"), ContainerSpec(name="b", image="x", cpu_limit_millis=300)]
    lim = cg.pod_limits(free, VMSize(vcpus=1, memory=160 * MiB))
    assert (lim.cpu_shares, lim.cpu_quota_us) == (307, 100_000)
    assert cg.pod_limits([ContainerSpec(name="a", image="x")], VMSize(1, 160 * MiB)).cpu_shares == 2
    # cgroup v2's weight, by the kubelet's conversion: 2 -> 1, 1024 -> 39, 262144 -> 10000
    assert [cg.Limits(s, None, 0, 0).cpu_weight for s in (2, 1024, 262_144)] == [1, 39, 10_000]


def test_detect_v1_hybrid_and_v2(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    (v1 / "unified").mkdir(parents=True)
    (v1 / "unified" / "cgroup.controllers").write_text("\n")  # a hybrid host's empty cgroup2
    info = tmp_path / "mountinfo"
    info.write_text(
        "".join(
            f"{30 + i} 25 0:{40 + i} / {v1}/{c} rw,relatime shared:{i} - cgroup cgroup rw,{c}\n"
            for i, c in enumerate(("cpu", "cpuacct", "memory", "pids", "blkio"))
        )
        + f"50 25 0:60 / {v1}/unified rw shared:9 - cgroup2 cgroup2 rw\n"
    )
    own = tmp_path / "cgroup"
    own.write_text("5:memory:/agent.service\n4:cpu:/\n0::/\n")
    layout = cg.detect(info, own)
    assert layout is not None and layout.version == 1
    assert layout.mounts["memory"] == v1 / "memory" and layout.own["memory"] == "/agent.service"
    groups = cg.Cgroups(layout, allocatable=1900)
    assert groups.controller_dir("memory", "vm") == v1 / "memory/agent.service/hypernetes/vm"
    assert groups.controller_dir("cpu", "vm") == v1 / "cpu/hypernetes/vm"

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    info.write_text(f"30 25 0:40 / {v2} rw shared:1 - cgroup2 cgroup2 rw\n")
    own.write_text("0::/\n")
    layout = cg.detect(info, own)
    assert layout is not None and layout.version == 2
    assert cg.Cgroups(layout).controller_dir("pids", "vm") == v2 / "hypernetes.slice/vm"


def test_v2_files_written(tmp_path: Path) -> None:
    """cgroup v2 is not mountable with controllers on this v1 host: the files it would get are
    checked on a directory standing in for it (the kernel's own checks are not exercised)."""
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    layout = cg.Layout(2, {c: tmp_path for c in cg.V2_CONTROLLERS}, {c: "/" for c in cg.V2_CONTROLLERS})
    groups = cg.Cgroups(layout, allocatable=1900)
    procs = groups.create("vm", cg.Limits(512, 50_000, 200 * MiB, 97))
    d = tmp_path / "hypernetes.slice" / "vm"
    assert procs == (d / "cgroup.procs",)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory +pids +io"
    assert (tmp_path / "hypernetes.slice" / "cpu.max").read_text() == "190000 100000"
    assert {f: (d / f).read_text() for f in ("cpu.max", "cpu.weight", "memory.max")} == {
        "cpu.max": "50000 100000",
        "cpu.weight": "20",
        "memory.max": str(200 * MiB),
    }


def test_uid_pool_unique_reclaimed_and_ranged(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nhypernetes:2000000:4\n")
    assert uid_range(subuid) == (2_000_000, 4)
    assert uid_range(tmp_path / "absent") == (900_000, 65_536)
    pool = UidPool(tmp_path / "uids", subuid)
    owners = [tmp_path / f"sb{i}" for i in range(4)]
    for o in owners:
        o.mkdir()
    uids = [pool.acquire(o) for o in owners]
    assert sorted(uids) == [2_000_000, 2_000_001, 2_000_002, 2_000_003]
    extra = tmp_path / "sb4"
    extra.mkdir()
    with pytest.raises(JailError, match="all 4 VMM uids"):
        pool.acquire(extra)
    # a record whose sandbox directory is gone (a crashed agent's) is taken back
    owners[2].rmdir()
    assert pool.acquire(extra) == uids[2]
    pool.release_owner(owners[0])
    assert pool.held_by(owners[0]) is None and pool.held_by(owners[1]) == uids[1]


def test_unprivileged_runs_unconfined(caplog: pytest.LogCaptureFixture) -> None:
    confiner = Confiner(enabled=False)
    assert "not running as root: pod VMs run as uid" in caplog.text
    assert "without a jail or cgroups" in caplog.text
    assert (
        confiner.prepare(
            "p", Path("/nonexistent"), (), VMSize(1, 64 * MiB), Path("/k"), Path("/i"), "tcg", False
        )
        is None
    )


# -- real VMs -------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_root
async def test_qemu_is_jailed_and_in_its_cgroup(hypervm: HyperVM, busybox_ref: str, tmp_path: Path) -> None:
    spec = pod(
        "jail1",
        ContainerSpec(
            name="main",
            image=busybox_ref,
            command=("sleep", "600"),
            cpu_limit_millis=500,
            memory_limit=64 * MiB,
        ),
    )
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("jail1", "main")
    sandbox_dir = hypervm.root / "jail1"
    pid = running_qemu(sandbox_dir)
    assert pid is not None and qemu_processes_under(tmp_path) == [pid]

    # its own uid and gid from the reserved range, no capabilities, no way to regain them
    st = status_fields(pid)
    start, count = uid_range()
    uids, gids = {int(u) for u in st["Uid"].split()}, {int(g) for g in st["Gid"].split()}
    assert len(uids) == 1 and uids == gids and start <= uids.pop() < start + count
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == st["CapAmb"] == "0000000000000000"
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"  # QEMU's -sandbox filter is on
    assert st["Groups"] == ""  # no supplementary group under TCG (KVM's device group only with KVM)

    # its root is the jail: QEMU's own files, the kernel and initrd, nothing of the host's
    root = Path(f"/proc/{pid}/root")
    assert set(os.listdir(root)) <= {"usr", "lib", "lib64", "vm", "dev"}
    assert sorted(os.listdir(root / "vm")) == ["initrd", "kernel"]
    assert sorted(os.listdir(root / "dev")) == ["null"]
    assert not (root / str(tmp_path).lstrip("/")).exists() and not (root / "etc").exists()
    with pytest.raises(OSError):
        (root / "vm" / "probe").write_text("x")  # read-only
    for ns in ("mnt", "net", "ipc", "uts"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    # the disks are inherited fds, not paths it could open
    fd_targets = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
    assert any(t.endswith(".erofs") for t in fd_targets)

    # its cgroup, with the pod's limits
    groups = cgroups_of(hypervm)
    name = cg.cgroup_name("jail1", sandbox_dir)
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        ours = set(controllers.split(",")) & {"cpu", "memory", "pids"}
        if ours or (groups.layout.version == 2 and not controllers):
            assert path.endswith(f"/{name}"), line
    # the parent of all pod VMs is capped at the node's allocatable CPU (its CPUs less the reserve)
    parent = groups.controller_dir("cpu", "")
    parent_quota = (
        (parent / "cpu.max").read_text().split()[0]
        if groups.layout.version == 2
        else (parent / "cpu.cfs_quota_us").read_text().strip()
    )
    assert int(parent_quota) == cg.quota_us((os.cpu_count() or 1) * 1000 - cg.reserved_millicpu())
    size = vm_size(spec.containers)
    limits = read_limits(groups, name)
    assert limits["quota"] == 50_000 and limits["period"] == 100_000
    assert limits["weight"] == (512 if groups.layout.version == 1 else cg.Limits(512, None, 0, 0).cpu_weight)
    assert limits["memory"] == size.memory + cg.QEMU_OVERHEAD
    assert limits["pids"] == cg.PIDS_BASE + size.vcpus
    # and it still works as a VM
    proc = await hypervm.exec("jail1", "main", ExecSpec(command=("echo", "jailed")))
    assert await collect(proc) == (b"jailed\n", b"")

    await hypervm.remove_sandbox("jail1")
    assert not groups.exists(name), "the VM's cgroup goes with its sandbox"
    assert Confiner.uids().held_by(sandbox_dir.resolve()) is None, "and its uid is free again"


@pytest.mark.slow
@needs_root
async def test_cpu_limit_throttles_a_spinning_guest(hypervm: HyperVM, busybox_ref: str) -> None:
    spec = pod("spin", ContainerSpec(name="main", image=busybox_ref, command=SPIN, cpu_limit_millis=500))
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("spin", "main")
    groups = cgroups_of(hypervm)
    name = cg.cgroup_name("spin", hypervm.root / "spin")
    _, used0 = cpu_stat(groups, name)
    t0 = time.monotonic()
    await asyncio.sleep(6)
    throttled, used1 = cpu_stat(groups, name)
    share = (used1 - used0) / (time.monotonic() - t0)
    assert throttled > 0, "a guest spinning past its 0.5 CPU is throttled"
    assert share < 0.6, f"the VM used {share:.2f} CPUs with a 0.5 CPU limit"
    await hypervm.remove_sandbox("spin")


@pytest.mark.slow
@needs_root
async def test_adopted_vm_keeps_its_cgroup_and_uid(
    hypervm: HyperVM, busybox_ref: str, tmp_path: Path
) -> None:
    spec = pod("jail2", ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")))
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("jail2", "main")
    sandbox_dir = hypervm.root / "jail2"
    pid = running_qemu(sandbox_dir)
    uid = status_fields(pid or 0)["Uid"]
    name = cg.cgroup_name("jail2", sandbox_dir)
    await hypervm.detach_all()

    again = HyperVM(hypervm.root.parent, hypervm.images, hypervm.kernels, die_with_parent=True)
    assert [s.id for s in await again.adopt()] == ["jail2"]
    assert running_qemu(sandbox_dir) == pid and status_fields(pid or 0)["Uid"] == uid
    groups = cgroups_of(again)
    procs = (groups.controller_dir("memory", name) / "cgroup.procs").read_text().split()
    assert str(pid) in procs
    proc = await again.exec("jail2", "main", ExecSpec(command=("echo", "adopted")))
    assert await collect(proc) == (b"adopted\n", b"")
    await again.remove_sandbox("jail2")
    assert not groups.exists(name) and Confiner.uids().held_by(sandbox_dir.resolve()) is None
    assert not qemu_processes_under(tmp_path)


@pytest.mark.slow
@needs_root
@pytest.mark.allow_skip_on_ci("a CI machine may have no /dev/kvm")
@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="no /dev/kvm on this host")
async def test_jailed_qemu_opens_kvm(hypervm: HyperVM, tmp_path: Path) -> None:
    """Under KVM the jail holds /dev/kvm and the uid gets the device's group; without that group
    the jailed QEMU cannot open it. (This host's PVM-backed KVM fails later, setting an MSR of a
    `-cpu host` vCPU: that failure proves the VM and its vCPU were created through /dev/kvm.)"""
    kernel = hypervm.kernels.default()
    confiner = hypervm._confiner
    kvm_ok = ("failed to set MSR",)  # environment-notes: this host's KVM, past opening the device

    async def start(name: str, drop_group: bool) -> tuple[object, str]:
        vm_dir = tmp_path / name
        jail = confiner.prepare(
            name, vm_dir, (), VMSize(1, 64 * MiB), kernel.image, kernel.initrd, "kvm", True
        )
        assert jail is not None
        if drop_group:
            jail = dataclasses.replace(jail, groups=())
        vm = QemuVM(
            VMConfig(
                name=name,
                dir=vm_dir,
                kernel=kernel.image,
                initrd=kernel.initrd,
                vcpus=1,
                memory_mib=64,
                accel="kvm",
                acpi=kernel.acpi,
                cmdline=kernel.cmdline,
                die_with_parent=True,
                jail=jail,
            )
        )
        try:
            await vm.start()
            assert vm.pid is not None
            assert sorted(os.listdir(f"/proc/{vm.pid}/root/dev")) == ["kvm", "null"]
            try:
                answer = await vm.qmp("query-kvm", timeout=10)
            except Exception:
                answer = None
            await vm.wait(5)
            return answer, vm.qemu_errors()
        finally:
            await vm.kill()
            await asyncio.to_thread(confiner.release, name, vm_dir)

    answer, log = await start("kvm-jailed", drop_group=False)
    assert answer == {"enabled": True, "present": True} or any(k in log for k in kvm_ok), log
    assert "Permission denied" not in log, log
    _, log = await start("kvm-nogroup", drop_group=True)
    assert "Permission denied" in log, log


@needs_root
def test_sweep_removes_old_empty_pod_cgroups_only() -> None:
    """VMs killed while no agent watched (the agent gone, a kill from outside) leave empty
    cgroups; a new runtime removes those, not young ones nor ones with processes."""
    groups = cg.Cgroups.for_host()
    assert groups is not None
    old, young = f"hn-sweep-old-{os.getpid()}", f"hn-sweep-young-{os.getpid()}"
    lim = cg.Limits(2, None, 64 * MiB, 8)
    groups.create(old, lim)
    groups.create(young, lim)
    try:
        for d in groups.dirs(old):
            os.utime(d, (time.time() - 3600, time.time() - 3600))
        swept = groups.sweep()
        assert old in swept and young not in swept
        assert not groups.exists(old) and groups.exists(young)
    finally:
        groups.remove(old)
        groups.remove(young)


@needs_root
def test_quota_above_the_nodes_allocatable_is_capped() -> None:
    """A VM as large as the host (2 vCPUs here) asks more than the parent's cap: cgroup v1 would
    refuse that quota (EINVAL) and fail the pod; it gets the parent's instead."""
    groups = cg.Cgroups.for_host()
    assert groups is not None
    name = f"hn-quota-{os.getpid()}"
    big = cg.Limits(2048, cg.quota_us((os.cpu_count() or 1) * 1000 + 1000), 64 * MiB, 8)
    try:
        groups.create(name, big)
        quota = read_limits(groups, name)["quota"]
        assert quota is not None and quota <= cg.quota_us(groups.allocatable)
    finally:
        groups.remove(name)
