"""Block volumes on real VMs under TCG: persistent volumes (raw and qcow2 files attached as
virtio-blk, never mounted on the host), raw block devices (volumeMode: Block), and emptyDirs on
the pod's scratch disk. The backing files are made here as the node agent would make them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.interface import (
    BlockDevice,
    ContainerSpec,
    ContainerState,
    DeviceSpec,
    ExecSpec,
    ExitStatus,
    MountSpec,
    PodRuntimeError,
    PodSpec,
    SandboxFailed,
    SandboxState,
    StartFailed,
    VolumeSpec,
)
from hypernetes.runtime.qemu import running_qemu
from tests.support.guests import qemu_processes_under
from tests.support.pods import collect, run

pytestmark = pytest.mark.slow


def ext4(path: Path, size: str = "32M", content: Path | None = None) -> Path:
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    extra = ["-d", str(content)] if content else []
    subprocess.run(["mkfs.ext4", "-F", "-q", *extra, str(path)], check=True, capture_output=True)
    return path


def debugfs_cat(image: Path, path: str) -> bytes:
    """Read a file out of an ext4 image on the host without mounting it."""
    return subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)], check=True, capture_output=True
    ).stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sh(name: str, image: str, script: str, **kw: object) -> ContainerSpec:
    return ContainerSpec(name=name, image=image, command=("sh", "-c", script), **kw)  # type: ignore[arg-type]


def block(name: str, path: Path, **kw: object) -> VolumeSpec:
    return VolumeSpec(name, "block", block=BlockDevice(str(path), **kw))  # type: ignore[arg-type]


async def output(rt: HyperVM, spec: PodSpec) -> tuple[ExitStatus, str]:
    status, out, err = await run(rt, spec)
    return status, (out + err).decode()


async def wait_for_line(rt: HyperVM, sandbox: str, container: str, line: bytes, timeout: float = 60) -> None:
    for _ in range(int(timeout * 10)):
        if line in [ln.data async for ln in rt.logs(sandbox, container)]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{container} never printed {line!r}")


async def test_data_survives_pod_deletion_and_qemu_kill(
    hypervm: HyperVM, busybox_ref: str, tmp_path: Path
) -> None:
    disk = ext4(tmp_path / "pv.raw")
    volumes = (block("data", disk, fs_type="ext4"),)
    mounts = (MountSpec("data", "/data"),)

    # written without an explicit sync: deleting the pod shuts the guest down, which syncs
    script = "head -c 1048576 /dev/urandom > /data/blob && sha256sum /data/blob"
    spec = PodSpec(
        id="pva", name="a", containers=(sh("w", busybox_ref, script, mounts=mounts),), volumes=volumes
    )
    status, out = await output(hypervm, spec)
    assert status == ExitStatus(code=0), out
    digest = out.split()[0]
    await hypervm.remove_sandbox("pva")

    # the same bytes in a new pod; then a write, a sync, and QEMU is SIGKILLed right after
    script = "sha256sum /data/blob; echo after-kill > /data/g; sync; echo synced; sleep 600"
    spec = PodSpec(
        id="pvb", name="b", containers=(sh("r", busybox_ref, script, mounts=mounts),), volumes=volumes
    )
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("pvb", "r")
    await wait_for_line(hypervm, "pvb", "r", b"synced")
    logged = [ln.data async for ln in hypervm.logs("pvb", "r")]
    assert logged[0].split()[0].decode() == digest
    pid = running_qemu(hypervm.root / "pvb")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    st = await asyncio.wait_for(hypervm.wait_container("pvb", "r"), 30)
    assert st.reason == "VMExited"
    assert (await hypervm.status("pvb")).state is SandboxState.FAILED
    await hypervm.remove_sandbox("pvb")

    # on the host, without mounting: replay the journal on a copy, read the file
    copy = tmp_path / "copy.raw"
    shutil.copyfile(disk, copy)
    fsck = subprocess.run(["e2fsck", "-fy", str(copy)], capture_output=True)
    assert fsck.returncode in (0, 1), fsck.stdout
    assert debugfs_cat(copy, "/g") == b"after-kill\n"

    # and in a third pod, whose kernel replays the journal itself
    script = "cat /data/g; sha256sum /data/blob"
    spec = PodSpec(
        id="pvc", name="c", containers=(sh("r", busybox_ref, script, mounts=mounts),), volumes=volumes
    )
    status, out = await output(hypervm, spec)
    assert status == ExitStatus(code=0), out
    assert out.split()[:2] == ["after-kill", digest]


async def test_read_only_volume_stays_read_only(hypervm: HyperVM, busybox_ref: str, tmp_path: Path) -> None:
    content = tmp_path / "content"
    content.mkdir()
    (content / "f").write_text("original\n")
    disk = ext4(tmp_path / "ro.raw", content=content)
    before = sha256(disk)
    # writes through the mount, a remount, and a device node made by hand for the disk: root in
    # the VM can do all of it, and QEMU (readonly=on) still refuses to write
    script = (
        "cat /data/f; echo x >> /data/f; echo rc=$?;"
        " mount -o remount,rw /data; echo y >> /data/f; echo rc2=$?;"
        ' for d in /sys/block/vd*; do [ "$(cat $d/serial)" = pv0 ] &&'
        " mknod /tmp/raw b $(cut -d: -f1 $d/dev) $(cut -d: -f2 $d/dev); done;"
        " blockdev --setrw /tmp/raw; dd if=/dev/zero of=/tmp/raw bs=4096 count=16 conv=fsync;"
        " echo dd=$?"
    )
    spec = PodSpec(
        id="ro",
        name="ro",
        volumes=(block("data", disk, fs_type="ext4", read_only=True),),
        containers=(sh("c", busybox_ref, script, mounts=(MountSpec("data", "/data"),)),),
    )
    status, out = await output(hypervm, spec)
    assert status == ExitStatus(code=0) and out.startswith("original\n"), out
    assert "Read-only file system" in out and "rc=1" in out and "rc2=1" in out, out
    assert "dd=1" in out, out
    # the guest kernel refused those writes; a guest kernel that would not is refused by QEMU
    # (QEMU gets the disk as an inherited fd in an fd set: the fd is read-only, and so is the node)
    pid = running_qemu(hypervm.root / "ro")
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    fds = [f for f in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(f) == str(disk)]
    assert fds and all(int(_fdinfo(pid, f.name)["flags"], 8) & os.O_ACCMODE == os.O_RDONLY for f in fds)
    fdsets = await hypervm._sandboxes["ro"].vm.qmp("query-fdsets")
    assert isinstance(fdsets, list)
    sets = {
        s["fdset-id"]
        for s in fdsets
        for f in s["fds"]
        if os.readlink(f"/proc/{pid}/fd/{f['fd']}") == str(disk)
    }
    specs = [json.loads(a) for a in args if a.startswith(b"{")]
    names = {f"/dev/fdset/{n}" for n in sets}
    assert [d["read-only"] for d in specs if d["file"]["filename"] in names] == [True]
    await hypervm.remove_sandbox("ro")
    assert sha256(disk) == before


async def test_qcow2_subpath_fsgroup_shared_by_two_containers(
    hypervm: HyperVM, busybox_ref: str, tmp_path: Path
) -> None:
    raw = ext4(tmp_path / "base.raw")
    disk = tmp_path / "pv.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)], check=True)
    writer = sh(
        "writer",
        busybox_ref,
        "id -G; echo from-writer > /sub/f && stat -c '%g %A' /data /data/a/b; sleep 600",
        user="1000:1000",
        mounts=(MountSpec("shared", "/data"), MountSpec("shared", "/sub", sub_path="a/b")),
    )
    reader = sh(
        "reader",
        busybox_ref,
        "while [ ! -s /in/f ]; do sleep 0.1; done; cat /in/f; touch /in/x; echo rc=$?",
        user="1000:1000",
        mounts=(MountSpec("shared", "/in", read_only=True, sub_path="a/b"),),
    )
    spec = PodSpec(
        id="qc",
        name="qc",
        containers=(writer, reader),
        fs_group=2000,
        volumes=(block("shared", disk, format="qcow2", fs_type="ext4"),),
    )
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("qc", "writer")
    await hypervm.start_container("qc", "reader")
    st = await asyncio.wait_for(hypervm.wait_container("qc", "reader"), 60)
    out = b"\n".join([ln.data async for ln in hypervm.logs("qc", "reader")]).decode()
    assert st.exit == ExitStatus(code=0), out
    assert out.startswith("from-writer\n") and "Read-only file system" in out and "rc=1" in out, out
    groups, root, sub = [ln.data.decode() async for ln in hypervm.logs("qc", "writer")]
    assert "2000" in groups.split() and "1000" in groups.split()
    assert root == "2000 drwxrwsr-x"  # fsGroup: group-owned, setgid, group rwx
    assert sub.startswith("2000 drwxrws")
    await hypervm.remove_sandbox("qc")

    # the write reached the qcow2 file
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(back)], check=True)
    assert debugfs_cat(back, "/a/b/f") == b"from-writer\n"


async def test_raw_block_devices(hypervm: HyperVM, busybox_ref: str, tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw.img", tmp_path / "ro.img"
    with open(rw, "wb") as f:
        f.truncate(8 << 20)
    ro.write_bytes(b"readonly-bytes".ljust(1 << 20, b"\0"))
    # as uid 1000, through fsGroup: the nodes are group 2000, rw (or r for the read-only one)
    script = (
        "ls -l /dev/xvda /mnt/dev/ro | cut -c1-10; stat -c %g /dev/xvda;"
        " printf payload | dd of=/dev/xvda bs=512 seek=1 conv=fsync 2>/dev/null; echo w=$?;"
        " dd if=/dev/xvda bs=512 skip=1 count=1 2>/dev/null | head -c 7; echo;"
        " head -c 14 /mnt/dev/ro; echo; printf x | dd of=/mnt/dev/ro conv=fsync 2>/dev/null; echo wro=$?"
    )
    devices = (DeviceSpec("blk", "/dev/xvda"), DeviceSpec("blkro", "/mnt/dev/ro"))
    c = sh("c", busybox_ref, script, devices=devices, user="1000:1000")
    spec = PodSpec(
        id="rb",
        name="rb",
        containers=(c,),
        fs_group=2000,
        volumes=(block("blk", rw), block("blkro", ro, read_only=True)),
    )
    status, out = await output(hypervm, spec)
    assert status == ExitStatus(code=0)
    expected = ["brw-rw----", "br--r-----", "2000", "w=0", "payload", "readonly-bytes", "wro=1"]
    assert out.splitlines() == expected, out
    await hypervm.remove_sandbox("rb")
    assert rw.read_bytes()[512:519] == b"payload"
    assert ro.read_bytes()[:14] == b"readonly-bytes" and ro.stat().st_size == 1 << 20


async def test_emptydir_scratch_disk(hypervm: HyperVM, busybox_ref: str) -> None:
    script = (
        "stat -f -c %T /s /m /b; stat -c %a /s; ls -A /s | wc -l; df -k /b | tail -1 | awk '{print $2}';"
        " dd if=/dev/zero of=/s/fill bs=1M count=8 2>&1 | grep -o 'No space left on device';"
        " du -k /s/fill | cut -f1; dd if=/dev/zero of=/m/fill bs=1M count=2 2>&1 | grep -o 'No space left'"
    )
    mounts = (MountSpec("scratch", "/s"), MountSpec("mem", "/m"), MountSpec("big", "/b"))
    spec = PodSpec(
        id="ed",
        name="ed",
        containers=(sh("c", busybox_ref, script, mounts=mounts),),
        volumes=(
            VolumeSpec("scratch", "emptyDir", size_limit=4 << 20),
            VolumeSpec("mem", "emptyDir", size_limit=1 << 20, medium="Memory"),
            VolumeSpec("big", "emptyDir"),
        ),
    )
    status, out = await output(hypervm, spec)
    assert status == ExitStatus(code=0), out
    lines = out.splitlines()
    assert lines[:3] == ["ext2/ext3", "tmpfs", "ext2/ext3"], out
    assert lines[3:5] == ["777", "0"], out  # an emptyDir's mode, no lost+found
    assert 900 << 10 < int(lines[5]) <= 1 << 20, out  # the default size, 1 GiB, in KiB
    assert lines[6] == "No space left on device", out
    assert int(lines[7]) <= 4096, out
    assert lines[8] == "No space left", out
    scratch = hypervm.root / "ed" / "scratch.img"
    assert scratch.stat().st_blocks * 512 < 32 << 20  # sparse: a 1 GiB emptyDir costs little
    await hypervm.remove_sandbox("ed")
    assert not scratch.exists()


async def test_adopted_sandbox_keeps_its_disks(hypervm: HyperVM, busybox_ref: str, tmp_path: Path) -> None:
    disk = ext4(tmp_path / "pv.raw")
    mounts = (MountSpec("data", "/data"), MountSpec("scratch", "/s"))
    first = sh("first", busybox_ref, "echo pv > /data/x; echo sc > /s/y; sleep 600", mounts=mounts)
    late = sh("late", busybox_ref, "cat /data/x /s/y; df -k /s | tail -1 | awk '{print $2}'", mounts=mounts)
    spec = PodSpec(
        id="ad",
        name="ad",
        containers=(first, late),
        volumes=(block("data", disk, fs_type="ext4"), VolumeSpec("scratch", "emptyDir", size_limit=8 << 20)),
    )
    await hypervm.create_sandbox(spec)
    await hypervm.start_container("ad", "first")
    # QEMU's image lock: a second VM cannot open a volume another one is writing
    other = PodSpec(id="ad2", name="ad2", containers=(late,), volumes=spec.volumes)
    with pytest.raises(SandboxFailed) as failed:
        await hypervm.create_sandbox(other)
    assert str(failed.value).startswith("QEMU could not start the VM: ")
    assert 'Failed to get "write" lock' in str(failed.value)
    await hypervm.detach_all()

    again = HyperVM(hypervm.root.parent, hypervm.images, hypervm.kernels, die_with_parent=True)
    assert [s.id for s in await again.adopt()] == ["ad"]
    # a container started after adoption finds the same volume and scratch partition
    proc = await again.start_container("ad", "late", attach=True)
    assert proc is not None
    out, err = await asyncio.wait_for(collect(proc), 60)
    lines = out.decode().split()
    assert lines[:2] == ["pv", "sc"] and int(lines[2]) <= 8 << 10, (out, err)
    proc = await again.exec("ad", "first", ExecSpec(command=("cat", "/data/x")))
    assert await collect(proc) == (b"pv\n", b"")
    await again.remove_sandbox("ad")
    assert not qemu_processes_under(tmp_path)
    assert debugfs_cat(disk, "/x") == b"pv\n"  # shut down cleanly: nothing left in the journal


async def test_bad_volumes_are_refused_clearly(hypervm: HyperVM, busybox_ref: str, tmp_path: Path) -> None:
    good = ext4(tmp_path / "good.raw")
    garbage = tmp_path / "garbage.raw"
    garbage.write_bytes(os.urandom(1 << 20))
    mounts = (MountSpec("v", "/v"),)

    async def refused(
        volume: VolumeSpec,
        match: str,
        *,
        devices: tuple[DeviceSpec, ...] = (),
        exc: type[Exception] = SandboxFailed,
    ) -> None:
        c = sh("c", busybox_ref, "true", mounts=() if devices else mounts, devices=devices)
        with pytest.raises(exc, match=match):
            await hypervm.create_sandbox(PodSpec(id="bad", name="bad", containers=(c,), volumes=(volume,)))

    await refused(
        block("v", tmp_path / "missing.raw", fs_type="ext4"),
        r"volume v: backing file .*missing.raw: No such file or directory",
    )
    await refused(
        block("v", garbage, fs_type="ext4"), r"holds no ext4 filesystem .*not formatted, or corrupt"
    )
    await refused(block("v", good, fs_type="ext4", format="qcow2"), r"is not a qcow2 image")
    await refused(block("v", good, fs_type="xfs"), r"fsType 'xfs' is not supported by the guest kernel")
    await refused(block("v", good, fs_type="ext4,rw;x"), r"fsType 'ext4,rw;x' is not supported")
    await refused(block("v", good, fs_type="ext4", format="vmdk"), r"unknown disk format 'vmdk'")
    await refused(
        block("v", good), r"raw block device .* volumeDevices, not volumeMounts", exc=PodRuntimeError
    )
    await refused(
        block("v", good, fs_type="ext4"),
        r"volumeDevices need a raw block volume",
        devices=(DeviceSpec("v", "/dev/x"),),
        exc=PodRuntimeError,
    )
    await refused(
        block("v", good), r"bad devicePath", devices=(DeviceSpec("v", "/dev/../x"),), exc=PodRuntimeError
    )
    # more disks than the micro-VM has virtio-mmio transports for
    files = [ext4(tmp_path / f"d{i}.raw", "4M") for i in range(6)]
    c = sh("c", busybox_ref, "true")
    with pytest.raises(
        SandboxFailed,
        match=r"needs 7 virtio disks \(1 image disk, 6 persistent volumes\) "
        r"but a micro-VM without ACPI has room for 5",
    ):
        await hypervm.create_sandbox(
            PodSpec(
                id="bad",
                name="bad",
                containers=(c,),
                volumes=tuple(block(f"v{i}", f) for i, f in enumerate(files)),
            )
        )
    assert not (hypervm.root / "bad").exists()

    # a filesystem the host cannot tell is broken (its group descriptors zeroed): the guest's
    # mount fails and the container does not start, with the agent's reason
    broken = ext4(tmp_path / "broken.raw")
    with open(broken, "r+b") as f:
        f.seek(1024 + 24)  # s_log_block_size: the descriptors are in the block after the superblock's
        size = 1024 << int.from_bytes(f.read(4), "little")
        f.seek(max(2048, size))
        f.write(bytes(size))
    spec = PodSpec(
        id="br",
        name="br",
        containers=(sh("c", busybox_ref, "true", mounts=mounts),),
        volumes=(block("v", broken, fs_type="ext4"),),
    )
    await hypervm.create_sandbox(spec)
    with pytest.raises(StartFailed, match=r"container c: mount /dev/vd. on /run/hn/disks/pv0 \(ext4\)"):
        await hypervm.start_container("br", "c")
    st = await hypervm.status("br")
    assert st.containers[0].state is ContainerState.EXITED and st.containers[0].reason == "StartError"


def _fdinfo(pid: int, fd: str) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
