"""What a hypervm sandbox writes to disk so that a restarted node agent can adopt its VM.

`state.json` in the sandbox directory: the pod spec, the VM's disks and which volume is on which
disk, and per container the process id the guest knows it by and the status so far. Written
atomically after every change that matters for adoption.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from hypernetes.runtime.interface import (
    BlockDevice,
    ContainerSpec,
    ContainerState,
    ContainerStatus,
    DeviceSpec,
    ExitStatus,
    MountSpec,
    NetworkConfig,
    PodSpec,
    RbdImage,
    VolumeSpec,
)
from hypernetes.runtime.paths import open_private
from hypernetes.runtime.qemu import Disk

STATE_FILE = "state.json"


def pod_to_dict(pod: PodSpec) -> dict[str, Any]:
    # File volumes' contents are on the VM's volume disk already; adoption does not need them.
    data = dataclasses.asdict(
        dataclasses.replace(pod, volumes=tuple(dataclasses.replace(v, files=()) for v in pod.volumes))
    )
    # An fd number means nothing to the next process: the running QEMU holds the tap itself.
    data["network"].pop("tap_fd", None)
    data.pop("pull_credentials", None)  # registry passwords stay in memory, off the disk
    for v in data.get("volumes") or ():
        if (v.get("block") or {}).get("rbd"):
            v["block"]["rbd"]["key"] = ""  # the cephx key is only in the VM's 0400 key file
    return data


def pod_from_dict(data: dict[str, Any]) -> PodSpec:
    containers = tuple(
        ContainerSpec(
            **{
                **c,
                **{k: _tuple(c.get(k)) for k in ("command", "args")},
                "env": tuple(tuple(kv) for kv in c.get("env", ())),
                "mounts": tuple(MountSpec(**m) for m in c.get("mounts", ())),
                "devices": tuple(DeviceSpec(**d) for d in c.get("devices", ())),
            }
        )
        for c in data["containers"]
    )
    volumes = tuple(
        VolumeSpec(**{**v, "files": (), "block": _block(v["block"]) if v.get("block") else None})
        for v in data.get("volumes", ())
    )
    net: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in (data.get("network") or {}).items()
        if k != "tap_fd"
    }
    network = NetworkConfig(**net)
    fields = {k: v for k, v in data.items() if k not in ("containers", "network", "volumes")}
    return PodSpec(**fields, containers=containers, network=network, volumes=volumes)


def _block(data: dict[str, Any]) -> BlockDevice:
    rbd = data.get("rbd")
    return BlockDevice(**{**data, "rbd": RbdImage(**rbd) if rbd else None})


def disk_to_dict(disk: Disk) -> dict[str, Any]:
    return {**dataclasses.asdict(disk), "path": str(disk.path)}


def disk_from_dict(data: dict[str, Any]) -> Disk:
    return Disk(**{**data, "path": Path(data["path"])})


def _tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def status_to_dict(status: ContainerStatus) -> dict[str, Any]:
    d = dataclasses.asdict(status)
    d["state"] = status.state.value
    return d


def status_from_dict(data: dict[str, Any]) -> ContainerStatus:
    exit_ = ExitStatus(**data["exit"]) if data.get("exit") else None
    return ContainerStatus(**{**data, "state": ContainerState(data["state"]), "exit": exit_})


def write_state(directory: Path, state: dict[str, Any]) -> None:
    tmp = directory / (STATE_FILE + ".tmp")
    with os.fdopen(open_private(tmp), "w") as f:  # it holds the pod's env: tenant secrets
        f.write(json.dumps(state))
    os.replace(tmp, directory / STATE_FILE)


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
