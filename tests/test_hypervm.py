"""What only the hypervm runtime does, end to end: kernels, adoption of VMs that outlived the
node agent, probes and volumes from inside the VM. Real images from a real registry, real VMs
under TCG. What every runtime does is in test_runtime_contract.py."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.interface import (
    ContainerSpec,
    ContainerState,
    ExitStatus,
    PodSpec,
    SandboxFailed,
)
from tests.support.guests import qemu_processes_under
from tests.support.pods import pod

pytestmark = pytest.mark.slow


async def test_unknown_kernel_is_clear(hypervm: HyperVM, busybox_ref: str) -> None:
    with pytest.raises(SandboxFailed, match="unknown kernel 'nope'"):
        await hypervm.create_sandbox(pod("p9", ContainerSpec(name="main", image=busybox_ref), kernel="nope"))


async def test_exit_while_detached_is_seen_after_adoption(
    hypervm: HyperVM, busybox_ref: str, tmp_path: Path
) -> None:
    """A process that ends while no host is connected: its last output and its EXIT are kept by
    the agent and reach the adopting runtime."""
    script = "echo start; sleep 1.5; echo bye; exit 3"
    spec = pod("p17", ContainerSpec(name="main", image=busybox_ref, command=("sh", "-c", script)))
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("p17", "main")
    await asyncio.sleep(0.5)
    await hypervm.detach_all()
    await asyncio.sleep(3)  # the process prints "bye" and exits meanwhile

    again = HyperVM(hypervm.root.parent, hypervm.images, hypervm.kernels, die_with_parent=True)
    adopted = await again.adopt()
    assert [s.id for s in adopted] == ["p17"]
    status = await asyncio.wait_for(again.wait_container("p17", "main"), 30)
    assert status.state is ContainerState.EXITED
    assert status.exit == ExitStatus(code=3), status
    assert [ln.data async for ln in again.logs("p17", "main")] == [b"start", b"bye"]
    await again.remove_sandbox("p17")
    assert not qemu_processes_under(tmp_path)


async def test_adopt_drops_dead_vms(hypervm: HyperVM, busybox_ref: str, tmp_path: Path) -> None:
    spec = pod("p14", ContainerSpec(name="main", image=busybox_ref, command=("sleep", "600")))
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("p14", "main")
    await hypervm.detach_all()
    for pid in qemu_processes_under(tmp_path):
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    again = HyperVM(hypervm.root.parent, hypervm.images, hypervm.kernels, die_with_parent=True)
    assert await again.adopt() == []
    assert not (hypervm.root / "p14").exists()


async def test_probes_from_inside_the_pod(hypervm: HyperVM, busybox_ref: str) -> None:
    from hypernetes.runtime.interface import ProbeSpec

    script = "echo ok > /tmp/ok; httpd -f -p 8080 -h /tmp"
    spec = pod("p16", ContainerSpec(name="main", image=busybox_ref, command=("sh", "-c", script)))
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("p16", "main")
    for _ in range(50):
        ok, _msg = await hypervm.probe("p16", ProbeSpec("tcp", 8080))
        if ok:
            break
        await asyncio.sleep(0.2)
    assert ok
    assert await hypervm.probe("p16", ProbeSpec("http", 8080, path="/ok")) == (True, "")
    ok, msg = await hypervm.probe("p16", ProbeSpec("http", 8080, path="/missing"))
    assert not ok and "statuscode: 404" in msg
    ok, msg = await hypervm.probe("p16", ProbeSpec("tcp", 9999))
    assert not ok and "connection refused" in msg


async def test_volumes_emptydir_and_files(hypervm: HyperVM, busybox_ref: str) -> None:
    from hypernetes.runtime.interface import MountSpec, VolumeFile, VolumeSpec

    volumes = (
        VolumeSpec("scratch", "emptyDir", size_limit=1 << 20),
        VolumeSpec(
            "config",
            "files",
            files=(VolumeFile("app.conf", b"mode=fast\n"), VolumeFile("keys/token", b"s3cret", 0o400)),
        ),
    )
    writer = ContainerSpec(
        name="writer",
        image=busybox_ref,
        command=("sh", "-c", "echo shared > /data/x; sleep 600"),
        mounts=(MountSpec("scratch", "/data"),),
    )
    reader = ContainerSpec(
        name="reader",
        image=busybox_ref,
        command=(
            "sh",
            "-c",
            "while [ ! -e /in/x ]; do sleep 0.1; done; cat /in/x /etc/app/app.conf /token;"
            " stat -c %a /token; (echo > /etc/app/new) 2>/dev/null || echo read-only;"
            " dd if=/dev/zero of=/in/big bs=1M count=2 2>&1 | grep -o 'No space left'",
        ),
        mounts=(
            MountSpec("scratch", "/in"),
            MountSpec("config", "/etc/app"),
            MountSpec("config", "/token", sub_path="keys/token"),
        ),
    )
    spec = PodSpec(id="p17", name="p17", containers=(writer, reader), volumes=volumes)
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("p17", "writer")
    await hypervm.start_container("p17", "reader")
    st = await asyncio.wait_for(hypervm.wait_container("p17", "reader"), 60)
    out = [ln.data async for ln in hypervm.logs("p17", "reader")]
    assert out == [b"shared", b"mode=fast", b"s3cret400", b"read-only", b"No space left"], (out, st)
