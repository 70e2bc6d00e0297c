"""OCI runtime specs (config.json, process.json) for the gvisor runtime, as plain dicts.

Only what runsc reads is written. Capabilities follow Docker's default set, granted in full to
uid 0 and kept only in the bounding set for other users (as Docker and containerd do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_VERSION = "1.0.2"
DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
CPU_PERIOD_US = 100_000
# runsc reads these CRI annotations to put several containers in one sandbox.
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"


@dataclass(frozen=True)
class ProcessConfig:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    terminal: bool = False
    rows: int = 24
    cols: int = 80


@dataclass(frozen=True)
class Resources:
    cpu_millis: int | None = None
    memory: int | None = None  # bytes
    cgroups_path: str | None = None


@dataclass(frozen=True)
class BindMount:
    source: Path
    destination: str
    readonly: bool = True


def process(p: ProcessConfig) -> dict[str, Any]:
    caps = list(DEFAULT_CAPS)
    granted = caps if p.uid == 0 else []
    doc: dict[str, Any] = {
        "terminal": p.terminal,
        "user": {"uid": p.uid, "gid": p.gid, "additionalGids": list(p.groups)},
        "args": list(p.args),
        "env": list(p.env),
        "cwd": p.cwd,
        "capabilities": {
            "bounding": caps,
            "effective": granted,
            "permitted": granted,
            "inheritable": [],
            "ambient": [],
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
        "noNewPrivileges": False,
    }
    if p.terminal:
        doc["consoleSize"] = {"height": p.rows, "width": p.cols}
    return doc


@dataclass(frozen=True)
class ContainerConfig:
    root: Path
    process: ProcessConfig
    hostname: str
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: tuple[BindMount, ...] = ()
    resources: Resources = Resources()


def container(c: ContainerConfig) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    for m in c.mounts:
        options = ["rbind", "ro" if m.readonly else "rw"]
        mounts.append(
            {"destination": m.destination, "type": "bind", "source": str(m.source), "options": options}
        )
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
        "resources": _resources(c.resources),
    }
    if c.resources.cgroups_path:
        linux["cgroupsPath"] = c.resources.cgroups_path
    return {
        "ociVersion": OCI_VERSION,
        "process": process(c.process),
        # Read-only: runsc's --overlay2=root:memory gives each container a writable layer in
        # sandbox memory, so the shared, cached rootfs is never written.
        "root": {"path": str(c.root), "readonly": True},
        "hostname": c.hostname,
        "mounts": mounts,
        "annotations": dict(c.annotations),
        "linux": linux,
    }


def _resources(r: Resources) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if r.cpu_millis:
        doc["cpu"] = {"quota": r.cpu_millis * CPU_PERIOD_US // 1000, "period": CPU_PERIOD_US}
    if r.memory:
        doc["memory"] = {"limit": r.memory}
    return doc
