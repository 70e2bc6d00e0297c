"""Apply image layers to a root filesystem directory, safely.

Layers are untrusted tarballs. Every path is resolved one component at a time with
`openat(O_NOFOLLOW | O_DIRECTORY)` from a descriptor of the rootfs, so no symlink inside the
rootfs is ever followed while extracting: a layer that makes `a -> /etc` and then writes
`a/passwd` is rejected instead of touching the host. `..`, absolute paths and hard links
outside the tree are rejected too. Whiteouts (`.wh.name`) and opaque directories
(`.wh..wh..opq`) are honoured; ownership (numeric), modes including setuid/setgid, mtimes,
xattrs, device nodes and fifos are kept. Python's tarfile extraction filters are not used:
they strip setuid bits or refuse absolute symlinks, both normal in root filesystems.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import zstandard

from .errors import DigestMismatch, UnsafeLayer, UnsupportedImage
from .progress import short

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_DEPTH = 128
MAX_ENTRIES = 2_000_000
MAX_BYTES = 64 << 30
# Errors about our own disk, not about the layer's content.
_STORE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Parts = tuple[str, ...]


class _HashingReader:
    """Hashes what tarfile reads, so the uncompressed digest (diff_id) can be checked."""

    def __init__(self, raw: IO[bytes] | Any) -> None:
        self._raw = raw
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._raw.read(size)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@contextmanager
def open_layer(path: Path) -> Iterator[_HashingReader]:
    """The layer's uncompressed tar stream; the compression is sniffed, not trusted."""
    with open(path, "rb") as f:
        magic = f.read(6)
        f.seek(0)
        if magic[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                yield _HashingReader(gz)
        elif magic[:4] == b"\x28\xb5\x2f\xfd":
            dctx = zstandard.ZstdDecompressor()
            with dctx.stream_reader(f, read_across_frames=True) as zs:
                yield _HashingReader(zs)
        elif magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00":
            raise UnsupportedImage(f"layer {path.name}: bzip2/xz layers are not supported")
        else:
            yield _HashingReader(f)


def _clean(name: str, layer: str) -> Parts:
    if "\x00" in name:
        raise UnsafeLayer(f"layer {layer}: path {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise UnsafeLayer(f"layer {layer}: absolute path {name!r} in layer")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeLayer(f"layer {layer}: path {name!r} escapes the root filesystem ('..')")
    # Bounded depth keeps every recursive walk (whiteouts, rmtree) far from Python's limit.
    if len(parts) > MAX_DEPTH or any(len(p.encode(errors="surrogateescape")) > 255 for p in parts):
        raise UnsafeLayer(f"layer {layer}: path {name[:80]!r}... is too deep or too long")
    return parts


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: str, dir_fd: int) -> None:
    """rm -rf `name` in `dir_fd`, never following symlinks."""
    st = _lstat(name, dir_fd)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            for child in os.listdir(fd):
                _remove(child, fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


class LayerApplier:
    """Applies layers in order to one rootfs directory (which it owns while building)."""

    def __init__(
        self,
        rootfs: Path,
        *,
        privileged: bool | None = None,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.rootfs = rootfs
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries = 0
        self._bytes = 0
        # Ownership and device nodes need root; without it we keep what we can.
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        rootfs.mkdir(parents=True, exist_ok=True)
        self._root_fd = os.open(rootfs, _DIR_FLAGS)
        self._layer = ""
        self._touched: set[Parts] = set()
        self._dir_times: list[tuple[Parts, int]] = []
        self.newest_mtime = 0  # over every entry of every layer: the erofs clamp time

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> LayerApplier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(self, path: Path, digest: str, diff_id: str | None = None) -> None:
        """Apply the layer blob at `path`; check its uncompressed digest if `diff_id` given."""
        self._layer = short(digest)
        self._touched = set()
        self._dir_times = []
        with open_layer(path) as stream:
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                    for member in tar:
                        self._apply_member(tar, member)
                stream.drain()
            except (tarfile.TarError, EOFError, zstandard.ZstdError, gzip.BadGzipFile, zlib.error) as exc:
                raise UnsafeLayer(f"layer {self._layer}: not a valid tar archive: {exc}") from None
            except OSError as exc:
                if exc.errno in _STORE_ERRNOS:
                    raise  # our disk's problem, not the layer's
                where = f" {exc.filename!r}" if exc.filename else ""
                raise UnsafeLayer(
                    f"layer {self._layer}: cannot unpack{where}: {(exc.strerror or str(exc)).lower()}"
                ) from None
        # Directory mtimes last: creating their children changed them.
        for parts, mtime in sorted(self._dir_times, key=lambda t: -len(t[0])):
            self._set_times(parts, mtime)
        if diff_id is not None:
            actual = "sha256:" + stream.hasher.hexdigest()
            if actual != diff_id:
                raise DigestMismatch(
                    f"layer {digest}: uncompressed content hashes to {actual}, but the image "
                    f"config says {diff_id}; refusing it"
                )

    # -- path resolution -------------------------------------------------------------------

    def _open_dir(self, parts: Parts, *, create: bool) -> int:
        """An fd for the directory at `parts`, never following a symlink on the way."""
        fd = os.dup(self._root_fd)
        try:
            for i, comp in enumerate(parts):
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(parts[: i + 1])
                    st = _lstat(comp, fd)
                    if st is not None and stat.S_ISLNK(st.st_mode):
                        raise UnsafeLayer(
                            f"layer {self._layer}: path goes through the symlink {where!r}; "
                            "refusing to follow symlinks while unpacking"
                        ) from None
                    raise UnsafeLayer(f"layer {self._layer}: {where!r} is not a directory") from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- one tar entry -----------------------------------------------------------------------

    def _apply_member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = _clean(m.name, self._layer)
        self.newest_mtime = max(self.newest_mtime, int(m.mtime))
        self._entries += 1
        if m.isreg():
            self._bytes += m.size
        if self._entries > self.max_entries or self._bytes > self.max_bytes:
            raise UnsafeLayer(
                f"layer {self._layer}: the image unpacks to more than {self.max_entries} entries "
                f"or {self.max_bytes} bytes"
            )
        if any(p.startswith(".wh..wh.") and p != OPAQUE for p in parts):
            return  # AUFS bookkeeping (.wh..wh.plnk etc.): not content
        if not parts:
            if m.isdir():  # the root directory's own entry
                self._set_fd_meta(self._root_fd, m)
                self._dir_times.append(((), int(m.mtime)))
            return
        parent_parts, name = parts[:-1], parts[-1]
        if name.startswith(WHITEOUT) and name != OPAQUE:
            self._whiteout(parent_parts, name, m.name)
            return
        parent = self._open_dir(parent_parts, create=True)
        try:
            if name == OPAQUE:
                self._opaque(parent, parent_parts)
            else:
                self._create(tar, m, parent, parts)
                self._touched.add(parts)
        finally:
            os.close(parent)

    def _whiteout(self, parent_parts: Parts, name: str, raw: str) -> None:
        hidden = name[len(WHITEOUT) :]
        if hidden in ("", ".", ".."):
            raise UnsafeLayer(f"layer {self._layer}: invalid whiteout {raw!r}")
        if (*parent_parts, hidden) in self._touched:
            return  # this layer's own entry: the whiteout is for lower layers only
        try:
            parent = self._open_dir(parent_parts, create=False)
        except FileNotFoundError:
            return  # nothing below to hide
        try:
            _remove(hidden, parent)
        finally:
            os.close(parent)

    def _opaque(self, parent: int, parent_parts: Parts) -> None:
        """Hide everything lower layers put in this directory, keep this layer's entries."""
        for child in os.listdir(parent):
            if (*parent_parts, child) not in self._touched:
                _remove(child, parent)

    def _create(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, parts: Parts) -> None:
        name = parts[-1]
        existing = _lstat(name, parent)
        if existing is not None:
            if m.isdir() and stat.S_ISDIR(existing.st_mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                try:
                    self._set_fd_meta(fd, m)
                finally:
                    os.close(fd)
                self._dir_times.append((parts, int(m.mtime)))
                return
            if m.islnk() and _clean(m.linkname, self._layer) == parts:
                return  # a hard link to itself: nothing to do
            _remove(name, parent)

        if m.isreg():
            self._create_file(tar, m, parent, name)
        elif m.isdir():
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                self._set_fd_meta(fd, m)
            finally:
                os.close(fd)
            self._dir_times.append((parts, int(m.mtime)))
        elif m.issym():
            # The target is stored verbatim (absolute ones are normal in images); it is
            # only ever resolved inside the guest, never by us.
            os.symlink(m.linkname, name, dir_fd=parent)
            self._set_path_meta(parent, name, m, chmod=False)
        elif m.islnk():
            self._create_hardlink(m, parent, name)
        elif m.ischr() or m.isblk():
            if not self.privileged:
                log.warning("layer %s: skipping device node %s (needs root)", self._layer, m.name)
                return
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
            self._set_path_meta(parent, name, m, chmod=True)
        elif m.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent)
            self._set_path_meta(parent, name, m, chmod=True)
        else:
            log.warning("layer %s: skipping %s of unsupported type %r", self._layer, m.name, m.type)

    def _create_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, name: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb", closefd=True) as out:
            src = tar.extractfile(m)
            if src is not None:
                remaining = m.size
                while remaining > 0:
                    chunk = src.read(min(CHUNK, remaining))
                    if not chunk:
                        raise UnsafeLayer(f"layer {self._layer}: {m.name!r} is truncated")
                    out.write(chunk)
                    remaining -= len(chunk)
            out.flush()
            self._set_fd_meta(out.fileno(), m)
            os.utime(out.fileno(), ns=(int(m.mtime) * 10**9,) * 2)

    def _create_hardlink(self, m: tarfile.TarInfo, parent: int, name: str) -> None:
        target = _clean(m.linkname, self._layer)
        if not target:
            raise UnsafeLayer(f"layer {self._layer}: hard link {m.name!r} to the root directory")
        try:
            src_parent = self._open_dir(target[:-1], create=False)
        except FileNotFoundError:
            raise UnsafeLayer(
                f"layer {self._layer}: hard link {m.name!r} points at missing {m.linkname!r}"
            ) from None
        try:
            st = _lstat(target[-1], src_parent)
            if st is None or stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(
                    f"layer {self._layer}: hard link {m.name!r} points at "
                    f"{'a directory' if st else 'missing'} {m.linkname!r}"
                )
            # linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
            os.link(target[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(src_parent)

    # -- metadata ----------------------------------------------------------------------------

    def _set_fd_meta(self, fd: int, m: tarfile.TarInfo) -> None:
        mode = m.mode & 0o7777
        if self.privileged:
            os.fchown(fd, m.uid, m.gid)
        else:
            # Without CAP_DAC_OVERRIDE we must still be able to fill directories and let
            # mkfs.erofs read every file.
            mode |= 0o700 if m.isdir() else 0o600
        os.fchmod(fd, mode)  # after chown, which clears setuid/setgid
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                try:
                    os.setxattr(fd, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape"))
                except OSError as exc:
                    log.debug("layer %s: xattr %s on %s: %s", self._layer, key, m.name, exc)

    def _set_path_meta(self, parent: int, name: str, m: tarfile.TarInfo, *, chmod: bool) -> None:
        """For entries we must not open (symlinks, devices, fifos); `name` was just created."""
        if self.privileged:
            os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        if chmod:
            os.chmod(name, m.mode & 0o7777, dir_fd=parent)
        ns = int(m.mtime) * 10**9
        os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)

    def _set_times(self, parts: Parts, mtime: int) -> None:
        try:
            fd = self._open_dir(parts, create=False)
        except (FileNotFoundError, UnsafeLayer):
            return  # removed or replaced later in the same layer
        try:
            os.utime(fd, ns=(mtime * 10**9,) * 2)
        finally:
            os.close(fd)


def read_file_in_root(rootfs: Path, path: str, limit: int = 1 << 20) -> bytes | None:
    """Read a small file of an unpacked image without following any symlink (e.g. etc/passwd).

    Returns None if it is missing, not a regular file, reached through a symlink or too big.
    """
    parts = _clean(path, "rootfs")
    root = os.open(rootfs, _DIR_FLAGS)
    fd = -1
    try:
        for comp in parts[:-1]:
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=root)
            os.close(root)
            root = nfd
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=root)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        return os.read(fd, limit + 1)[:limit]
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(root)
