"""Values worked out from host files, kept across processes while the files stay the same.

Every `hypernetes run` is a new process. Before this cache each one hashed the guest kernel,
initrd and QEMU's binary (a template's key, `templates.py`) and ran `ldd` six times (the jail's
binds, `jail.py`): 60 ms of a run's start, more on a loaded host. A value is kept under the files
it was made from, each named by its identity (device, inode, size, mtime and ctime: a package
upgrade or any write changes at least the ctime, which no user can set), in one JSON file in the
run directory. Only a file this uid owns and nobody else can write is trusted; a lost update (two
processes writing at once) costs one recomputation.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hypernetes.runtime.qemu import run_dir

T = TypeVar("T")
MAX_ENTRIES = 64  # kernels, initrds, QEMU binaries seen since boot: a handful


def cache_file() -> Path:
    return run_dir() / "filecache.json"


def identity(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def cached(kind: str, files: Sequence[Path], compute: Callable[[], T], where: Path | None = None) -> T:
    """compute(), or what it returned before for these files as they are now. The value must
    survive JSON (tuples come back as lists: the caller converts)."""
    where = where or cache_file()
    key = json.dumps([kind, *((str(f), identity(f)) for f in files)])
    entries = _load(where)
    if key in entries:
        return entries[key]  # type: ignore[return-value]  # what compute() returned, as JSON
    value = compute()
    entries = _load(where)  # what others added meanwhile
    entries.pop(key, None)
    entries[key] = value
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))  # the oldest first (dicts keep insertion order)
    with contextlib.suppress(OSError):
        where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = where.with_name(f".{where.name}.{os.getpid()}")
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, where)
    return value


def _load(where: Path) -> dict[str, object]:
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        # another user's (or a writable) file could name any library as QEMU's: not trusted
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return {}
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else {}
