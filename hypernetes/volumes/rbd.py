"""Ceph RBD images as persistent volumes (docs/volumes.md, "Ceph RBD").

The control plane makes, grows and deletes images; nodes only fence dead clients; QEMU opens the
image itself through librbd (nothing is mapped or mounted on a host).

We drive Ceph through its own CLIs (`rbd`, `ceph` from ceph-common), not python3-rbd: Debian's
binding is built for the system interpreter, not this venv, and a CLI call is a process we can
time out and kill when the cluster does not answer (a librados call in a thread cannot be
cancelled). The cephx key is never on a command line: each call gets a private directory (0700)
holding a keyfile (0600) and a minimal ceph.conf naming the monitors, removed afterwards; error
text is scrubbed of the key before it becomes a VolumeError (events, logs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypernetes.volumes.local import FS_TYPES, VolumeError, align
from hypernetes.volumes.rbd_objects import (
    DEFAULT_FEATURES,
    IMAGE_NAME,
    POOL_NAME,
    CephCredentials,
    check_features,
)

log = logging.getLogger(__name__)

TIMEOUT = 60.0  # seconds for one CLI call, whatever the cluster does
HOLDER_KEY = "hypernetes.io/holder"  # image metadata: the node and pod that attached it read-write


def ceph_conf_text(creds: CephCredentials, keyfile: Path | None = None) -> str:
    """A client's ceph.conf: the monitors and short timeouts, so an outage is an error in
    seconds, not a hang. The key is never in it (a keyfile, or QEMU's secret object)."""
    lines = [
        "[global]",
        f"mon host = {creds.monitors}",
        "client mount timeout = 10",
        "rados mon op timeout = 10",
        "rados osd op timeout = 30",
        "log to stderr = false",
        "err to stderr = true",
        "log file = /dev/null",
    ]
    if keyfile is not None:
        lines.append(f"keyfile = {keyfile}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hn-rbd-"))  # mkdtemp makes it 0700
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write_private(path: Path, text: str) -> None:
    """A file only its owner can read, from its first byte (not chmod after writing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class RbdVolumes:
    """Images in one pool, as one cephx user. Every method blocks (run it in a thread)."""

    def __init__(self, creds: CephCredentials, pool: str, timeout: float = TIMEOUT) -> None:
        problems = creds.problems()
        if not POOL_NAME.fullmatch(pool or ""):
            problems.append(f"pool: {pool!r} is not a pool name")
        if problems:
            raise VolumeError("; ".join(problems))
        self.creds, self.pool, self.timeout = creds, pool, timeout

    def spec(self, image: str) -> str:
        check_image(image)
        return f"{self.pool}/{image}"

    # --- reads ---------------------------------------------------------------------------------

    def size(self, image: str) -> int | None:
        """The image's size in bytes; None when it does not exist."""
        try:
            info = json.loads(self._run("rbd", "info", "--format", "json", self.spec(image)))
        except _NotFound:
            return None
        return int(info["size"])

    def info(self, image: str) -> dict[str, Any]:
        return dict(json.loads(self._run("rbd", "info", "--format", "json", self.spec(image))))

    def watchers(self, image: str) -> list[str]:
        """The client addresses that have the image open (`rbd status`), e.g. 127.0.0.1:0/1234."""
        try:
            out = json.loads(self._run("rbd", "status", "--format", "json", self.spec(image)))
        except _NotFound:
            return []
        return [str(w["address"]) for w in out.get("watchers") or []]

    def lockers(self, image: str) -> list[tuple[str, str, str]]:
        """(locker, lock id, address) of the image's locks, the exclusive lock included."""
        out = json.loads(self._run("rbd", "lock", "list", "--format", "json", self.spec(image)) or "[]")
        rows = out if isinstance(out, list) else [{"id": k, **v} for k, v in out.items()]
        return [(str(r["locker"]), str(r["id"]), str(r["address"])) for r in rows]

    def holder(self, image: str) -> str:
        """Who last attached the image read-write (`node/pod uid`), as that node recorded it."""
        try:
            return self._run("rbd", "image-meta", "get", self.spec(image), HOLDER_KEY).strip()
        except _NotFound:
            return ""

    def set_holder(self, image: str, holder: str) -> None:
        self._run("rbd", "image-meta", "set", self.spec(image), HOLDER_KEY, holder)

    # --- changes ---------------------------------------------------------------------------------

    def create(
        self,
        image: str,
        size_bytes: int,
        features: str = DEFAULT_FEATURES,
        fs_type: str | None = "ext4",
    ) -> bool:
        """Make the image (thin), with a filesystem unless fs_type is None (volumeMode Block).
        False when it already exists (an earlier attempt made it: images appear complete, as
        the filesystem is written before the image gets its name, by `rbd import`)."""
        spec = self.spec(image)
        problems = check_features(features)
        if problems:
            raise VolumeError(f"image {image}: imageFeatures: {'; '.join(problems)}")
        if fs_type is not None and fs_type not in FS_TYPES:
            raise VolumeError(f"fsType {fs_type} is not supported (supported: {', '.join(FS_TYPES)})")
        size = align(size_bytes)
        if self.size(image) is not None:
            return False
        if fs_type is None:
            self._run("rbd", "create", "--size", f"{size}B", "--image-feature", features, spec)
        else:
            with private_dir() as d:
                disk = d / "disk.raw"
                fd = os.open(disk, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    os.ftruncate(fd, size)
                finally:
                    os.close(fd)
                # as the local class formats (docs/volumes.md, Nodes): no reserved blocks; the
                # image is new and reads as zeroes, so no zeroes are written (and `rbd import`
                # skips the zero runs: a 100 GiB volume moves a few MiB)
                _tool("mkfs." + fs_type, "-F", "-q", "-m", "0", "-E", "lazy_journal_init=1", str(disk))
                try:
                    self._run("rbd", "import", "--no-progress", "--image-feature", features, str(disk), spec)
                except VolumeError as e:
                    if "exists" not in str(e):
                        raise
                    return False
        log.info("created rbd image %s (%d bytes, %s)", spec, size, fs_type or "block")
        return True

    def resize(self, image: str, size_bytes: int) -> bool:
        """Grow the image, never shrink; True if it grew. A VM that has it open sees the new size
        once QEMU is told (block_resize); the filesystem is the guest's to grow."""
        size = align(size_bytes)
        current = self.size(image)
        if current is None:
            raise VolumeError(f"rbd image {self.spec(image)} does not exist")
        if size <= current:
            return False
        self._run("rbd", "resize", "--no-progress", "--size", f"{size}B", self.spec(image))
        log.info("grew rbd image %s from %d to %d bytes", self.spec(image), current, size)
        return True

    def delete(self, image: str) -> bool:
        """Remove the image; False if it was not there. Refused (VolumeError) while a client has
        it open: a deleted PV's image is never pulled from under a running VM."""
        try:
            self._run("rbd", "remove", "--no-progress", self.spec(image))
        except _NotFound:
            return False
        log.info("deleted rbd image %s", self.spec(image))
        return True

    def fence(self, image: str) -> list[str]:
        """Cut off every client that has the image open or holds its lock: blocklist their
        addresses (their writes fail from now on, even if their host comes back) and break the
        locks. Returns the addresses fenced. Call only when no live pod may hold the image."""
        addresses = set(self.watchers(image))
        locks = self.lockers(image)
        addresses.update(addr for _, _, addr in locks)
        for addr in sorted(addresses):
            self._run("ceph", "osd", "blocklist", "add", addr)
        for locker, lock_id, _ in locks:
            with contextlib.suppress(_NotFound):
                self._run("rbd", "lock", "remove", self.spec(image), lock_id, locker)
        if addresses:
            log.warning("fenced rbd image %s: blocklisted %s", self.spec(image), ", ".join(sorted(addresses)))
        return sorted(addresses)

    # --- internals ---------------------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> str:
        with private_dir() as d:
            keyfile = d / "key"
            write_private(keyfile, self.creds.key)
            conf = d / "ceph.conf"
            write_private(conf, ceph_conf_text(self.creds, keyfile))
            cmd = [tool, "-c", str(conf), "--id", self.creds.user, *args]
            try:
                proc = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    stdin=subprocess.DEVNULL,
                    timeout=self.timeout,
                )
            except FileNotFoundError:
                raise VolumeError(f"{tool} is not installed (Debian's ceph-common)") from None
            except subprocess.TimeoutExpired:
                raise VolumeError(
                    f"Ceph did not answer `{tool} {args[0]}` within {self.timeout:.0f}s "
                    f"(monitors {self.creds.monitors})"
                ) from None
        if proc.returncode == 0:
            return proc.stdout
        said = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        # the last line that is not a log line says what failed; the log lines say why
        why = next((s for s in reversed(said) if not re.match(r"\d{4}-\d\d-\d\dT", s)), "")
        why = why or (said[-1] if said else f"exit code {proc.returncode}")
        text = proc.stderr
        if "handle_auth_bad_method" in text or "failed to decode key" in text or "keyring not found" in text:
            why = f"cephx authentication as client.{self.creds.user} failed: wrong key, or no such user"
        elif "authenticate timed out" in text or proc.returncode == 110:
            why = f"no Ceph monitor answered at {self.creds.monitors} (is the Ceph cluster up?)"
        elif "(13) Permission denied" in text or "(1) Operation not permitted" in text:
            why += f" (cephx user {self.creds.user}: no access to pool {self.pool})"
        elif proc.returncode == 2 and ("No such file" in why or "not found" in why):
            raise _NotFound(why)
        # Ceph prints an undecodable key in its complaint: never pass it on
        why = why.replace(self.creds.key, "<key>")
        raise VolumeError(f"{tool} {args[0]} {self.pool}: {why}"[:1000])


class _NotFound(VolumeError):
    pass


def check_image(name: str) -> None:
    if not IMAGE_NAME.fullmatch(name or "") or ".." in name:
        raise VolumeError(f"invalid rbd image name {name!r}")


def _tool(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        said = [s for s in (proc.stderr + proc.stdout).splitlines() if s.strip()]
        raise VolumeError(f"{cmd[0]} failed: {said[-1] if said else proc.returncode}")
