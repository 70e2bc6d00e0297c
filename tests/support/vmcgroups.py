"""A pod VM's cgroup as the tests read it back: the runtime's cgroups (every pod VM gets one on a
host with cgroups) and the limits written in them, v1 or v2 alike."""

from __future__ import annotations

import pytest

from hypernetes.runtime import cgroups as cg
from hypernetes.runtime.hypervm import HyperVM
from tests.support.host import is_root

needs_root = pytest.mark.skipif(not is_root(), reason="the jail and cgroups need root")


def cgroups_of(runtime: HyperVM) -> cg.Cgroups:
    groups = runtime._confiner.cgroups
    assert groups is not None, "this host has cgroups: every pod VM must get one"
    return groups


def read_limits(groups: cg.Cgroups, name: str) -> dict[str, int | None]:
    """The VM's limits read back from the cgroupfs, v1 or v2 alike."""
    cpu, mem = groups.controller_dir("cpu", name), groups.controller_dir("memory", name)
    if groups.layout.version == 2:
        quota, period = (cpu / "cpu.max").read_text().split()
        return {
            "quota": None if quota == "max" else int(quota),
            "period": int(period),
            "weight": int((cpu / "cpu.weight").read_text()),
            "memory": int((mem / "memory.max").read_text()),
            "pids": int((groups.controller_dir("pids", name) / "pids.max").read_text()),
        }
    quota_us = int((cpu / "cpu.cfs_quota_us").read_text())
    return {
        "quota": None if quota_us < 0 else quota_us,
        "period": int((cpu / "cpu.cfs_period_us").read_text()),
        "weight": int((cpu / "cpu.shares").read_text()),
        "memory": int((mem / "memory.limit_in_bytes").read_text()),
        "pids": int((groups.controller_dir("pids", name) / "pids.max").read_text()),
    }
