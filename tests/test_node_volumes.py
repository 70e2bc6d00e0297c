"""Persistent volumes on the node: the local backend (real files, real mkfs/e2fsck/resize2fs/qemu-img),
claim → PV → disk resolution, the node's bookkeeping of who uses which volume, and (slow) the
whole path with real VMs, a real API server and the node agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from hypernetes.apiclient import ApiClient
from hypernetes.node.agent import NodeAgent, resized_claim_status
from hypernetes.node.podspec import (
    ConfigError,
    VolumeConfigError,
    claim_disks,
    claim_volume_names,
    pod_claims,
    pod_spec,
    pv_node,
    referenced_objects,
)
from hypernetes.node.worker import MultiAttachError, VolumeUsers
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.runtime.podsize import DEFAULT_EMPTYDIR_SIZE
from hypernetes.volumes import LocalVolumes, VolumeError
from tests.support.apiserver import ApiServerThread
from tests.support.guests import qemu_processes_under
from tests.support.waiting import wait_for_async

MiB = 1 << 20
GiB = 1 << 30


# --- the local backend ---------------------------------------------------------------------------


def dumpe2fs(path: Path) -> dict[str, str]:
    out = subprocess.run(["dumpe2fs", "-h", str(path)], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def fs_bytes(path: Path) -> int:
    info = dumpe2fs(path)
    return int(info["Block count"]) * int(info["Block size"])


def qemu_img_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out))


def debugfs(path: Path, request: str, write: bool = False) -> str:
    cmd = ["debugfs", *(["-w"] if write else []), "-R", request, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def put_file(path: Path, tmp: Path, name: str, data: bytes) -> None:
    """Write a file into an ext4 image without mounting it (debugfs)."""
    src = tmp / f"src-{name}"
    src.write_bytes(data)
    debugfs(path, f"write {src} {name}", write=True)


def test_filesystem_volume_is_sparse_ext4_and_ensure_is_idempotent(tmp_path: Path) -> None:
    vols = LocalVolumes(tmp_path / "volumes")
    path = vols.ensure("pvc-1234", GiB)
    assert path == tmp_path / "volumes" / "pvc-1234.raw"
    assert path.stat().st_size == GiB and vols.capacity("pvc-1234") == GiB
    assert vols.allocated("pvc-1234") < 4 * MiB  # sparse: no zeroed journal or inode tables
    info = dumpe2fs(path)
    assert info["Filesystem state"] == "clean" and "has_journal" in info["Filesystem features"]
    assert info["Reserved block count"] == "0" and fs_bytes(path) == GiB
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    inode = path.stat().st_ino
    put_file(path, tmp_path, "kept", b"still here")
    assert vols.ensure("pvc-1234", 2 * GiB) == path  # exists: left as it is (growing is grow's job)
    assert path.stat().st_ino == inode and path.stat().st_size == GiB
    assert debugfs(path, "cat kept") == "still here"
    assert vols.handles() == ["pvc-1234"]


def test_block_volume_has_no_filesystem(tmp_path: Path) -> None:
    vols = LocalVolumes(tmp_path)
    path = vols.ensure("raw-dev", 64 * MiB + 1, block_mode=True)
    assert path.stat().st_size == 64 * MiB + 4096  # whole 4 KiB blocks
    assert vols.allocated("raw-dev") == 0
    assert subprocess.run(["dumpe2fs", "-h", str(path)], capture_output=True).returncode != 0


def test_qcow2_volumes(tmp_path: Path) -> None:
    vols = LocalVolumes(tmp_path)
    block = vols.ensure("q-block", GiB, fmt="qcow2", block_mode=True)
    info = qemu_img_info(block)
    assert info["format"] == "qcow2" and info["virtual-size"] == GiB and info["actual-size"] < 2 * MiB
    assert vols.grow("q-block", 2 * GiB, "", "qcow2")
    assert qemu_img_info(block)["virtual-size"] == 2 * GiB == vols.capacity("q-block")

    fs = vols.ensure("q-fs", 256 * MiB, "ext4", "qcow2")
    info = qemu_img_info(fs)
    assert info["format"] == "qcow2" and info["virtual-size"] == 256 * MiB and info["actual-size"] < 4 * MiB
    raw = tmp_path / "check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(fs), str(raw)], check=True)
    assert fs_bytes(raw) == 256 * MiB
    put_file(raw, tmp_path, "kept", b"in qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(fs)], check=True)
    assert vols.grow("q-fs", 512 * MiB, "ext4", "qcow2")
    assert qemu_img_info(fs)["virtual-size"] == 512 * MiB
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(fs), str(raw)], check=True)
    assert fs_bytes(raw) == 512 * MiB and debugfs(raw, "cat kept") == "in qcow2"
    assert not list((tmp_path / ".work").iterdir())


def test_grow_raw_filesystem_keeps_data_and_never_shrinks(tmp_path: Path) -> None:
    vols = LocalVolumes(tmp_path)
    path = vols.ensure("g", 64 * MiB)
    put_file(path, tmp_path, "kept", b"before growing")
    assert vols.grow("g", 300 * MiB, "ext4")
    assert path.stat().st_size == 300 * MiB and fs_bytes(path) == 300 * MiB
    assert dumpe2fs(path)["Filesystem state"] == "clean"
    assert debugfs(path, "cat kept") == "before growing"
    assert not vols.grow("g", 300 * MiB, "ext4")  # nothing to do
    assert not vols.grow("g", 100 * MiB, "ext4")  # never shrinks
    assert path.stat().st_size == 300 * MiB
    assert vols.grow("g", 400 * MiB, "")  # raw block volume: the file only
    assert path.stat().st_size == 400 * MiB and fs_bytes(path) == 300 * MiB


def test_an_interrupted_grow_is_finished_by_the_next(tmp_path: Path) -> None:
    """The state a crash between the file's growth and resize2fs leaves: the next grow, asked for
    the size the file already has, still grows the filesystem."""
    vols = LocalVolumes(tmp_path)
    path = vols.ensure("half", 64 * MiB)
    (tmp_path / ".resizing").mkdir(exist_ok=True)
    (tmp_path / ".resizing" / "half").touch()
    os.truncate(path, 128 * MiB)
    assert fs_bytes(path) == 64 * MiB
    assert vols.grow("half", 128 * MiB, "ext4")
    assert fs_bytes(path) == 128 * MiB and not (tmp_path / ".resizing" / "half").exists()
    assert not vols.grow("half", 128 * MiB, "ext4")


def test_a_crashed_creation_never_looks_like_a_volume(tmp_path: Path) -> None:
    """A crash leaves only a work file; the next ensure removes it and makes the volume whole."""
    vols = LocalVolumes(tmp_path)
    vols.ensure("other", MiB, block_mode=True)  # makes the directories
    leftover = vols._tmp("crashed", 0)
    leftover.write_bytes(b"half a filesystem")
    assert vols.handles() == ["other"] and vols.find("crashed") is None
    path = vols.ensure("crashed", 32 * MiB)
    assert not leftover.exists() and fs_bytes(path) == 32 * MiB
    assert sorted(p.name for p in (tmp_path / ".work").iterdir()) == []


@pytest.mark.parametrize(
    "handle", ["", "../etc", "a/b", "UPPER", ".hidden", "-x", "a..b", "x" * 254, "a b", "a\nb", "pvc_1"]
)
def test_bad_handles_are_refused(tmp_path: Path, handle: str) -> None:
    vols = LocalVolumes(tmp_path / "v")
    with pytest.raises(VolumeError, match="invalid volume handle"):
        vols.ensure(handle, MiB)
    with pytest.raises(VolumeError):
        vols.delete(handle)
    assert not (tmp_path / "etc").exists() and not any(tmp_path.glob("v/*.raw"))


def test_bad_formats_fs_types_and_sizes(tmp_path: Path) -> None:
    vols = LocalVolumes(tmp_path)
    assert vols.ensure("a" * 249, MiB, block_mode=True, fmt="raw").name == "a" * 249 + ".raw"
    with pytest.raises(VolumeError, match="too long"):
        vols.ensure("a" * 250, MiB, fmt="qcow2")
    with pytest.raises(VolumeError, match="format 'vmdk' is not supported"):
        vols.ensure("v", MiB, fmt="vmdk")
    with pytest.raises(VolumeError, match=r"fsType 'xfs' is not supported for local .* \(supported: ext4"):
        vols.ensure("v", MiB, "xfs")
    with pytest.raises(VolumeError, match="invalid size"):
        vols.ensure("v", 0)
    with pytest.raises(VolumeError, match="does not exist"):
        vols.grow("v", MiB)
    with pytest.raises(VolumeError, match=r"mkfs\.ext4 failed: the volume: Not enough space to build"):
        vols.ensure("tiny", 4096)  # too small for ext4: mkfs's own words, without the work file's path
    assert vols.find("tiny") is None and not list((tmp_path / ".locks").iterdir())[1:]


def test_not_enough_free_space_is_refused(tmp_path: Path) -> None:
    vols = LocalVolumes(tmp_path)
    st = os.statvfs(tmp_path)
    too_big = st.f_bavail * st.f_frsize + GiB
    with pytest.raises(VolumeError, match=r"cannot create volume big \(.*\): only .* free on the node's"):
        vols.ensure("big", too_big)
    vols.ensure("small", MiB)
    with pytest.raises(VolumeError, match=r"cannot grow volume small to .*: only .* free"):
        vols.grow("small", too_big, "ext4")
    assert vols.capacity("small") == MiB and vols.find("big") is None


CHILD = """
import sys
from pathlib import Path
from hypernetes.runtime.hypervm import HyperVM
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.kernels import KernelRegistry
from hypernetes.volumes import LocalVolumes, VolumeError
from tests.support.guests import qemu_processes_under
from tests.support.apiserver import ApiServerThread
vols = LocalVolumes(Path(sys.argv[1]))
try:
    if sys.argv[2] == "ensure":
        vols.ensure("full", int(sys.argv[3]), fmt=sys.argv[4])
    else:
        vols.grow("full", int(sys.argv[3]), "ext4", sys.argv[4])
except VolumeError as e:
    print(f"VolumeError: {e}")
    sys.exit(3)
"""


@pytest.mark.parametrize(
    "op, fmt, message",
    [
        ("ensure", "raw", "cannot create volume full: File too large"),
        ("grow", "raw", "cannot grow volume full: File too large"),
        (
            "grow",
            "qcow2",
            "volume full: qemu-img failed: qemu-img: the volume: error while converting raw: "
            "Could not resize file: File too large",
        ),
    ],
)
def test_a_write_error_is_a_clear_message(tmp_path: Path, op: str, fmt: str, message: str) -> None:
    """A real write failure, not a mock: the volume store's process may not write past 1 MiB
    (RLIMIT_FSIZE: writes fail with EFBIG, as they fail with ENOSPC on a full disk), for Python's
    own writes and for the tools it runs alike. A failed grow leaves the volume as it was."""
    vols = LocalVolumes(tmp_path)
    if op == "grow":
        vols.ensure("full", 64 * MiB, fmt=fmt)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, MiB))

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), op, str(GiB), fmt],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == f"VolumeError: {message}\n" and proc.stderr == ""
    assert vols.handles() == ([] if op == "ensure" else ["full"])
    assert not list((tmp_path / ".work").iterdir())
    if op == "grow":
        assert vols.capacity("full") == 64 * MiB


def test_delete_and_concurrent_ensure(tmp_path: Path) -> None:
    vols = LocalVolumes(tmp_path)
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(vols.ensure("same", 128 * MiB))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.stat().st_ino for p in paths}) == 1
    assert vols.delete("same") and vols.find("same") is None
    assert not vols.delete("same")
    assert not list((tmp_path / ".locks").iterdir()) and not list((tmp_path / ".work").iterdir())
    with pytest.raises(VolumeError, match="does not exist"):
        vols.capacity("same")


# --- claim → PV → disk -----------------------------------------------------------------------------


def pv(
    name: str = "pvc-u1", node: str = "n1", tenant: str | None = "acme", mode: str = "Filesystem", **spec: Any
) -> dict[str, Any]:
    labels = {"hypernetes.io/tenant": tenant} if tenant else {}
    return {
        "metadata": {
            "name": name,
            "labels": labels,
            "uid": f"uid-of-{name}",
            "finalizers": ["kubernetes.io/pv-protection", "local.hypernetes.io/backing-file"],
        },
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": mode,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "local",
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "ns", "name": "data", "uid": "u1"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                            ]
                        }
                    ]
                }
            },
            "csi": {
                "driver": "local.hypernetes.io",
                "volumeHandle": name,
                "fsType": "ext4",
                "volumeAttributes": {"format": "raw"},
            },
            **spec,
        },
    }


def pvc(name: str = "data", volume: str = "pvc-u1", bound: bool = True, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": "u1"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            **({"volumeName": volume} if bound else {}),
            **spec,
        },
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}} if bound else {"phase": "Pending"},
    }


class World(dict[tuple[str, str, str], dict[str, Any]]):
    def __init__(self, *objs: tuple[str, dict[str, Any]]) -> None:
        super().__init__()
        tenant = {"hypernetes.io/tenant": "acme"}
        self[("Namespace", "", "ns")] = {"metadata": {"name": "ns", "labels": tenant}}
        for kind, obj in objs:
            self[(kind, "" if kind == "PersistentVolume" else "ns", obj["metadata"]["name"])] = obj

    def lookup(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.get((kind, ns, name))


def claim_pod(
    mounts: list[dict[str, Any]] | None = None,
    devices: list[dict[str, Any]] | None = None,
    read_only: bool = False,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    if mounts is not None:
        container["volumeMounts"] = mounts
    if devices is not None:
        container["volumeDevices"] = devices
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "pod-1"},
        "spec": {
            "nodeName": "n1",
            "containers": [container],
            "volumes": [
                {"name": "vol", "persistentVolumeClaim": {"claimName": "data", "readOnly": read_only}}
            ],
        },
    }


def block_path(handle: str, fmt: str) -> str:
    return f"/data/volumes/{handle}.{fmt}"


def test_a_claim_resolves_to_its_pvs_disk() -> None:
    world = World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv()))
    pod = claim_pod(mounts=[{"name": "vol", "mountPath": "/data"}])
    assert referenced_objects(pod) == {("PersistentVolumeClaim", "data"), ("Namespace", "ns")}
    assert claim_volume_names([pvc()]) == {("PersistentVolume", "pvc-u1")}
    assert claim_volume_names([pvc(bound=False)]) == set()
    spec = pod_spec(pod, world.lookup, block_path)
    (vol,) = spec.volumes
    assert vol.kind == "block" and vol.block is not None
    assert (vol.block.path, vol.block.format, vol.block.fs_type, vol.block.read_only) == (
        "/data/volumes/pvc-u1.raw",
        "raw",
        "ext4",
        False,
    )
    assert [(m.volume, m.path, m.read_only) for m in spec.containers[0].mounts] == [("vol", "/data", False)]
    (disk,) = claim_disks(pod, world.lookup)
    assert (disk.handle, disk.size, disk.key, disk.pv, disk.format) == (
        "pvc-u1",
        GiB,
        "ns/data",
        "pvc-u1",
        "raw",
    )
    assert pod_claims(pod) == {"ns/data": False}
    with pytest.raises(VolumeConfigError, match="this node has no volume store"):
        pod_spec(pod, world.lookup)


def test_read_only_claims() -> None:
    mounts: list[dict[str, Any]] = [
        {"name": "vol", "mountPath": "/data"},
        {"name": "vol", "mountPath": "/ro", "readOnly": True},
    ]
    world = World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv()))
    spec = pod_spec(claim_pod(mounts=mounts), world.lookup, block_path)
    assert spec.volumes[0].block is not None and not spec.volumes[0].block.read_only
    assert [m.read_only for m in spec.containers[0].mounts] == [False, True]  # that mount only
    # readOnly on the pod's claim source: the whole disk, so every mount of it
    spec = pod_spec(claim_pod(mounts=mounts, read_only=True), world.lookup, block_path)
    assert spec.volumes[0].block is not None and spec.volumes[0].block.read_only
    assert [m.read_only for m in spec.containers[0].mounts] == [True, True]
    # a claim for ReadOnlyMany only
    world = World(("PersistentVolumeClaim", pvc(accessModes=["ReadOnlyMany"])), ("PersistentVolume", pv()))
    (disk,) = claim_disks(claim_pod(mounts=mounts), world.lookup)
    assert disk.read_only


def test_block_mode_claims_become_devices() -> None:
    world = World(
        ("PersistentVolumeClaim", pvc(volumeMode="Block")),
        (
            "PersistentVolume",
            pv(
                mode="Block",
                csi={
                    "driver": "local.hypernetes.io",
                    "volumeHandle": "pvc-u1",
                    "volumeAttributes": {"format": "qcow2"},
                },
            ),
        ),
    )
    spec = pod_spec(claim_pod(devices=[{"name": "vol", "devicePath": "/dev/xvda"}]), world.lookup, block_path)
    block = spec.volumes[0].block
    assert block is not None and (block.path, block.format, block.fs_type) == (
        "/data/volumes/pvc-u1.qcow2",
        "qcow2",
        "",
    )
    assert [(d.volume, d.path) for d in spec.containers[0].devices] == [("vol", "/dev/xvda")]
    with pytest.raises(VolumeConfigError, match="volumeMode Block: use volumeDevices, not volumeMounts"):
        pod_spec(claim_pod(mounts=[{"name": "vol", "mountPath": "/x"}]), world.lookup, block_path)
    fs_world = World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv()))
    with pytest.raises(VolumeConfigError, match="volumeMode Filesystem: use volumeMounts, not volumeDevices"):
        pod_spec(claim_pod(devices=[{"name": "vol", "devicePath": "/dev/x"}]), fs_world.lookup, block_path)


def _refused(world: World, pattern: str, pod: dict[str, Any] | None = None) -> None:
    with pytest.raises(VolumeConfigError, match=pattern) as e:
        pod_spec(pod or claim_pod(mounts=[{"name": "vol", "mountPath": "/d"}]), world.lookup, block_path)
    assert e.value.reason == "ContainerCreating" and e.value.event == "FailedMount"
    assert e.value.event_message == str(e.value) and str(e.value).startswith('volume "vol": ')


def test_claims_that_cannot_be_attached() -> None:
    _refused(World(("PersistentVolume", pv())), 'persistentvolumeclaim "data" not found')
    _refused(World(("PersistentVolumeClaim", pvc(bound=False))), 'persistentvolumeclaim "data" is not bound')
    _refused(
        World(("PersistentVolumeClaim", pvc())), 'persistentvolume "pvc-u1" bound to claim "data" not found'
    )
    _refused(
        World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv(node="n2"))),
        'volume node affinity conflict: persistentvolume "pvc-u1" is on node "n2", this pod is on node "n1"',
    )
    _refused(
        World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv(nodeAffinity=None))), "is on no node"
    )
    _refused(
        World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv(tenant="other"))),
        'persistentvolume "pvc-u1" belongs to tenant "other", namespace "ns" to tenant "acme"',
    )
    _refused(
        World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv(tenant=None))),
        'belongs to no tenant, namespace "ns" to tenant "acme"',
    )
    stolen = pv(claimRef={"namespace": "ns", "name": "data", "uid": "someone-else"})
    _refused(World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", stolen)), "bound to another claim")
    host = pv(csi=None, hostPath={"path": "/etc"})
    _refused(
        World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", host)),
        "is not a local.hypernetes.io volume",
    )
    evil = pv(csi={"driver": "local.hypernetes.io", "volumeHandle": "../../etc/shadow"})
    _refused(World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", evil)), "invalid volume handle")
    xfs = pv(csi={"driver": "local.hypernetes.io", "volumeHandle": "pvc-u1", "fsType": "xfs"})
    _refused(
        World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", xfs)), "fsType xfs is not supported"
    )
    _refused(
        World(("PersistentVolumeClaim", pvc(volumeMode="Block")), ("PersistentVolume", pv())),
        "has volumeMode Filesystem, its claim Block",
    )
    deleting = pv()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    _refused(World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", deleting)), "is being deleted")
    world = World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv()))
    del world[("Namespace", "", "ns")]
    _refused(world, 'namespace "ns" not found')
    bad_device = claim_pod(devices=[{"name": "scratch", "devicePath": "/dev/x"}])
    bad_device["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    with pytest.raises(VolumeConfigError, match='volumeDevices "scratch" must name a persistentVolumeClaim'):
        pod_spec(bad_device, world.lookup, block_path)


def test_empty_dir_medium() -> None:
    pod = claim_pod()
    pod["spec"]["volumes"] = [
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "disk", "emptyDir": {}},
    ]
    mem, disk = pod_spec(pod, World().lookup).volumes
    assert (mem.kind, mem.medium, mem.size_limit) == ("emptyDir", "Memory", 16 * MiB)
    # a disk emptyDir without sizeLimit gets the partition it was scheduled and counted by
    assert (disk.medium, disk.size_limit) == ("", DEFAULT_EMPTYDIR_SIZE)
    pod["spec"]["volumes"] = [{"name": "huge", "emptyDir": {"medium": "HugePages"}}]
    with pytest.raises(ConfigError, match='emptyDir medium "HugePages" is not supported'):
        pod_spec(pod, World().lookup)


def test_pv_node() -> None:
    assert pv_node(pv(node="n7")) == "n7"
    assert (
        pv_node(
            pv(
                nodeAffinity={
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a", "b"]}
                                ]
                            }
                        ]
                    }
                }
            )
        )
        is None
    )
    assert pv_node({"spec": {}}) is None


# --- who uses which volume on this node, and the claim's status after a resize ---------------------


def test_volume_users() -> None:
    world = World(("PersistentVolumeClaim", pvc()), ("PersistentVolume", pv()))
    (rw,) = claim_disks(claim_pod(mounts=[]), world.lookup)
    (ro,) = claim_disks(claim_pod(mounts=[], read_only=True), world.lookup)
    users = VolumeUsers()
    users.acquire("a", "ns/a", [ro])
    users.acquire("b", "ns/b", [ro])  # readers share
    assert not users.sole("ns/data", "a")
    with pytest.raises(
        MultiAttachError, match=r'Multi-Attach error for volume "pvc-u1": .* pod\(s\) ns/a, ns/b'
    ):
        users.acquire("c", "ns/c", [rw])
    users.release("a")
    users.release("b")
    users.acquire("c", "ns/c", [rw])
    users.acquire("c", "ns/c", [rw])  # again: the same pod
    assert users.sole("ns/data", "c")
    with pytest.raises(MultiAttachError) as e:
        users.acquire("d", "ns/d", [ro])
    assert e.value.event == "FailedAttachVolume"
    assert not users.begin_delete("ns/data", "uid-of-pvc-u1") and users.users("ns/data") == ["ns/c"]
    users.release("c")
    assert users.begin_delete("ns/data", "uid-of-pvc-u1")
    with pytest.raises(VolumeConfigError, match='persistentvolume "pvc-u1" is being deleted'):
        users.acquire("e", "ns/e", [rw])


def test_resized_claim_status() -> None:
    claim = pvc()
    claim["status"] = {
        "phase": "Bound",
        "capacity": {"storage": "1Gi"},
        "allocatedResourceStatuses": {"storage": "NodeResizePending"},
        "conditions": [
            {"type": "FileSystemResizePending", "status": "True"},
            {"type": "Other", "status": "True"},
        ],
    }
    assert resized_claim_status(claim, "2Gi") == {
        "capacity": {"storage": "2Gi"},
        "conditions": [{"type": "Other", "status": "True"}],
        "allocatedResourceStatuses": {"storage": None},
    }
    claim["status"] = {"phase": "Bound", "capacity": {"storage": "2Gi"}}
    assert resized_claim_status(claim, "2Gi") is None
    assert resized_claim_status(claim, "3Gi") == {"capacity": {"storage": "3Gi"}, "conditions": None}


# --- end to end: real VMs, a real API server, the node agent ---------------------------------------

NS = "vols"


def pv_object(name: str, claim: dict[str, Any], size: str, mode: str, fmt: str) -> dict[str, Any]:
    """A PV as docs/volumes.md has the volume controller make it, bound to `claim`, on node1."""
    obj = pv(
        name=name,
        node="node1",
        mode=mode,
        capacity={"storage": size},
        claimRef={
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "namespace": NS,
            "name": claim["metadata"]["name"],
            "uid": claim["metadata"]["uid"],
        },
        csi={
            "driver": "local.hypernetes.io",
            "volumeHandle": name,
            "fsType": "ext4",
            "volumeAttributes": {"format": fmt},
        },
    )
    obj["metadata"].pop("uid")
    obj["metadata"]["annotations"] = {"pv.kubernetes.io/provisioned-by": "local.hypernetes.io"}
    return {"apiVersion": "v1", "kind": "PersistentVolume", **obj}


def claim_object(name: str, volume: str, size: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            "storageClassName": "local",
            "volumeMode": mode,
            "volumeName": volume,
        },
    }


class Node:
    """An API server (multi-tenant, in a thread) and a node agent with real VMs on this loop."""

    def __init__(self, tmp: Path, kernels: KernelRegistry, image: str) -> None:
        (tmp / "api").mkdir()
        self.tmp, self.kernels = tmp, kernels
        self.api = ApiServerThread(tmp / "api", tenancy=True).start()
        self.image = image
        self.volumes = LocalVolumes(tmp / "volumes")
        self.client = ApiClient(self.api.url, token=self.api.token, ca_file=self.api.ca.ca_cert)
        # the agent runs as the node (NodeRestriction), the test as the operator
        assert self.api.tenancy is not None
        node_token = self.api.tenancy.issuer.issue_node("node1").token
        self.node_client = ApiClient(self.api.url, token=node_token, ca_file=self.api.ca.ca_cert)
        self.start_agent()

    def start_agent(self) -> None:
        self.runtime = HyperVM(
            self.tmp / "rt", ImageStore(self.tmp / "images"), self.kernels, die_with_parent=True
        )
        self.agent = NodeAgent(self.node_client, self.runtime, "node1", volumes=self.volumes)
        self.task = asyncio.create_task(self.agent.run())

    async def stop_agent(self, stop_pods: bool) -> None:
        await self.agent.shutdown(stop_pods=stop_pods)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def close(self) -> None:
        await self.stop_agent(stop_pods=True)
        await self.client.close()
        await self.node_client.close()
        self.api.stop()

    async def bound_claim(self, name: str, pv_name: str, size: str, mode: str, fmt: str) -> None:
        """A claim and its PV, bound by hand as the volume controller would bind them."""
        claim = await self.client.create(
            "v1", "persistentvolumeclaims", claim_object(name, pv_name, size, mode), NS
        )
        await self.client.create("v1", "persistentvolumes", pv_object(pv_name, claim, size, mode, fmt))
        status = {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}}
        await self.client.patch(
            "v1", "persistentvolumeclaims", name, {"status": status}, NS, subresource="status"
        )

    async def run_pod(
        self,
        name: str,
        command: str,
        claims: dict[str, str],
        mounts: dict[str, str],
        devices: dict[str, str] | None = None,
    ) -> None:
        container = {
            "name": "main",
            "image": self.image,
            "command": ["sh", "-c", command],
            # small enough that the node admits the waiting pods beside the running one
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
            "volumeMounts": [{"name": v, "mountPath": p} for v, p in mounts.items()],
            "volumeDevices": [{"name": v, "devicePath": p} for v, p in (devices or {}).items()],
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 1,
                "containers": [container],
                "volumes": [
                    {"name": v, "persistentVolumeClaim": {"claimName": c}} for v, c in claims.items()
                ],
            },
        }
        await self.client.create("v1", "pods", pod, NS)
        # placed as the scheduler places it: a tenant's pod may not name its node itself
        await self.client.create(
            "v1",
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": NS},
                "target": {"apiVersion": "v1", "kind": "Node", "name": "node1"},
            },
            NS,
            subresource="binding",
            name=name,
        )

    async def pod(self, name: str) -> dict[str, Any]:
        return dict(await self.client.get_or_none("v1", "pods", name, NS) or {})

    async def phase(self, name: str) -> str:
        return str((await self.pod(name)).get("status", {}).get("phase", ""))

    async def events(self, name: str) -> list[tuple[str, str]]:
        items = (await self.client.list("v1", "events", NS))["items"]
        return [(e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]

    async def output(self, name: str) -> str:
        """The container's log so far ("" until it runs)."""
        pod = await self.pod(name)
        if pod.get("status", {}).get("phase") not in ("Running", "Succeeded", "Failed"):
            return ""
        lines = [line.data.decode() async for line in self.runtime.logs(pod["metadata"]["uid"], "main")]
        return "\n".join(lines)

    async def delete_pod(self, name: str) -> None:
        await self.client.delete("v1", "pods", name, NS)
        await wait_for_async(lambda: _gone(self.pod(name)), 60, 0.5, f"pod {name} gone")


async def _gone(check: Awaitable[Any]) -> bool:
    """For wait_for_async: true once `check` gives nothing."""
    return not await check


def df_kib(output: str, marker: str) -> int:
    """Total KiB from the `df -k` line printed after `marker`."""
    lines = output.splitlines()
    return int(lines[lines.index(marker) + 1].split()[1])


@pytest.mark.slow
async def test_persistent_volumes_with_real_vms(
    tmp_path: Path, kernels: KernelRegistry, busybox_ref: str
) -> None:
    """Write in one pod VM, read in the next; grow the volume and see the bigger filesystem; a
    volume in use waits for its pod before its PV's disk is deleted; claims that cannot be
    attached leave pods waiting with FailedMount/FailedAttachVolume events."""
    started = time.monotonic()
    node = Node(tmp_path, kernels, busybox_ref)
    client, volumes = node.client, node.volumes
    try:
        await client.create(
            "hypernetes.io/v1",
            "tenants",
            {"apiVersion": "hypernetes.io/v1", "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {}},
        )
        await client.create(
            "v1",
            "namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": NS, "labels": {"hypernetes.io/tenant": "acme"}},
            },
        )
        if await client.get_or_none("storage.k8s.io/v1", "storageclasses", "local") is None:
            await client.create(
                "storage.k8s.io/v1",
                "storageclasses",
                {  # as the API server makes it
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": "local"},
                    "provisioner": "local.hypernetes.io",
                    "reclaimPolicy": "Delete",
                    "allowVolumeExpansion": True,
                    "volumeBindingMode": "Immediate",
                    "parameters": {"fsType": "ext4", "format": "raw"},
                },
            )
        await node.bound_claim("data", "pv-data", "64Mi", "Filesystem", "raw")
        await node.bound_claim("raw", "pv-raw", "16Mi", "Block", "qcow2")

        # a claim that does not exist: the pod waits, as upstream, with FailedMount events
        await node.run_pod("lost", "true", {"d": "nope"}, {"d": "/d"})
        await node.run_pod(
            "writer",
            "echo persisted > /data/file; echo rawdata | dd of=/dev/rawdisk "
            "conv=fsync; sync; echo df; df -k /data | tail -1; echo written",
            {"data": "data", "raw": "raw"},
            {"data": "/data"},
            {"raw": "/dev/rawdisk"},
        )
        lost = await wait_for_async(lambda: node.events("lost"), 150, 0.5, "FailedMount")
        assert ("FailedMount", 'volume "d": persistentvolumeclaim "nope" not found') in lost
        waiting = (await node.pod("lost"))["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["reason"] == "ContainerCreating"
        await node.delete_pod("lost")

        await wait_for_async(lambda: _done(node.phase("writer")), 150, 0.5, "the writer's end")
        written = await node.output("writer")
        assert await node.phase("writer") == "Succeeded" and "written" in written, written
        assert 50 * 1024 < df_kib(written, "df") <= 64 * 1024
        assert volumes.capacity("pv-data") == 64 * MiB and volumes.capacity("pv-raw", "qcow2") == 16 * MiB
        await node.delete_pod("writer")
        assert dumpe2fs(volumes.path("pv-data"))["Filesystem state"] == "clean"  # unmounted cleanly

        # expansion as the volume controller does it: the claim asks, the PV's capacity grows,
        # the claim waits for the node to grow the filesystem
        await client.patch(
            "v1",
            "persistentvolumeclaims",
            "data",
            {"spec": {"resources": {"requests": {"storage": "256Mi"}}}},
            NS,
        )
        await client.patch("v1", "persistentvolumes", "pv-data", {"spec": {"capacity": {"storage": "256Mi"}}})
        pending = {"type": "FileSystemResizePending", "status": "True"}
        await client.patch(
            "v1",
            "persistentvolumeclaims",
            "data",
            {"status": {"conditions": [pending]}},
            NS,
            subresource="status",
        )
        await node.run_pod(
            "reader",
            "cat /data/file; head -c 7 /dev/rawdisk; echo; echo df; "
            "df -k /data | tail -1; echo ready; sleep 600",
            {"data": "data", "raw": "raw"},
            {"data": "/data"},
            {"raw": "/dev/rawdisk"},
        )
        read = await wait_for_async(lambda: _with(node.output("reader"), "ready"), 150, 0.5, "the reader")
        assert read.splitlines()[:2] == ["persisted", "rawdata"], read
        assert df_kib(read, "df") > 200 * 1024  # the filesystem grew from 64 to 256 MiB
        assert any(r == "VolumeResized" and "pv-data" in m for r, m in await node.events("reader"))
        claim = await client.get("v1", "persistentvolumeclaims", "data", NS)
        assert claim["status"]["capacity"] == {"storage": "256Mi"} and not claim["status"].get("conditions")

        # a second pod may not attach the same read-write volume to its own VM
        await node.run_pod("second", "true", {"d": "data"}, {"d": "/d"})
        second = await wait_for_async(lambda: node.events("second"), 150, 0.5, "FailedAttachVolume")
        assert any(
            r == "FailedAttachVolume" and "Multi-Attach error" in m and "vols/reader" in m for r, m in second
        ), second
        await node.delete_pod("second")

        # deleting PVs while the node agent is down: the next agent adopts the reader's VM, and
        # the disks stay while the reader uses them; then they go, and our finalizer with them
        await node.stop_agent(stop_pods=False)
        for name in ("pv-data", "pv-raw"):
            await asyncio.to_thread(node.api.kubectl, "delete", "pv", name, "--wait=false")
        node.start_agent()
        await asyncio.sleep(3)
        assert "ready" in await node.output("reader")  # the same VM, adopted
        assert volumes.find("pv-data") is not None and volumes.find("pv-raw") is not None
        pv_data = await client.get("v1", "persistentvolumes", "pv-data")
        assert "local.hypernetes.io/backing-file" in pv_data["metadata"]["finalizers"]
        await node.delete_pod("reader")
        for name in ("pv-data", "pv-raw"):
            await wait_for_async(
                lambda n=name: _gone(_ours_left(client, n)), 30, 0.5, f"{name}'s finalizer removed"
            )
            pv_obj = await client.get("v1", "persistentvolumes", name)
            assert pv_obj["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
        assert volumes.handles() == [] and not list((tmp_path / "volumes" / ".locks").iterdir())
        assert not qemu_processes_under(tmp_path)
        print(f"persistent volumes end to end: {time.monotonic() - started:.0f} s")
    finally:
        await node.close()


async def _with(coro: Awaitable[str], text: str) -> str:
    out = await coro
    return out if text in out else ""


async def _done(coro: Awaitable[str]) -> bool:
    return await coro in ("Succeeded", "Failed")


async def _ours_left(client: ApiClient, name: str) -> bool:
    pv_obj = await client.get("v1", "persistentvolumes", name)
    return "local.hypernetes.io/backing-file" in (pv_obj["metadata"].get("finalizers") or [])
