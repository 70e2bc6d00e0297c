"""A gVisor pod's volumes: host directories in the sandbox's own directory, bind-mounted into its
containers (runsc's gofer serves them; bind mounts default to shared file access, so a file the
host replaces is seen inside, as a refreshed service-account token must be).

- `files` volumes (configMap, secret, projected, downwardAPI): written by the host, read-only in
  every container;
- `emptyDir`: an empty directory, mode 0777 as upstream's, shared by the pod's containers; its
  `sizeLimit` is not enforced here (the hypervm runtime gives it a disk of that size);
- `block` volumes (persistent volumes) are refused: runsc cannot take a block device without the
  host mounting its filesystem, which hypernetes never does with a tenant's disk;
- runsc (Debian's 2022 build) makes a missing mount point in the container's root on the host,
  even with the root read-only and overlaid: in the tree every pod of that image shares. A
  container whose mount points are not all in its image gets a tree of its own, hard links to
  the shared one (`private_root`), so no pod's mount points appear in another's;
- a `subPath` of an emptyDir is refused: the host would resolve a path the pod can write, so a
  container could put a symlink there and have the next container start bind the host's files
  (upstream's CVE-2017-1002101). A subPath of a files volume is the host's own tree.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

from hypernetes.runtime.interface import ContainerSpec, PodRuntimeError, PodSpec, VolumeFile
from hypernetes.runtime.ocispec import BindMount

EMPTY_DIR_MODE = 0o777


def refuse_unsupported(pod: PodSpec) -> None:
    kinds = {v.name: v.kind for v in pod.volumes}
    for v in pod.volumes:
        if v.kind == "block":
            raise PodRuntimeError(
                f"volume {v.name}: the gvisor runtime cannot attach persistent volumes "
                "(it would have to mount the disk on the host); use the hypervm runtime"
            )
    for c in pod.containers:
        for m in c.mounts:
            if m.sub_path and kinds.get(m.volume) == "emptyDir":
                raise PodRuntimeError(
                    f"container {c.name}: the gvisor runtime cannot mount a subPath of an "
                    f"emptyDir ({m.volume!r}); use the hypervm runtime"
                )


def make_volume_dirs(root: Path, pod: PodSpec) -> dict[str, Path]:
    """One directory per volume under `root` (which only root can reach), files written."""
    dirs: dict[str, Path] = {}
    root.mkdir(mode=0o700, exist_ok=True)
    for v in pod.volumes:
        d = root / v.name
        d.mkdir(mode=0o755)
        if v.kind == "emptyDir":
            os.chmod(d, EMPTY_DIR_MODE)  # mkdir's mode is cut by the umask
        else:
            write_files(d, v.files)
        dirs[v.name] = d
    return dirs


def write_files(volume_dir: Path, files: tuple[VolumeFile, ...]) -> None:
    """Each file replaced atomically (a reader sees the old or the new content, never half)."""
    for f in files:
        parts = f.path.split("/")
        if f.path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise PodRuntimeError(f"volume file {f.path!r}: not a relative path inside the volume")
        target = volume_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(f.data)
            os.chmod(tmp, f.mode & 0o7777)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def container_mounts(dirs: dict[str, Path], pod: PodSpec, c: ContainerSpec) -> tuple[BindMount, ...]:
    kinds = {v.name: v.kind for v in pod.volumes}
    mounts = []
    for m in c.mounts:
        source = dirs[m.volume]
        if m.sub_path:  # of a files volume (refuse_unsupported): the host's tree, no symlinks
            source = source.joinpath(*m.sub_path.split("/"))
        read_only = m.read_only or kinds[m.volume] == "files"
        mounts.append(BindMount(source, m.path, readonly=read_only))
    return tuple(mounts)


def private_root(shared: Path, mounts: tuple[BindMount, ...], private: Path) -> Path:
    """`shared` if every mount point is already in it, else a copy of it at `private` made of
    hard links (the files stay shared and are never written: the root is read-only, and runsc's
    overlay keeps a container's writes in memory), where runsc may make mount points."""
    if private.is_dir():  # a restarted container: its own tree from before
        return private
    if all(_present(shared, m.destination) for m in mounts):
        return shared
    private.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["cp", "-a", "-l", str(shared), str(private)], capture_output=True, text=True)
    if done.returncode != 0:
        raise PodRuntimeError(f"cannot make the container's root: {done.stderr.strip()[-200:]}")
    return private


def _present(root: Path, destination: str) -> bool:
    """Whether `destination` is in the tree at `root` through directories alone. A symlink on the
    way is resolved by runsc inside the container's root, where the end may be missing, so it
    counts as absent (never followed here: it would be resolved against the host's root)."""
    at = root
    parts = [p for p in destination.split("/") if p]
    for i, part in enumerate(parts):
        at = at / part
        try:
            st = os.lstat(at)
        except OSError:
            return False
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return False
    return True
