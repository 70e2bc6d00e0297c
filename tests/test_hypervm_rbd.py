"""RBD volumes on real, jailed VMs (TCG) against a real Ceph cluster (tests/support/ceph.py):
QEMU opens the image itself through librbd (nothing mapped or mounted on the host), the cephx
key reaches it only as a secret object read from a 0400 file, data written and synced in one VM
is read in the next, a dead client is fenced (blocklisted: its writes fail, the guest sees I/O
errors), and a Ceph outage gives the guest I/O errors, not a VM stuck forever."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.interface import (
    BlockDevice,
    ContainerSpec,
    ExecSpec,
    ExitStatus,
    MountSpec,
    PodSpec,
    RbdImage,
    VolumeSpec,
)
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.runtime.qemu import running_qemu
from hypernetes.volumes.rbd import RbdVolumes
from hypernetes.volumes.rbd_objects import CephCredentials
from tests.support.ceph import CephCluster
from tests.support.guests import qemu_processes_under
from tests.support.pods import run

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
MiB = 1 << 20


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rt(tmp_path_factory: pytest.TempPathFactory, kernels: KernelRegistry) -> AsyncIterator[HyperVM]:
    root = tmp_path_factory.mktemp("rbdvm")
    runtime = HyperVM(root / "rt", ImageStore(root / "images"), kernels, die_with_parent=True)
    yield runtime
    for sandbox in await runtime.list_sandboxes():
        await runtime.remove_sandbox(sandbox.id)
    assert not qemu_processes_under(root)


@pytest.fixture(scope="module")
def rbd(ceph: CephCluster) -> RbdVolumes:
    return RbdVolumes(CephCredentials(ceph.monitors, ceph.user, ceph.user_key()), ceph.pool)


def volume(rbd: RbdVolumes, image: str, **kw: object) -> VolumeSpec:
    c = rbd.creds
    img = RbdImage(rbd.pool, image, c.user, c.monitors, c.key)
    return VolumeSpec("data", "block", block=BlockDevice("", fs_type="ext4", rbd=img, **kw))  # type: ignore[arg-type]


def sh(image: str, script: str) -> ContainerSpec:
    return ContainerSpec(
        name="c", image=image, command=("sh", "-c", script), mounts=(MountSpec("data", "/data"),)
    )


async def logged(rt: HyperVM, sandbox: str, line: bytes, timeout: float = 90) -> list[bytes]:
    for _ in range(int(timeout * 10)):
        lines = [ln.data async for ln in rt.logs(sandbox, "c")]
        if any(line in ln for ln in lines):
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"never printed {line!r}")


async def sh_exec(rt: HyperVM, sandbox: str, script: str) -> str:
    proc = await rt.exec(sandbox, "c", ExecSpec(command=("sh", "-c", script)))
    said = b"".join([data async for _, data in proc.output()])
    assert await asyncio.wait_for(proc.wait(), 30) == ExitStatus(code=0), said
    return said.decode()


async def test_write_sync_read_back_and_the_key_stays_secret(
    rt: HyperVM, rbd: RbdVolumes, busybox_ref: str
) -> None:
    await asyncio.to_thread(rbd.create, "vm-a", 64 * MiB)
    vol = (volume(rbd, "vm-a"),)
    spec = PodSpec(
        id="rbd-w",
        name="w",
        containers=(
            sh(
                busybox_ref,
                "head -c 1048576 /dev/urandom > /data/blob && sync && sha256sum /data/blob; sleep 600",
            ),
        ),
        volumes=vol,
    )
    await rt.create_sandbox(spec)
    await rt.start_container("rbd-w", "c")
    lines = await logged(rt, "rbd-w", b"/data/blob")
    digest = lines[0].split()[0]
    # QEMU holds the image open (a watcher) and its exclusive lock; nothing is mapped on the host
    assert await asyncio.to_thread(rbd.watchers, "vm-a")
    assert [lk for lk in await asyncio.to_thread(rbd.lockers, "vm-a")]
    assert (
        not [d for d in os.listdir("/sys/bus/rbd/devices")] if os.path.isdir("/sys/bus/rbd/devices") else True
    )
    pid = running_qemu(rt.root / "rbd-w")
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert rbd.creds.key.encode() not in cmdline and b"key-secret" in cmdline
    keyfile = rt.root / "rbd-w" / "rbd" / "pv0.key"
    st = keyfile.stat()
    assert st.st_mode & 0o777 == 0o400 and st.st_uid != 0  # the VM's own uid
    assert rbd.creds.key.encode() not in (rt.root / "rbd-w" / "state.json").read_bytes()

    # grown while attached: the image first (the control plane), then QEMU is told (the node)
    size = "for d in /sys/block/vd*; do [ $(cat $d/serial) = pv0 ] && cat $d/size; done"
    assert await sh_exec(rt, "rbd-w", size) == f"{64 * MiB // 512}\n"
    fs_kib = "stat -f -c '%b %S' /data | awk '{print $1 * $2 / 1024}'"
    before = float(await sh_exec(rt, "rbd-w", fs_kib))
    await asyncio.to_thread(rbd.resize, "vm-a", 96 * MiB)
    await rt.resize_block("rbd-w", "data", 96 * MiB)
    assert await sh_exec(rt, "rbd-w", size) == f"{96 * MiB // 512}\n"
    # and the filesystem on it, online (the guest's EXT4_IOC_RESIZE_FS), with the data in place
    after = float(await sh_exec(rt, "rbd-w", fs_kib))
    assert after - before >= 28 * 1024, (before, after)  # of 32 MiB more: less the new metadata
    assert (await sh_exec(rt, "rbd-w", "sha256sum /data/blob")).split()[0] == digest.decode()
    await rt.remove_sandbox("rbd-w")
    assert not await asyncio.to_thread(rbd.watchers, "vm-a")

    spec = PodSpec(id="rbd-r", name="r", containers=(sh(busybox_ref, "sha256sum /data/blob"),), volumes=vol)
    status, out, err = await run(rt, spec)
    assert status == ExitStatus(code=0), err
    assert out.split()[0] == digest


WRITER = (
    "i=0; while true; do i=$((i+1)); "
    "if echo $i > /data/n && sync /data/n; then echo wrote $i; else echo failed $i; fi; sleep 0.5; done"
)


async def test_a_fenced_client_cannot_write(rt: HyperVM, rbd: RbdVolumes, busybox_ref: str) -> None:
    """What the node does before attaching an image whose last user's node was declared dead:
    blocklist every client that has it open (volumes/rbd.py fence). That VM's writes fail from
    then on, whatever its host does; the next VM owns the image."""
    await asyncio.to_thread(rbd.create, "vm-f", 64 * MiB)
    vol = (volume(rbd, "vm-f"),)
    await rt.create_sandbox(
        PodSpec(id="rbd-old", name="old", containers=(sh(busybox_ref, WRITER),), volumes=vol)
    )
    await rt.start_container("rbd-old", "c")
    await logged(rt, "rbd-old", b"wrote 3")
    fenced = await asyncio.to_thread(rbd.fence, "vm-f")
    assert fenced
    lines = await logged(rt, "rbd-old", b"failed", timeout=120)
    last = max(int(ln.split()[1]) for ln in lines if ln.startswith(b"wrote"))
    assert not await asyncio.to_thread(rbd.lockers, "vm-f")
    # the next VM mounts (replaying the journal), reads the last synced value, writes its own
    script = "cat /data/n; echo new > /data/n && sync && echo ok"
    spec = PodSpec(id="rbd-new", name="new", containers=(sh(busybox_ref, script),), volumes=vol)
    status, out, err = await run(rt, spec)
    assert status == ExitStatus(code=0), err
    assert out.split()[-1] == b"ok"
    assert int(out.split()[0]) >= last
    # the old VM is still running, and still cannot write
    before = len([ln for ln in [x.data async for x in rt.logs("rbd-old", "c")] if ln.startswith(b"failed")])
    await asyncio.sleep(3)
    after = [x.data async for x in rt.logs("rbd-old", "c")]
    assert len([ln for ln in after if ln.startswith(b"failed")]) > before
    assert not [ln for ln in after[-4:] if ln.startswith(b"wrote")]
    await rt.remove_sandbox("rbd-old")


async def test_an_outage_is_io_errors_not_a_hung_vm(
    rt: HyperVM, rbd: RbdVolumes, ceph: CephCluster, busybox_ref: str
) -> None:
    await asyncio.to_thread(rbd.create, "vm-o", 64 * MiB)
    vol = (volume(rbd, "vm-o"),)
    await rt.create_sandbox(
        PodSpec(id="rbd-out", name="out", containers=(sh(busybox_ref, WRITER),), volumes=vol)
    )
    await rt.start_container("rbd-out", "c")
    await logged(rt, "rbd-out", b"wrote 2")
    await asyncio.to_thread(ceph.stop_osds)
    try:
        # librbd gives up after `rados osd op timeout` (30 s): the guest's sync fails
        await logged(rt, "rbd-out", b"failed", timeout=120)
        # the VM is alive and answers: an exec runs
        proc = await rt.exec("rbd-out", "c", ExecSpec(command=("echo", "alive")))
        said = b"".join([data async for _, data in proc.output()])
        assert await asyncio.wait_for(proc.wait(), 30) == ExitStatus(code=0) and b"alive" in said
    finally:
        await asyncio.to_thread(ceph.start_osds)
    await rt.remove_sandbox("rbd-out")
