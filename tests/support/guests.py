"""Guests for tests that boot real VMs: the built kernel, agent and test-only guests, the QEMU
processes a test left behind, and how long a boot may take on this machine right now."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
BUILD = REPO / "guest" / "build"
KERNEL_DIR = Path(os.environ.get("HYPERNETES_KERNEL_DIR", "/var/cache/hypernetes/kernels"))

# A wedged guest must still fail: no load stretches a boot's deadline more than this.
MAX_LOAD_STRETCH = 6.0


def default_kernel() -> Path:
    path = KERNEL_DIR / "default" / "vmlinux"
    if not path.exists():
        raise RuntimeError(f"guest kernel not built at {path}: run `make kernel`")
    return path


def build(target: str, directory: str) -> Path:
    """Build a guest binary with make (cheap when up to date) and return its path."""
    subprocess.run(
        ["make", "-s", "-C", str(REPO / directory), f"BUILD={BUILD}", str(BUILD / target)],
        check=True,
        capture_output=True,
    )
    return BUILD / target


def load_stretch() -> float:
    """How many times slower a CPU-bound thread runs now than on an idle machine: runnable tasks
    per CPU this process may use (the larger of the 1- and 5-minute load averages, since a
    burst may have just started or just ended), at least 1, at most MAX_LOAD_STRETCH."""
    cpus = len(os.sched_getaffinity(0)) or 1
    one, five, _ = os.getloadavg()
    return min(MAX_LOAD_STRETCH, max(1.0, max(one, five) / cpus))


def boot_timeout(idle_seconds: float) -> float:
    """The deadline for a guest boot that needs `idle_seconds` under TCG on an idle machine.

    Under TCG each vCPU is one host thread doing the guest's every instruction, so a boot is
    CPU-bound: on a machine with more runnable work than CPUs it takes that much longer, and a
    fixed deadline turns a busy machine into a failed test. Under KVM the same figure is only
    generous. The product has its own fixed deadlines (runtime/hypervm.py BOOT_TIMEOUT_*)."""
    return idle_seconds * load_stretch()


def qemu_processes_under(path: Path) -> list[int]:
    """Pids of QEMU processes whose command line mentions `path`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        # A zombie has an empty cmdline, so only live QEMUs match. A jailed QEMU's arguments
        # hold only jail paths; its environment names its sandbox directory.
        if b"qemu-system" in cmdline and str(path).encode() in cmdline + environ:
            found.append(int(proc.name))
    return found
