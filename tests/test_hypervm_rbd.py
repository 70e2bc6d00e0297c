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
    await rt.remove_sandbox("rbd-w")
    assert not await asyncio.to_thread(rbd.watchers, "vm-a")

    spec = PodSpec(id="rbd-r", name="r", containers=(sh(busybox_ref, "sha256sum /data/blob"),), volumes=vol)
    status, out, err = await run(rt, spec)
    assert status == ExitStatus(code=0), err
    assert out.split()[0] == digest
