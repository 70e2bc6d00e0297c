"""Gzip'd cpio "newc" archives for guest initrds, written in pure Python.

The output is deterministic (sorted entries, fixed mtime, owner 0:0, sequential inode numbers,
gzip header without name or time), so the same inputs always give the same bytes and the file
can be cached by a hash of its inputs. Parent directories are added automatically, before
their children, because the kernel's unpacker does not create missing parents.
"""

from __future__ import annotations

import gzip
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

TRAILER = "TRAILER!!!"
NEWC_MAGIC = b"070701"


@dataclass(frozen=True)
class File:
    data: bytes | Path  # a Path is read when the archive is written
    mode: int = 0o644


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755


Entry = File | Symlink | Dir
Source = Path | bytes | Entry


def build_initrd(out: Path, files: Mapping[str, Source], *, level: int = 6) -> Path:
    """Write `files` (archive path -> content) to `out` atomically and return `out`.

    A `Path` value becomes a regular file with mode 0755 if the source is executable by its
    owner, else 0644 (not the source's exact mode, which depends on the umask of whoever built
    it); `bytes` become a 0644 file.
    """
    entries = _normalise(files)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            # mtime=0 and no filename keep the gzip header reproducible.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0) as gz:
                for chunk in _archive(entries):
                    gz.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _normalise(files: Mapping[str, Source]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for name, source in files.items():
        path = _archive_path(name)
        entry: Entry
        if isinstance(source, Path):
            executable = source.stat().st_mode & stat.S_IXUSR
            entry = File(source, 0o755 if executable else 0o644)
        elif isinstance(source, bytes):
            entry = File(source)
        else:
            entry = source
        if isinstance(entry, File | Dir) and not 0 <= entry.mode <= 0o7777:
            raise ValueError(f"bad mode {entry.mode:#o} for initrd path {name!r}")
        if path in entries:
            raise ValueError(f"duplicate initrd path {name!r}")
        entries[path] = entry
    for path in list(entries):
        for parent in PurePosixPath(path).parents:
            key = str(parent)
            if key == ".":
                continue
            existing = entries.setdefault(key, Dir())
            if not isinstance(existing, Dir):
                raise ValueError(f"initrd path {key!r} is both a directory and a file")
    return dict(sorted(entries.items()))


def _archive_path(name: str) -> str:
    parts = name.lstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"bad initrd path {name!r}")
    return "/".join(parts)


def _archive(entries: Mapping[str, Entry]) -> Iterator[bytes]:
    for ino, (name, entry) in enumerate(entries.items(), start=1):
        if isinstance(entry, Dir):
            yield _record(name, ino, stat.S_IFDIR | entry.mode, 2, b"")
        elif isinstance(entry, Symlink):
            yield _record(name, ino, stat.S_IFLNK | 0o777, 1, entry.target.encode())
        else:
            data = entry.data.read_bytes() if isinstance(entry.data, Path) else entry.data
            yield _record(name, ino, stat.S_IFREG | entry.mode, 1, data)
    yield _record(TRAILER, 0, 0, 1, b"")


def _record(name: str, ino: int, mode: int, nlink: int, data: bytes) -> bytes:
    encoded = name.encode() + b"\0"
    # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
    head = header + encoded
    return head + _pad(len(head)) + data + _pad(len(data))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)
