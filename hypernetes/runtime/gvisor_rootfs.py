"""Root filesystems for the gvisor runtime: image disks unpacked once, and the pause rootfs.

The images room builds read-only erofs disks for QEMU guests. This host's kernel cannot mount
erofs, so runsc gets a directory instead: `fsck.erofs --extract` (erofs-utils 1.5) unpacks each
image once into ROOT/rootfs/<image hex>/, shared read-only by every container of that image.
Extraction goes to a temp dir that is renamed into place under a per-image flock, so concurrent
pods never extract twice and a crash never leaves a half-made rootfs in the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

FSCK = "fsck.erofs"
EXTRACT_TIMEOUT = 600.0


class RootfsError(Exception):
    pass


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_rootfs(cache: Path, image_id: str, disk: Path) -> Path:
    """The unpacked rootfs of `disk` under `cache`, extracting it on first use. Blocking."""
    name = image_id.split(":", 1)[-1]
    if not name.isalnum():
        raise RootfsError(f"unexpected image id {image_id!r}")
    target = cache / name
    if target.is_dir():
        return target
    with _locked(cache / ".locks" / f"{name}.lock"):
        if target.is_dir():
            return target
        if shutil.which(FSCK) is None:
            raise RootfsError(f"{FSCK} not found: install erofs-utils")
        tmp = Path(tempfile.mkdtemp(prefix=f".{name[:12]}-", dir=cache))
        try:
            proc = subprocess.run(
                [FSCK, f"--extract={tmp}", "--overwrite", "--preserve", str(disk)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=EXTRACT_TIMEOUT,
            )
            if proc.returncode != 0:
                text = (proc.stderr or proc.stdout).decode(errors="replace").strip()
                why = text.splitlines()[-1] if text else f"exit status {proc.returncode}"
                raise RootfsError(f"cannot unpack {disk}: {FSCK} says {why}")
            # mkdtemp made the top directory 0700; containers running as non-root need to walk it.
            os.chmod(tmp, 0o755)
            add_etc_mount_points(tmp)
            os.rename(tmp, target)
        except subprocess.TimeoutExpired:
            raise RootfsError(f"{FSCK} did not finish within {EXTRACT_TIMEOUT:.0f}s") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


# The files each container gets bind-mounted from its pod (gvisor.py `_etc_files`).
ETC_MOUNTS = ("hosts", "hostname", "resolv.conf")


def add_etc_mount_points(root: Path) -> None:
    """Create the files the pod's /etc bind mounts land on, where the image has none: runsc
    would otherwise create them in this shared tree when the first container starts. The
    image's symlinks are never followed (the image is the tenant's): if one is in the way, the
    tree is left as it is."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        etc = os.open(root / "etc", flags)
    except FileNotFoundError:
        os.mkdir(root / "etc", 0o755)
        etc = os.open(root / "etc", flags)
    except OSError:  # a symlink, or not a directory
        return
    create = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        for name in ETC_MOUNTS:
            with contextlib.suppress(FileExistsError):  # also a symlink of that name: not followed
                os.close(os.open(name, create, 0o644, dir_fd=etc))
    finally:
        os.close(etc)


def pause_elf() -> bytes:
    """A 129-byte static x86-64 program that sleeps in pause(2) forever.

    A pod's runsc sandbox is its first container and ends when that container's process ends,
    so every pod gets this as its root container; made here so no pause image is needed.
    """
    base, ehsize, phsize = 0x400000, 64, 56
    code = bytes.fromhex("b8220000000f05ebf7")  # mov eax, SYS_pause; syscall; jmp back
    size = ehsize + phsize + len(code)
    header = (
        b"\x7fELF\x02\x01\x01"
        + bytes(9)
        + struct.pack(
            "<HHIQQQIHHHHHH", 2, 62, 1, base + ehsize + phsize, ehsize, 0, 0, ehsize, phsize, 1, 0, 0, 0
        )
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + program + code


def ensure_pause(root: Path) -> Path:
    """A rootfs dir holding only /pause. Blocking."""
    target = root / "pause"
    binary = pause_elf()
    if (target / "pause").is_file() and (target / "pause").read_bytes() == binary:
        return target
    with _locked(root / ".locks" / "pause.lock"):
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / ".pause.tmp"
        tmp.write_bytes(binary)
        tmp.chmod(0o755)
        os.replace(tmp, target / "pause")
    return target
