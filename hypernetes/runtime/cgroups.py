"""A cgroup per pod VM, so one tenant's VM cannot take another's CPU, memory, pids or disk time.

    <agent's cgroup>/hypernetes[.slice]/          CPU capped at the node's allocatable CPUs
        hn-<sandbox id>-<hash of its directory>/  one per pod VM: QEMU and all its threads

cgroup v2 (one hierarchy, `hypernetes.slice`) where the host has it, v1 (cpu, cpuacct, memory,
pids and blkio mounted separately, `hypernetes` in each) otherwise; found at run time from
/proc/self/mountinfo. The parent sits beneath the cgroup the node agent runs in (`/` from a root
shell, its service's cgroup under systemd, which must then delegate it), so the agent and the
host's own processes stay outside it: the parent's CPU cap is what the node keeps for itself.
`HYPERNETES_CGROUP_PARENT` (a path inside the hierarchy, e.g. `/hypernetes.slice`) overrides.

Per VM, as the kubelet maps a pod's resources (pkg/kubelet/cm/helpers_linux.go):
- CPU weight: cpu.shares = (requests + the pod's overhead) (millicores) * 1024 / 1000, at least 2
  (v2: cpu.weight by the kubelet's shares-to-weight formula);
- CPU quota: the pod's CPU limits if every container has one, else its whole vCPUs (the VM's
  size), plus the pod's CPU overhead (spec.overhead, from its RuntimeClass: QEMU's own work),
  per 100 ms period;
- memory: the VM's memory plus the pod's memory overhead, or QEMU_OVERHEAD (measured) for a pod
  without one, no swap beyond it;
- pids: PIDS_BASE plus one per vCPU (QEMU's threads: vCPUs, the main loop, RCU, its I/O pool);
- IO weight: the same for every VM (a fair share of each disk), where the host's I/O scheduler
  supports weights (v1: BFQ's blkio.bfq.weight; v2: io.weight).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hypernetes.runtime.interface import ContainerSpec, Usage
from hypernetes.runtime.sizing import MiB, VMSize, positive_millicpu

log = logging.getLogger(__name__)

PERIOD_US = 100_000
MIN_SHARES, MAX_SHARES = 2, 262_144
MIN_QUOTA_US = 1_000
# QEMU's own memory beside the guest's RAM: its binary and libraries, TCG's translation cache
# (16 MiB, qemu.TCG_TB_MIB), device state, page tables and kernel objects charged to the cgroup.
# Measured (1 vCPU, TCG, guest RAM filled, exec and disk reads): 31 MiB anonymous memory and
# 2 MiB kernel memory beside the guest's RAM, plus up to 33 MiB of QEMU's own files in the page
# cache when this VM is the first to read them. 96 MiB leaves room for more vCPUs and I/O.
QEMU_OVERHEAD = 96 * MiB
PIDS_BASE = 96  # QEMU's thread pool alone may grow to 64 threads
IO_WEIGHT = 100  # v2 scale (1..10000, default 100)
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
V2_CONTROLLERS = ("cpu", "memory", "pids", "io")
SYSTEM_RESERVED_CPU = "100m"  # HYPERNETES_SYSTEM_RESERVED_CPU overrides (kubelet's --system-reserved)
CGROUP_ROOT = Path("/sys/fs/cgroup")


class CgroupError(Exception):
    pass


@dataclass(frozen=True)
class Limits:
    cpu_shares: int
    cpu_quota_us: int | None  # per PERIOD_US; None: no quota
    memory_max: int
    pids_max: int
    io_weight: int = IO_WEIGHT

    @property
    def cpu_weight(self) -> int:
        """cgroup v2's cpu.weight for these shares, as the kubelet converts them."""
        return 1 + ((self.cpu_shares - 2) * 9999) // 262142


def shares(millicpu: int) -> int:
    return max(MIN_SHARES, min(MAX_SHARES, millicpu * 1024 // 1000))


def quota_us(millicpu: int) -> int:
    return max(MIN_QUOTA_US, millicpu * PERIOD_US // 1000)


def pod_limits(
    containers: Iterable[ContainerSpec], size: VMSize, overhead_millicpu: int = 0, overhead_memory: int = 0
) -> Limits:
    """The VM's cgroup from its containers, its size and its pod's overhead (spec.overhead)."""
    specs = list(containers)
    requests = sum(c.cpu_request_millis or c.cpu_limit_millis or 0 for c in specs)
    limits = [c.cpu_limit_millis for c in specs]
    cap = size.vcpus * 1000
    cpu = min(cap, sum(x or 0 for x in limits)) if all(limits) else cap
    return Limits(
        # as the kubelet sizes a pod's cgroup: requests/limits plus the overhead, whose CPU is for
        # QEMU's own threads (restore, device emulation, I/O), not for more guest vCPUs
        cpu_shares=shares(requests + overhead_millicpu),
        cpu_quota_us=quota_us(cpu + overhead_millicpu),
        memory_max=size.memory + (overhead_memory or QEMU_OVERHEAD),
        pids_max=PIDS_BASE + size.vcpus,
    )


def reserved_millicpu() -> int:
    return positive_millicpu(os.environ.get("HYPERNETES_SYSTEM_RESERVED_CPU") or SYSTEM_RESERVED_CPU)


def allocatable_millicpu(cpus: int | None = None) -> int:
    """The CPU the node offers pods: its CPUs less what it keeps for itself (never below 100m)."""
    total = (cpus or os.cpu_count() or 1) * 1000
    return max(100, total - reserved_millicpu())


def cgroup_name(sandbox_id: str, sandbox_dir: Path) -> str:
    """Unique on the host even when several runtimes (data dirs) use the same sandbox id."""
    digest = hashlib.sha256(str(sandbox_dir.resolve()).encode()).hexdigest()[:8]
    return f"hn-{sandbox_id}-{digest}"


# --- finding the hierarchy -------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where each controller's hierarchy is mounted (v2: one), and this process's cgroup in it."""

    version: int
    mounts: dict[str, Path]  # controller -> mount point
    own: dict[str, str]  # controller -> this process's cgroup path in that hierarchy

    def hierarchies(self) -> dict[Path, str]:
        """Each distinct mount point once, with this process's cgroup in it."""
        out: dict[Path, str] = {}
        for controller, mount in self.mounts.items():
            out.setdefault(mount, self.own.get(controller, "/"))
        return out


def detect(
    mountinfo: Path = Path("/proc/self/mountinfo"), own: Path = Path("/proc/self/cgroup")
) -> Layout | None:
    """v2 if a cgroup2 mount offers cpu and memory, else v1 if cpu and memory hierarchies are
    mounted (a hybrid host's empty cgroup2 does not count), else None."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    try:
        lines = mountinfo.read_text().splitlines()
        cgroup_lines = own.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        sep = fields.index("-")
        mount, fstype, options = Path(fields[4]), fields[sep + 1], fields[sep + 3].split(",")
        if fstype == "cgroup2" and v2 is None:
            with contextlib.suppress(OSError):
                if {"cpu", "memory"} <= set((mount / "cgroup.controllers").read_text().split()):
                    v2 = mount
        elif fstype == "cgroup":
            for c in V1_CONTROLLERS:
                if c in options:
                    v1.setdefault(c, mount)
    paths: dict[str, str] = {}
    for line in cgroup_lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else ["<v2>"]:
            paths[c] = path
    if v2 is not None:
        own_v2 = paths.get("<v2>", "/")
        return Layout(2, {c: v2 for c in V2_CONTROLLERS}, {c: own_v2 for c in V2_CONTROLLERS})
    if "cpu" in v1 and "memory" in v1:
        return Layout(1, v1, {c: paths.get(c, "/") for c in v1})
    return None


# --- the cgroups --------------------------------------------------------------------------------


class Cgroups:
    """The pod VMs' parent cgroup and one child per VM."""

    def __init__(self, layout: Layout, parent: str | None = None, allocatable: int | None = None) -> None:
        self.layout = layout
        self.parent_override = parent or os.environ.get("HYPERNETES_CGROUP_PARENT") or None
        self.allocatable = allocatable if allocatable is not None else allocatable_millicpu()
        self._parent_ready = False

    @classmethod
    def for_host(cls) -> Cgroups | None:
        layout = detect()
        return cls(layout) if layout is not None else None

    def parent_dirs(self) -> list[Path]:
        leaf = "hypernetes.slice" if self.layout.version == 2 else "hypernetes"
        dirs = []
        for mount, own in self.layout.hierarchies().items():
            rel = self.parent_override or f"{own.rstrip('/')}/{leaf}"
            dirs.append(mount / rel.lstrip("/"))
        return dirs

    def dirs(self, name: str) -> list[Path]:
        return [p / name for p in self.parent_dirs()]

    def controller_dir(self, controller: str, name: str) -> Path:
        """Where `controller`'s files of cgroup `name` are (for reading them back)."""
        mount = self.layout.mounts[controller]
        parent = next(p for p in self.parent_dirs() if p.is_relative_to(mount))
        return parent / name

    def ensure_parent(self) -> None:
        if self._parent_ready:
            return
        for d in self.parent_dirs():
            d.mkdir(parents=True, exist_ok=True)
            if self.layout.version == 2:
                self._enable_controllers(d)
        cpu = self.controller_dir("cpu", "")
        if self.layout.version == 2:
            _write(cpu / "cpu.max", f"{quota_us(self.allocatable)} {PERIOD_US}")
        else:
            _write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(quota_us(self.allocatable)))
        self._parent_ready = True

    def _enable_controllers(self, parent: Path) -> None:
        """v2: each level from the hierarchy's root down to `parent` must pass the controllers
        on (`cgroup.subtree_control`); a level that holds processes itself refuses (EBUSY)."""
        mount = self.layout.mounts["cpu"]
        wanted = [c for c in V2_CONTROLLERS if c in (mount / "cgroup.controllers").read_text().split()]
        levels = [parent, *parent.parents]
        for level in reversed([p for p in levels if p.is_relative_to(mount)]):
            try:
                _write(level / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
            except OSError as e:
                if e.errno == errno.EBUSY:
                    raise CgroupError(
                        f"cannot enable {wanted} below {level}: it holds processes; run the node agent "
                        "in a delegated cgroup or set HYPERNETES_CGROUP_PARENT"
                    ) from e
                raise

    def create(self, name: str, limits: Limits) -> tuple[Path, ...]:
        """Make the VM's cgroup with its limits; returns the cgroup.procs files the launcher
        writes its pid to before exec."""
        self.ensure_parent()
        if limits.cpu_quota_us is not None:  # never more than all pods together may have
            cap = quota_us(self.allocatable)
            limits = dataclasses.replace(limits, cpu_quota_us=min(limits.cpu_quota_us, cap))
        try:
            for d in self.dirs(name):
                d.mkdir(exist_ok=True)
            if self.layout.version == 2:
                self._limits_v2(name, limits)
            else:
                self._limits_v1(name, limits)
        except OSError:
            self.remove(name)
            raise
        return tuple(d / "cgroup.procs" for d in self.dirs(name))

    def _limits_v1(self, name: str, lim: Limits) -> None:
        cpu, mem = self.controller_dir("cpu", name), self.controller_dir("memory", name)
        _write(cpu / "cpu.shares", str(lim.cpu_shares))
        _write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
        quota = lim.cpu_quota_us or -1
        with contextlib.suppress(OSError, ValueError):
            # v1 refuses a child quota above its parent's (EINVAL), which another runtime with
            # another reserve may have set lower than ours
            parent = int((cpu.parent / "cpu.cfs_quota_us").read_text())
            if parent > 0:
                quota = parent if quota < 0 else min(quota, parent)
        _write(cpu / "cpu.cfs_quota_us", str(quota))
        _write(mem / "memory.limit_in_bytes", str(lim.memory_max))
        _write_if_present(mem / "memory.memsw.limit_in_bytes", str(lim.memory_max))
        if "pids" in self.layout.mounts:
            _write(self.controller_dir("pids", name) / "pids.max", str(lim.pids_max))
        if "blkio" in self.layout.mounts:
            blkio = self.controller_dir("blkio", name)
            # v1 weights are 10..1000 (default 500 for CFQ, 100 for BFQ)
            _write_if_present(blkio / "blkio.bfq.weight", str(max(1, min(1000, lim.io_weight))))
            _write_if_present(blkio / "blkio.weight", str(max(10, min(1000, lim.io_weight * 5))))

    def _limits_v2(self, name: str, lim: Limits) -> None:
        d = self.controller_dir("cpu", name)
        _write(d / "cpu.weight", str(lim.cpu_weight))
        _write(d / "cpu.max", f"{lim.cpu_quota_us or 'max'} {PERIOD_US}")
        _write(d / "memory.max", str(lim.memory_max))
        _write_if_present(d / "memory.swap.max", "0")
        _write_if_present(d / "pids.max", str(lim.pids_max))
        _write_if_present(d / "io.weight", f"default {lim.io_weight}")
        _write_if_present(d / "io.bfq.weight", f"default {lim.io_weight}")

    def exists(self, name: str) -> bool:
        return any(d.exists() for d in self.dirs(name))

    def remove(self, name: str, timeout: float = 5.0) -> None:
        """Remove the VM's cgroup once its processes are gone (a killed QEMU takes a moment to
        leave); a process still in it after `timeout` is killed."""
        deadline = time.monotonic() + timeout
        for d in self.dirs(name):
            while d.exists():
                try:
                    d.rmdir()
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    if time.monotonic() > deadline:
                        _kill_all(d)
                        deadline = time.monotonic() + timeout
                    time.sleep(0.05)

    def sweep(self, min_age: float = 60.0) -> list[str]:
        """Remove pod cgroups left empty by VMs that died while no agent watched them (killed
        from outside, a host's agent gone for good). Young ones are kept: a VM's cgroup is made
        a moment before its QEMU joins it. An emptied cgroup that gains a process meanwhile is
        not removed (rmdir fails with EBUSY)."""
        removed = []
        now = time.time()
        for parent in self.parent_dirs():
            with contextlib.suppress(FileNotFoundError):
                for d in parent.iterdir():
                    if not d.is_dir() or not d.name.startswith("hn-") or now - d.stat().st_mtime < min_age:
                        continue
                    with contextlib.suppress(OSError):
                        if not (d / "cgroup.procs").read_text().strip():
                            d.rmdir()
                            removed.append(d.name)
        return sorted(set(removed))

    def memory_peak(self, name: str) -> int | None:
        d = self.controller_dir("memory", name)
        for f in ("memory.max_usage_in_bytes", "memory.peak"):
            with contextlib.suppress(OSError, ValueError):
                return int((d / f).read_text())
        return None

    def usage(self, name: str) -> Usage | None:
        """What the VM's cgroup has used: CPU time since it was made, and its memory working set
        as the kubelet (cAdvisor) counts it: usage less the inactive file cache, which the kernel
        reclaims first. None if the cgroup is gone."""
        cpu, mem = self.controller_dir("cpu", name), self.controller_dir("memory", name)
        try:
            if self.layout.version == 2:
                stat = _keyed(cpu / "cpu.stat")
                cpu_ns = stat["usage_usec"] * 1000
                current = int((mem / "memory.current").read_text())
                inactive = _keyed(mem / "memory.stat").get("inactive_file", 0)
            else:
                acct = self.controller_dir("cpuacct", name) if "cpuacct" in self.layout.mounts else cpu
                cpu_ns = int((acct / "cpuacct.usage").read_text())
                current = int((mem / "memory.usage_in_bytes").read_text())
                inactive = _keyed(mem / "memory.stat").get("total_inactive_file", 0)
        except (OSError, ValueError, KeyError):
            return None
        return Usage(cpu_ns, max(0, current - inactive))


def _keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (cpu.stat, memory.stat): `name value` per line."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _kill_all(d: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in (d / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        _write(path, value)
