"""Confining a pod's QEMU: its cgroup (`cgroups.py`) and its jail (`jail.py`), made before it
starts and removed with its sandbox.

Both need root. A node agent that is not root (a user's `hypernetes run`) runs QEMU as itself,
unconfined, and says so once in its log. Nothing is recorded for adoption: a VM's cgroup name and
uid follow from its sandbox directory, so a restarted agent's VMs keep theirs and removing the
sandbox finds them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from hypernetes.runtime.cgroups import CgroupError, Cgroups, cgroup_name, pod_limits
from hypernetes.runtime.interface import ContainerSpec
from hypernetes.runtime.jail import (
    Bind,
    Jail,
    JailError,
    UidPool,
    can_jail,
    kvm_binds_and_groups,
    vmm_binds,
)
from hypernetes.runtime.qemu import JAIL_INITRD, JAIL_KERNEL, JAIL_RAM, qemu_binary, run_dir
from hypernetes.runtime.sizing import VMSize

log = logging.getLogger(__name__)

ConfineError = (JailError, CgroupError, OSError)


class Confiner:
    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = can_jail() if enabled is None else enabled
        self._cgroups: Cgroups | None = None
        if not self.enabled:
            log.warning(
                "not running as root: pod VMs run as uid %d without a jail or cgroups "
                "(no per-pod uid, chroot, namespaces or CPU/memory/pids limits)",
                os.geteuid(),
            )
            return
        self._cgroups = Cgroups.for_host()
        if self._cgroups is None:
            log.warning(
                "no cgroup v1 or v2 hierarchy with cpu and memory on this host: "
                "pod VMs run jailed but without cgroup limits"
            )
            return
        with contextlib.suppress(OSError):
            if swept := self._cgroups.sweep():
                log.info("removed %d empty pod VM cgroups left by VMs that died unwatched", len(swept))

    @property
    def cgroups(self) -> Cgroups | None:
        return self._cgroups

    @staticmethod
    def uids() -> UidPool:
        return UidPool(run_dir() / "vmm-uids")

    def prepare(
        self,
        sandbox_id: str,
        sandbox_dir: Path,
        containers: Iterable[ContainerSpec],
        size: VMSize,
        kernel: Path,
        initrd: Path,
        accel: str,
        die_with_parent: bool,
        cgroup: bool = True,
        template_ram: Path | None = None,
        overhead: tuple[int, int] = (0, 0),
    ) -> Jail | None:
        """The VM's uid and cgroup (its limits plus the pod's (millicpu, memory) `overhead`), and
        the jail QEMU is launched into (None: unconfined).
        One of ConfineError if they cannot be made; whatever was made is then released."""
        if not self.enabled:
            return None
        uid = self.uids().acquire(sandbox_dir.resolve())
        try:
            procs: tuple[Path, ...] = ()
            if cgroup and self._cgroups is not None:
                procs = self._cgroups.create(
                    cgroup_name(sandbox_id, sandbox_dir), pod_limits(containers, size, *overhead)
                )
            binds = [
                *vmm_binds(qemu_binary()),
                _guest_file(kernel, JAIL_KERNEL),
                _guest_file(initrd, JAIL_INITRD),
            ]
            if template_ram is not None:  # a clone maps it privately; see templates.py
                binds.append(Bind(template_ram, JAIL_RAM, writable=True))
            groups: tuple[int, ...] = ()
            if accel == "kvm":
                kvm, groups = kvm_binds_and_groups()
                binds += kvm
            root = run_dir() / "jail-root"  # empty; each jail mounts its own tmpfs over it
            root.mkdir(parents=True, exist_ok=True, mode=0o755)
            return Jail(
                uid=uid,
                gid=uid,
                root=root,
                binds=tuple(binds),
                groups=groups,
                cgroup_procs=procs,
                die_with_parent=die_with_parent,
            )
        except BaseException:
            self.release(sandbox_id, sandbox_dir)
            raise

    def release(self, sandbox_id: str, sandbox_dir: Path) -> None:
        """Remove the VM's cgroup (waiting for its processes to leave) and free its uid. Call
        after QEMU was killed; blocking, so from a thread."""
        if not self.enabled:
            return
        if self._cgroups is not None:
            self._cgroups.remove(cgroup_name(sandbox_id, sandbox_dir))
        self.uids().release_owner(sandbox_dir.resolve())


def _guest_file(path: Path, target: str) -> Bind:
    """The kernel or initrd, which the jailed uid reads through its bind: they hold no secrets
    and must be readable by all."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IROTH:
        raise JailError(
            f"{path} must be a regular file readable by all (mode "
            f"{oct(st.st_mode & 0o777)}): the jailed QEMU reads it as its own uid"
        )
    return Bind(path, target)
