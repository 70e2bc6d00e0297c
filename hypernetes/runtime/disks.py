"""The disks of a pod VM: which file becomes which virtio-blk disk, and the disks made for it.

A pod VM's disks, by serial: one read-only erofs disk per image (`img0`, `img1`, ...; built and
cached by the images room, shared by every pod), one per persistent volume (`pv0`, ...; a file
or device someone else owns, checked here before QEMU opens it), and the pod's own scratch disk
(`scratch`: a sparse GPT disk with one ext4 partition per disk-backed emptyDir). The scratch disk
is made in the sandbox directory with mode 0600 (it holds the tenant's data), never mounted on the
host, and deleted when the VM stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import stat
import struct
import subprocess
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path

from hypernetes.runtime.images import Image
from hypernetes.runtime.interface import PodSpec, SandboxFailed, VolumeSpec
from hypernetes.runtime.paths import open_private
from hypernetes.runtime.podsize import DEFAULT_EMPTYDIR_SIZE
from hypernetes.runtime.qemu import Disk, disk_slots

# serial of the read-only erofs disk that held the pod's file volumes in VMs started by older
# versions (adopted ones); file volumes are now written into the guest (WRITE_FILES)
VOLUME_DISK = "vol0"
VOLUME_DISK_FILE = "volumes.erofs"  # the vol0 disk of such a VM; held the pod's secrets and token
SCRATCH_DISK = "scratch"  # serial of the pod's scratch disk: one partition per disk emptyDir
SCRATCH_FILE = "scratch.img"
RBD_DIR = "rbd"  # in the sandbox directory: each RBD disk's client conf and key (rbd_files)
# Filesystems a block volume may have: every kernel we boot has ext4 (kernels.DRIVERS), which
# also mounts ext3 and ext2; nothing else is built in, nor loaded from a module.
FS_TYPES = ("ext4", "ext3", "ext2")
MIB = 1 << 20

VolumeDisks = dict[str, tuple[str, int]]  # volume name -> (disk serial, partition or 0)


def image_disks(images: Iterable[Image]) -> dict[str, Disk]:
    """One read-only disk per distinct image, by image id, in the order first used."""
    disks: dict[str, Disk] = {}
    for image in images:
        if image.id not in disks:
            disks[image.id] = Disk(image.disk, f"img{len(disks)}")
    return disks


def scratch_volumes(pod: PodSpec) -> list[VolumeSpec]:
    """The emptyDirs on the scratch disk (medium "Memory" ones are tmpfs in the guest)."""
    return [v for v in pod.volumes if v.kind == "emptyDir" and v.medium != "Memory"]


async def scratch_disk(sandbox_dir: Path, volumes: list[VolumeSpec]) -> tuple[Disk, VolumeDisks]:
    """Build the pod's scratch disk in its sandbox directory: the disk, and which partition
    holds which emptyDir."""
    path = sandbox_dir / SCRATCH_FILE
    sizes = [v.size_limit or DEFAULT_EMPTYDIR_SIZE for v in volumes]
    try:
        await asyncio.to_thread(build_scratch_disk, path, sizes)
        cache = "none" if direct_io(path) else "writeback"
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxFailed(f"cannot build the pod's scratch disk: {cmd_error(e)}") from e
    # it dies with the VM: the guest's flushes need not reach the host's disk
    disk = Disk(path, SCRATCH_DISK, readonly=False, cache=cache, flush=False)
    return disk, {v.name: (SCRATCH_DISK, i + 1) for i, v in enumerate(volumes)}


def remove_made_disks(sandbox_dir: Path) -> None:
    """Delete the disks made for a VM (its data): once it has stopped."""
    for name in (VOLUME_DISK_FILE, SCRATCH_FILE):
        (sandbox_dir / name).unlink(missing_ok=True)


def block_disks(pod: PodSpec) -> tuple[VolumeDisks, list[Disk]]:
    """The disks of the pod's block volumes (serials pv0, pv1, ...), each backing file checked
    first, so that a missing or unformatted one fails here with a clear message."""
    serials: VolumeDisks = {}
    disks: list[Disk] = []
    seen: dict[str, str] = {}
    for v in pod.volumes:
        if v.kind != "block":
            continue
        b = v.block
        if b is None:
            raise SandboxFailed(f"volume {v.name}: a block volume without a device")
        if b.rbd is not None:
            if b.fs_type and b.fs_type not in FS_TYPES:
                raise SandboxFailed(f"volume {v.name}: fsType {b.fs_type!r} is not supported")
            serial = f"pv{len(disks)}"
            serials[v.name] = (serial, 0)
            # the path is made absolute by rbd_files once the sandbox directory exists
            disks.append(
                Disk(
                    Path(f"{RBD_DIR}/{serial}.conf"),
                    serial,
                    readonly=b.read_only,
                    cache="none",
                    discard=True,
                    rbd_pool=b.rbd.pool,
                    rbd_image=b.rbd.image,
                    rbd_user=b.rbd.user,
                )
            )
            continue
        if b.format not in ("raw", "qcow2"):
            raise SandboxFailed(f"volume {v.name}: unknown disk format {b.format!r} (raw or qcow2)")
        if b.fs_type and b.fs_type not in FS_TYPES:
            raise SandboxFailed(
                f"volume {v.name}: fsType {b.fs_type!r} is not supported by the "
                f"guest kernel (supported: {', '.join(FS_TYPES)})"
            )
        path = Path(b.path)
        if not path.is_absolute():
            raise SandboxFailed(f"volume {v.name}: backing file {b.path!r} is not an absolute path")
        try:
            key = str(path.resolve(strict=True))
        except OSError as e:
            raise SandboxFailed(f"volume {v.name}: backing file {path}: {e.strerror or e}") from e
        if key in seen:
            raise SandboxFailed(f"volumes {seen[key]} and {v.name} use the same backing file {path}")
        seen[key] = v.name
        cache = check_backing_file(v.name, path, b.format, b.fs_type)
        serial = f"pv{len(disks)}"
        serials[v.name] = (serial, 0)
        disks.append(Disk(path, serial, readonly=b.read_only, cache=cache, format=b.format, discard=True))
    return serials, disks


def rbd_files(sandbox_dir: Path, pod: PodSpec, disks: list[Disk], uid: int | None) -> list[Disk]:
    """Write each RBD disk's client conf and cephx key into sandbox/rbd (0700; the key 0400,
    owned by the VM's uid when jailed, so only that QEMU reads it); the disks pointing at them."""
    images = {(b.rbd.pool, b.rbd.image): b.rbd for v in pod.volumes if (b := v.block) and b.rbd}
    if not any(d.rbd_image for d in disks):
        return disks
    folder = sandbox_dir / RBD_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    out = []
    for d in disks:
        if not d.rbd_image:
            out.append(d)
            continue
        img = images[(d.rbd_pool, d.rbd_image)]
        d = dataclasses.replace(d, path=folder / f"{d.serial}.conf")
        out.append(d)
        for path, text in ((d.path, ceph_conf_text(img.monitors)), (d.path.with_suffix(".key"), img.key)):
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o400)
            try:
                os.write(fd, text.encode())
                if uid is not None:
                    os.fchown(fd, uid, uid)
            finally:
                os.close(fd)
    if uid is not None:
        os.chown(folder, uid, uid)  # the jail binds it; nothing else reads it
    return out


def ceph_conf_text(monitors: str) -> str:
    """librbd's client settings in QEMU: the monitors, and timeouts so that an unreachable
    cluster becomes an I/O error the guest sees (werror=report) instead of a VM whose I/O hangs
    forever; no log files (the jail has nowhere to write)."""
    return (
        "[global]\n"
        f"mon host = {monitors}\n"
        "client mount timeout = 15\n"
        "rados mon op timeout = 15\n"
        "rados osd op timeout = 30\n"
        "log to stderr = false\n"
        "err to stderr = true\n"
        "log file = \n"
        "admin socket = \n"
    )


def direct_io(path: Path) -> bool:
    """Whether the file's filesystem takes O_DIRECT (tmpfs does not)."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        return False
    return True


def check_backing_file(name: str, path: Path, fmt: str, fs_type: str) -> str:
    """Fail clearly on a file QEMU or the guest could not use; return its cache mode: "none"
    (O_DIRECT: no second copy of a tenant's data in the host's page cache), or "writeback"
    where the host filesystem has no O_DIRECT. Either way the guest's flushes are fdatasync."""
    try:
        st = os.stat(path)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise SandboxFailed(f"volume {name}: backing file {path} is not a file or block device")
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0x438)  # ext2/3/4 superblock (at 1024) magic
            magic = f.read(2)
        cache = "none" if direct_io(path) else "writeback"
    except OSError as e:
        raise SandboxFailed(f"volume {name}: backing file {path}: {e.strerror or e}") from e
    if fmt == "qcow2" and head != b"QFI\xfb":
        raise SandboxFailed(f"volume {name}: backing file {path} is not a qcow2 image")
    if fmt == "raw" and fs_type.startswith("ext") and magic != b"\x53\xef":
        raise SandboxFailed(
            f"volume {name}: backing file {path} holds no {fs_type} filesystem "
            "(no ext2/3/4 superblock): it is not formatted, or corrupt"
        )
    return cache


def check_disk_count(images: int, blocks: int, scratch: bool, acpi: bool, nics: int = 0) -> None:
    slots = disk_slots(acpi, nics)
    needed = images + blocks + scratch
    if needed <= slots:
        return
    parts = [f"{images} image disk{'s' * (images != 1)}"]
    if blocks:
        parts.append(f"{blocks} persistent volume{'s' * (blocks != 1)}")
    if scratch:
        parts.append("1 scratch disk for emptyDirs")
    nic = "; its network interface takes one more" if nics else ""
    raise SandboxFailed(
        f"the pod needs {needed} virtio disks ({', '.join(parts)}) but a micro-VM "
        f"{'with' if acpi else 'without'} ACPI has room for {slots} (virtio-mmio transports{nic})"
    )


def build_scratch_disk(path: Path, sizes: list[int]) -> None:
    """A sparse disk with a GPT and one ext4 partition per emptyDir, each exactly its size (in
    whole MiB, at least 1 MiB), so that a full emptyDir is ENOSPC in the guest. Made on the host
    with mkfs on the file, never mounted here. No journal: the data dies with the VM."""
    parts: list[tuple[int, int]] = []  # (offset, size) in bytes
    offset = MIB  # partitions aligned on 1 MiB, as partitioning tools do
    for size in sizes:
        size = max(MIB, -(-size // MIB) * MIB)
        parts.append((offset, size))
        offset += size
    total = offset + MIB  # the backup GPT lives in the last MiB
    with os.fdopen(open_private(path), "wb") as f:
        f.truncate(total)
    for start, size in parts:
        # mkfs's discard punches the (already sparse) range, which lets it skip zeroing the
        # inode tables: the file stays a few MiB however large the emptyDir
        subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-m",
                "0",
                "-O",
                "^has_journal",
                "-E",
                f"offset={start},root_owner=0:0",
                str(path),
                f"{size // 1024}k",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    primary, backup = gpt_tables(total, parts)
    with open(path, "r+b") as f:
        f.write(primary)
        f.seek(total - len(backup))
        f.write(backup)


def gpt_tables(total: int, parts: list[tuple[int, int]]) -> tuple[bytes, bytes]:
    """A protective MBR, GPT header and entries (for the start of a disk of `total` bytes), and
    the backup entries and header (for its end)."""
    sector, nentries, entry_size = 512, 128, 128
    last = total // sector - 1
    entry_sectors = nentries * entry_size // sector
    linux_fs = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le
    entries = bytearray(nentries * entry_size)
    for i, (start, size) in enumerate(parts):
        struct.pack_into(
            "<16s16sQQQ72s",
            entries,
            i * entry_size,
            linux_fs,
            uuid.uuid4().bytes_le,
            start // sector,
            (start + size) // sector - 1,
            0,
            "emptydir".encode("utf-16-le"),
        )
    disk_guid, entries_crc = uuid.uuid4().bytes_le, zlib.crc32(entries)

    def header(my_lba: int, alt_lba: int, entries_lba: int) -> bytes:
        h = bytearray(
            struct.pack(
                "<8sIIIIQQQQ16sQIII",
                b"EFI PART",
                0x10000,
                92,
                0,
                0,
                my_lba,
                alt_lba,
                2 + entry_sectors,
                last - 1 - entry_sectors,
                disk_guid,
                entries_lba,
                nentries,
                entry_size,
                entries_crc,
            )
        )
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        return bytes(h).ljust(sector, b"\0")

    mbr = bytearray(sector)
    struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\0\2\0", 0xEE, b"\xff\xff\xff", 1, min(last, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    primary = bytes(mbr) + header(1, last, 2) + bytes(entries)
    backup = bytes(entries) + header(last, 1, last - entry_sectors)
    return primary, backup


def cmd_error(e: OSError | subprocess.SubprocessError) -> str:
    if isinstance(e, subprocess.CalledProcessError):
        return (e.stderr or b"").decode(errors="replace").strip() or str(e)
    return str(e)
