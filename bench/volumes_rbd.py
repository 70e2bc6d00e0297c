"""Persistent-volume I/O on Ceph RBD: fio inside a pod VM on an RBD image vs on a local file volume
vs fio on the host, in the same run (the jobs, image and measurements of bench/volumes.py).

Peers:

    host      fio on the host against a plain file in the directory that holds the local volumes
    vm        fio in a hypervm pod on a local file volume (sparse ext4 file, cache=none)
    vm-rbd    fio in a hypervm pod on an RBD image QEMU opens through librbd (no librbd cache: the
              runtime's cache.direct), in a Ceph cluster of this machine (tests/support/ceph.py:
              one monitor, one manager, three BlueStore OSDs on sparse files in --dir, pool size 3)

Jobs: sequential 1 MiB write and read, 4 KiB random write and read at QD1 (psync) and QD16
(libaio), all O_DIRECT, as bench/volumes.py. On one machine the three OSDs and QEMU share its
cores and disk, and every write is made three times (replicas): the figures say what a pod gets
from a cluster on this machine, not from a real one (whose network adds a round trip per I/O).

Run as root after `make setup`: `.venv/bin/python bench/volumes_rbd.py` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import volumes as local  # noqa: E402  (bench/volumes.py: jobs, image, samplers)

from hypernetes.runtime.disks import direct_io  # noqa: E402
from hypernetes.runtime.hypervm import HyperVM  # noqa: E402
from hypernetes.runtime.images import ImageStore  # noqa: E402
from hypernetes.runtime.interface import (  # noqa: E402
    BlockDevice,
    ContainerSpec,
    MountSpec,
    PodSpec,
    RbdImage,
    VolumeSpec,
)
from hypernetes.runtime.kernels import KernelRegistry  # noqa: E402
from hypernetes.runtime.paths import agent_binary  # noqa: E402
from hypernetes.runtime.qemu import running_qemu  # noqa: E402
from hypernetes.volumes.local import LocalVolumes  # noqa: E402
from hypernetes.volumes.rbd import RbdVolumes  # noqa: E402
from hypernetes.volumes.rbd_objects import CephCredentials  # noqa: E402
from tests.support.ceph import running_ceph  # noqa: E402

PEERS = ("host", "vm", "vm-rbd")


async def vm_peer(
    rt: HyperVM,
    peer: str,
    block: BlockDevice,
    args: argparse.Namespace,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    sandbox = f"vol-{peer}"
    container = ContainerSpec(
        name="fio",
        image=local.IMAGE,
        command=("sleep", "100000"),
        memory_limit=256 << 20,
        mounts=(MountSpec("data", "/data"),),
    )
    spec = PodSpec(
        id=sandbox, name=sandbox, containers=(container,), volumes=(VolumeSpec("data", "block", block=block),)
    )
    try:
        await rt.create_sandbox(spec)
        await rt.start_container(sandbox, "fio")
        pid = running_qemu(rt.root / sandbox)
        assert pid is not None
        vcpus = await local.vcpu_threads(rt.root / sandbox)
        disk = None if block.rbd else local.disk_of(Path(block.path).parent)
        for job in local.JOBS:
            if job.name in args.skip and job.timed:
                continue
            row = await local.run_vm_job(rt, sandbox, job, args.size_mib, args.runtime, disk, pid, vcpus)
            cache = (
                "rbd, cache.direct" if block.rbd else ("none" if direct_io(Path(block.path)) else "writeback")
            )
            emit(
                {
                    "peer": peer,
                    "job": job.name,
                    "bs": job.bs,
                    "iodepth": job.iodepth,
                    "qemu_cache": cache,
                    **row,
                }
            )
    finally:
        await rt.remove_sandbox(sandbox)


async def local_peer(
    rt: HyperVM, volume_dir: Path, args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
) -> None:
    volumes = LocalVolumes(volume_dir)
    volumes.delete("bench-vm")
    path = volumes.ensure("bench-vm", args.volume_gib << 30, "ext4")
    try:
        await vm_peer(rt, "vm", BlockDevice(str(path), fs_type="ext4"), args, emit)
    finally:
        volumes.delete("bench-vm")


async def rbd_peer(
    rt: HyperVM, rbd: RbdVolumes, args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
) -> None:
    image = "bench-rbd"
    await asyncio.to_thread(rbd.delete, image)
    await asyncio.to_thread(rbd.create, image, args.volume_gib << 30)
    c = rbd.creds
    block = BlockDevice("", fs_type="ext4", rbd=RbdImage(rbd.pool, image, c.user, c.monitors, c.key))
    try:
        await vm_peer(rt, "vm-rbd", block, args, emit)
    finally:
        await asyncio.to_thread(rbd.delete, image)


def table(rows: list[dict[str, Any]]) -> str:
    by = {(r["peer"], r["job"]): r for r in rows}
    peers = [p for p in PEERS if any(r["peer"] == p for r in rows)]
    lines = ["| job | " + " | ".join(peers) + " | rbd/vm | rbd/host |", "|---" * (len(peers) + 3) + "|"]
    for job in local.JOBS:
        cells = []
        for p in peers:
            r = by.get((p, job.name))
            cells.append(
                "-" if r is None else (f"{r['mb_s']} MB/s" if job.bs == "1M" else f"{r['iops']} IOPS")
            )
        h, v, r = by.get(("host", job.name)), by.get(("vm", job.name)), by.get(("vm-rbd", job.name))
        rv = f"{r['mb_s'] / v['mb_s']:.2f}" if r and v and v["mb_s"] else "-"
        rh = f"{r['mb_s'] / h['mb_s']:.2f}" if r and h and h["mb_s"] else "-"
        lines.append(f"| {job.name} | " + " | ".join(cells) + f" | {rv} | {rh} |")
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> int:
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hn-bench-rbd-"))
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        row = {
            "bench": "volume_io_rbd",
            "run": args.run,
            **row,
            "loadavg1": float(Path("/proc/loadavg").read_text().split()[0]),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    ceph_dir = Path(tempfile.mkdtemp(prefix="hn-ceph-", dir=base))  # short: admin sockets
    try:
        with running_ceph(ceph_dir) as ceph:
            print(
                json.dumps(
                    {"bench": "machine", **local.machine(base), "ceph_start_s": round(ceph.started_in, 1)}
                ),
                flush=True,
            )
            rbd = RbdVolumes(CephCredentials(ceph.monitors, ceph.user, ceph.user_key()), ceph.pool)
            data = base / "data"
            local.prepare_image(data, base)
            rt = HyperVM(
                data / "runtime",
                ImageStore(data / "images"),
                KernelRegistry(data / "kernels", agent_binary()),
                accel="tcg",
            )
            for peer in args.peers:
                if peer == "host":
                    await local.host_peer(base / "volumes", args, emit)
                elif peer == "vm":
                    await local_peer(rt, base / "volumes", args, emit)
                else:
                    await rbd_peer(rt, rbd, args, emit)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print("\n" + table(rows), file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtime", type=int, default=10, help="seconds per timed job")
    parser.add_argument("--size-mib", type=int, default=512, help="the test file's size")
    parser.add_argument("--volume-gib", type=int, default=1, help="the volume's size")
    parser.add_argument("--peers", type=lambda s: s.split(","), default=list(PEERS))
    parser.add_argument("--skip", action="append", default=[], help="a job to leave out")
    parser.add_argument("--dir", help="where the volumes and the OSDs' files go (default: a new temp dir)")
    parser.add_argument("--run", type=int, default=1, help="a run number, copied into every result")
    args = parser.parse_args()
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    if shutil.which(local.FIO) is None:
        parser.error(f"{local.FIO} is missing: apt-get install fio")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
