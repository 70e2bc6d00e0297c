"""The `local` volume backend: one sparse disk file per PersistentVolume, on the node that owns it.

The host never mounts a volume: a Filesystem volume gets its filesystem with `mkfs` run on the
file itself, and grows offline with `resize2fs` on the file (or on a raw copy of a qcow2 file).
The VM sees the file as a virtio-blk disk. Layout under `root` (the node's DATA/volumes):

    <handle>.raw | <handle>.qcow2   a volume; only ever appears complete (made under .work/, renamed)
    .work/<digest>.<n>              a volume being made or grown; a leftover is a crash's, removed
                                    by the next operation on that handle
    .locks/<handle>                 flock: one operation per volume at a time, across threads and
                                    processes
    .resizing/<handle>              a raw volume's file has grown but its filesystem not yet: the
                                    next `grow` finishes the job

Every method is synchronous (subprocesses, fsync): call it from a thread. Failures (disk full,
I/O errors, a tool's complaint) raise `VolumeError` with a one-line message fit for an event.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

HANDLE = re.compile(r"[a-z0-9][a-z0-9.-]{0,252}")
FORMATS = ("raw", "qcow2")
# ext2/3/4 only: resize2fs grows them offline on a file; xfs and btrfs grow only when mounted,
# and the host never mounts a tenant's filesystem
FS_TYPES = ("ext4", "ext3", "ext2")
ALIGN = 4096  # sizes round up to whole 4 KiB blocks: what ext4 and qcow2 allocate in
NAME_MAX = 255
_QCOW2_MAGIC = b"QFI\xfb"


class VolumeError(Exception):
    """A volume could not be made, grown, read or deleted; str() is one line for an event."""


def check_handle(handle: str, fmt: str = "raw") -> None:
    """Handles come from API objects: anything that could name another file is refused."""
    if not isinstance(handle, str) or not HANDLE.fullmatch(handle) or ".." in handle:
        raise VolumeError(
            f"invalid volume handle {handle!r}: it must match [a-z0-9][a-z0-9.-]{{0,252}} "
            "and not contain '..'"
        )
    if fmt not in FORMATS:
        raise VolumeError(f"volume {handle}: format {fmt!r} is not supported (raw or qcow2)")
    if len(handle) + 1 + len(fmt) > NAME_MAX:
        raise VolumeError(f"volume handle {handle[:32]}...: too long for a {fmt} file name")


def check_fs_type(fs_type: str) -> None:
    if fs_type not in FS_TYPES:
        raise VolumeError(
            f"fsType {fs_type!r} is not supported for local volumes (supported: {', '.join(FS_TYPES)})"
        )


def align(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _human(n: int) -> str:
    for unit, scale in (
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class LocalVolumes:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- queries -------------------------------------------------------------------------------

    def path(self, handle: str, fmt: str = "raw") -> Path:
        check_handle(handle, fmt)
        return self.root / f"{handle}.{fmt}"

    def find(self, handle: str) -> Path | None:
        """The volume's file in whichever format it was made, or None."""
        for fmt in FORMATS:
            p = self.path(handle, fmt)
            if p.exists():
                return p
        return None

    def capacity(self, handle: str, fmt: str | None = None) -> int:
        """The disk's size in bytes as the VM sees it (the virtual size for qcow2)."""
        path = self.path(handle, fmt) if fmt else self.find(handle)
        if path is None or not path.exists():
            raise VolumeError(f"volume {handle} does not exist on this node")
        with self._errors(handle, "read"):
            return _disk_size(path)

    def allocated(self, handle: str) -> int:
        """Bytes the file really takes on the host (sparse files take less than their size)."""
        path = self.find(handle)
        return 0 if path is None else path.stat().st_blocks * 512

    def handles(self) -> list[str]:
        return sorted(
            p.name.rsplit(".", 1)[0]
            for p in self.root.glob("*.*")
            if p.suffix[1:] in FORMATS and HANDLE.fullmatch(p.name.rsplit(".", 1)[0])
        )

    # --- changes -------------------------------------------------------------------------------

    def ensure(
        self, handle: str, size_bytes: int, fs_type: str = "ext4", fmt: str = "raw", block_mode: bool = False
    ) -> Path:
        """The volume's file, made if missing: sparse, with a filesystem unless block_mode.
        An existing volume is returned as it is (see `grow`)."""
        check_handle(handle, fmt)
        if not block_mode:
            check_fs_type(fs_type or "ext4")
        if size_bytes <= 0:
            raise VolumeError(f"volume {handle}: invalid size {size_bytes}")
        size = align(size_bytes)
        path = self.path(handle, fmt)
        with self._locked(handle):
            if path.exists():
                return path
            self._check_free(size, f"create volume {handle} ({_human(size)})")
            raw, out = self._tmp(handle, 0), self._tmp(handle, 1)
            try:
                with self._errors(handle, "create"):
                    if block_mode and fmt == "qcow2":
                        self._run(handle, "qemu-img", "create", "-q", "-f", "qcow2", str(out), str(size))
                    else:
                        _sparse(raw, size)
                        if not block_mode:
                            self._mkfs(handle, raw, fs_type or "ext4")
                        if fmt == "qcow2":  # mkfs writes raw: convert (zeroes stay unallocated)
                            self._run(
                                handle,
                                "qemu-img",
                                "convert",
                                "-q",
                                "-f",
                                "raw",
                                "-O",
                                "qcow2",
                                str(raw),
                                str(out),
                            )
                        else:
                            os.rename(raw, out)
                    os.chmod(out, 0o600)  # tenant data (qemu-img makes files by the umask)
                    _fsync(out)
                    os.rename(out, path)
                    _fsync(self.root)
            finally:
                _unlink(raw, out)
        log.info(
            "created volume %s (%s, %s, %s)",
            handle,
            _human(size),
            fmt,
            "block" if block_mode else fs_type or "ext4",
        )
        self._warn_overcommit()
        return path

    def grow(self, handle: str, new_size: int, fs_type: str = "", fmt: str = "raw") -> bool:
        """Grow the volume (never shrink) and, when fs_type is given, its filesystem, offline:
        no VM may have it attached. True if anything changed. A grow a crash interrupted is
        finished by the next call, even when the size asked is already there."""
        check_handle(handle, fmt)
        if fs_type:
            check_fs_type(fs_type)
        target = align(new_size)
        path = self.path(handle, fmt)
        marker = self.root / ".resizing" / handle
        with self._locked(handle):
            if not path.exists():
                raise VolumeError(f"volume {handle} does not exist on this node")
            with self._errors(handle, "grow"):
                current = _disk_size(path)
                pending = fmt == "raw" and bool(fs_type) and marker.exists()
                if target <= current and not pending:
                    if target < current:
                        log.info(
                            "volume %s is %d bytes, larger than the %d asked: volumes never shrink",
                            handle,
                            current,
                            target,
                        )
                    return False
                if fmt == "raw":
                    if target > current:
                        self._check_free(target - current, f"grow volume {handle} to {_human(target)}")
                        if fs_type:
                            marker.touch()
                            _fsync(marker.parent)
                        try:
                            os.truncate(path, target)
                        except OSError:
                            marker.unlink(missing_ok=True)  # nothing changed
                            raise
                        _fsync(path)
                    if fs_type:
                        self._resize_fs(handle, path)
                        marker.unlink(missing_ok=True)
                elif not fs_type:
                    self._check_free(target - current, f"grow volume {handle} to {_human(target)}")
                    self._run(handle, "qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(target))
                else:
                    self._grow_qcow2_fs(handle, path, target, current)
        log.info("grew volume %s from %s to %s", handle, _human(current), _human(max(target, current)))
        self._warn_overcommit()
        return True

    def delete(self, handle: str) -> bool:
        """Remove the volume's file(s) and leftovers; True if a volume file was there."""
        check_handle(handle)
        with self._locked(handle):
            found = False
            with self._errors(handle, "delete"):
                for fmt in FORMATS:
                    p = self.root / f"{handle}.{fmt}"
                    if p.exists():
                        p.unlink()
                        found = True
                _unlink(self.root / ".resizing" / handle, *self._work_files(handle))
                _fsync(self.root)
        if found:
            log.info("deleted volume %s", handle)
        return found

    # --- internals -----------------------------------------------------------------------------

    def _mkfs(self, handle: str, path: Path, fs_type: str) -> None:
        # -m 0: no blocks reserved for root, so the tenant gets the capacity asked for (as
        # kubelet formats). The file is new and sparse, so it reads as zeroes: mke2fs need not
        # write the journal's zeroes (lazy_journal_init), and its discard (the default) lets it
        # skip zeroing the inode tables: a 100 GiB volume starts at about 5 MiB on the host.
        self._run(handle, f"mkfs.{fs_type}", "-F", "-q", "-m", "0", "-E", "lazy_journal_init=1", str(path))

    def _resize_fs(self, handle: str, path: Path) -> None:
        # resize2fs refuses a filesystem that was not checked since it was last mounted
        self._run(handle, "e2fsck", "-f", "-p", str(path), ok_codes=(0, 1, 2))
        self._run(handle, "resize2fs", str(path))

    def _grow_qcow2_fs(self, handle: str, path: Path, target: int, current: int) -> None:
        """resize2fs needs a raw disk: grow a raw copy and convert it back, then swap the files,
        so a crash leaves either the old volume or the new one."""
        used = path.stat().st_blocks * 512
        self._check_free(target - current + 2 * used, f"grow volume {handle} to {_human(target)}")
        raw, out = self._tmp(handle, 0), self._tmp(handle, 1)
        try:
            self._run(handle, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(path), str(raw))
            os.truncate(raw, target)
            self._resize_fs(handle, raw)
            self._run(handle, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out))
            os.chmod(out, 0o600)
            _fsync(out)
            os.rename(out, path)
            _fsync(self.root)
        finally:
            _unlink(raw, out)

    def _run(self, handle: str, *cmd: str, ok_codes: tuple[int, ...] = (0,)) -> None:
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL
            )
        except FileNotFoundError:
            raise VolumeError(f"volume {handle}: {cmd[0]} is not installed on this node") from None
        if proc.returncode not in ok_codes:
            said = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
            why = said[-1] if said else f"exit code {proc.returncode}"
            if proc.returncode < 0:  # e.g. SIGXFSZ: "File size limit exceeded"
                sig = -proc.returncode
                why = f"{signal.strsignal(sig) or 'killed by a signal'} (signal {sig})"
            # the work file's name means nothing to whoever reads the event
            why = re.sub(re.escape(str(self.root / ".work")) + r"/[0-9a-f]+\.\d", "the volume", why)
            raise VolumeError(f"volume {handle}: {cmd[0]} failed: {why}"[:1000])

    def _check_free(self, needed: int, what: str) -> None:
        """Thin provisioning has a floor: the whole new size must be free when it is asked for,
        so one volume can always be filled at that moment (see docs/volumes.md, Nodes)."""
        self._dirs()
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        if free < needed:
            raise VolumeError(
                f"cannot {what}: only {_human(free)} free on the node's volume filesystem ({self.root})"
            )

    def _warn_overcommit(self) -> None:
        """Sparse volumes can together promise more than the disk holds: say so in the log."""
        with contextlib.suppress(OSError):
            promised = 0
            for handle in self.handles():
                path = self.find(handle)
                if path is not None:
                    promised += max(_disk_size(path) - path.stat().st_blocks * 512, 0)
            st = os.statvfs(self.root)
            free = st.f_bavail * st.f_frsize
            if promised > free:
                log.warning(
                    "local volumes are overcommitted: %s not yet written, %s free on %s",
                    _human(promised),
                    _human(free),
                    self.root,
                )

    def _dirs(self) -> None:
        for d in (self.root, self.root / ".locks", self.root / ".work", self.root / ".resizing"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)  # also one an older version made by the umask: tenants' disks

    def _tmp(self, handle: str, n: int) -> Path:
        # named by a digest (a 253-character handle would not fit) and fixed per handle: the
        # handle's lock is held, so whatever file has this name is a dead operation's leftover
        p = self.root / ".work" / f"{hashlib.sha256(handle.encode()).hexdigest()[:24]}.{n}"
        _unlink(p)
        return p

    def _work_files(self, handle: str) -> list[Path]:
        digest = hashlib.sha256(handle.encode()).hexdigest()[:24]
        return list((self.root / ".work").glob(f"{digest}.*"))

    @contextlib.contextmanager
    def _locked(self, handle: str) -> Iterator[None]:
        """flock on .locks/<handle>. When no volume of that handle is left (deleted, or never
        made), the lock file is removed before it is released, so lock files do not pile up; a
        waiter then finds its file was unlinked and locks a new one."""
        with self._errors(handle, "lock"):
            self._dirs()
        lock = self.root / ".locks" / handle
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                        break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield
        finally:
            if not any((self.root / f"{handle}.{fmt}").exists() for fmt in FORMATS):
                lock.unlink(missing_ok=True)
            os.close(fd)

    @contextlib.contextmanager
    def _errors(self, handle: str, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            why = e.strerror or str(e)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                why += " (the node's volume filesystem is full)"
            raise VolumeError(f"cannot {what} volume {handle}: {why}") from e


def _disk_size(path: Path) -> int:
    if path.suffix != ".qcow2":
        return path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(32)
    if len(header) < 32 or header[:4] != _QCOW2_MAGIC:
        raise VolumeError(f"{path.name} is not a qcow2 image")
    return int.from_bytes(header[24:32], "big")  # the virtual size, in every qcow2 version


def _sparse(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
