"""Build a read-only erofs disk from an unpacked rootfs with Debian's mkfs.erofs (1.5).

Reproducible without losing mtimes: erofs-utils 1.5's `-T` stamps every inode with one time,
but `SOURCE_DATE_EPOCH` only *clamps* newer mtimes to it. We pass the newest mtime any layer
declared, so files keep their times and directories we touched while unpacking (whose mtime is
"now") collapse to a fixed value; with a UUID derived from the image id the output is
bit-for-bit the same on every node. Ownership is taken from the tree (so unpack as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from .errors import DiskBuildError

MKFS = "mkfs.erofs"
BUILD_TIMEOUT = 3600.0


def disk_uuid(image_id: str) -> str:
    return str(uuid.UUID(image_id.split(":", 1)[-1][:32]))


def build_erofs(
    rootfs: Path,
    out: Path,
    *,
    image_id: str,
    newest_mtime: int,
    compressor: str | None = None,
    timeout: float = BUILD_TIMEOUT,
) -> None:
    """Write the disk to `out` (which the caller renames into place when it is complete)."""
    mkfs = shutil.which(MKFS)
    if mkfs is None:
        raise DiskBuildError("mkfs.erofs not found: install erofs-utils")
    # Anything touched during this build is newer than `epoch` and is clamped to it.
    epoch = max(0, min(newest_mtime, int(time.time()) - 1))
    cmd = [mkfs, "--quiet", f"-U{disk_uuid(image_id)}"]
    if compressor:
        cmd.append(f"-z{compressor}")
    cmd += [str(out), str(rootfs)]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C"}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DiskBuildError(f"mkfs.erofs did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit status {proc.returncode}"
        raise DiskBuildError(f"mkfs.erofs failed: {reason}")
