"""Helpers for tests that boot real guests: the built kernel, agent and test-only guests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "guest" / "build"
KERNEL_DIR = Path(os.environ.get("HYPERNETES_KERNEL_DIR", "/var/cache/hypernetes/kernels"))


def default_kernel() -> Path:
    path = KERNEL_DIR / "default" / "vmlinux"
    if not path.exists():
        raise RuntimeError(f"guest kernel not built at {path}: run `make kernel`")
    return path


def build(target: str, directory: str) -> Path:
    """Build a guest binary with make (cheap when up to date) and return its path."""
    subprocess.run(["make", "-s", "-C", str(REPO / directory), f"BUILD={BUILD}", str(BUILD / target)],
                   check=True, capture_output=True)
    return BUILD / target
