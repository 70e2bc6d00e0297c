"""A pod VM's CPU and memory use as the host sees it, for metrics (node/stats.py).

From the VM's cgroup where it has one (`cgroups.Cgroups.usage`: every thread QEMU ever ran,
memory as the kubelet counts a working set); else from QEMU's process (/proc/<pid>/stat user and
system time of all its threads, /proc/<pid>/status VmRSS), for VMs run unconfined. The guest is
not asked: what the host measures cannot be inflated or hidden by the tenant's kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypernetes.runtime.cgroups import Cgroups
from hypernetes.runtime.interface import Usage

PROC = Path("/proc")
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def vm_usage(cgroups: Cgroups | None, cgroup: str, pid: int | None) -> Usage | None:
    if cgroups is not None:
        found = cgroups.usage(cgroup)
        if found is not None:
            return found
    return process_usage(pid) if pid else None


def process_usage(pid: int, proc: Path = PROC) -> Usage | None:
    try:
        stat = (proc / str(pid) / "stat").read_text()
        status = (proc / str(pid) / "status").read_text()
        # fields after the command (which may hold spaces and parentheses): utime is the 12th
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])
        rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return Usage(ticks * TICK_NS, rss_kib * 1024)
